"""SIGTERM to a real uvicorn process: open streams get reconnect advice and end, so the
server exits instead of waiting for them forever."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import TEST_SECRET
from tests.helpers import signed_up
from tests.kernel.realtime.conftest import (
    WAIT,
    SseEvent,
    SseReader,
    sse_request,
    user_channel,
)
from tests.live import free_port
from veche.settings import Settings

SHUTDOWN_TIMEOUT = 3.0  # the server's VECHE_REALTIME__SHUTDOWN_TIMEOUT_SECONDS


@pytest.fixture
def server_process(
    clean: None, settings: Settings, data_dir: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "VECHE_ENV": "test",
        "VECHE_DATA_DIR": str(data_dir),
        "VECHE_DATABASE_URL": settings.resolved_database_url,
        "VECHE_SECRET_KEY": TEST_SECRET,
        "VECHE_LOG_LEVEL": "warning",
        "VECHE_AUTH__ARGON2_MEMORY_KIB": "8192",
        "VECHE_AUTH__ARGON2_TIME_COST": "1",
        "VECHE_REALTIME__SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT),
    }
    for name in ("VECHE_REDIS_URL", "VECHE_REALTIME_URL", "VECHE_EVENTS_URL", "VECHE_APPS"):
        env.pop(name, None)
    command = [sys.executable, "-m", "uvicorn", "veche.server:create_app", "--factory"]
    process = subprocess.Popen(  # noqa: S603  (our own interpreter and arguments)
        [*command, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, "the server process exited"
            assert time.monotonic() < deadline, "the server process did not start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT)


async def test_sigterm_ends_open_streams_and_the_server_exits(
    server_process: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = server_process
    async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
        ann = await signed_up(http)
        async with sse_request(http, ann, user_channel(ann)) as response:
            reader = SseReader(response)
            await reader.next_of("subscribed")
            process.send_signal(signal.SIGTERM)
            final = await reader.next_of("reconnect")
            assert final.data["reason"] == "shutdown"
            assert await reader.next() is None  # a clean end of stream
    returncode = await asyncio.wait_for(asyncio.to_thread(process.wait), WAIT)
    # uvicorn re-raises the signal it captured once it has shut down cleanly.
    assert returncode in (0, -signal.SIGTERM)


# -- many clients at once ---------------------------------------------------------------

CLIENTS = 100  # per transport: 100 WebSocket and 100 SSE clients
USERS = 4  # clients share these users' tokens and `user:` channels
OPENING = 20  # clients connecting at the same moment
LONG = 60.0  # the bound on waits that depend on all 200 clients (a loaded 2-core machine)
EXIT_MARGIN = 5.0  # the process exits within its shutdown timeout plus this


async def _frame(socket: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = orjson.loads(await socket.recv())
    return frame


async def _websocket_client(
    ws_url: str, tokens: dict[str, Any], opening: asyncio.Semaphore, subscribed: Any
) -> tuple[dict[str, Any], int | None, list[dict[str, Any]]]:
    """Subscribes, then waits for the end: the reconnect frame, anything after it, and the
    close code."""
    async with contextlib.AsyncExitStack() as stack:
        async with opening:
            socket = await stack.enter_async_context(
                connect(ws_url, open_timeout=LONG, close_timeout=LONG, ping_interval=None)
            )
            await socket.send(
                orjson.dumps({"type": "auth", "token": tokens["access_token"]}).decode()
            )
            welcome = await asyncio.wait_for(_frame(socket), LONG)
            assert welcome["type"] == "welcome", welcome
            await socket.send(
                orjson.dumps({"type": "subscribe", "channel": user_channel(tokens)}).decode()
            )

            async def until_subscribed() -> dict[str, Any]:
                while (frame := await _frame(socket))["type"] not in ("subscribed", "error"):
                    pass
                return frame

            frame = await asyncio.wait_for(until_subscribed(), LONG)
            assert frame["type"] == "subscribed", frame
        subscribed()

        async def until_closed() -> tuple[dict[str, Any], int | None, list[dict[str, Any]]]:
            while (final := await _frame(socket))["type"] != "reconnect":
                pass
            after: list[dict[str, Any]] = []
            try:
                while True:
                    after.append(await _frame(socket))
            except ConnectionClosed as closed:
                return final, closed.rcvd.code if closed.rcvd else None, after

        return await asyncio.wait_for(until_closed(), LONG)


async def _sse_client(
    http: httpx.AsyncClient, tokens: dict[str, Any], opening: asyncio.Semaphore, subscribed: Any
) -> tuple[SseEvent, SseEvent | None]:
    """Subscribes, then waits for the end: the reconnect event and what follows it."""
    async with contextlib.AsyncExitStack() as stack:
        async with opening:
            response = await stack.enter_async_context(
                sse_request(http, tokens, user_channel(tokens))
            )
            assert response.status_code == 200, await response.aread()
            reader = SseReader(response)
            await reader.next_of("subscribed", within=LONG)
        subscribed()
        final = await reader.next_of("reconnect", within=LONG)
        return final, await reader.next(within=LONG)


async def test_sigterm_with_200_open_clients_ends_them_all_within_the_shutdown_timeout(
    server_process: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = server_process
    ws_url = url.replace("http://", "ws://") + "/api/v1/realtime/ws"
    opening = asyncio.Semaphore(OPENING)
    all_subscribed = asyncio.Event()
    count = 0

    def subscribed() -> None:
        nonlocal count
        count += 1
        if count == 2 * CLIENTS:
            all_subscribed.set()

    limits = httpx.Limits(max_connections=CLIENTS + 10)
    async with httpx.AsyncClient(base_url=url, timeout=LONG, limits=limits) as http:
        users = [
            await signed_up(http, email=f"user{index}@example.com", display_name=f"User {index}")
            for index in range(USERS)
        ]
        websockets = [
            asyncio.create_task(
                _websocket_client(ws_url, users[index % USERS], opening, subscribed)
            )
            for index in range(CLIENTS)
        ]
        streams = [
            asyncio.create_task(_sse_client(http, users[index % USERS], opening, subscribed))
            for index in range(CLIENTS)
        ]
        clients: list[asyncio.Task[Any]] = [*websockets, *streams]
        try:
            ready = asyncio.create_task(all_subscribed.wait())
            # A client that ends before the signal has failed: stop waiting for the rest.
            await asyncio.wait([ready, *clients], timeout=LONG, return_when="FIRST_COMPLETED")
            ready.cancel()
            if not all_subscribed.is_set():
                failed = [task.exception() for task in clients if task.done()]
                pytest.fail(
                    f"{count} of {2 * CLIENTS} clients subscribed; failures: {failed[:3]!r}"
                )

            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            returncode = await asyncio.wait_for(
                asyncio.to_thread(process.wait), SHUTDOWN_TIMEOUT + LONG
            )
            elapsed = time.monotonic() - started
            ws_results = await asyncio.wait_for(
                asyncio.gather(*websockets, return_exceptions=True), LONG
            )
            sse_results = await asyncio.wait_for(
                asyncio.gather(*streams, return_exceptions=True), LONG
            )
        finally:
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)

    # uvicorn re-raises the signal it captured once it has shut down cleanly.
    assert returncode in (0, -signal.SIGTERM)
    assert elapsed < SHUTDOWN_TIMEOUT + EXIT_MARGIN, f"exited {elapsed:.1f} s after SIGTERM"
    for result in ws_results:
        assert not isinstance(result, BaseException), repr(result)
        final, code, after = result
        assert final["reason"] == "shutdown", final
        assert code == 1012
        assert after == []
    for result in sse_results:
        assert not isinstance(result, BaseException), repr(result)
        final, end = result
        assert final.data["reason"] == "shutdown", final
        assert end is None  # a clean end of stream
