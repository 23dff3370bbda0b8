"""Scheduled jobs: periodic work that exactly one replica runs each tick.

A job runs every `interval` in the background of processes whose role runs jobs
(`VECHE_ROLE=worker|all`). Before each run the process takes the job's lease, a row in
`job_leases` claimed by one conditional UPDATE, so however many replicas are up, one
runs the tick and the others skip it. A failing run is logged and retried next tick.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import String, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from veche.kernel.db import Base, Database, utcnow
from veche.kernel.stopping import StopSignal, finish

if TYPE_CHECKING:
    from veche.kernel.runtime import Kernel

log = structlog.get_logger("veche.jobs")


class JobLease(Base):
    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime]
    last_run_at: Mapped[dt.datetime | None]


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    name: str
    interval: dt.timedelta
    run: Callable[[Kernel], Awaitable[None]]
    # False: the first run comes one interval after startup, not at once.
    at_startup: bool = True


HOLDER = f"{socket.gethostname()}:{os.getpid()}"


async def acquire_lease(db: Database, name: str, ttl: dt.timedelta, holder: str = HOLDER) -> bool:
    """Take the named lease if it is free or expired; True when this holder has it."""
    now = utcnow()
    async with db.unit_of_work() as session:
        result = await session.execute(
            update(JobLease)
            .where(
                JobLease.name == name,
                or_(JobLease.expires_at <= now, JobLease.holder == holder),
            )
            .values(holder=holder, expires_at=now + ttl, last_run_at=now)
            .execution_options(synchronize_session=False)
        )
        if int(getattr(result, "rowcount", 0) or 0) == 1:
            return True
    try:
        async with db.unit_of_work() as session:
            session.add(JobLease(name=name, holder=holder, expires_at=now + ttl, last_run_at=now))
    except IntegrityError:
        return False  # another holder has a live lease
    return True


class Scheduler:
    """Runs scheduled jobs as background tasks until stopped."""

    def __init__(self, kernel: Kernel, jobs: list[ScheduledJob]) -> None:
        self.kernel = kernel
        self.jobs = jobs
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = StopSignal()

    def start(self) -> None:
        self._stop = StopSignal()
        for job in self.jobs:
            self._tasks.append(asyncio.create_task(self._loop(job), name=f"job:{job.name}"))

    async def _loop(self, job: ScheduledJob) -> None:
        if not job.at_startup:
            await self._stop.pause(job.interval.total_seconds())
        while not self._stop.requested:
            await self.run_once(job)
            await self._stop.pause(job.interval.total_seconds())

    async def run_once(self, job: ScheduledJob) -> bool:
        """Run one tick of the job if this process wins its lease; True if it ran."""
        try:
            # The lease outlives the interval slightly so a slow replica does not overlap.
            if not await acquire_lease(self.kernel.db, job.name, job.interval * 1.1):
                return False
            await job.run(self.kernel)
        except Exception:
            log.exception("job_failed", job=job.name)
            return False
        return True

    async def stop(self) -> None:
        """End the jobs' loops: a tick in progress finishes first, within the shutdown grace."""
        grace = self.kernel.settings.shutdown_grace_seconds
        await finish(self._stop, self._tasks, grace, "scheduled jobs")
        self._tasks.clear()


STATISTICS_JOB = "kernel.db.statistics"


async def refresh_statistics(kernel: Kernel) -> None:
    settings = kernel.settings
    if await kernel.db.refresh_statistics(settings.sqlite_analysis_limit):
        log.info("database_statistics_refreshed")


def kernel_jobs(kernel: Kernel) -> list[ScheduledJob]:
    """The kernel's own scheduled jobs. On SQLite: refresh the planner's statistics every
    `sqlite_analyze_interval_seconds` as tables grow (they are kept in the database file,
    so a restart does not need a run at once)."""
    if kernel.db.dialect != "sqlite":
        return []
    interval = dt.timedelta(seconds=kernel.settings.sqlite_analyze_interval_seconds)
    job = ScheduledJob(STATISTICS_JOB, interval, refresh_statistics, at_startup=False)
    return [job]
