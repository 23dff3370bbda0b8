"""Plans, their steps, the orchestrator's configuration and the agent bus's figures: one
user's, through `Scoped` like everything else a request or a run of that user touches."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import Select, bindparam, func, select, union_all, update
from sqlalchemy.orm import defer

from veche.apps.agents.models import Agent, OrchestratorConfig, Plan, Task
from veche.apps.agents.repository.scoped import Scoped, rowcount
from veche.kernel.db import Database

# Tasks waiting on the bus: queued to run, or a plan's steps waiting for their inputs.
WAITING_STATES = ("queued", "blocked")
# Tasks holding an agent's slot or paused in the middle of a run.
IN_FLIGHT_STATES = ("running", "waiting_approval", "waiting_tool")
FINISHED_STATES = ("completed", "failed", "cancelled", "skipped")
# How many of an agent's latest completed tasks its mean run time is taken over.
DURATION_SAMPLE = 100


@functools.lru_cache(maxsize=64)
def _mean_durations(agents: int) -> Select[UUID, float | None]:
    """`mean_durations` over `agents` agents (parameters `agent_0`...), built once per
    count: every plan reads it, and building its union of subqueries took longer than
    running it."""
    latest = union_all(
        *(
            select(
                select(Task.agent_id, Task.duration_ms)
                .where(
                    Task.user_id == bindparam("scope_user"),
                    Task.agent_id == bindparam(f"agent_{n}"),
                    Task.status == "completed",
                    Task.duration_ms.is_not(None),
                )
                .order_by(Task.finished_at.desc())
                .limit(DURATION_SAMPLE)
                .subquery()
            )
            for n in range(agents)
        )
    ).subquery()
    return select(latest.c.agent_id, func.avg(latest.c.duration_ms)).group_by(latest.c.agent_id)


# Built once with bound parameters: every step's end reads its plan's steps, and building
# the statement cost more of the event loop's time than running it.
_STEPS = (
    select(Task)
    .where(
        Task.user_id == bindparam("scope_user"),
        Task.plan_id == bindparam("plan"),
        Task.kind == "step",
    )
    .options(defer(Task.state, raiseload=True))
    .order_by(Task.created_at, Task.id)
    .execution_options(populate_existing=True)
)


@dataclass(frozen=True, slots=True)
class AgentLoad:
    """One agent's place on the bus."""

    agent: Agent
    queued: int
    in_flight: int
    completed: int
    failed: int
    mean_wait_ms: float | None
    mean_duration_ms: float | None


class PlanQueries(Scoped):
    """One user's plans and steps, orchestrator configuration and bus figures."""

    # -- configuration --------------------------------------------------------------------

    async def config(self) -> OrchestratorConfig | None:
        row: OrchestratorConfig | None = await self.session.scalar(
            select(OrchestratorConfig).where(OrchestratorConfig.user_id == self.user_id)
        )
        return row

    # -- plans ----------------------------------------------------------------------------

    def plans(self, project_id: UUID | None, session_id: UUID | None) -> Select[Plan]:
        statement = select(Plan).where(Plan.user_id == self.user_id)
        if project_id is not None:
            statement = statement.where(Plan.project_id == project_id)
        if session_id is not None:
            statement = statement.where(Plan.session_id == session_id)
        return statement

    async def plan(self, plan_id: UUID, *, lock: bool = False) -> Plan | None:
        statement = self.plans(None, None).where(Plan.id == plan_id)
        if lock:  # PostgreSQL; SQLite has one writer anyway
            statement = statement.with_for_update(key_share=True).execution_options(
                populate_existing=True
            )
        row: Plan | None = await self.session.scalar(statement)
        return row

    async def cached(self, cache_key: str, since: dt.datetime) -> Plan | None:
        """The newest plan made since `since` for the same request and agents whose graph
        was valid (whatever became of its run)."""
        row: Plan | None = await self.session.scalar(
            self.plans(None, None)
            .where(
                Plan.cache_key == cache_key,
                Plan.created_at >= since,
                Plan.status != "invalid",
                Plan.cached_from.is_(None),
            )
            .order_by(Plan.created_at.desc())
            .limit(1)
        )
        return row

    def steps_statement(self, plan_id: UUID) -> tuple[Select[Task], dict[str, Any]]:
        """The plan's steps in order, without their run's `state` (each one's whole
        conversation: nothing that reads the steps of a plan needs it, and it is the bulk
        of a row); the statement and its parameters."""
        return _STEPS, {"scope_user": self.user_id, "plan": plan_id}

    async def steps(self, plan_id: UUID) -> list[Task]:
        rows = await self.session.scalars(*self.steps_statement(plan_id))
        return list(rows.all())

    @staticmethod
    def step_results_statement(
        user_id: UUID, plan_id: UUID, keys: list[str]
    ) -> Select[str | None, str | None]:
        return select(Task.step_key, Task.result).where(
            Task.user_id == user_id,
            Task.plan_id == plan_id,
            Task.kind == "step",
            Task.step_key.in_(keys),
        )

    @staticmethod
    async def read_step_results(
        db: Database, user_id: UUID, plan_id: UUID, keys: list[str]
    ) -> dict[str, str | None]:
        """The results of the plan's steps named by `keys`, by key, read outside any
        transaction (`Database.read_all`)."""
        if not keys:
            return {}
        rows = await db.read_all(PlanQueries.step_results_statement(user_id, plan_id, keys))
        return {key: result for key, result in rows if key is not None}

    async def set_step_statuses(
        self, task_ids: list[UUID], from_states: tuple[str, ...], now: dt.datetime, **values: object
    ) -> list[UUID]:
        """Move the given steps still in `from_states`; the ids that moved."""
        if not task_ids:
            return []
        moved = await self.session.scalars(
            update(Task)
            .where(
                Task.user_id == self.user_id,
                Task.id.in_(task_ids),
                Task.status.in_(from_states),
            )
            .values(updated_at=now, **values)
            .returning(Task.id)
            .execution_options(synchronize_session=False)
        )
        return list(moved.all())

    async def set_task(self, task_id: UUID, from_states: tuple[str, ...], **values: object) -> bool:
        outcome = await self.session.execute(
            update(Task)
            .where(Task.user_id == self.user_id, Task.id == task_id, Task.status.in_(from_states))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return rowcount(outcome) == 1

    # -- the bus ----------------------------------------------------------------------------

    async def agents(self, *, accepting_only: bool) -> list[Agent]:
        statement = self.select(Agent).order_by(Agent.name)
        if accepting_only:
            statement = statement.where(Agent.lifecycle == "active", Agent.status != "error")
        rows = await self.session.scalars(statement)
        return list(rows.all())

    async def waiting(self, agent_id: UUID | None = None) -> int:
        """Tasks waiting on the bus: the agent's, or all of the user's."""
        statement = select(func.count()).where(
            Task.user_id == self.user_id, Task.status.in_(WAITING_STATES)
        )
        if agent_id is not None:
            statement = statement.where(Task.agent_id == agent_id)
        return int(await self.session.scalar(statement) or 0)

    def mean_durations_statement(
        self, agent_ids: Collection[UUID]
    ) -> tuple[Select[UUID, float | None], dict[str, Any]]:
        """`mean_durations`' statement for these agents, and its parameters."""
        ordered = sorted(set(agent_ids))
        params: dict[str, Any] = {f"agent_{n}": agent_id for n, agent_id in enumerate(ordered)}
        return _mean_durations(len(ordered)), {"scope_user": self.user_id, **params}

    async def mean_durations(self, agent_ids: Collection[UUID]) -> dict[UUID, float]:
        """Mean run time (ms) of each agent's latest `DURATION_SAMPLE` completed tasks.

        Recent runs say more of the next one than old ones, and the read keeps its size as
        the history grows: each agent's part is a walk down the index on (agent, status,
        finished_at) that stops after `DURATION_SAMPLE` rows."""
        if not agent_ids:
            return {}
        rows = await self.session.execute(*self.mean_durations_statement(agent_ids))
        return {agent_id: float(mean) for agent_id, mean in rows.all() if mean is not None}

    async def loads(self) -> list[AgentLoad]:
        """Every agent of the user with its queue, work in flight and totals."""
        agents = await self.agents(accepting_only=False)
        counts = await self.session.execute(
            select(Task.agent_id, Task.status, func.count())
            .where(Task.user_id == self.user_id, Task.agent_id.is_not(None))
            .group_by(Task.agent_id, Task.status)
        )
        by_agent: dict[UUID, dict[str, int]] = {}
        for agent_id, status, number in counts.all():
            if agent_id is not None:  # filtered out above; for the type checker
                by_agent.setdefault(agent_id, {})[status] = int(number)
        waits = await self.session.execute(
            select(Task.agent_id, Task.created_at, Task.started_at)
            .where(
                Task.user_id == self.user_id,
                Task.agent_id.is_not(None),
                Task.started_at.is_not(None),
            )
            .order_by(Task.created_at.desc())
            .limit(1000)
        )
        wait_ms: dict[UUID, list[float]] = {}
        for agent_id, created, started in waits.all():
            if agent_id is not None and started is not None:
                waited = (started - created).total_seconds() * 1000
                wait_ms.setdefault(agent_id, []).append(waited)
        durations = await self.mean_durations([agent.id for agent in agents])
        loads = []
        for agent in agents:
            count = by_agent.get(agent.id, {})
            waits_ms = wait_ms.get(agent.id)
            loads.append(
                AgentLoad(
                    agent=agent,
                    queued=sum(count.get(state, 0) for state in WAITING_STATES),
                    in_flight=sum(count.get(state, 0) for state in IN_FLIGHT_STATES),
                    completed=count.get("completed", 0),
                    failed=count.get("failed", 0),
                    mean_wait_ms=sum(waits_ms) / len(waits_ms) if waits_ms else None,
                    mean_duration_ms=durations.get(agent.id),
                )
            )
        return loads
