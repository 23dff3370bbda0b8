"""The event bus of one process: declared types, consumers, the relay and the backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from veche.kernel.db import Database, utcnow
from veche.kernel.events import metrics
from veche.kernel.events.backends import Backend, create_backend
from veche.kernel.events.consumers import Consumer
from veche.kernel.events.envelope import EventError
from veche.kernel.events.models import OutboxEvent
from veche.kernel.events.outbox import REGISTRY_KEY, EventRegistry
from veche.kernel.events.retention import prune_job
from veche.kernel.jobs import ScheduledJob, Scheduler
from veche.kernel.stopping import StopSignal, finish
from veche.settings import Settings

if TYPE_CHECKING:
    from veche.kernel.modules import AppModule
    from veche.kernel.runtime import Kernel

log = structlog.get_logger("veche.events")


class EventBus:
    """Installs the apps' event types and consumers; runs the relay and consumers in
    processes whose role does background work."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.registry = EventRegistry()
        self.registry.on_commit = self._committed
        self.consumers: dict[str, Consumer] = {}
        self.backend: Backend = create_backend(settings.events_url, settings.events.stream_prefix)
        # SQLite's one writer orders emitting transactions: their rows take log positions
        # as they are written, and no relay transaction is needed (docs/events.md).
        self.registry.positions_at_emit = not self.external and db.dialect == "sqlite"
        self._wakeup = asyncio.Event()
        self._relay: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._scheduler: Scheduler | None = None
        self._stop = StopSignal()
        db.sessions.configure(info={REGISTRY_KEY: self.registry})

    def install(self, modules: Sequence[AppModule]) -> None:
        """Declare the modules' event types and register their consumers."""
        for module in modules:
            self.registry.declare(module.name, module.events)
            for declared in module.consumers:
                if not isinstance(declared, Consumer):
                    raise EventError(f"app {module.name!r}: {declared!r} is not a @consumer")
                if declared.name in self.consumers:
                    raise EventError(f"consumer name {declared.name!r} is used twice")
                self.consumers[declared.name] = declared

    def consumer(self, name: str) -> Consumer | None:
        return self.consumers.get(name)

    def _committed(self, types: list[str]) -> None:
        """A transaction that emitted events of these types committed."""
        if not self.registry.positions_at_emit:
            self._wakeup.set()
            return
        for event_type in types:
            metrics.PUBLISHED.labels(event_type).inc()
        self.backend.published(types)

    @property
    def external(self) -> bool:
        """Whether events live outside the database (a backend of their own to check)."""
        from veche.kernel.events.backends.sql import SqlBackend

        return not isinstance(self.backend, SqlBackend)

    @property
    def jobs(self) -> list[ScheduledJob]:
        """The kernel's own scheduled jobs for events, run beside the relay."""
        return [prune_job(self.settings.events)]

    @property
    def running(self) -> bool:
        return self._relay is not None

    async def start(self, kernel: Kernel, *, consume: bool = True) -> None:
        """Run the relay in the background and, with `consume` (roles `worker` and `all`),
        every consumer and the retention job. An API process runs the relay too, so its
        commits are published at once instead of at a worker's next poll. A process
        whose apps declare no events and no consumers has nothing to relay and starts
        nothing."""
        if self._relay is not None or not (self.registry.types or self.consumers):
            return
        self._stop = StopSignal()
        self._relay = asyncio.create_task(self._relay_loop(), name="events:relay")
        if not consume:
            return
        self._scheduler = Scheduler(kernel, self.jobs)
        self._scheduler.start()
        for declared in self.consumers.values():
            self._tasks.append(
                asyncio.create_task(
                    self.backend.run_consumer(kernel, declared, self._stop),
                    name=f"events:{declared.name}",
                )
            )

    async def stop(self) -> None:
        """Stop consuming and pruning, publish what is still in the outbox, close the
        backend. A consumer's batch in hand and a relay batch in hand finish first,
        within the shutdown grace; a handler waiting to retry stops waiting (its event
        stays unacknowledged, delivered again at the next start)."""
        if self._scheduler is not None:
            await self._scheduler.stop()
            self._scheduler = None
        tasks = [*self._tasks, *([self._relay] if self._relay is not None else [])]
        await finish(self._stop, tasks, self.settings.shutdown_grace_seconds, "events")
        if self._relay is not None:
            with contextlib.suppress(Exception):
                while await self.relay_once():
                    pass
        self._tasks.clear()
        self._relay = None
        await self.backend.close()

    async def _relay_loop(self) -> None:
        interval = self.settings.events.poll_interval_seconds
        while not self._stop.requested:
            self._wakeup.clear()
            try:
                published = await self.relay_once()
            except Exception:
                log.exception("event_relay_failed")
                published = 0
            if published < self.settings.events.batch_size:
                await self._stop.pause(interval, self._wakeup)

    async def relay_once(self) -> int:
        """Publish one batch of committed, unsent outbox rows; how many were sent.

        The batch is claimed first with a conditional UPDATE (`published_at` still unset),
        inside the transaction that publishes it: on PostgreSQL the rows are already
        locked (`SKIP LOCKED`), on SQLite the UPDATE takes the write lock, so a second
        relay (another process, or this one's own loop) that read the same rows claims
        fewer than it read, rolls back and tries again, instead of publishing them twice.
        """
        try:
            async with self.db.unit_of_work() as session:
                rows = (
                    await session.scalars(
                        select(OutboxEvent)
                        .where(OutboxEvent.published_at.is_(None))
                        .order_by(OutboxEvent.id)
                        .limit(self.settings.events.batch_size)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                if not rows:
                    return 0
                claimed = await session.execute(
                    update(OutboxEvent)
                    .where(
                        OutboxEvent.id.in_([row.id for row in rows]),
                        OutboxEvent.published_at.is_(None),
                    )
                    .values(published_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if claimed.rowcount != len(rows):  # type: ignore[attr-defined]
                    raise _Taken
                await self.backend.publish(session, rows)
                types = [row.type for row in rows]
        except (IntegrityError, _Taken):
            # Another relay took (some of) these rows or the log positions first.
            self._wakeup.set()
            return 0
        for event_type in types:
            metrics.PUBLISHED.labels(event_type).inc()
        self.backend.published(types)
        return len(types)


class _Taken(Exception):
    """Another relay claimed rows of this batch first."""
