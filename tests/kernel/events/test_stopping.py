"""Stopping the bus between units of work: a consumer's batch in hand commits before the
stop returns; a handler that outlasts the shutdown grace is cancelled and its event is
handled at the next start; a retry's backoff ends with the stop, and the event waits for
the next start instead of being dead-lettered. On the SQL log by default, on NATS
JetStream when `VECHE_TEST_EVENTS_URL` is set."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.events_app import FAILING_NOTES, GATES, SEEN_NOTES
from tests.kernel.events.conftest import eventually, handled_count
from tests.kernel.events.test_delivery import AUDITED, emit_entry
from veche.kernel import Kernel
from veche.kernel.events import DeadLetter
from veche.settings import Settings

StartApp = Callable[..., Awaitable[FastAPI]]
STOP_BOUND = 10.0


@pytest.fixture(autouse=True)
def _reset_the_auditor() -> Iterator[None]:
    yield
    for gate in GATES.values():
        gate.set()
    GATES.clear()
    SEEN_NOTES.clear()


async def seen(note: str, times: int = 1) -> None:
    async def audited_enough() -> bool:
        return SEEN_NOTES.count(note) >= times

    await eventually(audited_enough)


def logged(capsys: pytest.CaptureFixture[str], event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    return [entry for entry in lines if entry.get("event") == event]


async def dead_letters(kernel: Kernel) -> int:
    async with kernel.db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(DeadLetter)) or 0)


async def test_a_stop_waits_for_the_batch_in_hand_to_commit(ledger_app: StartApp) -> None:
    GATES["held"] = asyncio.Event()
    kernel: Kernel = (await ledger_app()).state.kernel
    event = await emit_entry(kernel, 1, note="held")
    await seen("held")

    stopping = asyncio.create_task(kernel.events.stop())
    await asyncio.sleep(0.3)
    assert not stopping.done()  # the handler in progress is not cut short
    GATES["held"].set()
    await asyncio.wait_for(stopping, STOP_BOUND)

    assert await handled_count(kernel, AUDITED, event.id) == 1
    assert await dead_letters(kernel) == 0


async def test_a_handler_past_the_grace_is_cancelled_and_its_event_handled_after_restart(
    ledger_app: StartApp, events_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # A short acknowledgement wait: on NATS, the cancelled delivery comes back after it.
    events = events_settings.events.model_copy(update={"ack_wait_seconds": 1.0})
    GATES["stuck"] = asyncio.Event()
    kernel: Kernel = (await ledger_app(events=events, shutdown_grace_seconds=0.3)).state.kernel
    event = await emit_entry(kernel, 1, note="stuck")
    await seen("stuck")

    await asyncio.wait_for(kernel.events.stop(), STOP_BOUND)

    assert await handled_count(kernel, AUDITED, event.id) == 0
    warnings = logged(capsys, "stop_grace_exceeded")
    assert [warning["cancelled"] for warning in warnings] == [["events:ledger-auditor"]]

    GATES["stuck"].set()
    restarted: Kernel = (await ledger_app(events=events)).state.kernel

    async def handled_once() -> bool:
        return await handled_count(restarted, AUDITED, event.id) == 1

    await eventually(handled_once)
    assert await dead_letters(restarted) == 0


async def test_a_stop_ends_a_retry_backoff_and_the_event_waits_for_the_next_start(
    ledger_app: StartApp, events_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Retries a minute apart and a grace longer than the bound: only ending the backoff
    # lets the stop return in time.
    events = events_settings.events.model_copy(
        update={"retry_base_seconds": 60.0, "retry_max_seconds": 60.0, "ack_wait_seconds": 1.0}
    )
    FAILING_NOTES.add("flaky")
    try:
        kernel: Kernel = (
            await ledger_app(events=events, shutdown_grace_seconds=STOP_BOUND * 3)
        ).state.kernel
        event = await emit_entry(kernel, 1, note="flaky")
        # Refused in its batch, then on its first attempt alone: now waiting to retry.
        await seen("flaky", times=2)
        await asyncio.sleep(0.1)

        await asyncio.wait_for(kernel.events.stop(), STOP_BOUND)
    finally:
        FAILING_NOTES.discard("flaky")

    assert await handled_count(kernel, AUDITED, event.id) == 0
    assert await dead_letters(kernel) == 0
    assert logged(capsys, "stop_grace_exceeded") == []

    restarted: Kernel = (await ledger_app(events=events)).state.kernel

    async def handled_once() -> bool:
        return await handled_count(restarted, AUDITED, event.id) == 1

    await eventually(handled_once)
    assert await dead_letters(restarted) == 0
