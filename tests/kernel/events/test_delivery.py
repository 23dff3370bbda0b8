"""Emitting, relaying and consuming: on the SQL outbox by default, on NATS JetStream
(and PostgreSQL) when the `VECHE_TEST_*` URLs are set."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.conftest import TEST_EVENTS_URL
from tests.events_app import EntryNoted, EntryRecorded, EntryVoided
from tests.kernel.events.conftest import eventually, handled_count
from veche.kernel import Kernel, utcnow
from veche.kernel.events import (
    ConsumerContext,
    DeadLetter,
    Event,
    InvalidEventPayload,
    OutboxEvent,
    UndeclaredEvent,
    consumer,
    emit,
)
from veche.kernel.events.consumers import handle_once
from veche.kernel.events.models import ProcessedEvent
from veche.settings import EventsSettings, Settings

AUDITED = "ledger.entry.audited"
JOURNAL = "ledger.journal"
StartApp = Callable[..., Awaitable[FastAPI]]


async def emit_entry(kernel: Kernel, amount: int = 1, note: str = "") -> Event:
    async with kernel.db.unit_of_work() as session:
        return await emit(session, "ledger.entry.recorded", EntryRecorded(amount=amount, note=note))


async def test_an_emitted_event_carries_the_envelope_and_is_delivered(
    ledger_app: StartApp,
) -> None:
    kernel: Kernel = (await ledger_app()).state.kernel
    async with kernel.db.unit_of_work() as session:
        event = await emit(
            session, "ledger.entry.recorded", {"amount": 5, "note": "rent"}, subject="acct-1"
        )

    assert (event.type, event.source, event.subject) == (
        "ledger.entry.recorded",
        "ledger",
        "acct-1",
    )
    assert event.schema_version == 2
    assert event.id.version == 7
    assert event.data == {"amount": 5, "note": "rent"}

    async def delivered() -> bool:
        return await handled_count(kernel, AUDITED, event.id) == 1

    await eventually(delivered)
    async with kernel.db.sessions() as session:
        row = await session.get(OutboxEvent, event.id)
    assert row is not None
    assert row.published_at is not None


async def test_a_consumer_of_several_types_never_sees_another_type_of_the_app(
    ledger_app: StartApp,
) -> None:
    """NATS servers before 2.10 ignore a consumer's several filter subjects and deliver the
    app's whole stream: the kernel skips what the consumer did not ask for."""
    kernel: Kernel = (await ledger_app()).state.kernel
    async with kernel.db.unit_of_work() as session:
        noted = await emit(session, "ledger.entry.noted", EntryNoted(entry_id="e-1"))
    recorded = await emit_entry(kernel, 3)

    async def journaled() -> bool:
        return await handled_count(kernel, JOURNAL, recorded.id) == 1

    # The stream keeps the order: once the later event is journaled the earlier is decided.
    await eventually(journaled)
    assert await handled_count(kernel, JOURNAL, noted.id) == 0


async def test_an_event_emitted_in_a_rolled_back_transaction_is_never_delivered(
    ledger_app: StartApp,
) -> None:
    kernel: Kernel = (await ledger_app()).state.kernel

    async def failing_change() -> Event:
        async with kernel.db.unit_of_work() as session:
            event = await emit(session, "ledger.entry.recorded", {"amount": 1})
            failed.append(event)
            raise RuntimeError("the change failed")

    failed: list[Event] = []
    with pytest.raises(RuntimeError):
        await failing_change()
    [rolled_back] = failed
    committed = await emit_entry(kernel, 2)

    async def committed_delivered() -> bool:
        return (
            await handled_count(kernel, AUDITED, committed.id) == 1
            and await handled_count(kernel, JOURNAL, committed.id) == 1
        )

    # Consumers read in order, so once the later event is handled the earlier is decided.
    await eventually(committed_delivered)
    assert await handled_count(kernel, AUDITED, rolled_back.id) == 0
    assert await handled_count(kernel, JOURNAL, rolled_back.id) == 0
    async with kernel.db.sessions() as session:
        assert await session.get(OutboxEvent, rolled_back.id) is None


async def test_events_emitted_while_consumers_are_stopped_arrive_after_restart(
    ledger_app: StartApp, app_factory: Callable[..., Awaitable[FastAPI]], events_settings: object
) -> None:
    from tests.events_app import module as ledger_module
    from veche.kernel import build_app

    first = build_app(events_settings, [ledger_module])  # type: ignore[arg-type]
    lifespan = first.router.lifespan_context(first)
    await lifespan.__aenter__()
    first_kernel: Kernel = first.state.kernel
    early = await emit_entry(first_kernel, 1)

    async def early_delivered() -> bool:
        return await handled_count(first_kernel, AUDITED, early.id) == 1

    await eventually(early_delivered)
    await lifespan.__aexit__(None, None, None)

    # An API-only process emits while no worker runs.
    api: Kernel = (await ledger_app(role="api")).state.kernel
    waiting = [await emit_entry(api, amount) for amount in (10, 20, 30)]
    async with api.db.unit_of_work() as session:
        voided = await emit(session, "ledger.entry.voided", EntryVoided(entry_id="x"))

    worker: Kernel = (await ledger_app(role="worker")).state.kernel

    async def all_delivered() -> bool:
        counts = [await handled_count(worker, AUDITED, event.id) for event in waiting]
        return counts == [1, 1, 1] and await handled_count(worker, JOURNAL, voided.id) == 1

    await eventually(all_delivered)
    assert await handled_count(worker, AUDITED, early.id) == 1  # not repeated
    for event in [*waiting, voided]:
        assert await handled_count(worker, JOURNAL, event.id) == 1


async def test_a_redelivered_event_changes_the_database_once(ledger_app: StartApp) -> None:
    kernel: Kernel = (await ledger_app(role="api")).state.kernel
    auditor = kernel.events.consumers["ledger-auditor"]
    event = Event(type="ledger.entry.recorded", source="ledger", data={"amount": 3})

    assert await handle_once(kernel, auditor, event, 1) is True
    assert await handle_once(kernel, auditor, event, 2) is False
    assert await handled_count(kernel, AUDITED, event.id) == 1


async def test_a_failing_handler_is_retried_then_dead_lettered_without_blocking(
    ledger_app: StartApp,
) -> None:
    from tests.events_app import FAILING_NOTES

    kernel: Kernel = (await ledger_app()).state.kernel
    FAILING_NOTES.add("poison-1")
    try:
        poison = await emit_entry(kernel, 1, note="poison-1")
        later = await emit_entry(kernel, 2, note="fine")

        async def later_delivered() -> bool:
            return await handled_count(kernel, AUDITED, later.id) == 1

        await eventually(later_delivered)
    finally:
        FAILING_NOTES.discard("poison-1")
    async with kernel.db.sessions() as session:
        letters = (await session.scalars(select(DeadLetter))).all()
    assert [(letter.consumer, letter.event_id) for letter in letters] == [
        ("ledger-auditor", poison.id)
    ]
    assert letters[0].attempts == 3
    assert letters[0].error_type == "AuditorRefused"
    assert "poison-1" in letters[0].error_message
    assert await handled_count(kernel, AUDITED, poison.id) == 0
    assert await handled_count(kernel, JOURNAL, poison.id) == 1  # other consumers unaffected


async def test_undeclared_types_and_invalid_payloads_are_refused(ledger_app: StartApp) -> None:
    kernel: Kernel = (await ledger_app(role="api")).state.kernel
    async with kernel.db.unit_of_work() as session:
        with pytest.raises(UndeclaredEvent):
            await emit(session, "ledger.entry.exploded", {"amount": 1})
        with pytest.raises(UndeclaredEvent):
            await emit(session, "other.entry.recorded", {"amount": 1})
        with pytest.raises(InvalidEventPayload):
            await emit(session, "ledger.entry.recorded", {"amount": "lots"})
        with pytest.raises(InvalidEventPayload):
            await emit(session, "ledger.entry.recorded", {"amount": 1, "extra": True})
        with pytest.raises(InvalidEventPayload):
            await emit(session, "ledger.entry.recorded", EntryVoided(entry_id="x"))
    async with kernel.db.sessions() as session:
        assert (await session.scalars(select(OutboxEvent))).all() == []


async def test_a_commit_wakes_the_relay_and_consumers_without_polling(
    ledger_app: StartApp, events_settings: Settings
) -> None:
    hourly = events_settings.events.model_copy(update={"poll_interval_seconds": 3600.0})
    kernel: Kernel = (await ledger_app(events=hourly)).state.kernel
    event = await emit_entry(kernel, 4)

    async def delivered() -> bool:
        return await handled_count(kernel, JOURNAL, event.id) == 1

    await eventually(delivered)


async def test_on_sqlite_the_log_takes_rows_in_emit_order_as_they_commit(
    ledger_app: StartApp, events_settings: Settings
) -> None:
    """The embedded log on SQLite: each row's INSERT gives it the next position, so the
    events of one transaction are consecutive and published at their commit, with no
    relay transaction (the relay would set `published_at` to its own time)."""
    kernel: Kernel = (await ledger_app()).state.kernel
    if kernel.events.external or kernel.db.dialect != "sqlite":
        pytest.skip("positions at emit are the embedded log's on SQLite")
    assert kernel.events.registry.positions_at_emit
    async with kernel.db.unit_of_work() as session:
        first = await emit(session, "ledger.entry.recorded", EntryRecorded(amount=1))
        second = await emit(session, "ledger.entry.voided", EntryVoided(entry_id="e"))
        third = await emit(session, "ledger.entry.recorded", EntryRecorded(amount=3))
    later = await emit_entry(kernel, 4)
    async with kernel.db.sessions() as session:
        rows = (await session.scalars(select(OutboxEvent).order_by(OutboxEvent.log_position))).all()
    assert [row.id for row in rows] == [first.id, second.id, third.id, later.id]
    assert [row.log_position for row in rows] == [1, 2, 3, 4]
    assert [row.published_at for row in rows] == [first.time, second.time, third.time, later.time]

    async def journaled() -> bool:
        return await handled_count(kernel, JOURNAL, later.id) == 1

    await eventually(journaled)


async def test_the_relay_publishes_rows_written_without_a_position(ledger_app: StartApp) -> None:
    """How the embedded log works on PostgreSQL, whose writers run concurrently: rows are
    written without a position and the relay numbers them in commit order. Here on any
    database, with positions at emit turned off."""
    kernel: Kernel = (await ledger_app()).state.kernel
    if kernel.events.external:
        pytest.skip("the embedded log's relay")
    kernel.events.registry.positions_at_emit = False
    events = [await emit_entry(kernel, amount) for amount in (1, 2, 3)]

    async def delivered() -> bool:
        counts = [await handled_count(kernel, AUDITED, event.id) for event in events]
        return counts == [1, 1, 1]

    await eventually(delivered)
    async with kernel.db.sessions() as session:
        rows = (await session.scalars(select(OutboxEvent).order_by(OutboxEvent.log_position))).all()
    assert [row.id for row in rows] == [event.id for event in events]
    assert all(row.published_at is not None for row in rows)


async def test_event_metrics_are_exported(ledger_app: StartApp) -> None:
    app = await ledger_app()
    kernel: Kernel = app.state.kernel
    event = await emit_entry(kernel, 6)

    async def delivered() -> bool:
        return await handled_count(kernel, JOURNAL, event.id) == 1

    await eventually(delivered)
    from tests.conftest import client_for

    async with client_for(app) as client:
        text = (await client.get("/metrics")).text
    for name in (
        'veche_events_emitted_total{type="ledger.entry.recorded"}',
        'veche_events_published_total{type="ledger.entry.recorded"}',
        'veche_events_consumed_total{consumer="ledger-journal",type="ledger.entry.recorded"}',
        'veche_events_consumer_lag{consumer="ledger-journal"}',
        'veche_events_end_to_end_seconds_count{consumer="ledger-journal"}',
    ):
        assert name in text


@pytest.mark.skipif(not TEST_EVENTS_URL, reason="needs NATS JetStream (VECHE_TEST_EVENTS_URL)")
async def test_jetstream_drops_a_second_publish_of_the_same_event(ledger_app: StartApp) -> None:
    kernel: Kernel = (await ledger_app(role="api")).state.kernel
    event = await emit_entry(kernel, 8)
    backend: Any = kernel.events.backend
    async with kernel.db.sessions() as session:
        row = await session.get(OutboxEvent, event.id)
        assert row is not None
        await backend.publish(session, [row])
        await backend.publish(session, [row])  # a relay that crashed before marking it sent
    js = await backend.jetstream()
    info = await js.stream_info(backend.stream_name("ledger"))
    assert info.state.messages == 1


async def test_a_batch_with_a_failing_event_handles_the_rest_once_and_in_order(
    ledger_app: StartApp,
) -> None:
    from tests.events_app import FAILING_NOTES
    from veche.kernel import AuditEvent

    api: Kernel = (await ledger_app(role="api")).state.kernel
    notes = [f"n{index}" for index in range(30)]
    notes[12] = "poison-batch"
    async with api.db.unit_of_work() as session:
        events = [
            await emit(session, "ledger.entry.recorded", EntryRecorded(amount=i, note=note))
            for i, note in enumerate(notes)
        ]
    FAILING_NOTES.add("poison-batch")
    try:
        worker: Kernel = (await ledger_app(role="worker")).state.kernel

        async def settled() -> bool:
            async with worker.db.sessions() as session:
                letters = (await session.scalars(select(DeadLetter))).all()
            return len(letters) == 1 and await handled_count(worker, AUDITED, events[-1].id) == 1

        await eventually(settled)
    finally:
        FAILING_NOTES.discard("poison-batch")
    async with worker.db.sessions() as session:
        audited = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == AUDITED).order_by(AuditEvent.id)
            )
        ).all()
    expected = [str(event.id) for event in events if event is not events[12]]
    assert [row.target_id for row in audited] == expected  # once each, in log order


async def test_a_batch_read_before_a_rewind_never_undoes_it(ledger_app: StartApp) -> None:
    from veche.kernel.events import ConsumerOffset
    from veche.kernel.events.backends.sql import _advance
    from veche.kernel.events.consumers import StaleBatch, handle_batch

    kernel: Kernel = (await ledger_app(role="api")).state.kernel
    if kernel.events.external:
        pytest.skip("the SQL log's offsets; JetStream keeps its own")
    auditor = kernel.events.consumers["ledger-auditor"]
    events = [await emit_entry(kernel, amount) for amount in (1, 2, 3)]
    async with kernel.db.unit_of_work() as session:
        session.add(ConsumerOffset(consumer="ledger-auditor", log_position=2))
    # A batch that read the offset as 0 (before the offset moved to 2) tries to commit.
    with pytest.raises(StaleBatch):
        await handle_batch(kernel, auditor, events, _advance(auditor, 0, 3))
    async with kernel.db.sessions() as session:
        offset = await session.get(ConsumerOffset, "ledger-auditor")
        assert offset is not None
        assert offset.log_position == 2
    for event in events:  # the handlers' work rolled back with it
        assert await handled_count(kernel, AUDITED, event.id) == 0
    assert await handle_batch(kernel, auditor, events[2:], _advance(auditor, 2, 3)) is True
    assert await handled_count(kernel, AUDITED, events[2].id) == 1


async def test_a_consumer_reads_past_other_types_and_again_after_a_rewind(
    ledger_app: StartApp,
) -> None:
    """The auditor reads only `recorded`: the voided entries between are looked through
    once (the log backend remembers how far), and a rewind still brings its events back."""
    kernel: Kernel = (await ledger_app()).state.kernel
    auditor = kernel.events.consumers["ledger-auditor"]

    async def void(count: int) -> None:
        for n in range(count):
            async with kernel.db.unit_of_work() as session:
                await emit(session, "ledger.entry.voided", EntryVoided(entry_id=f"e-{n}"))

    since = utcnow()
    await void(5)
    first = await emit_entry(kernel, 1)
    await eventually(lambda: _handled(kernel, first.id, 1))
    await void(5)
    second = await emit_entry(kernel, 2)
    await eventually(lambda: _handled(kernel, second.id, 1))
    assert await kernel.events.backend.lag(kernel, auditor) == 0

    await kernel.events.backend.rewind(kernel, auditor, since)
    await eventually(lambda: _handled(kernel, first.id, 2))
    await eventually(lambda: _handled(kernel, second.id, 2))


async def _handled(kernel: Kernel, event_id: object, times: int) -> bool:
    return await handled_count(kernel, AUDITED, event_id) == times  # type: ignore[arg-type]


# -- a consumer declared idempotent ---------------------------------------------------------

COUNTED: list[UUID] = []


@consumer("ledger.entry.recorded", name="ledger-counter", idempotent=True)
async def count_entry(event: Event, _context: ConsumerContext) -> None:
    """Writes nothing: running it twice for an event would change nothing that matters."""
    if event.parse(EntryRecorded).note.startswith("poison"):
        raise RuntimeError("the counter refuses poison")
    COUNTED.append(event.id)


@pytest.fixture
def counting_app(
    app_factory: Callable[..., Awaitable[FastAPI]], events_settings: Settings, streams: None
) -> Callable[[], Awaitable[FastAPI]]:
    from tests.events_app import module as ledger_module

    counting = dataclasses.replace(ledger_module, consumers=[*ledger_module.consumers, count_entry])
    COUNTED.clear()

    async def start() -> FastAPI:
        return await app_factory(events_settings, [counting])

    return start


async def processed_rows(kernel: Kernel, consumer_name: str) -> int:
    async with kernel.db.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(ProcessedEvent)
            .where(ProcessedEvent.consumer == consumer_name)
        )
    return int(count or 0)


async def test_an_idempotent_consumer_keeps_no_processed_rows_and_moves_on(
    counting_app: Callable[[], Awaitable[FastAPI]],
) -> None:
    kernel: Kernel = (await counting_app()).state.kernel
    events = [await emit_entry(kernel, amount) for amount in (1, 2, 3)]
    counter = kernel.events.consumers["ledger-counter"]

    async def all_counted_and_audited() -> bool:
        audited = [await handled_count(kernel, AUDITED, event.id) for event in events]
        return sorted(COUNTED) == sorted(event.id for event in events) and audited == [1, 1, 1]

    await eventually(all_counted_and_audited)

    async def caught_up() -> bool:
        return await kernel.events.backend.lag(kernel, counter) == 0

    await eventually(caught_up)  # its offset, or its acknowledgements, moved past them
    assert sorted(COUNTED) == sorted(event.id for event in events)  # each once
    assert await processed_rows(kernel, "ledger-counter") == 0
    assert await processed_rows(kernel, "ledger-auditor") == 3


async def test_an_idempotent_consumer_is_retried_and_dead_lettered_like_any_other(
    counting_app: Callable[[], Awaitable[FastAPI]],
) -> None:
    kernel: Kernel = (await counting_app()).state.kernel
    poison = await emit_entry(kernel, 1, note="poison-count")
    later = await emit_entry(kernel, 2)

    async def later_counted() -> bool:
        return later.id in COUNTED

    await eventually(later_counted)
    async with kernel.db.sessions() as session:
        letters = (
            await session.scalars(select(DeadLetter).where(DeadLetter.consumer == "ledger-counter"))
        ).all()
    assert [(letter.event_id, letter.attempts) for letter in letters] == [(poison.id, 3)]
    assert poison.id not in COUNTED
    assert await processed_rows(kernel, "ledger-counter") == 0


# -- a consumer not woken by this process's commits -----------------------------------------

POLLED: list[UUID] = []


@consumer("ledger.entry.recorded", name="ledger-poller", idempotent=True, wake_on_commit=False)
async def poll_entry(event: Event, _context: ConsumerContext) -> None:
    POLLED.append(event.id)


@pytest.mark.skipif(bool(TEST_EVENTS_URL), reason="the embedded log's wake-ups (NATS pushes)")
async def test_a_consumer_not_woken_by_commits_reads_on_its_poll(
    app_factory: Callable[..., Awaitable[FastAPI]], settings_factory: Callable[..., Settings]
) -> None:
    from tests.events_app import module as ledger_module

    polling = dataclasses.replace(ledger_module, consumers=[*ledger_module.consumers, poll_entry])
    POLLED.clear()
    slow_poll = settings_factory(events=EventsSettings(poll_interval_seconds=2.0))
    kernel: Kernel = (await app_factory(slow_poll, [polling])).state.kernel

    first = await emit_entry(kernel, 1)

    async def first_polled() -> bool:
        return first.id in POLLED

    await eventually(first_polled)  # its first batch at start, or its next poll
    second = await emit_entry(kernel, 2)

    async def second_audited() -> bool:
        return await handled_count(kernel, AUDITED, second.id) == 1

    await eventually(second_audited)  # the auditor is woken by the commit
    await asyncio.sleep(0.3)
    assert second.id not in POLLED  # the poller waits for its poll, 2 s after its last read

    async def second_polled() -> bool:
        return second.id in POLLED

    await eventually(second_polled)
    polled = list(POLLED)
    assert polled == [first.id, second.id]
