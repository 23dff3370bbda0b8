"""The messenger's per-process runtime: what its services publish on the realtime hub goes
out only after the transaction that stored it commits, in commit order.

A push before the commit could announce a message that then rolls back, or reach a client
that fetches history and does not find it yet. Publications wait on `on_outcome` and then
go through one queue and one task, so this process publishes a conversation's messages in
the order their `seq` was taken. (Across replicas the hub may interleave them; clients
order by `seq` and fetch what a gap says they missed.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from veche.kernel import Kernel
from veche.kernel.db import on_outcome
from veche.kernel.realtime import Hub

log = structlog.get_logger("veche.blog.messenger")

RUNTIME_KEY = "blog.messenger"
# How long stopping waits for publications still queued.
DRAIN_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Publication:
    channel: str
    event: str
    data: dict[str, Any]


class MessengerRuntime:
    """Publishes what committed transactions queued, in order, from one task."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._queue: asyncio.Queue[Publication | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="blog-messenger-publisher"
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._queue.put_nowait(None)
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_SECONDS):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning("messenger_publisher_drain_timeout", pending=self._queue.qsize())
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def after_commit(self, session: AsyncSession, publications: Sequence[Publication]) -> None:
        """Publish these once `session` commits; nothing if it rolls back."""
        if publications:
            queued = list(publications)
            on_outcome(session, committed=lambda: self._enqueue(queued))

    def _enqueue(self, publications: list[Publication]) -> None:
        if self._task is None:  # stopping: the hub is going away with it
            log.warning("messenger_publication_dropped", count=len(publications))
            return
        for publication in publications:
            self._queue.put_nowait(publication)

    async def _run(self) -> None:
        while True:
            publication = await self._queue.get()
            if publication is None:
                return
            try:
                await self.hub.publish(
                    publication.channel, publication.data, event=publication.event
                )
            except Exception as exc:  # clients catch up through history by `seq`
                log.warning(
                    "messenger_publish_failed",
                    channel=publication.channel,
                    event_name=publication.event,
                    error=str(exc),
                )


async def start(kernel: Kernel) -> None:
    runtime = MessengerRuntime(kernel.realtime)
    runtime.start()
    kernel.apps[RUNTIME_KEY] = runtime


async def stop(kernel: Kernel) -> None:
    runtime = kernel.apps.pop(RUNTIME_KEY, None)
    if isinstance(runtime, MessengerRuntime):
        await runtime.stop()


def messenger_of(kernel: Kernel) -> MessengerRuntime:
    runtime = kernel.apps.get(RUNTIME_KEY)
    if not isinstance(runtime, MessengerRuntime):
        raise RuntimeError("the blog messenger is not started in this process")
    return runtime
