"""Fixtures of the durable-events tests: settings with fast retries and a NATS stream
prefix of their own (streams deleted afterwards), apps with the test ledger module, and
bounded polling helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.conftest import TEST_EVENTS_URL
from tests.events_app import module as ledger_module
from veche.kernel import AuditEvent, Kernel
from veche.kernel.db import new_id
from veche.settings import EventsSettings, Settings

TIMEOUT = 20.0


@pytest.fixture
def events_settings(settings_factory: Callable[..., Settings]) -> Settings:
    prefix = f"t{new_id().hex[-12:]}"
    return settings_factory(
        events=EventsSettings(
            max_attempts=3,
            retry_base_seconds=0.01,
            retry_max_seconds=0.05,
            poll_interval_seconds=0.2,
            stream_prefix=prefix,
        )
    )


@pytest.fixture
async def streams(events_settings: Settings) -> AsyncIterator[None]:
    """Deletes this test's JetStream streams (and their consumers) afterwards."""
    yield
    if not TEST_EVENTS_URL:
        return
    import nats

    client = await nats.connect(TEST_EVENTS_URL)
    try:
        js = client.jetstream()
        prefix = events_settings.events.stream_prefix.upper() + "_"
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix):
                await js.delete_stream(info.config.name)
    finally:
        await client.close()


@pytest.fixture
def ledger_app(
    app_factory: Callable[..., Awaitable[FastAPI]], events_settings: Settings, streams: None
) -> Callable[..., Awaitable[FastAPI]]:
    """Starts an app with the ledger module; `role="api"` runs no relay or consumers."""

    async def start(**overrides: Any) -> FastAPI:
        settings = events_settings.model_copy(update=overrides)
        return await app_factory(settings, [ledger_module])

    return start


async def eventually(check: Callable[[], Awaitable[bool]], within: float = TIMEOUT) -> None:
    """Poll `check` until it holds; fail after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{check.__name__} did not hold within {within}s")
        await asyncio.sleep(0.02)


async def handled_count(kernel: Kernel, action: str, event_id: UUID) -> int:
    async with kernel.db.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == action, AuditEvent.target_id == str(event_id))
        )
    return int(count or 0)
