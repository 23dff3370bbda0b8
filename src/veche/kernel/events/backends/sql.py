"""The embedded events backend: the outbox table is the log.

The relay "publishes" by giving committed rows the next log positions in commit order;
each consumer stores the position it has handled up to, moved in the same transaction as
its handler's work (or the dead letter), so a restart loses and repeats nothing acknowledged.
Each consumer runs in one process at a time, held by a lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from veche.kernel.db import utcnow
from veche.kernel.events import metrics
from veche.kernel.events.consumers import (
    Consumer,
    DeliveryStopped,
    StaleBatch,
    deliver,
    handle_batch,
)
from veche.kernel.events.models import ConsumerOffset, OutboxEvent, ProcessedEvent
from veche.kernel.events.outbox import envelope_of
from veche.kernel.events.retention import outbox_cutoff
from veche.kernel.events.uuids import uuid7_floor
from veche.kernel.jobs import acquire_lease
from veche.kernel.stopping import StopSignal

if TYPE_CHECKING:
    from veche.kernel.runtime import Kernel

log = structlog.get_logger("veche.events")
LEASE_TTL = dt.timedelta(seconds=30)


class SqlBackend:
    def __init__(self) -> None:
        # Consumer -> its wake-up and the event types it reads.
        self._wakeups: dict[str, tuple[asyncio.Event, frozenset[str]]] = {}
        # Consumer -> (its offset, the log position it has looked through): events of
        # other types between the two are never read again while the offset stays.
        self._scanned: dict[str, tuple[int, int]] = {}

    async def publish(self, session: AsyncSession, rows: Sequence[OutboxEvent]) -> None:
        last = (await session.execute(select(func.max(OutboxEvent.log_position)))).scalar()
        position = int(last or 0)
        for row in rows:
            position += 1
            row.log_position = position
        await session.flush()

    def published(self, types: Collection[str] | None = None) -> None:
        """Wake the consumers of any of `types` (every consumer when None)."""
        for wakeup, reads in self._wakeups.values():
            if types is None or not reads.isdisjoint(types):
                wakeup.set()

    async def run_consumer(self, kernel: Kernel, consumer: Consumer, stop: StopSignal) -> None:
        settings = kernel.settings.events
        lease_name, lease_until = f"events:{consumer.name}", dt.datetime.min.replace(tzinfo=dt.UTC)
        # The types whose commits wake it (none: it reads on its poll, or when everything
        # is woken, after a rewind).
        woken_by = frozenset(consumer.event_types) if consumer.wake_on_commit else frozenset()
        wakeup, _types = self._wakeups.setdefault(consumer.name, (asyncio.Event(), woken_by))
        while not stop.requested:
            wakeup.clear()
            now = dt.datetime.now(dt.UTC)
            if now >= lease_until:
                if await acquire_lease(kernel.db, lease_name, LEASE_TTL):
                    lease_until = now + LEASE_TTL / 3
                else:
                    await stop.pause(settings.poll_interval_seconds)
                    continue
            try:
                handled, caught_up = await self._next_batch(kernel, consumer, stop)
            except DeliveryStopped:
                return
            except Exception:
                log.exception("event_consumer_batch_failed", consumer=consumer.name)
                handled, caught_up = 0, False
            # A batch that read through to the newest event leaves nothing behind it: no
            # need to count (two statements on every wake-up of every consumer).
            lag = 0 if caught_up else await self.lag(kernel, consumer)
            metrics.LAG.labels(consumer.name).set(lag)
            if handled < settings.batch_size:
                await stop.pause(settings.poll_interval_seconds, wakeup)

    def _scan_from(self, consumer: Consumer, offset: int) -> int:
        """Where to look from: past what this process already looked through, unless the
        offset moved since (a rewind, or another process that held the lease)."""
        seen_offset, horizon = self._scanned.get(consumer.name, (-1, 0))
        return max(offset, horizon) if seen_offset == offset else offset

    async def _next_batch(
        self, kernel: Kernel, consumer: Consumer, stop: StopSignal
    ) -> tuple[int, bool]:
        """Handle the next batch of the consumer's events: (how many, whether it read
        through to the newest event of the log)."""
        batch_size = kernel.settings.events.batch_size
        async with kernel.db.unit_of_work() as session:
            offset = await _offset(session, consumer.name)
            start = self._scan_from(consumer, offset)
            # Positions are given in commit order, so everything up to the newest one is
            # already visible: a short batch has looked through all of it.
            newest = int(await session.scalar(select(func.max(OutboxEvent.log_position))) or 0)
            rows = (
                await session.scalars(
                    select(OutboxEvent)
                    .where(
                        OutboxEvent.log_position > start,
                        OutboxEvent.log_position <= newest,
                        OutboxEvent.type.in_(consumer.event_types),
                    )
                    .order_by(OutboxEvent.log_position)
                    .limit(batch_size)
                )
            ).all()
        if not rows:
            # Nothing of its types: the offset stays (no write), the scan moves on.
            self._scanned[consumer.name] = (offset, max(start, newest))
            return 0, True
        events = [envelope_of(row) for row in rows]
        positions = [int(row.log_position or 0) for row in rows]
        try:
            if not await handle_batch(
                kernel, consumer, events, _advance(consumer, offset, positions[-1])
            ):
                previous = offset
                for position, event in zip(positions, events, strict=True):
                    if stop.requested:
                        raise DeliveryStopped(consumer.name)
                    await deliver(
                        kernel, consumer, event, _advance(consumer, previous, position), stop=stop
                    )
                    previous = position
        except StaleBatch:
            # Rewound meanwhile: what this batch did is rolled back; read from the new offset.
            log.info("event_batch_stale", consumer=consumer.name)
            self._scanned.pop(consumer.name, None)
            return 0, False
        caught_up = len(rows) < batch_size
        if caught_up:
            self._scanned[consumer.name] = (positions[-1], newest)
        return len(rows), caught_up

    async def lag(self, kernel: Kernel, consumer: Consumer) -> int:
        async with kernel.db.sessions() as session:
            offset = await _offset(session, consumer.name)
            count = await session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(
                    OutboxEvent.log_position > self._scan_from(consumer, offset),
                    OutboxEvent.type.in_(consumer.event_types),
                )
            )
        return int(count or 0)

    async def rewind(self, kernel: Kernel, consumer: Consumer, since: dt.datetime) -> None:
        async with kernel.db.unit_of_work() as session:
            before = await session.scalar(
                select(func.max(OutboxEvent.log_position)).where(OutboxEvent.occurred_at < since)
            )
            await _set_offset(session, consumer, int(before or 0))
            await session.execute(
                delete(ProcessedEvent).where(
                    ProcessedEvent.consumer == consumer.name,
                    ProcessedEvent.event_id >= uuid7_floor(since),
                )
            )
        self.published()

    async def retained_since(self, kernel: Kernel, consumer: Consumer) -> dt.datetime | None:
        async with kernel.db.sessions() as session:
            kept, newest = (
                await session.execute(
                    select(func.count(OutboxEvent.log_position), func.max(OutboxEvent.log_position))
                )
            ).one()
            if newest is None or kept == newest:
                return None  # positions 1..newest are all there: nothing was pruned
            oldest = await session.scalar(
                select(func.min(OutboxEvent.occurred_at)).where(
                    OutboxEvent.log_position.is_not(None),
                    OutboxEvent.type.in_(consumer.event_types),
                )
            )
        # Whatever occurred after the cutoff is still kept, whether or not the consumer's
        # types have rows left; before it, only from the oldest row still in the log on.
        cutoff = outbox_cutoff(kernel.settings.events)
        return cutoff if oldest is None else min(oldest, cutoff)

    async def ping(self) -> None:
        return None  # the log is a table: the database check covers it

    async def close(self) -> None:
        return None


async def _offset(session: AsyncSession, name: str) -> int:
    row = await session.get(ConsumerOffset, name)
    return row.log_position if row is not None else 0


def _advance(
    consumer: Consumer, expected: int, position: int
) -> Callable[[AsyncSession], Awaitable[None]]:
    """Move the offset from `expected` to `position` in the handler's transaction, or raise
    `StaleBatch` when it is no longer `expected` (a rewind moved it): the handler's work
    then rolls back with it, and a rewind is never undone by a batch read before it."""

    async def move(session: AsyncSession) -> None:
        moved = await session.execute(
            update(ConsumerOffset)
            .where(
                ConsumerOffset.consumer == consumer.name,
                ConsumerOffset.log_position == expected,
            )
            .values(log_position=position, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount == 1:  # type: ignore[attr-defined]
            return
        if expected == 0 and await session.get(ConsumerOffset, consumer.name) is None:
            session.add(ConsumerOffset(consumer=consumer.name, log_position=position))
            await session.flush()
            return
        raise StaleBatch(consumer.name)

    return move


async def _set_offset(session: AsyncSession, consumer: Consumer, position: int) -> None:
    row = await session.get(ConsumerOffset, consumer.name)
    if row is None:
        session.add(ConsumerOffset(consumer=consumer.name, log_position=position))
    else:
        row.log_position = position
    await session.flush()
