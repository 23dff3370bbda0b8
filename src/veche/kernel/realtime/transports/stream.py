"""SSE and NDJSON: one-way streams of the hub's frames over a plain HTTP response.

Both authenticate with `Authorization: Bearer`, refuse a channel the user may not read
before the stream starts (problem+json), resume from a token that carries the stream's
position in every channel, send heartbeats, and end with a `reconnect` frame when the
server stops or the client falls too far behind, or with a `reauth` frame when the access
token that opened the stream expires or its session is signed out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import StringConstraints
from starlette.types import Receive, Scope, Send

from veche.kernel.errors import problem_openapi
from veche.kernel.http import api_router
from veche.kernel.identity.deps import CurrentUser, bearer_scheme
from veche.kernel.identity.models import User
from veche.kernel.ratelimit import rate_limit
from veche.kernel.realtime.connection import AUTH_REASONS, CLOSED, Connection, Outgoing
from veche.kernel.realtime.hub import Hub
from veche.kernel.realtime.message import Position
from veche.kernel.realtime.transports.auth import session_check, token_expiry
from veche.kernel.runtime import Kernel

router = api_router("/api/v1/realtime", tags=["realtime"])

# Bounded so a request always fits the server's request-line limit (uvicorn answers an
# over-long one itself, in plain text); the hub's own `max_channels` is usually lower.
ChannelName = Annotated[str, StringConstraints(min_length=1, max_length=240)]
Channels = Annotated[
    list[ChannelName],
    Query(
        alias="channel",
        min_length=1,
        max_length=64,
        description="A channel to subscribe to; repeat for several (`?channel=a&channel=b`)",
    ),
]
_RESPONSES = problem_openapi(400, 401, 403, 422, 429, 503)
# Opening a stream costs a policy check and a history read: limited like other requests.
_LIMIT = [Depends(rate_limit("default"))]
# The bearer token `CurrentUser` authenticated (FastAPI resolves the scheme once).
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def _kernel(request: Request) -> Kernel:
    kernel: Kernel = request.app.state.kernel
    return kernel


async def _open(
    kernel: Kernel,
    user: User,
    bearer: HTTPAuthorizationCredentials | None,
    transport: str,
    channels: list[str],
    resume_token: str | None,
) -> Connection:
    hub = kernel.realtime
    positions: dict[str, Position] = hub.tokens.decode(resume_token) if resume_token else {}
    unique = list(dict.fromkeys(channels))
    assert bearer is not None  # `CurrentUser` refused the request otherwise
    expires_at = token_expiry(kernel, bearer.credentials)
    connection = hub.open(user, transport, kernel)
    try:
        hub.track_expiry(
            connection, expires_at, session_check(kernel, bearer.credentials), warn=False
        )
        await hub.authorize(connection, unique)
        for channel in unique:
            await hub.subscribe(connection, channel, positions.get(channel))
    except BaseException:
        hub.disconnect(connection)
        raise
    return connection


def _advice(hub: Hub, connection: Connection, last: Outgoing | None) -> dict[str, object]:
    reason = connection.close_reason or "shutdown"
    frame: dict[str, object]
    if reason in AUTH_REASONS:
        # Reconnect with a fresh access token (and this resume token): nothing is lost.
        frame = {"type": "reauth", "reason": reason}
    else:
        frame = {"type": "reconnect", "reason": reason, "retry_ms": hub.settings.sse_retry_ms}
    if last is not None:
        frame["resume_token"] = hub.resume_token(last.positions)
    return frame


# Frames already queued that go out in one write (a burst costs one send, not one each).
_WRITE_BATCH = 64
_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class HubStream(Response):
    """A connection's frames as a streaming HTTP response.

    One coroutine per stream writes frames as the hub queues them, with no generator
    chain or task group in between; frames already waiting go out in one write; a client
    that goes away ends the stream through a watcher on `receive`. The stream always
    ends with the closing advice of `render_end` and leaves the hub.
    """

    def __init__(
        self,
        hub: Hub,
        connection: Connection,
        media_type: str,
        render: Callable[[Outgoing | None], bytes],
        render_end: Callable[[dict[str, object], Outgoing | None], bytes],
        preamble: bytes = b"",
    ) -> None:
        # No `Response.__init__`: it would declare an empty body's Content-Length.
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(_HEADERS)
        self.hub = hub
        self.connection = connection
        self.render_frame = render
        self.render_end = render_end
        self.preamble = preamble

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection = self.connection
        watcher = asyncio.ensure_future(_watch_disconnect(receive, connection))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if self.preamble:
                await send({"type": "http.response.body", "body": self.preamble, "more_body": True})
            await self._write(send)
        except OSError:
            pass  # the client is gone (servers of ASGI spec 2.4 say so on send)
        finally:
            watcher.cancel()
            self.hub.disconnect(connection)

    async def _write(self, send: Send) -> None:
        connection, render = self.connection, self.render_frame
        last: Outgoing | None = None
        while True:
            item = await connection.next()
            if item is CLOSED:
                end = self.render_end(_advice(self.hub, connection, last), last)
                await send({"type": "http.response.body", "body": end, "more_body": False})
                return
            if isinstance(item, Outgoing):
                batch = [item, *connection.ready(_WRITE_BATCH)]
                last = batch[-1]
                chunk = render(item) if len(batch) == 1 else b"".join(map(render, batch))
            else:
                chunk = render(None)  # a heartbeat
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _watch_disconnect(receive: Receive, connection: Connection) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    connection.close("goodbye")


@router.get(
    "/sse",
    responses={**_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
    response_class=HubStream,
    status_code=200,  # HubStream's constructor declares none for the schema to read
    dependencies=_LIMIT,
)
async def sse(
    request: Request,
    user: CurrentUser,
    bearer: Bearer,
    channels: Channels,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="The last `id:` seen")
    ] = None,
) -> HubStream:
    """Server-sent events: each event's `id:` is the resume token; reconnecting with it in
    `Last-Event-ID` delivers exactly the missed messages. The stream ends with a `reauth`
    event when the access token expires or its session is signed out."""
    kernel = _kernel(request)
    hub = kernel.realtime
    connection = await _open(kernel, user, bearer, "sse", channels, last_event_id or None)

    def encode(frame: dict[str, Any], token: str) -> bytes:
        data = orjson.dumps(frame)
        return f"id: {token}\nevent: {frame['type']}\ndata: ".encode() + data + b"\n\n"

    def render(item: Outgoing | None) -> bytes:
        if item is None:
            return b": heartbeat\n\n"
        return hub.encoded.get("sse", item.frame, hub.resume_token(item.positions), encode)

    def render_end(advice: dict[str, object], last: Outgoing | None) -> bytes:
        head = f"id: {advice['resume_token']}\n" if last is not None else ""
        kind = advice["type"]
        return f"{head}event: {kind}\ndata: ".encode() + orjson.dumps(advice) + b"\n\n"

    preamble = f"retry: {hub.settings.sse_retry_ms}\n\n".encode()
    return HubStream(hub, connection, "text/event-stream", render, render_end, preamble)


@router.get(
    "/stream",
    responses={**_RESPONSES, 200: {"content": {"application/x-ndjson": {}}}},
    response_class=HubStream,
    status_code=200,  # HubStream's constructor declares none for the schema to read
    dependencies=_LIMIT,
)
async def ndjson(
    request: Request,
    user: CurrentUser,
    bearer: Bearer,
    channels: Channels,
    last_event_id: Annotated[
        str | None,
        Query(max_length=4096, description="A `resume_token` from an earlier stream"),
    ] = None,
) -> HubStream:
    """Newline-delimited JSON: one frame per line, each carrying `resume_token`."""
    kernel = _kernel(request)
    hub = kernel.realtime
    connection = await _open(kernel, user, bearer, "ndjson", channels, last_event_id or None)

    def encode(frame: dict[str, Any], token: str) -> bytes:
        return orjson.dumps({**frame, "resume_token": token}) + b"\n"

    def render(item: Outgoing | None) -> bytes:
        if item is None:
            return b'{"type":"heartbeat"}\n'
        return hub.encoded.get("ndjson", item.frame, hub.resume_token(item.positions), encode)

    def render_end(advice: dict[str, object], last: Outgoing | None) -> bytes:
        return orjson.dumps(advice) + b"\n"

    return HubStream(hub, connection, "application/x-ndjson", render, render_end)


# What an app's renderer gets: a hub frame (`message`, `subscribed`, ...) with the resume
# token after it, `None` for a heartbeat; and the closing advice (`reconnect`/`reauth`).
FrameRenderer = Callable[[dict[str, Any] | None, str | None], bytes]


async def ndjson_stream(
    request: Request,
    user: User,
    bearer: HTTPAuthorizationCredentials | None,
    channels: list[str],
    resume_token: str | None,
    render: FrameRenderer,
) -> HubStream:
    """An NDJSON stream of `channels` for an app's own endpoint, in the app's own frame
    shape: the same authorization, resume, heartbeats and closing advice as `/stream`.
    The app checks its own ownership rules first; the channel policy is checked here too."""
    kernel = _kernel(request)
    hub = kernel.realtime
    connection = await _open(kernel, user, bearer, "ndjson", channels, resume_token or None)

    def render_item(item: Outgoing | None) -> bytes:
        if item is None:
            return render(None, None)
        return render(item.frame, hub.resume_token(item.positions))

    def render_end(advice: dict[str, object], last: Outgoing | None) -> bytes:
        token = advice.get("resume_token")
        return render(dict(advice), token if isinstance(token, str) else None)

    return HubStream(hub, connection, "application/x-ndjson", render_item, render_end)
