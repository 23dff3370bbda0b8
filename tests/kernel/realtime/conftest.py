"""Live realtime servers for the transport tests: real uvicorn sockets, real clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from tests.example_app import module as example_module
from tests.helpers import bearer, signed_up
from tests.live import serve
from veche.kernel import AppModule, Manifest, build_app
from veche.kernel.identity.models import User
from veche.kernel.realtime import ChannelPolicy, Hub, Message
from veche.settings import RealtimeSettings, Settings

WAIT = 10.0  # the bound on every wait: a broken feature fails, it never hangs


def _anyone(_user: User, _channel: str) -> bool:
    return True


async def _not_locked(_user: User, channel: str) -> bool:
    await asyncio.sleep(0)  # policies may be async
    return not channel.endswith(":locked")


# A test app with three channel families: `room:` anyone may read and write (except
# `room:...:locked` for writing); `news:` anyone may read, only the server writes;
# `feed:` is like `news:` without presence, as a broadcast feed would be.
rooms_module = AppModule(
    name="rooms",
    manifest=Manifest(name="rooms", version="0.1.0"),
    channel_policies={
        "room:": ChannelPolicy(subscribe=_anyone, publish=_not_locked),
        "news:": ChannelPolicy(subscribe=_anyone),
        "feed:": ChannelPolicy(subscribe=_anyone, presence=False),
    },
)


@dataclass
class Live:
    url: str
    app: FastAPI

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.state.kernel.realtime
        return hub

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/api/v1/realtime/ws"

    async def in_server(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the server's event loop (the hub lives there)."""
        loop = self.hub._loop
        assert loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), WAIT)

    async def publish(self, channel: str, data: Any, event: str = "message") -> Message:
        message: Message = await self.in_server(self.hub.publish(channel, data, event=event))
        return message

    async def account(self, email: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=WAIT) as http:
            name = email.split("@", maxsplit=1)[0].capitalize()
            return await signed_up(http, email=email, display_name=name)

    async def refreshed(self, tokens: dict[str, Any]) -> dict[str, Any]:
        """A fresh token pair for the same session (the old refresh token stops working)."""
        async with self.http() as http:
            response = await http.post(
                "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            )
            assert response.status_code == 200, response.text
            return {**response.json(), "user": tokens["user"]}

    async def logout(self, tokens: dict[str, Any]) -> None:
        async with self.http() as http:
            response = await http.post("/api/v1/auth/logout", headers=bearer(tokens))
            assert response.status_code == 204, response.text

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(WAIT))

    @contextlib.asynccontextmanager
    async def ws(self, tokens: dict[str, Any], **options: Any) -> AsyncIterator[WsClient]:
        async with connect(self.ws_url, open_timeout=WAIT, **options) as socket:
            client = WsClient(socket)
            await client.send({"type": "auth", "token": tokens["access_token"]})
            welcome = await client.receive()
            assert welcome["type"] == "welcome", welcome
            client.connection_id = welcome["connection_id"]
            client.welcome = welcome
            yield client


@dataclass
class WsClient:
    socket: ClientConnection
    connection_id: str = ""
    welcome: dict[str, Any] = field(default_factory=dict)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.socket.send(orjson.dumps(frame).decode())

    async def receive(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.socket.recv(), WAIT)
        frame: dict[str, Any] = orjson.loads(raw)
        return frame

    async def receive_type(self, *kinds: str) -> dict[str, Any]:
        """The next frame of one of these types, skipping heartbeats and others."""

        async def find() -> dict[str, Any]:
            while True:
                frame: dict[str, Any] = orjson.loads(await self.socket.recv())
                if frame["type"] in kinds:
                    return frame

        return await asyncio.wait_for(find(), WAIT)

    async def subscribe(self, channel: str, **since: Any) -> dict[str, Any]:
        await self.send({"type": "subscribe", "channel": channel, **since})
        return await self.receive_type("subscribed", "error")


@dataclass
class SseEvent:
    event: str = "message"
    id: str | None = None
    data: Any = None
    comment: str | None = None
    retry: int | None = None


@dataclass
class SseReader:
    """Reads `text/event-stream` line by line from a live httpx response."""

    response: httpx.Response
    _lines: AsyncIterator[str] | None = None
    ended: bool = False
    pending: list[str] = field(default_factory=list)

    async def next(self, within: float = WAIT) -> SseEvent | None:
        return await asyncio.wait_for(self._next(), within)

    async def _next(self) -> SseEvent | None:
        if self._lines is None:
            self._lines = self.response.aiter_lines()
        event, seen = SseEvent(), False
        async for line in self._lines:
            if line == "":
                if seen:
                    return event
                continue
            seen = True
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                event.comment = value
            elif name == "id":
                event.id = value
            elif name == "event":
                event.event = value
            elif name == "data":
                event.data = orjson.loads(value)
            elif name == "retry":
                event.retry = int(value)
        self.ended = True
        return event if seen else None

    async def next_of(self, *kinds: str, within: float = WAIT) -> SseEvent:
        """The next event of one of these kinds, skipping heartbeats and others."""

        async def find() -> SseEvent:
            while True:
                event = await self._next()
                assert event is not None, "the stream ended"
                if event.event in kinds and event.data is not None:
                    return event

        return await asyncio.wait_for(find(), within)


@dataclass
class NdjsonReader:
    response: httpx.Response
    _lines: AsyncIterator[str] | None = None

    async def next(self) -> dict[str, Any] | None:
        return await asyncio.wait_for(self._next(), WAIT)

    async def _next(self) -> dict[str, Any] | None:
        if self._lines is None:
            self._lines = self.response.aiter_lines()
        async for line in self._lines:
            if line:
                frame: dict[str, Any] = orjson.loads(line)
                return frame
        return None

    async def next_of(self, *kinds: str) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                frame = await self._next()
                assert frame is not None, "the stream ended"
                if frame["type"] in kinds:
                    return frame

        return await asyncio.wait_for(find(), WAIT)


@contextlib.contextmanager
def running(app: FastAPI) -> Iterator[Live]:
    with serve(app) as url:
        live = Live(url, app)
        try:
            yield live
        finally:
            # Ends streams a failed test left open, so the server stops promptly.
            live.hub.request_shutdown()


LiveFactory = Callable[..., Live]


@pytest.fixture
def live_factory(
    clean: None, settings_factory: Callable[..., Settings]
) -> Iterator[Callable[..., Live]]:
    """Starts real servers; `realtime=` overrides `RealtimeSettings` fields, `modules`
    replaces the test modules (the example app and `rooms`)."""
    stack = contextlib.ExitStack()

    def start(
        settings: Settings | None = None,
        modules: list[AppModule] | None = None,
        **realtime: Any,
    ) -> Live:
        if settings is None:
            options = {"heartbeat_seconds": 0.5, "shutdown_timeout_seconds": 3.0, **realtime}
            settings = settings_factory(realtime=RealtimeSettings(**options))
        app = build_app(settings, [example_module, rooms_module] if modules is None else modules)
        return stack.enter_context(running(app))

    with stack:
        yield start


@pytest.fixture
def live(live_factory: Callable[..., Live]) -> Live:
    return live_factory()


def sse_request(
    http: httpx.AsyncClient,
    tokens: dict[str, Any] | None,
    *channels: str,
    last_event_id: str | None = None,
) -> Any:
    headers = bearer(tokens) if tokens else {}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("channel", channel) for channel in channels
    ]
    return http.stream("GET", "/api/v1/realtime/sse", params=params, headers=headers)


def ndjson_request(
    http: httpx.AsyncClient,
    tokens: dict[str, Any] | None,
    *channels: str,
    last_event_id: str | None = None,
) -> Any:
    headers = bearer(tokens) if tokens else {}
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("channel", channel) for channel in channels
    ]
    if last_event_id:
        params.append(("last_event_id", last_event_id))
    return http.stream("GET", "/api/v1/realtime/stream", params=params, headers=headers)


def user_channel(tokens: dict[str, Any]) -> str:
    return f"user:{tokens['user']['id']}"
