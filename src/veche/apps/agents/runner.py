"""The direct-mode runner: runs queued tasks, one per session at a time, and resumes the
ones whose approvals or client tool results have arrived.

A run is a loop over the kernel LLM gateway: system prompt, retrieved memory, the
session's recent history and the user's message go in; tool calls come out, pass the
approval gate and run in the project's workspace (or, for an agent in client mode, on the
user's machine); their results go back in until the model answers. The task's `state`
(the conversation so far) is saved after every step with a conditional update, so:

- a run paused for an approval or a tool result ends here and resumes later from its
  state, in this process or another, also after a restart;
- a run whose task was cancelled notices at its next save and stops;
- a run whose process died is re-queued once its heartbeat is stale.

The runner works in the `worker` and `all` roles. Requests in the same process wake it at
once; it also polls (`VECHE_AGENTS__RUNNER_POLL_SECONDS`) for work other processes queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import TYPE_CHECKING
from uuid import UUID

import structlog

from veche.apps.agents.approvals import sweep_approvals
from veche.apps.agents.models import Task
from veche.apps.agents.repository import RunnerQueries
from veche.apps.agents.run import Run
from veche.apps.agents.tools import IsolationMode
from veche.kernel import utcnow

if TYPE_CHECKING:
    from veche.apps.agents.runtime import AgentsRuntime


log = structlog.get_logger("veche.agents.runner")

# A running task's row is touched this often; one untouched for STALE_AFTER is orphaned.
HEARTBEAT = dt.timedelta(seconds=20)
STALE_AFTER = dt.timedelta(seconds=90)
CLAIM_BATCH = 16


class Runner:
    """Finds, claims and runs tasks in this process."""

    def __init__(self, runtime: AgentsRuntime, isolation: IsolationMode) -> None:
        self.runtime = runtime
        # How commands are isolated here, detected once before the runner starts (the
        # detection runs a sandboxed process: never on the event loop).
        self.isolation = isolation
        self.kernel = runtime.kernel
        self.settings = runtime.settings
        self._wakeup = asyncio.Event()
        self._running: dict[UUID, asyncio.Task[None]] = {}
        self._main: asyncio.Task[None] | None = None
        self._last_heartbeat = utcnow()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._main is None:
            self._main = asyncio.get_running_loop().create_task(
                self._forever(), name="agents-runner"
            )

    async def stop(self) -> None:
        """Stop claiming work and cut the runs short; their saved state survives, and
        they are re-queued once their heartbeat goes stale."""
        tasks = [task for task in (self._main, *self._running.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._main = None
        self._running.clear()

    def wake(self, _task_id: UUID | None = None) -> None:
        self._wakeup.set()

    def stop_tasks(self, task_ids: list[UUID]) -> None:
        """Cancel this process's runs of tasks that were just cancelled in the database."""
        for task_id in task_ids:
            running = self._running.get(task_id)
            if running is not None:
                running.cancel()

    @property
    def running(self) -> int:
        return len(self._running)

    async def idle(self) -> None:
        """Wait until no run is in progress here (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def _forever(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                await self.tick()
            except Exception:  # a database hiccup must not end the runner
                log.exception("agents_runner_tick_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.settings.runner_poll_seconds)

    # -- one pass ----------------------------------------------------------------------------

    async def tick(self) -> int:
        """Expire what is overdue, then claim and start what can run; how many started."""
        db = self.kernel.db
        now = utcnow()
        async with db.unit_of_work() as session:
            await sweep_approvals(
                session, settings=self.settings, events=self.runtime.events, wake=self.wake, now=now
            )
        async with db.unit_of_work() as session:
            await RunnerQueries(session).expire_tool_calls(now)
        if now - self._last_heartbeat >= HEARTBEAT:
            async with db.unit_of_work() as session:
                queries = RunnerQueries(session)
                await queries.heartbeat(list(self._running), now)
                await queries.requeue_stale(now - STALE_AFTER, now)
            self._last_heartbeat = now
        async with db.unit_of_work() as session:
            candidates = await RunnerQueries(session).runnable(CLAIM_BATCH)
        started = 0
        for task_id, status in candidates:
            if task_id in self._running:
                continue
            async with db.unit_of_work() as session:
                task = await RunnerQueries(session).claim(task_id, status, utcnow())
            if task is None:
                continue  # another process took it, or it was cancelled
            self._running[task.id] = asyncio.get_running_loop().create_task(
                self._run(task, resumed=status != "queued" or bool(task.state)),
                name=f"agents-task:{task.id}",
            )
            started += 1
        return started

    # -- a run -------------------------------------------------------------------------------

    async def _run(self, task: Task, *, resumed: bool) -> None:
        try:
            await Run(self, task).execute(resumed=resumed)
        except asyncio.CancelledError:
            pass  # cancelled by the user (already recorded) or shutdown (re-queued later)
        except Exception:
            log.exception("agents_task_crashed", task_id=str(task.id))
            with contextlib.suppress(Exception):
                await Run(self, task).fail("agents.internal_error", "The run failed unexpectedly")
        finally:
            self._running.pop(task.id, None)
