"""Consumers: how apps react to events, each event handled once per consumer.

A consumer is an async function of `(event, context)` declared with `@consumer(...)` and
listed in `AppModule.consumers`. Each delivery inserts an `event_processed` row for
(consumer, event id) in the handler's unit of work: if that row exists the event is
skipped, so a redelivered event never applies the handler's database work twice.

Events are handled in batches: one unit of work runs the handlers of a whole batch in
order, so a busy consumer commits once per batch instead of once per event. When any
handler in the batch fails, that transaction rolls back and the batch is handled again
one event per unit of work, where a failing handler is retried with exponential backoff
and jitter and, after the last attempt, written to the dead-letter table.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from veche.kernel.db import utcnow
from veche.kernel.events import metrics
from veche.kernel.events.envelope import EVENT_TYPE, Event
from veche.kernel.events.models import DeadLetter, ProcessedEvent
from veche.kernel.stopping import StopSignal
from veche.settings import EventsSettings

if TYPE_CHECKING:
    from veche.kernel.runtime import Kernel

log = structlog.get_logger("veche.events")
CONSUMER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,99}$")


@dataclass(frozen=True, slots=True)
class ConsumerContext:
    """What a handler gets besides the event: the unit of work its changes belong in."""

    session: AsyncSession
    kernel: Kernel
    consumer: str
    attempt: int


Handler = Callable[[Event, ConsumerContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    event_types: tuple[str, ...]
    handler: Handler
    # Declared safe to run twice for one event (it writes nothing, or only what is the same
    # the second time): no processed-event row is kept for it.
    idempotent: bool = False
    # False: this process's commits do not wake it on the embedded log; it reads on its poll.
    wake_on_commit: bool = True

    async def __call__(self, event: Event, context: ConsumerContext) -> None:
        await self.handler(event, context)


def consumer(
    *event_types: str, name: str, idempotent: bool = False, wake_on_commit: bool = True
) -> Callable[[Handler], Consumer]:
    """Declare `async def handler(event, context)` as the consumer `name` of these types.

    `idempotent=True` says a second run of the handler for the same event changes nothing
    (a wake-up, a cache refresh): the kernel then keeps no `event_processed` row for it,
    two statements fewer a batch and no rows to prune. Its offset or acknowledgement still
    moves with each batch, so a redelivery stays as rare as for any consumer.

    `wake_on_commit=False` is for a consumer whose work the emitting process already does
    itself (a wake-up of its own worker): on the embedded log, this process's commits do
    not wake it, and it reads its events on its poll (`VECHE_EVENTS__POLL_INTERVAL_SECONDS`),
    in batches, off the emitter's path. Other processes poll the embedded log anyway; NATS
    delivers as it always does."""
    if not event_types:
        raise ValueError("a consumer needs at least one event type")
    for event_type in event_types:
        if not EVENT_TYPE.match(event_type):
            raise ValueError(f"{event_type!r} is not an event type like 'app.entity.verb'")
    if not CONSUMER_NAME.match(name):
        raise ValueError(f"{name!r} is not a consumer name (lowercase, digits, '-', '_')")

    def declare(handler: Handler) -> Consumer:
        return Consumer(
            name=name,
            event_types=tuple(dict.fromkeys(event_types)),
            handler=handler,
            idempotent=idempotent,
            wake_on_commit=wake_on_commit,
        )

    return declare


def retry_delay(settings: EventsSettings, attempt: int) -> float:
    """Exponential backoff with full jitter before attempt `attempt + 1`."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


class StaleBatch(Exception):
    """The consumer's position moved under a batch (a rewind): drop it and read again."""


class DeliveryStopped(Exception):
    """A stop was requested between two events delivered one by one, or while a handler
    waited to retry: the events left stay unhandled and unacknowledged, delivered again
    at the next start."""


class Failure(Exception):
    """A handler attempt failed; carries the original error."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def handle_once(
    kernel: Kernel,
    handler: Consumer,
    event: Event,
    attempt: int,
    also: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> bool:
    """Run the handler in a unit of work with its processed-event row (none for an
    idempotent consumer); False if this consumer had already handled the event. `also`
    adds work to the same transaction (moving the consumer's offset). Raises `Failure`
    when the handler fails."""
    try:
        async with kernel.db.unit_of_work() as session:
            done = (
                None
                if handler.idempotent
                else await session.get(ProcessedEvent, (handler.name, event.id))
            )
            if done is None:
                if not handler.idempotent:
                    session.add(ProcessedEvent(consumer=handler.name, event_id=event.id))
                if not handler.idempotent and kernel.db.dialect != "sqlite":
                    # Claimed before the work: another worker's insert of the same row
                    # waits for this transaction's outcome instead of doing the work too.
                    # Not on SQLite, where that insert would hold the one write lock for
                    # the whole handler (a model call, a backoff of the gateway's own).
                    await session.flush()
                context = ConsumerContext(session, kernel, handler.name, attempt)
                try:
                    await handler(event, context)
                    await session.flush()
                except Exception as exc:
                    raise Failure(exc) from exc
            if also is not None:
                await also(session)
    except IntegrityError as exc:
        async with kernel.db.unit_of_work() as session:
            if await session.get(ProcessedEvent, (handler.name, event.id)) is None:
                raise Failure(exc) from exc
        # Another worker handled it concurrently and committed first.
        log.info("event_already_processed", consumer=handler.name, event_id=str(event.id))
        if also is not None:
            async with kernel.db.unit_of_work() as session:
                await also(session)
        return False
    if done is not None:
        return False
    metrics.CONSUMED.labels(handler.name, event.type).inc()
    metrics.LATENCY.labels(handler.name).observe(max(0.0, (utcnow() - event.time).total_seconds()))
    return True


async def handle_batch(
    kernel: Kernel,
    handler: Consumer,
    events: Sequence[Event],
    also: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> bool:
    """Handle the events in order in one unit of work (with `also`, e.g. moving the offset
    past the last one). False, with nothing committed, if any handler failed or another
    worker handled one of them concurrently: the caller then delivers them one by one."""
    if not events:
        return True
    handled: list[Event] = []
    try:
        async with kernel.db.unit_of_work() as session:
            done = set() if handler.idempotent else await _processed(session, handler, events)
            for event in events:
                if event.id in done:
                    continue
                done.add(event.id)  # a batch may carry a redelivered duplicate
                if not handler.idempotent:
                    session.add(ProcessedEvent(consumer=handler.name, event_id=event.id))
                await handler(event, ConsumerContext(session, kernel, handler.name, 1))
                handled.append(event)
            await session.flush()
            if also is not None:
                await also(session)
    except StaleBatch:
        raise
    except Exception as exc:
        log.info(
            "event_batch_failed",
            consumer=handler.name,
            size=len(events),
            error=type(exc).__name__,
        )
        return False
    now = utcnow()
    for event in handled:
        metrics.CONSUMED.labels(handler.name, event.type).inc()
        metrics.LATENCY.labels(handler.name).observe(max(0.0, (now - event.time).total_seconds()))
    return True


async def _processed(
    session: AsyncSession, handler: Consumer, events: Sequence[Event]
) -> set[UUID]:
    """Which of these events the consumer has handled already."""
    ids = [event.id for event in events]
    handled = await session.scalars(
        select(ProcessedEvent.event_id).where(
            ProcessedEvent.consumer == handler.name, ProcessedEvent.event_id.in_(ids)
        )
    )
    return set(handled.all())


async def record_failure(
    session: AsyncSession, handler: Consumer, event: Event, error: BaseException, attempts: int
) -> None:
    """Write (or refresh) the consumer's dead letter for the event."""
    message = str(error)[:4000] or type(error).__name__
    existing = (
        await session.scalars(
            select(DeadLetter).where(
                DeadLetter.consumer == handler.name, DeadLetter.event_id == event.id
            )
        )
    ).one_or_none()
    if existing is None:
        session.add(
            DeadLetter(
                consumer=handler.name,
                event_id=event.id,
                event_type=event.type,
                event=event.model_dump(mode="json"),
                error_type=type(error).__name__[:200],
                error_message=message,
                attempts=attempts,
            )
        )
    else:
        existing.error_type = type(error).__name__[:200]
        existing.error_message = message
        existing.attempts += attempts
    await session.flush()
    metrics.DEAD_LETTERED.labels(handler.name, event.type).inc()
    log.warning(
        "event_dead_lettered",
        consumer=handler.name,
        event_id=str(event.id),
        type=event.type,
        error=type(error).__name__,
    )


async def deliver(
    kernel: Kernel,
    handler: Consumer,
    event: Event,
    also: Callable[[AsyncSession], Awaitable[None]] | None = None,
    waiting: Callable[[], Awaitable[None]] | None = None,
    stop: StopSignal | None = None,
) -> bool:
    """Handle the event, retrying with backoff; dead-letter it after the last attempt.
    True if it was handled (or had been), False if it was dead-lettered. `waiting` runs
    before each backoff sleep (NATS: tell the server the message is still in progress).
    A stop requested during a backoff ends it: raises `DeliveryStopped`."""
    settings = kernel.settings.events
    for attempt in range(1, settings.max_attempts + 1):
        try:
            await handle_once(kernel, handler, event, attempt, also)
        except Failure as failure:
            metrics.FAILED.labels(handler.name, event.type).inc()
            log.warning(
                "event_handler_failed",
                consumer=handler.name,
                event_id=str(event.id),
                attempt=attempt,
                error=type(failure.error).__name__,
            )
            if attempt == settings.max_attempts:
                async with kernel.db.unit_of_work() as session:
                    await record_failure(session, handler, event, failure.error, attempt)
                    if also is not None:
                        await also(session)
                return False
            if waiting is not None:
                await waiting()
            delay = retry_delay(settings, attempt)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                await stop.pause(delay)
                if stop.requested:
                    raise DeliveryStopped(handler.name) from failure.error
        else:
            return True
    return False  # pragma: no cover - the loop always returns
