"""Agent status in the database, and the job that keeps it honest.

An agent is `ready`, `busy` while one of its tasks runs, or in `error` after its AI
provider failed. The chat runner reports each task's start and end here; the transitions
lock the agent's row, so two tasks of one agent finishing together cannot leave it `busy`.
The `agents.health` job brings agents out of `error` once their provider looks usable
again, puts back to `ready` the `busy` agents a crash left without a running task, and lets
go of this process's idle worker spaces.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Collection
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.repository import HealthQueries, SystemQueries
from veche.apps.agents.runtime import APP, AgentsRuntime, runtime_of
from veche.kernel import Kernel, ScheduledJob, utcnow

log = structlog.get_logger("veche.agents.health")

# An AI provider that cannot be reached or does not answer in time
# (`veche.kernel.ai.errors`) puts an agent in error. Anything else is the task's problem:
# a provider that refused one request (`ai_provider_rejected`: too long, bad input), a
# rejected tool call, a cancelled task, bad model output.
PROVIDER_FAILURES = frozenset({"ai_provider_unavailable", "ai_provider_timeout"})


def is_provider_failure(error_code: str | None) -> bool:
    return error_code in PROVIDER_FAILURES


async def task_started(db: AsyncSession, user_id: UUID, agent_id: UUID | Collection[UUID]) -> None:
    """An agent's task (or tasks of several agents) began running: the agent is `busy`
    (also out of `error`: it is trying again). One conditional update, which locks the
    rows as it changes them; the runner makes it in the transaction that claims the tasks."""
    await HealthQueries(db, user_id).set_status(
        agent_id, "busy", None, utcnow(), unless_already=True
    )


async def task_finished(
    db: AsyncSession, user_id: UUID, agent_id: UUID, *, error_code: str | None
) -> None:
    """An agent's task ended with `error_code` (None: it completed). Call it once the task
    row carries its final status, in the same session.

    A provider failure puts the agent in `error` with the code as reason. Otherwise the
    agent is `ready` once none of its tasks is running; a success also clears an `error`
    (the provider answered), other failures leave it."""
    await db.flush()  # the session does not autoflush: the count must see this task's end
    queries = HealthQueries(db, user_id)
    locked = await queries.lock_agent(agent_id)
    if locked is None:  # deleted meanwhile
        return
    status, lifecycle = locked
    now = utcnow()
    if lifecycle == "draining" and not await queries.unfinished_tasks(agent_id):
        await queries.set_lifecycle(agent_id, "deregistered")
    if is_provider_failure(error_code):
        await queries.set_status(agent_id, "error", error_code, now)
        return
    if status == "error" and error_code is not None:
        return
    await queries.settle(agent_id, now)


async def agent_metrics(db: AsyncSession, user_id: UUID, agent_id: UUID) -> dict[str, Any]:
    """An agent's task figures from its rows: counts by outcome, the success rate over the
    tasks that reached a verdict (a cancellation is none), mean and p95 duration."""
    queries = HealthQueries(db, user_id)
    counts = await queries.task_counts(agent_id)
    _, mean, p95 = await queries.durations(agent_id)
    completed, failed = counts.get("completed", 0), counts.get("failed", 0)
    cancelled = counts.get("cancelled", 0)
    total = sum(counts.values())
    verdicts = completed + failed
    return {
        "total": total,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "in_progress": total - completed - failed - cancelled,
        "success_rate": round(completed / verdicts, 4) if verdicts else None,
        "average_duration_ms": round(mean, 1) if mean is not None else None,
        "p95_duration_ms": p95,
    }


def probe(kernel: Kernel, purpose: str) -> str | None:
    """Why the agent's model cannot be used now, or None if it looks usable: its purpose
    must resolve to a profile, and its provider must not be down (circuit open, local
    model missing). No call is made."""
    llm = kernel.ai.llm
    try:
        profile = llm.profile(purpose)
    except ValueError:
        return "ai_purpose_invalid"
    if llm.provider(profile).health().state == "down":
        return "ai_provider_unavailable"
    return None


async def check_agents(kernel: Kernel, *, now: dt.datetime | None = None) -> dict[str, int]:
    """One tick of the health job; what it did, by kind."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=kernel.settings.agents.error_recovery_seconds)
    recovered = still_failing = 0
    async with kernel.db.unit_of_work() as session:
        system = SystemQueries(session)
        for agent in await system.failed_agents(cutoff):
            reason = probe(kernel, str(agent.config.get("model", "default")))
            if reason is not None:
                still_failing += 1
                continue
            if await system.recover(agent.id, agent.status_changed_at, now):
                recovered += 1
        unstuck = await system.release_idle_busy(now)
        drained = await system.finish_draining()
    released = trashed = 0
    runtime: AgentsRuntime | None = kernel.apps.get(APP)
    if runtime is not None:
        released = await runtime.spaces.release_idle()
        trashed = await runtime.workspaces.sweep_trash()
    result = {
        "recovered": recovered,
        "still_failing": still_failing,
        "unstuck": unstuck,
        "drained": drained,
        "spaces_released": released,
        "trash_swept": trashed,
    }
    if recovered or unstuck or released or drained or trashed:
        log.info("agents_health", **result)
    return result


# Jobs are declared when the module is imported, before any settings exist; the job ticks
# at this fixed pace and does its work every `health_interval_seconds` (rounded up to ticks).
JOB_TICK = dt.timedelta(seconds=5)


async def run_health_job(kernel: Kernel) -> None:
    """The `agents.health` tick: check if `health_interval_seconds` passed since this
    process last checked (the job's lease keeps one replica running it while it lives)."""
    runtime: AgentsRuntime | None = kernel.apps.get(APP)
    interval = kernel.settings.agents.health_interval_seconds
    if runtime is not None:
        now = time.monotonic()
        last = runtime.health_checked_at
        if last is not None and now - last < interval - JOB_TICK.total_seconds() / 2:
            return
        runtime.health_checked_at = now
    await check_agents(kernel)


health_job = ScheduledJob(name="agents.health", interval=JOB_TICK, run=run_health_job)


async def spaces_ready(kernel: Kernel) -> None:
    """The `/ready` check: this process's worker spaces are healthy."""
    await runtime_of(kernel).spaces.check()
