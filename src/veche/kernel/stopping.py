"""Stopping background loops between units of work, not inside one.

A loop of the kernel (the event relay, a consumer, a scheduled job) runs
`while not stop.requested:` and waits with `await stop.pause(seconds, wakeup)`, which
returns at once when a stop is requested. `finish` requests the stop, gives the loops a
grace period to come back by themselves, and cancels only those still busy after it.

Cancelling a loop inside a transaction throws away the work in hand, and the
cancellation can reach the rollback that returns its connection to the pool: SQLAlchemy
logs "Exception during reset" and discards the connection. At shutdown on SQLite, the
outbox's last relay then waited out the whole busy timeout and failed "database is
locked".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection

import structlog

log = structlog.get_logger("veche.kernel")


class StopSignal:
    """Tells loops to end after the unit of work in hand. One signal serves one start of
    the loops: make a new one for the next start."""

    def __init__(self) -> None:
        self._requested = asyncio.Event()
        # The wake-ups loops pause on: set on a stop so that no pause outlasts it.
        self._wakeups: set[asyncio.Event] = set()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def request(self) -> None:
        self._requested.set()
        for wakeup in self._wakeups:
            wakeup.set()

    async def wait(self) -> None:
        """Return once a stop is requested."""
        await self._requested.wait()

    async def pause(self, seconds: float, wakeup: asyncio.Event | None = None) -> None:
        """Wait up to `seconds`; return early when `wakeup` is set or a stop is requested."""
        if self.requested:
            return
        if wakeup is None:
            wakeup = self._requested
        else:
            self._wakeups.add(wakeup)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await wakeup.wait()


async def finish(
    stop: StopSignal, tasks: Collection[asyncio.Task[None]], grace: float, what: str
) -> None:
    """Request the stop and wait for the loops in `tasks` to end. Those still running after
    `grace` seconds are cancelled, which is logged because it cuts their work short."""
    stop.request()
    if not tasks:
        return
    _, busy = await asyncio.wait(tasks, timeout=grace)
    if busy:
        log.warning(
            "stop_grace_exceeded",
            what=what,
            cancelled=sorted(task.get_name() for task in busy),
            grace_seconds=grace,
        )
        for task in busy:
            task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, Exception):
            log.error("loop_failed", what=what, task=task.get_name(), error=type(result).__name__)
