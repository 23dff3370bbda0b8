"""Operating the events: consumer lag, dead letters and replays, for the admin API and CLI."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy import func, select

from veche.kernel.errors import Conflict, NotFound
from veche.kernel.events import metrics
from veche.kernel.events.consumers import Consumer, Failure, handle_once
from veche.kernel.events.envelope import Event
from veche.kernel.events.models import DeadLetter

if TYPE_CHECKING:
    from veche.kernel.runtime import Kernel

MAX_REPLAY_BATCH = 1000


class ConsumerNotFound(NotFound):
    code = "events.consumer_not_found"
    title = "No such event consumer"


class DeadLetterNotFound(NotFound):
    code = "events.dead_letter_not_found"
    title = "No such dead letter"


class EventsPruned(Conflict):
    code = "events.pruned"
    title = "Those events are no longer kept"


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    name: str
    event_types: tuple[str, ...]
    lag: int
    dead_letters: int


@dataclass(slots=True)
class ReplayResult:
    replayed: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)


def find_consumer(kernel: Kernel, name: str) -> Consumer:
    declared = kernel.events.consumer(name)
    if declared is None:
        raise ConsumerNotFound(f"No consumer is named {name!r} in this process")
    return declared


async def consumer_statuses(kernel: Kernel) -> list[ConsumerStatus]:
    """Every consumer of the mounted apps with its lag and dead-letter count."""
    async with kernel.db.sessions() as session:
        rows = await session.execute(
            select(DeadLetter.consumer, func.count()).group_by(DeadLetter.consumer)
        )
        counts = {name: int(count) for name, count in rows}
    statuses = []
    for name in sorted(kernel.events.consumers):
        declared = kernel.events.consumers[name]
        lag = await kernel.events.backend.lag(kernel, declared)
        metrics.LAG.labels(name).set(lag)
        statuses.append(ConsumerStatus(name, declared.event_types, lag, int(counts.get(name, 0))))
    return statuses


async def replay_dead_letter(kernel: Kernel, dead_letter_id: UUID) -> bool:
    """Hand a dead letter's event to its consumer again, once. On success the dead
    letter is removed and True returned; on failure it is kept with the new error."""
    async with kernel.db.sessions() as session:
        letter = await session.get(DeadLetter, dead_letter_id)
    if letter is None:
        raise DeadLetterNotFound(f"No dead letter has the id {dead_letter_id}")
    declared = find_consumer(kernel, letter.consumer)
    event = Event.model_validate(letter.event)
    try:
        await handle_once(kernel, declared, event, letter.attempts + 1)
    except Failure as failure:
        async with kernel.db.unit_of_work() as session:
            row = await session.get(DeadLetter, dead_letter_id)
            if row is not None:
                row.attempts += 1
                row.error_type = type(failure.error).__name__[:200]
                row.error_message = str(failure.error)[:4000] or row.error_type
        return False
    async with kernel.db.unit_of_work() as session:
        row = await session.get(DeadLetter, dead_letter_id)
        if row is not None:
            await session.delete(row)
    return True


async def replay_dead_letters(
    kernel: Kernel, consumer: str | None = None, limit: int = MAX_REPLAY_BATCH
) -> ReplayResult:
    """Replay the oldest dead letters (of one consumer, or all), up to `limit`."""
    if consumer is not None:
        find_consumer(kernel, consumer)
    statement = select(DeadLetter.id).order_by(DeadLetter.created_at, DeadLetter.id).limit(limit)
    if consumer is not None:
        statement = statement.where(DeadLetter.consumer == consumer)
    async with kernel.db.sessions() as session:
        ids = list((await session.scalars(statement)).all())
    result = ReplayResult()
    for dead_letter_id in ids:
        try:
            handled = await replay_dead_letter(kernel, dead_letter_id)
        except NotFound:
            continue  # replayed meanwhile, or its consumer is not mounted here
        (result.replayed if handled else result.failed).append(dead_letter_id)
    return result


async def rewind_consumer(kernel: Kernel, name: str, since: dt.datetime) -> None:
    """Deliver a consumer's events again from `since` on (its earlier work is kept).
    Raises `EventsPruned` when events from `since` on may have been pruned: a rewind
    never silently replays less than was asked."""
    declared = find_consumer(kernel, name)
    retained = await kernel.events.backend.retained_since(kernel, declared)
    if retained is not None and since < retained:
        raise EventsPruned(
            f"Consumer {name!r} can be replayed from {retained.isoformat()} on: "
            "older events have been pruned",
            extra={"retained_since": retained.isoformat()},
        )
    await kernel.events.backend.rewind(kernel, declared, since)
