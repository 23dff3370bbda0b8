"""SIGTERM to a real uvicorn process: open streams get reconnect advice and end, so the
server exits instead of waiting for them forever."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.helpers import signed_up
from tests.kernel.realtime.conftest import WAIT, SseReader, sse_request, user_channel
from tests.live import free_port
from veche.settings import Settings


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
        "VECHE_REALTIME__SHUTDOWN_TIMEOUT_SECONDS": "3",
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
