"""The agent bus: every agent task (a direct run, a plan, a plan's step) is a row in
`agents_tasks` that the runner claims with a conditional update, so the database is the
queue and its state survives restarts.

This module holds the bus's rules around that queue:

- **backpressure**: an agent holds at most `agent_queue_limit` waiting tasks and a user
  `user_queue_limit`; past that new work is refused with 429 `agents.queue_full` and a
  `Retry-After` estimated from the queue, never queued without bound;
- **retries**: a run that fails for a transient reason (the model's provider down or too
  slow) goes back to the queue with exponential backoff and jitter until
  `task_max_attempts` claims, then fails with its code;
- **lifecycle**: an agent is `active`, `draining` (takes no new work, finishes what it
  has) or `deregistered` (drained);
- **across machines**: queuing a task emits the durable event `agents.task.queued` in the
  same transaction; the `agents-bus` consumer in every worker wakes its runner at once,
  whichever machine it runs on (runners also poll, so a lost wake-up only delays);
- **metrics**: queue size, tasks in flight, tasks finished by outcome, time queued and
  time running.
"""

from __future__ import annotations

import math
import random
from uuid import UUID

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.errors import QueueFull
from veche.apps.agents.models import Agent, Task
from veche.apps.agents.repository import PlanQueries
from veche.apps.agents.runtime import runtime_of
from veche.contracts.agents import TaskQueued
from veche.kernel.events import ConsumerContext, Event, consumer, emit
from veche.settings import AgentsSettings

TASK_QUEUED = "agents.task.queued"

# Failures worth another attempt: the provider may be back in a moment.
TRANSIENT_CODES = frozenset({"ai_provider_unavailable", "ai_provider_timeout"})
# What a queued task is assumed to take when its agent has no history yet.
DEFAULT_TASK_SECONDS = 5.0

QUEUE_SIZE = Gauge(
    "veche_agents_queue_size", "Agent tasks waiting on the bus (queued or blocked), all users"
)
IN_FLIGHT = Gauge("veche_agents_tasks_running", "Agent tasks running in this process")
FINISHED = Counter(
    "veche_agents_tasks_finished_total",
    "Agent tasks that ended, by kind (chat, plan, step) and outcome",
    ["kind", "outcome"],
)
RETRIED = Counter(
    "veche_agents_task_retries_total", "Agent task runs put back in the queue after a failure"
)
REFUSED = Counter(
    "veche_agents_queue_refusals_total",
    "Work refused because a queue was full, by scope",
    ["scope"],
)
WAITED = Histogram(
    "veche_agents_task_wait_seconds",
    "Time from queuing a task to its first start",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
RAN = Histogram(
    "veche_agents_task_run_seconds",
    "Time from a task's first start to its end, by kind",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)


def backoff_seconds(settings: AgentsSettings, attempt: int) -> float:
    """The wait before attempt `attempt + 1`: exponential from `retry_base_seconds`, at
    most `retry_max_seconds`, with jitter over its upper half so retries spread out."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


def should_retry(settings: AgentsSettings, code: str, attempts: int) -> bool:
    return code in TRANSIENT_CODES and attempts < settings.task_max_attempts


async def admit(
    session: AsyncSession,
    user_id: UUID,
    settings: AgentsSettings,
    agent: Agent | None,
    *,
    adding: int = 1,
) -> None:
    """Refuse `adding` more tasks if they would overfill the agent's or the user's queue."""
    queries = PlanQueries(session, user_id)
    if agent is not None:
        waiting = await queries.waiting(agent.id)
        if waiting + adding > settings.agent_queue_limit:
            REFUSED.labels("agent").inc()
            raise QueueFull(
                f"Agent {agent.name!r} already has {waiting} tasks waiting (at most "
                f"{settings.agent_queue_limit}); try again later",
                headers={"Retry-After": str(_retry_after(waiting, agent))},
            )
    waiting = await queries.waiting()
    if waiting + adding > settings.user_queue_limit:
        REFUSED.labels("user").inc()
        raise QueueFull(
            f"You already have {waiting} tasks waiting (at most {settings.user_queue_limit}); "
            "try again later",
            headers={"Retry-After": str(_retry_after(waiting, None))},
        )


def _retry_after(waiting: int, agent: Agent | None) -> int:
    """Seconds until the queue has probably moved enough: the waiting tasks over the
    agent's concurrency, times DEFAULT_TASK_SECONDS; between 1 and 300."""
    lanes = int(agent.config.get("concurrency_limit", 3)) if agent is not None else 3
    seconds = waiting / max(lanes, 1) * DEFAULT_TASK_SECONDS
    return max(1, min(300, math.ceil(seconds)))


async def announce(session: AsyncSession, task: Task) -> None:
    """Emit `agents.task.queued` for a task entering the queue, in the caller's
    transaction: workers elsewhere learn of it when (and only if) it commits."""
    await emit(
        session,
        TASK_QUEUED,
        TaskQueued(
            task_id=task.id,
            user_id=task.user_id,
            session_id=task.session_id,
            agent_id=task.agent_id,
            kind=task.kind,
        ),
        subject=str(task.id),
        actor_id=task.user_id,
    )


def finished(task: Task, outcome: str) -> None:
    FINISHED.labels(task.kind, outcome).inc()
    if task.started_at is not None and task.finished_at is not None:
        RAN.labels(task.kind).observe((task.finished_at - task.started_at).total_seconds())


@consumer(TASK_QUEUED, name="agents-bus", idempotent=True, wake_on_commit=False)
async def wake_runner(event: Event, context: ConsumerContext) -> None:
    """Wake this worker's runner for a task queued anywhere; the runner claims it (or
    another worker's does first: the claim is a conditional update). Idempotent: it writes
    nothing, and a second wake-up finds the task claimed. Not woken by this process's own
    commits: whatever queues a task here wakes the runner directly, and a batch read in the
    middle of a plan's wave only took the event loop from its steps."""
    queued = event.parse(TaskQueued)
    if "agents" in context.kernel.apps:
        runtime_of(context.kernel).wake(queued.task_id)
