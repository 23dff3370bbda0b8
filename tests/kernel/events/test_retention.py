"""Retention: the prune job deletes old published outbox rows and old processed rows,
in bounded batches, never what a consumer still has to read; a rewind refuses to start
before what the log still holds. Row ages are set by moving their times back."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from sqlalchemy import delete, event, func, select

from tests.conftest import client_for
from tests.events_app import EntryVoided
from tests.helpers import assert_problem
from tests.kernel.events.conftest import eventually
from tests.kernel.events.test_delivery import emit_entry
from tests.kernel.events.test_routes import BASE, admin_client
from veche.kernel import Kernel
from veche.kernel.db import new_id, utcnow
from veche.kernel.events import ConsumerOffset, OutboxEvent, ProcessedEvent, emit
from veche.kernel.events.retention import PRUNE_JOB, PruneResult, prune
from veche.kernel.jobs import JobLease
from veche.settings import Settings

StartApp = Callable[..., Awaitable[FastAPI]]
DAY = dt.timedelta(days=1)


async def relay_all(kernel: Kernel) -> None:
    """Until every row is published (an API process's own relay may hold a batch)."""
    while True:
        await kernel.events.relay_once()
        async with kernel.db.sessions() as session:
            unpublished = await session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None))
            )
        if not unpublished:
            return
        await asyncio.sleep(0.01)


async def age(kernel: Kernel, event_ids: Iterable[UUID], by: dt.timedelta) -> None:
    """Move the events' occurrence (and publication, if published) `by` into the past."""
    ids = list(event_ids)
    async with kernel.db.unit_of_work() as session:
        for row in await session.scalars(select(OutboxEvent).where(OutboxEvent.id.in_(ids))):
            row.occurred_at -= by
            if row.published_at is not None:
                row.published_at -= by


async def set_offset(kernel: Kernel, consumer: str, position: int) -> None:
    async with kernel.db.unit_of_work() as session:
        row = await session.get(ConsumerOffset, consumer)
        if row is None:
            session.add(ConsumerOffset(consumer=consumer, log_position=position))
        else:
            row.log_position = position


async def set_all_offsets(kernel: Kernel, position: int) -> None:
    """As if every consumer had read the SQL log up to `position` (no-op on NATS)."""
    if not kernel.events.external:
        for name in kernel.events.consumers:
            await set_offset(kernel, name, position)


async def outbox_ids(kernel: Kernel) -> set[UUID]:
    async with kernel.db.sessions() as session:
        return set((await session.scalars(select(OutboxEvent.id))).all())


async def processed_keys(kernel: Kernel) -> set[tuple[str, UUID]]:
    async with kernel.db.sessions() as session:
        rows = await session.execute(select(ProcessedEvent.consumer, ProcessedEvent.event_id))
        return {(consumer, event_id) for consumer, event_id in rows}


def skip_unless_sql_log(kernel: Kernel) -> None:
    if kernel.events.external:
        pytest.skip("on NATS the stream holds the events; the outbox row is only the relay's")


async def test_old_published_rows_are_pruned_young_and_unpublished_kept(
    ledger_app: StartApp,
) -> None:
    kernel: Kernel = (await ledger_app(role="api")).state.kernel
    old, older, young = [await emit_entry(kernel, amount) for amount in (1, 2, 3)]
    await relay_all(kernel)
    unpublished = await emit_entry(kernel, 4)
    await age(kernel, [old.id, older.id, unpublished.id], 10 * DAY)
    await set_all_offsets(kernel, 3)

    assert await prune(kernel) == PruneResult(outbox=2, processed=0)
    assert await outbox_ids(kernel) == {young.id, unpublished.id}


async def test_the_sql_log_keeps_rows_a_consumer_has_not_read(ledger_app: StartApp) -> None:
    kernel: Kernel = (await ledger_app(role="api")).state.kernel
    skip_unless_sql_log(kernel)
    first, second, third = [await emit_entry(kernel, amount) for amount in (1, 2, 3)]
    async with kernel.db.unit_of_work() as session:  # read by the journal only
        voided = await emit(session, "ledger.entry.voided", EntryVoided(entry_id="x"))
    await relay_all(kernel)
    await age(kernel, [first.id, second.id, third.id, voided.id], 10 * DAY)

    # Consumers that never ran read from the start of the log.
    assert (await prune(kernel)).outbox == 0

    await set_offset(kernel, "ledger-auditor", 3)
    await set_offset(kernel, "ledger-journal", 1)  # lagging
    assert (await prune(kernel)).outbox == 1
    assert await outbox_ids(kernel) == {second.id, third.id, voided.id}

    # A consumer this process does not mount could read any type: it holds back all.
    await set_offset(kernel, "ledger-journal", 4)
    await set_offset(kernel, "retired-consumer", 2)
    assert (await prune(kernel)).outbox == 1
    assert await outbox_ids(kernel) == {third.id, voided.id}

    async with kernel.db.unit_of_work() as session:
        await session.execute(
            delete(ConsumerOffset).where(ConsumerOffset.consumer == "retired-consumer")
        )
    assert (await prune(kernel)).outbox == 1
    # Read by all and old, but the newest row of the log: the next event follows it.
    assert await outbox_ids(kernel) == {voided.id}

    later = await emit_entry(kernel, 5)
    await relay_all(kernel)
    async with kernel.db.sessions() as session:
        row = await session.get(OutboxEvent, later.id)
    assert row is not None
    assert row.log_position == 5


async def test_processed_rows_are_pruned_once_old_and_their_event_left_the_outbox(
    ledger_app: StartApp,
) -> None:
    kernel: Kernel = (await ledger_app(role="api")).state.kernel
    in_outbox = await emit_entry(kernel, 1)
    gone_old, gone_young = new_id(), new_id()
    now = utcnow()
    async with kernel.db.unit_of_work() as session:
        session.add_all(
            [
                ProcessedEvent(
                    consumer="ledger-auditor", event_id=gone_old, processed_at=now - 10 * DAY
                ),
                ProcessedEvent(
                    consumer="ledger-journal", event_id=gone_old, processed_at=now - 10 * DAY
                ),
                ProcessedEvent(
                    consumer="ledger-auditor",
                    event_id=gone_young,
                    processed_at=now - dt.timedelta(hours=1),
                ),
                # Its event can still be delivered again (a rewind, a second publish).
                ProcessedEvent(
                    consumer="ledger-auditor", event_id=in_outbox.id, processed_at=now - 10 * DAY
                ),
            ]
        )

    assert await prune(kernel) == PruneResult(outbox=0, processed=2)
    assert await processed_keys(kernel) == {
        ("ledger-auditor", gone_young),
        ("ledger-auditor", in_outbox.id),
    }


async def test_pruning_deletes_in_bounded_batches_until_done(
    ledger_app: StartApp, events_settings: Settings
) -> None:
    app = await ledger_app(
        role="api", events=events_settings.events.model_copy(update={"prune_batch_size": 2})
    )
    kernel: Kernel = app.state.kernel
    entries = [await emit_entry(kernel, amount) for amount in range(1, 7)]
    await relay_all(kernel)
    await age(kernel, [entry.id for entry in entries[:5]], 10 * DAY)
    await set_all_offsets(kernel, 6)
    async with kernel.db.unit_of_work() as session:
        session.add_all(
            ProcessedEvent(
                consumer="ledger-auditor", event_id=new_id(), processed_at=utcnow() - 10 * DAY
            )
            for _ in range(5)
        )
    deleted: dict[str, list[int]] = {"event_outbox": [], "event_processed": []}

    def count_deletes(
        _connection: Any, cursor: Any, statement: str, *_args: Any, **_kwargs: Any
    ) -> None:
        words = statement.split(maxsplit=3)
        if words[:2] == ["DELETE", "FROM"] and words[2] in deleted:
            deleted[words[2]].append(cursor.rowcount)

    engine = kernel.db.engine.sync_engine
    event.listen(engine, "after_cursor_execute", count_deletes)
    try:
        assert await prune(kernel) == PruneResult(outbox=5, processed=5)
    finally:
        event.remove(engine, "after_cursor_execute", count_deletes)
    assert await outbox_ids(kernel) == {entries[5].id}
    assert await processed_keys(kernel) == set()
    assert deleted["event_processed"] == [2, 2, 1]
    assert sum(deleted["event_outbox"]) == 5
    assert max(deleted["event_outbox"]) == 2

    async with client_for(app) as client:
        text = (await client.get("/metrics")).text
    assert 'veche_events_pruned_total{table="event_outbox"}' in text
    assert 'veche_events_pruned_total{table="event_processed"}' in text


async def test_a_rewind_before_what_the_log_still_holds_is_refused(ledger_app: StartApp) -> None:
    app = await ledger_app(role="api")
    kernel: Kernel = app.state.kernel
    oldest, kept_old, also_old, _young = [await emit_entry(kernel, n) for n in (1, 2, 3, 4)]
    await relay_all(kernel)
    await age(kernel, [oldest.id], 12 * DAY)
    await age(kernel, [kept_old.id, also_old.id], 10 * DAY)
    if not kernel.events.external:
        await set_offset(kernel, "ledger-auditor", 4)
        await set_offset(kernel, "ledger-journal", 1)  # keeps the 10-day-old rows
    await prune(kernel)
    now = utcnow()
    client, admin = await admin_client(app)
    async with contextlib.aclosing(client):

        async def rewind(since: dt.datetime) -> Any:
            return await client.post(
                f"{BASE}/consumers/ledger-auditor/replay",
                json={"since": since.isoformat()},
                headers=admin,
            )

        if kernel.events.external:
            # The stream still holds every event: any time will do.
            assert (await rewind(now - 30 * DAY)).status_code == 200
            return
        body = assert_problem(await rewind(now - 11 * DAY), 409, "events.pruned")
        retained = dt.datetime.fromisoformat(body["retained_since"])
        assert abs(retained - (now - 10 * DAY)) < dt.timedelta(minutes=1)
        assert (await rewind(now - 9 * DAY)).status_code == 200

        # Once nothing before the retention window is left, that window is the limit.
        await set_offset(kernel, "ledger-auditor", 4)
        await set_offset(kernel, "ledger-journal", 4)
        await prune(kernel)
        body = assert_problem(await rewind(now - 9 * DAY), 409, "events.pruned")
        retained = dt.datetime.fromisoformat(body["retained_since"])
        assert abs(retained - (now - 7 * DAY)) < dt.timedelta(minutes=1)
        assert (await rewind(now - 6 * DAY)).status_code == 200


async def test_a_rewind_of_a_log_never_pruned_goes_back_any_time(ledger_app: StartApp) -> None:
    app = await ledger_app(role="api")
    kernel: Kernel = app.state.kernel
    entry = await emit_entry(kernel, 1)
    await relay_all(kernel)
    await age(kernel, [entry.id], 30 * DAY)
    client, admin = await admin_client(app)
    async with contextlib.aclosing(client):
        response = await client.post(
            f"{BASE}/consumers/ledger-auditor/replay",
            json={"since": "2000-01-01T00:00:00Z"},
            headers=admin,
        )
    assert response.status_code == 200, response.text


async def test_worker_processes_run_the_prune_job(ledger_app: StartApp) -> None:
    kernel: Kernel = (await ledger_app(role="worker")).state.kernel
    assert [job.name for job in kernel.events.jobs] == [PRUNE_JOB]

    async def leased() -> bool:
        async with kernel.db.sessions() as session:
            return await session.get(JobLease, PRUNE_JOB) is not None

    await eventually(leased)
