"""The rules behind the orchestrator's and the bus's endpoints: the user's orchestrator
configuration, reading and cancelling plans, the agents' queues, and taking an agent off
the bus (and back)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.errors import AgentNotFound, PlanClosed, PlanNotFound
from veche.apps.agents.models import Agent, OrchestratorConfig, Plan, Task
from veche.apps.agents.orchestrator import FINAL_PLAN_STATES, cancel
from veche.apps.agents.repository import AgentLoad, HealthQueries, PlanQueries
from veche.apps.agents.runtime import AgentsRuntime
from veche.kernel import record, utcnow
from veche.kernel.db import on_outcome


class BusService:
    def __init__(self, db: AsyncSession, user_id: UUID, runtime: AgentsRuntime) -> None:
        self.db = db
        self.user_id = user_id
        self.runtime = runtime
        self.plans = PlanQueries(db, user_id)

    # -- configuration ----------------------------------------------------------------------

    async def config(self) -> OrchestratorConfig | None:
        return await self.plans.config()

    async def set_config(self, values: dict[str, Any]) -> OrchestratorConfig:
        row = await self.plans.config()
        if row is None:
            row = OrchestratorConfig(user_id=self.user_id)
            self.db.add(row)
        for field, value in values.items():
            setattr(row, field, value)
        row.updated_at = utcnow()
        record(
            self.db,
            "agents.orchestrator.configured",
            actor_id=self.user_id,
            target_type="agents.orchestrator",
            target_id=self.user_id,
            data=values,
        )
        await self.db.flush()
        return row

    # -- plans ------------------------------------------------------------------------------

    async def plan(self, plan_id: UUID) -> tuple[Plan, dict[str, Task]]:
        plan = await self.plans.plan(plan_id)
        if plan is None:
            raise PlanNotFound(f"You have no plan {plan_id}")
        steps = {step.step_key or "": step for step in await self.plans.steps(plan.id)}
        return plan, steps

    async def cancel(self, plan_id: UUID) -> tuple[Plan, dict[str, Task]]:
        plan = await self.plans.plan(plan_id, lock=True)
        if plan is None:
            raise PlanNotFound(f"You have no plan {plan_id}")
        if plan.status in FINAL_PLAN_STATES:
            raise PlanClosed(f"Plan {plan_id} has already ended ({plan.status})")
        cancelled, outcome = await cancel(self.db, self.user_id, plan, "cancelled by the user")
        outcome.publish(self.db, self.runtime.events)
        record(
            self.db,
            "agents.plan.cancelled",
            actor_id=self.user_id,
            target_type="agents.plan",
            target_id=plan.id,
            data={"tasks": [str(task_id) for task_id in cancelled]},
        )
        await self.db.flush()
        on_outcome(self.db, committed=lambda: self.runtime.stop_tasks(cancelled))
        return await self.plan(plan_id)

    # -- the bus ----------------------------------------------------------------------------

    async def loads(self) -> list[AgentLoad]:
        return await self.plans.loads()

    async def _agent(self, agent_id: UUID) -> Agent:
        agent = await self.plans.get(Agent, agent_id)
        if agent is None:
            raise AgentNotFound(f"You have no agent {agent_id}")
        return agent

    async def deregister(self, agent_id: UUID) -> Agent:
        """Take no new work for the agent; it is `deregistered` at once when it has none
        in hand, else `draining` until its last task ends."""
        agent = await self._agent(agent_id)
        health = HealthQueries(self.db, self.user_id)
        if agent.lifecycle in {"active", "draining"}:
            lifecycle = "draining" if await health.unfinished_tasks(agent.id) else "deregistered"
            await health.set_lifecycle(agent.id, lifecycle)
            self._audit("agents.agent.deregistered", agent, lifecycle)
        return await self._reload(agent)

    async def register(self, agent_id: UUID) -> Agent:
        agent = await self._agent(agent_id)
        if agent.lifecycle != "active":
            await HealthQueries(self.db, self.user_id).set_lifecycle(agent.id, "active")
            self._audit("agents.agent.registered", agent, "active")
        return await self._reload(agent)

    async def _reload(self, agent: Agent) -> Agent:
        await self.db.refresh(agent)
        return agent

    def _audit(self, action: str, agent: Agent, lifecycle: str) -> None:
        record(
            self.db,
            action,
            actor_id=self.user_id,
            target_type="agents.agent",
            target_id=agent.id,
            data={"name": agent.name, "lifecycle": lifecycle},
        )
