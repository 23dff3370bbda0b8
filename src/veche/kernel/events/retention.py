"""Retention: the kernel job that keeps the outbox and the processed-event rows bounded.

An outbox row goes once it is published, older than `outbox_retention_hours`, and no
longer needed for delivery: on NATS the stream holds the event and the row is only the
relay's record; on the SQL backend the outbox is the log, so a row also waits until every
consumer of its type has read past it (and the newest row of the log always stays: the
relay numbers new events after it). A processed-event row goes once it is older than
`processed_retention_hours` and its event has left the outbox, so the event can no longer
be delivered again by a rewind of the SQL log or a second publish by the relay.

Rows are deleted `prune_batch_size` at a time, one transaction per batch, so the job never
holds long locks however far behind it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import ColumnElement, and_, delete, exists, func, select, tuple_

from veche.kernel.db import utcnow
from veche.kernel.events import metrics
from veche.kernel.events.models import ConsumerOffset, OutboxEvent, ProcessedEvent
from veche.kernel.jobs import ScheduledJob
from veche.settings import EventsSettings

if TYPE_CHECKING:
    from veche.kernel.runtime import Kernel

log = structlog.get_logger("veche.events")
# Not `events:<name>`: that is the lease of the SQL backend's consumer `<name>`.
PRUNE_JOB = "kernel.events.prune"


@dataclass(frozen=True, slots=True)
class PruneResult:
    outbox: int
    processed: int


def prune_job(settings: EventsSettings) -> ScheduledJob:
    """The scheduled job that prunes; one replica runs each tick (the job lease)."""
    return ScheduledJob(
        name=PRUNE_JOB,
        interval=dt.timedelta(seconds=settings.prune_interval_seconds),
        run=run_prune,
    )


async def run_prune(kernel: Kernel) -> None:
    result = await prune(kernel)
    if result.outbox or result.processed:
        log.info("events_pruned", outbox=result.outbox, processed=result.processed)


async def prune(kernel: Kernel) -> PruneResult:
    """Delete the outbox rows and processed-event rows retention no longer keeps, in
    batches, until none is left; how many of each were deleted."""
    outbox = await prune_outbox(kernel)
    processed = await prune_processed(kernel)
    return PruneResult(outbox=outbox, processed=processed)


def outbox_cutoff(settings: EventsSettings, now: dt.datetime | None = None) -> dt.datetime:
    """Events that occurred after this are never pruned (published rows newer than it
    are kept, and an event is published after it occurs)."""
    return (now or utcnow()) - dt.timedelta(hours=settings.outbox_retention_hours)


async def prune_outbox(kernel: Kernel) -> int:
    settings = kernel.settings.events
    published_long_ago = and_(
        OutboxEvent.published_at.is_not(None),
        OutboxEvent.published_at < outbox_cutoff(settings),
    )
    if kernel.events.external:
        conditions: Sequence[ColumnElement[bool]] = [published_long_ago]
    else:
        conditions = await _read_by_every_consumer(kernel)
    deleted = 0
    for condition in conditions:
        deleted += await _delete_outbox(kernel, and_(published_long_ago, condition))
    return deleted


async def _read_by_every_consumer(kernel: Kernel) -> list[ColumnElement[bool]]:
    """On the SQL log: which rows every consumer has read past, one condition per group
    of event types with the same consumers. The offsets are read by the DELETE itself,
    so a consumer rewound meanwhile holds back what it will read again."""
    consumers = sorted(kernel.events.consumers)
    async with kernel.db.sessions() as session:
        newest = await session.scalar(select(func.max(OutboxEvent.log_position)))
        started = set(
            (
                await session.scalars(
                    select(ConsumerOffset.consumer).where(ConsumerOffset.consumer.in_(consumers))
                )
            ).all()
        )
    # Rows from before a switch from NATS were published without a position: in no log.
    conditions: list[ColumnElement[bool]] = [OutboxEvent.log_position.is_(None)]
    if newest is None:
        return conditions
    # A consumer this process does not mount (another process's apps, or a removed one)
    # could read any type: its offset bounds every row.
    unknown_reader = (
        select(func.min(ConsumerOffset.log_position))
        .where(ConsumerOffset.consumer.not_in(consumers))
        .scalar_subquery()
    )
    in_log = and_(
        OutboxEvent.log_position < newest,  # the relay numbers new events after the newest
        OutboxEvent.log_position <= func.coalesce(unknown_reader, newest),
    )
    readers: dict[str, set[str]] = {}
    for declared in kernel.events.consumers.values():
        for event_type in declared.event_types:
            readers.setdefault(event_type, set()).add(declared.name)
    groups: dict[frozenset[str], list[str]] = {}
    for event_type, reader_names in readers.items():
        groups.setdefault(frozenset(reader_names), []).append(event_type)
    conditions.append(and_(in_log, OutboxEvent.type.not_in(list(readers))))
    for names, event_types in groups.items():
        if not names <= started:
            continue  # a consumer that never ran reads from the start of the log
        slowest = (
            select(func.min(ConsumerOffset.log_position))
            .where(ConsumerOffset.consumer.in_(names))
            .scalar_subquery()
        )
        conditions.append(
            and_(in_log, OutboxEvent.type.in_(event_types), OutboxEvent.log_position <= slowest)
        )
    return conditions


async def _delete_outbox(kernel: Kernel, condition: ColumnElement[bool]) -> int:
    batch_size = kernel.settings.events.prune_batch_size
    total = 0
    while True:
        batch = (
            select(OutboxEvent.id)
            .where(condition)
            .order_by(OutboxEvent.published_at)
            .limit(batch_size)
        )
        async with kernel.db.unit_of_work() as session:
            result = await session.execute(
                delete(OutboxEvent)
                .where(OutboxEvent.id.in_(batch))
                .execution_options(synchronize_session=False)
            )
        deleted = int(getattr(result, "rowcount", 0) or 0)
        total += deleted
        metrics.PRUNED.labels("event_outbox").inc(deleted)
        if deleted < batch_size:
            return total


async def prune_processed(kernel: Kernel) -> int:
    settings = kernel.settings.events
    cutoff = utcnow() - dt.timedelta(hours=settings.processed_retention_hours)
    batch_size = settings.prune_batch_size
    still_in_outbox = exists().where(OutboxEvent.id == ProcessedEvent.event_id)
    total = 0
    while True:
        batch = (
            select(ProcessedEvent.consumer, ProcessedEvent.event_id)
            .where(ProcessedEvent.processed_at < cutoff, ~still_in_outbox)
            .limit(batch_size)
        )
        async with kernel.db.unit_of_work() as session:
            result = await session.execute(
                delete(ProcessedEvent)
                .where(tuple_(ProcessedEvent.consumer, ProcessedEvent.event_id).in_(batch))
                .execution_options(synchronize_session=False)
            )
        deleted = int(getattr(result, "rowcount", 0) or 0)
        total += deleted
        metrics.PRUNED.labels("event_processed").inc(deleted)
        if deleted < batch_size:
            return total
