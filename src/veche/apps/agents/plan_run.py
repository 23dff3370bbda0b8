"""The run of a `plan` task: make the plan for its message (or reuse a cached one),
validate and estimate it, store it with its steps, and wait for its approval when it is
over the user's thresholds; then go on once the approval is decided. Moving a plan on as
its steps end is `orchestrator.advance`'s."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents import bus, planning
from veche.apps.agents.approvals import ApprovalService
from veche.apps.agents.errors import NoAgents
from veche.apps.agents.models import ChatMessage, Plan, Task
from veche.apps.agents.orchestrator import (
    Config,
    advance,
    agent_cards,
    draft_graph,
    draft_of,
    graph_of,
    plan_payload,
)
from veche.apps.agents.repository import ChatQueries, PlanQueries, RunnerQueries
from veche.apps.agents.stream import EventType
from veche.kernel import new_id, utcnow
from veche.kernel.ai.types import Message
from veche.kernel.errors import ProblemError

if TYPE_CHECKING:
    from veche.apps.agents.runner import Runner

MAX_PLANNING_TOKENS = 2_000


class PlanRun:
    """Make a plan for the task's message, or go on with it once its approval is decided."""

    def __init__(self, runner: Runner, task: Task) -> None:
        self.runner = runner
        self.runtime = runner.runtime
        self.kernel = runner.kernel
        self.settings = runner.settings
        self.task = task
        self.user_id = task.user_id

    async def _publish(self, event_type: EventType, payload: dict[str, Any]) -> None:
        await self.runtime.events.publish(
            self.user_id,
            self.task.session_id,
            event_type,
            {"task_id": str(self.task.id), "plan_id": str(self.task.id), **payload},
        )

    async def execute(self) -> None:
        try:
            async with self.kernel.db.unit_of_work() as session:
                plan = await PlanQueries(session, self.user_id).plan(self.task.id)
            if plan is None:
                await self._make()
            elif plan.status == "awaiting_approval":
                await self._decided(plan)
            else:  # a plan already under way (a restart between two of its writes)
                async with self.kernel.db.unit_of_work() as session:
                    await RunnerQueries(session).save(self.task.id, utcnow(), status="waiting_plan")
        except ProblemError as error:  # the gateway's and the bus's: stable codes
            await self.runner.give_up_or_retry(self.task, error.code, error.detail or error.title)

    # -- making the plan -------------------------------------------------------------------

    async def _make(self) -> None:
        now = utcnow()
        async with self.kernel.db.unit_of_work() as session:
            queries = PlanQueries(session, self.user_id)
            config = Config.of(await queries.config())
            agents = await queries.agents(accepting_only=True)
            cards = agent_cards(
                agents, await queries.mean_durations([agent.id for agent in agents])
            )
            message = await ChatQueries(session, self.user_id).get(
                ChatMessage, self.task.message_id
            )
            cached = None
            key = ""
            if message is not None and cards:
                key = planning.plan_cache_key(self.user_id, message.content, cards)
                if self.settings.plan_cache_seconds:
                    since = now - dt.timedelta(seconds=self.settings.plan_cache_seconds)
                    cached = await queries.cached(key, since)
        if message is None:
            return  # the session went away with its message
        if not cards:
            raise NoAgents("You have no active agent that could take part in a plan")
        await self._publish(EventType.TASK_STARTED, {"kind": "plan"})  # started: its claim
        if cached is not None:
            draft = draft_of(cached.graph)
        else:
            draft = await self.kernel.ai.llm.structured(
                [
                    Message(role=role, content=content)
                    for role, content in planning.planner_messages(message.content, cards)
                ],
                planning.PlanDraft,
                app="agents",
                purpose=config.model,
                user_id=self.user_id,
                max_tokens=MAX_PLANNING_TOKENS,
            )
        try:
            plan = planning.validate(draft, cards)
        except planning.PlanInvalid as invalid:
            await self._refuse(message, key, draft, config, invalid)
            return
        estimate = planning.estimate(
            plan,
            prices=self._prices(cards),
            embedding_price=self._embedding_price(),
            max_parallel=config.max_parallel_tasks,
            request_tokens=planning.approximate_tokens(message.content),
        )
        await self._store(message, key, plan, estimate, config, cached)

    def _prices(self, cards: list[planning.AgentCard]) -> dict[str, planning.Price]:
        """Each agent model purpose's price, through the model its profile resolves to."""
        configured = self.kernel.settings.ai.prices
        prices: dict[str, planning.Price] = {}
        for card in cards:
            try:
                model = self.kernel.ai.llm.profile(card.model).model
            except ProblemError:
                continue
            price = configured.get(model)
            if price is not None:
                prices[card.model] = planning.Price(
                    price.input_per_million, price.output_per_million
                )
        return prices

    def _embedding_price(self) -> planning.Price | None:
        price = self.kernel.settings.ai.prices.get(self.kernel.ai.embeddings_model)
        return (
            None
            if price is None
            else planning.Price(price.input_per_million, price.output_per_million)
        )

    def _new_plan(
        self, message: ChatMessage, key: str, status: str, config: Config, **values: Any
    ) -> Plan:
        now = utcnow()
        return Plan(
            id=self.task.id,
            user_id=self.user_id,
            project_id=self.task.project_id,
            session_id=self.task.session_id,
            message_id=message.id,
            request=message.content,
            cache_key=key,
            status=status,
            max_parallel=config.max_parallel_tasks,
            created_at=now,
            updated_at=now,
            **values,
        )

    async def _refuse(
        self,
        message: ChatMessage,
        key: str,
        draft: planning.PlanDraft,
        config: Config,
        invalid: planning.PlanInvalid,
    ) -> None:
        """Keep an invalid draft for the user to inspect and fail the message with the
        reason (a cycle named with its path)."""
        now = utcnow()
        row = self._new_plan(
            message,
            key,
            "invalid",
            config,
            graph=draft_graph(draft),
            waves=[],
            estimate={},
            error_code=invalid.code,
            error_detail=invalid.detail,
            finished_at=now,
        )
        async with self.kernel.db.unit_of_work() as session:
            session.add(row)
            await session.flush()
            await RunnerQueries(session).save(
                self.task.id,
                now,
                plan_id=row.id,
                status="failed",
                error_code=invalid.code,
                error_detail=invalid.detail[:2000],
                finished_at=now,
            )
        bus.FINISHED.labels("plan", "failed").inc()
        await self._publish(
            EventType.ERROR,
            {"code": invalid.code, "detail": invalid.detail, "cycle": invalid.cycle},
        )
        await self._publish(
            EventType.PLAN_COMPLETED,
            {
                "status": "invalid",
                "error_code": invalid.code,
                "detail": invalid.detail,
                "cycle": None if invalid.cycle is None else list(invalid.cycle),
            },
        )

    async def _store(
        self,
        message: ChatMessage,
        key: str,
        plan: planning.Plan,
        estimate: planning.Estimate,
        config: Config,
        cached: Plan | None,
    ) -> None:
        reasons = []
        if estimate.cost > config.approval_cost_threshold:
            reasons.append(
                f"estimated cost {estimate.cost:.4f} is over {config.approval_cost_threshold}"
            )
        if len(plan.steps) > config.approval_tasks_threshold:
            reasons.append(f"{len(plan.steps)} tasks is over {config.approval_tasks_threshold}")
        over_budget = estimate.cost > config.budget
        status = "rejected" if over_budget else "awaiting_approval" if reasons else "running"
        now = utcnow()
        row = self._new_plan(
            message,
            key,
            status,
            config,
            graph=graph_of(plan),
            waves=[list(wave) for wave in plan.waves],
            estimate=estimate.as_dict(),
            cached_from=None if cached is None else cached.id,
        )
        if over_budget:
            row.error_code = "agents.plan_over_budget"
            row.error_detail = (
                f"The plan's estimated cost {estimate.cost:.4f} is over your budget {config.budget}"
            )
            row.finished_at = now
        steps: list[Task] = []
        queued: list[UUID] = []
        async with self.kernel.db.unit_of_work() as session:
            session.add(row)
            await session.flush()
            runner_queries = RunnerQueries(session)
            if over_budget:
                await runner_queries.save(
                    self.task.id,
                    now,
                    plan_id=row.id,
                    status="failed",
                    error_code=row.error_code,
                    error_detail=row.error_detail,
                    finished_at=now,
                )
            else:
                await bus.admit(session, self.user_id, self.settings, None, adding=len(plan.steps))
                for step in plan.steps:
                    task = Task(
                        id=new_id(),
                        user_id=self.user_id,
                        project_id=self.task.project_id,
                        session_id=self.task.session_id,
                        agent_id=step.agent.id,
                        message_id=message.id,
                        kind="step",
                        plan_id=row.id,
                        step_key=step.id,
                        depends_on=list(step.depends_on),
                        status="queued"
                        if status == "running" and not step.depends_on
                        else "blocked",
                        state={},
                        created_at=now,
                        updated_at=now,
                    )
                    session.add(task)
                    steps.append(task)
                await session.flush()
                for task in steps:
                    if task.status == "queued":
                        queued.append(task.id)
                        await bus.announce(session, task)
                await runner_queries.save(
                    self.task.id,
                    now,
                    plan_id=row.id,
                    status="waiting_approval" if reasons else "waiting_plan",
                )
                if reasons:
                    approval = await self._approvals(session).request_plan(
                        self.task,
                        arguments={
                            "plan_id": str(row.id),
                            "tasks": len(plan.steps),
                            "estimate": estimate.as_dict(),
                        },
                        reasons=reasons,
                    )
        await self._publish(EventType.PLAN_CREATED, {**plan_payload(row), "reasons": reasons})
        if over_budget:
            bus.FINISHED.labels("plan", "failed").inc()
            await self._publish(
                EventType.ERROR, {"code": row.error_code, "detail": row.error_detail}
            )
            await self._publish(
                EventType.PLAN_COMPLETED,
                {"status": "rejected", "error_code": row.error_code, "detail": row.error_detail},
            )
            return
        if reasons:
            await self._publish(
                EventType.PLAN_APPROVAL_REQUIRED,
                {
                    "approval_id": str(approval.id),
                    "estimate": estimate.as_dict(),
                    "reasons": reasons,
                    "expires_at": approval.expires_at.isoformat(),
                },
            )
        for task_id in queued:
            self.runtime.wake(task_id)

    def _approvals(self, session: AsyncSession) -> ApprovalService:
        return ApprovalService(
            session, self.user_id, self.settings, self.runtime.events, self.runtime.wake
        )

    # -- after the approval ----------------------------------------------------------------

    async def _decided(self, plan: Plan) -> None:
        now = utcnow()
        async with self.kernel.db.unit_of_work() as session:
            approvals = await self._approvals(session).for_task(self.task.id)
            decision = max(approvals, key=lambda approval: approval.created_at, default=None)
            queries = PlanQueries(session, self.user_id)
            row = await queries.plan(plan.id, lock=True)
            if row is None or row.status != "awaiting_approval":
                return
            if decision is not None and decision.status == "approved":
                row.status = "running"
                row.updated_at = now
                await session.flush()  # no autoflush: `advance` reads the plan again
                await RunnerQueries(session).save(self.task.id, now, status="waiting_plan")
                moved = await advance(session, self.user_id, row.id)
                queued = moved.queued
                moved.publish(session, self.runtime.events)
                outcome = "approved"
            else:
                reason = (
                    decision.reason
                    if decision is not None and decision.reason
                    else f"The plan's approval was {decision.status if decision else 'missing'}"
                )
                row.status = "rejected"
                row.error_code = "agents.plan_rejected"
                row.error_detail = reason
                row.finished_at = now
                row.updated_at = now
                await queries.set_step_statuses(
                    [step.id for step in await queries.steps(row.id)],
                    ("blocked", "queued"),
                    now,
                    status="cancelled",
                    error_code="agents.plan_rejected",
                    finished_at=now,
                )
                await RunnerQueries(session).save(
                    self.task.id,
                    now,
                    status="failed",
                    error_code="agents.plan_rejected",
                    error_detail=reason[:2000],
                    finished_at=now,
                )
                queued = []
                outcome = "rejected"
        if outcome == "approved":
            await self._publish(EventType.TASK_PROGRESS, {"stage": "plan_approved"})
            for task_id in queued:
                self.runtime.wake(task_id)
        else:
            bus.FINISHED.labels("plan", "rejected").inc()
            await self._publish(
                EventType.PLAN_COMPLETED,
                {"status": "rejected", "error_code": "agents.plan_rejected", "detail": reason},
            )
