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

A `plan` task runs as `plan_run.PlanRun` (planning, then waiting for its steps); a
plan's `step` tasks run like chat tasks, side by side up to the plan's `max_parallel`.
A run that fails for a transient reason is queued again with backoff (`bus`). At
shutdown the tasks running here go back to the queue at once.

The runner works in the `worker` and `all` roles. Requests in the same process wake it at
once, and so does the `agents-bus` consumer for tasks queued by other processes; it also
polls (`VECHE_AGENTS__RUNNER_POLL_SECONDS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog

from veche.apps.agents import bus, health, orchestrator
from veche.apps.agents.approval_sweep import sweep_approvals
from veche.apps.agents.models import Task
from veche.apps.agents.plan_run import PlanRun
from veche.apps.agents.repository import PlanQueries, RunnerQueries
from veche.apps.agents.repository.chat import Runnable
from veche.apps.agents.run import Run
from veche.apps.agents.stream import EventType
from veche.apps.agents.tools import IsolationMode
from veche.kernel import utcnow
from veche.kernel.db import on_outcome

if TYPE_CHECKING:
    from veche.apps.agents.runtime import AgentsRuntime


log = structlog.get_logger("veche.agents.runner")


def _fits(room: dict[UUID, int], candidate: Runnable) -> bool:
    """Take one place for the candidate in its plan and its agent if both have room."""
    limits = [
        (key, free)
        for key, free in (
            (candidate.plan_id, candidate.plan_free),
            (candidate.agent_id, candidate.agent_free),
        )
        if key is not None and free is not None
    ]
    if any(room.setdefault(key, free) <= 0 for key, free in limits):
        return False
    for key, _ in limits:
        room[key] -= 1
    return True


# A running task's row is touched this often; one untouched for STALE_AFTER is orphaned.
HEARTBEAT = dt.timedelta(seconds=20)
STALE_AFTER = dt.timedelta(seconds=90)
CLAIM_BATCH = 16
STOP_TIMEOUT_SECONDS = 10.0


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
        self._last_sweep: dt.datetime | None = None
        self._main: asyncio.Task[None] | None = None
        self._last_heartbeat = utcnow()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._main is None:
            self._main = asyncio.get_running_loop().create_task(
                self._forever(), name="agents-runner"
            )

    async def stop(self) -> None:
        """Stop claiming work and cut the runs short; the tasks that were running here go
        back to the queue at once (their saved state survives; the claim is not counted
        as an attempt), for this process after a restart or for another one now."""
        tasks = [task for task in (self._main, *self._running.values()) if task is not None]
        running = list(self._running)
        for task in tasks:
            task.cancel()
        # A run cut short ends at its next await; none may hold the shutdown for long.
        if tasks:
            _, left = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_SECONDS)
            if left:  # they may still write; say so rather than stop silently
                log.error("agents_runner_stop_timed_out", still_running=len(left))
        self._main = None
        self._running.clear()
        bus.IN_FLIGHT.set(0)
        if running:
            try:
                async with self.kernel.db.unit_of_work() as session:
                    await RunnerQueries(session).release(running, utcnow())
            except Exception:  # they are re-queued once their heartbeat is stale
                log.exception("agents_runner_release_failed")

    def wake(self, task_id: UUID | None = None) -> None:
        """Look for work now; a wake-up about a task this runner is running (the bus event
        of a task it already took) is dropped: the run's end wakes it again."""
        if task_id is not None and task_id in self._running:
            return
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
            # `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` returns instead
            # of raising when the event is set as the loop is cancelled (a run's end does
            # that at shutdown), and the loop went on after its server had stopped.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.runner_poll_seconds):
                    await self._wakeup.wait()

    # -- one pass ----------------------------------------------------------------------------

    async def tick(self) -> int:
        """Expire what is overdue, then claim and start what can run; how many started."""
        db = self.kernel.db
        now = utcnow()
        # Deadlines are swept once per poll interval, not on every wake-up: a deadline is
        # then met within `runner_poll_seconds`, and a busy runner does not repeat them.
        every = dt.timedelta(seconds=self.settings.runner_poll_seconds)
        if self._last_sweep is None or now - self._last_sweep >= every:
            self._last_sweep = now
            async with db.unit_of_work() as session:
                await sweep_approvals(
                    session,
                    settings=self.settings,
                    events=self.runtime.events,
                    wake=self.wake,
                    now=now,
                )
            async with db.unit_of_work() as session:
                await RunnerQueries(session).expire_tool_calls(now)
        if now - self._last_heartbeat >= HEARTBEAT:
            async with db.unit_of_work() as session:
                queries = RunnerQueries(session)
                await queries.heartbeat(list(self._running), now)
                lost = await queries.requeue_stale(
                    now - STALE_AFTER, now, self.settings.task_max_attempts
                )
                for task_id, user_id, plan_id, kind in lost:
                    await self._lost(session, task_id, user_id, plan_id, kind)
                bus.QUEUE_SIZE.set(await queries.queued_total())
            self._last_heartbeat = now
        candidates = await RunnerQueries.runnable(db, CLAIM_BATCH, now)
        room: dict[UUID, int] = {}  # plans' and agents' room left in this pass
        chosen = {
            candidate.task_id: candidate.status
            for candidate in candidates
            if candidate.task_id not in self._running and _fits(room, candidate)
        }
        claimed: list[Task] = []
        if chosen:  # all in one transaction: a plan's wave starts together
            async with db.unit_of_work() as session:
                claimed = await RunnerQueries(session).claim_many(list(chosen.items()), utcnow())
                # Their agents are `busy` from the claim on (one update per user).
                working: dict[UUID, set[UUID]] = {}
                for task in claimed:
                    if task.agent_id is not None:
                        working.setdefault(task.user_id, set()).add(task.agent_id)
                for user_id, agent_ids in working.items():
                    await health.task_started(session, user_id, sorted(agent_ids))
        # The ones missing were taken by another process, or cancelled.
        for task in claimed:
            status = chosen[task.id]
            if status == "queued" and task.attempts == 1:
                bus.WAITED.observe(max(0.0, (utcnow() - task.created_at).total_seconds()))
            self._running[task.id] = asyncio.get_running_loop().create_task(
                self._run(task, resumed=status != "queued" or bool(task.state)),
                name=f"agents-task:{task.id}",
            )
        bus.IN_FLIGHT.set(len(self._running))
        return len(claimed)

    async def _lost(
        self, session: Any, task_id: UUID, user_id: UUID, plan_id: UUID | None, kind: str
    ) -> None:
        """A task that failed because its process kept dying: tell its session, and move
        its plan on (a step) or end the plan (a plan task)."""
        detail = "The process running it stopped answering too many times"
        bus.FINISHED.labels(kind, "failed").inc()
        if plan_id is not None and kind == "step":
            moved = await orchestrator.advance(session, user_id, plan_id)
            moved.publish(session, self.runtime.events)
            for queued in moved.queued:
                self._wake_after(session, queued)
        elif kind == "plan":
            plan = await PlanQueries(session, user_id).plan(task_id)
            if plan is not None and plan.status not in orchestrator.FINAL_PLAN_STATES:
                _, outcome = await orchestrator.cancel(session, user_id, plan, detail)
                plan.status = "failed"
                plan.error_code = "agents.worker_lost"
                outcome.publish(session, self.runtime.events)
        task = await RunnerQueries(session).get(task_id)
        if task is not None:
            self.runtime.events.after_commit(
                session,
                user_id,
                task.session_id,
                EventType.TASK_COMPLETED,
                {"task_id": str(task_id), "status": "failed", "code": "agents.worker_lost"},
            )

    def _wake_after(self, session: Any, task_id: UUID) -> None:
        on_outcome(session, committed=lambda: self.wake(task_id))

    # -- retries -----------------------------------------------------------------------------

    async def give_up_or_retry(self, task: Task, code: str, detail: str) -> bool:
        """After a run failed with `code`: queue it again with backoff if the failure is
        transient and attempts remain (True), else fail it for good (False)."""
        if bus.should_retry(self.settings, code, task.attempts):
            delay = bus.backoff_seconds(self.settings, task.attempts)
            now = utcnow()
            async with self.kernel.db.unit_of_work() as session:
                requeued = await RunnerQueries(session).retry_later(
                    task.id, now, now + dt.timedelta(seconds=delay)
                )
            if requeued:
                bus.RETRIED.inc()
                await self.runtime.events.publish(
                    task.user_id,
                    task.session_id,
                    EventType.TASK_PROGRESS,
                    {
                        "task_id": str(task.id),
                        "stage": "retrying",
                        "code": code,
                        "attempt": task.attempts,
                        "retry_in_ms": int(delay * 1000),
                    },
                )
                asyncio.get_running_loop().call_later(delay, self.wake)
                return True
        await Run(self, task).fail(code, detail)
        return False

    # -- a run -------------------------------------------------------------------------------

    async def _run(self, task: Task, *, resumed: bool) -> None:
        try:
            if task.kind == "plan":
                await PlanRun(self, task).execute()
            else:
                await Run(self, task).execute(resumed=resumed)
        except asyncio.CancelledError:
            pass  # cancelled by the user (already recorded) or shutdown (re-queued)
        except Exception:
            log.exception("agents_task_crashed", task_id=str(task.id))
            with contextlib.suppress(Exception):
                await Run(self, task).fail("agents.internal_error", "The run failed unexpectedly")
        finally:
            self._running.pop(task.id, None)
            self.wake()  # its agent's and plan's slot is free for the next task
