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
        self.registry.on_commit = self.wake
        self.consumers: dict[str, Consumer] = {}
        self.backend: Backend = create_backend(settings.events_url, settings.events.stream_prefix)
        self._wakeup = asyncio.Event()
        self._relay: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
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

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def external(self) -> bool:
        """Whether events live outside the database (a backend of their own to check)."""
        from veche.kernel.events.backends.sql import SqlBackend

        return not isinstance(self.backend, SqlBackend)

    @property
    def running(self) -> bool:
        return self._relay is not None

    async def start(self, kernel: Kernel) -> None:
        """Run the relay and every consumer in the background. A process whose apps
        declare no events and no consumers has nothing to relay and starts nothing."""
        if self._relay is not None or not (self.registry.types or self.consumers):
            return
        self._relay = asyncio.create_task(self._relay_loop(), name="events:relay")
        for declared in self.consumers.values():
            self._tasks.append(
                asyncio.create_task(
                    self.backend.run_consumer(kernel, declared), name=f"events:{declared.name}"
                )
            )

    async def stop(self) -> None:
        """Stop consuming, publish what is still in the outbox, close the backend."""
        tasks = [*self._tasks, *([self._relay] if self._relay is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._relay is not None:
            with contextlib.suppress(Exception):
                while await self.relay_once():
                    pass
        self._tasks.clear()
        self._relay = None
        await self.backend.close()

    async def _relay_loop(self) -> None:
        interval = self.settings.events.poll_interval_seconds
        while True:
            self._wakeup.clear()
            try:
                published = await self.relay_once()
            except Exception:
                log.exception("event_relay_failed")
                published = 0
            if published >= self.settings.events.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=interval)

    async def relay_once(self) -> int:
        """Publish one batch of committed, unsent outbox rows; how many were sent."""
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
                await self.backend.publish(session, rows)
                types = [row.type for row in rows]
                await session.flush()  # the SQL log's positions, if it gave any
                await session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id.in_([row.id for row in rows]))
                    .values(published_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
        except IntegrityError:
            # Another relay took the same log positions first; this batch goes next time.
            self._wakeup.set()
            return 0
        for event_type in types:
            metrics.PUBLISHED.labels(event_type).inc()
        self.backend.published()
        return len(types)
