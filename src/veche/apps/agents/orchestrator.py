"""The orchestrator: an orchestrated message becomes a plan, the plan's steps run on the
agent bus wave by wave, and the plan ends with an account of every step.

A message without a target agent that no single agent clearly matches is queued as a
`plan` task. Its run (`plan_run.PlanRun`, in the runner like any task) asks the user's planning
model for a `PlanDraft` (or reuses the plan made for the same request and agents in the
last `plan_cache_seconds`), validates it (`planning.validate`: unknown agents, missing
dependencies, cycles named with their path), estimates cost and time, and stores the
plan with one `step` task per planned task. A plan over the user's approval thresholds
waits for a `plan` approval (`PLAN_APPROVAL_REQUIRED`); one over the budget is refused.

Steps start `blocked`; `advance` (in the transaction that ends a step) queues the steps
whose dependencies all completed, skips the ones that depend on a failed step, and closes
the plan once every step has ended: `completed`, `partial` (some steps failed or were
skipped) or `failed`, with a summary message holding the final results. Every change is
a row written in one transaction, so a restart at any point loses nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from veche.apps.agents import bus, planning
from veche.apps.agents.models import Agent, ChatMessage, OrchestratorConfig, Plan, Task
from veche.apps.agents.repository import PlanQueries
from veche.apps.agents.stream import EventType, SessionEvents, message_payload
from veche.kernel import new_id, utcnow

FINAL_PLAN_STATES = frozenset(
    {"completed", "partial", "failed", "cancelled", "rejected", "invalid"}
)
FAILED_STEP_STATES = ("failed", "skipped", "cancelled")


@dataclass(frozen=True, slots=True)
class Config:
    """A user's orchestrator settings, with the defaults for a user who set none."""

    model: str = "default"
    max_parallel_tasks: int = 3
    approval_cost_threshold: float = 0.1
    approval_tasks_threshold: int = 5
    budget: float = 1.0

    @classmethod
    def of(cls, row: OrchestratorConfig | None) -> Config:
        if row is None:
            return cls()
        return cls(
            model=row.model,
            max_parallel_tasks=row.max_parallel_tasks,
            approval_cost_threshold=row.approval_cost_threshold,
            approval_tasks_threshold=row.approval_tasks_threshold,
            budget=row.budget,
        )


def agent_cards(
    agents: list[Agent], durations: dict[UUID, float] | None = None
) -> list[planning.AgentCard]:
    """What routing and planning know of the user's agents (`durations`: each one's mean
    run time in milliseconds, where known)."""
    durations = durations or {}
    return [
        planning.AgentCard(
            id=agent.id,
            name=agent.name,
            capabilities=tuple(agent.config.get("capabilities", ())),
            description=str(agent.config.get("system_prompt", ""))[:300],
            model=str(agent.config.get("model", "default")),
            mean_duration_ms=durations.get(agent.id),
        )
        for agent in agents
    ]


def graph_of(plan: planning.Plan) -> list[dict[str, Any]]:
    return [
        {
            "id": step.id,
            "description": step.description,
            "agent_id": str(step.agent.id),
            "agent_name": step.agent.name,
            "depends_on": list(step.depends_on),
            "assigned_by": step.assigned_by,
            "note": step.note,
        }
        for step in plan.steps
    ]


def draft_graph(draft: planning.PlanDraft) -> list[dict[str, Any]]:
    """An invalid draft as it came, for the user to see what was refused."""
    return [
        {
            "id": task.id,
            "description": task.description,
            "agent_id": None,
            "agent_name": task.agent,
            "depends_on": list(task.depends_on),
            "assigned_by": "model",
            "note": None,
        }
        for task in draft.tasks
    ]


def draft_of(graph: list[dict[str, Any]]) -> planning.PlanDraft:
    """A stored graph as a draft again (a cached plan is validated against the agents
    the user has now)."""
    return planning.PlanDraft(
        tasks=[
            planning.PlannedTask(
                id=item["id"],
                description=item["description"],
                agent=item.get("agent_name"),
                depends_on=list(item.get("depends_on", [])),
            )
            for item in graph
        ]
    )


def plan_payload(plan: Plan) -> dict[str, Any]:
    return {
        "plan_id": str(plan.id),
        "status": plan.status,
        "tasks": plan.graph,
        "waves": plan.waves,
        "estimate": plan.estimate,
        "cached": plan.cached_from is not None,
    }


# -- moving a plan on ----------------------------------------------------------------------


@dataclass(slots=True)
class Advance:
    """What a change to a plan's steps led to, for the caller to act on after commit."""

    queued: list[UUID] = field(default_factory=list)
    finished: Plan | None = None
    answer: ChatMessage | None = None
    account: list[dict[str, Any]] = field(default_factory=list)

    def publish(self, session: AsyncSession, events: SessionEvents) -> None:
        """Queue the stream events of this change, sent once the transaction commits."""
        plan = self.finished
        if plan is None:
            return
        if self.answer is not None:
            events.after_commit(
                session,
                plan.user_id,
                plan.session_id,
                EventType.MESSAGE_CREATED,
                message_payload(self.answer),
            )
        events.after_commit(
            session,
            plan.user_id,
            plan.session_id,
            EventType.PLAN_COMPLETED,
            {
                "plan_id": str(plan.id),
                "task_id": str(plan.id),
                "status": plan.status,
                "tasks": self.account,
                "message_id": None if self.answer is None else str(self.answer.id),
                "error_code": plan.error_code,
            },
        )


async def advance(session: AsyncSession, user_id: UUID, plan_id: UUID) -> Advance:
    """Queue the steps whose dependencies all completed, skip those behind a failed step,
    and close the plan when every step has ended. Runs in the transaction that changed a
    step; the plan's row is locked first so two steps ending together advance in turn."""
    outcome = Advance()
    queries = PlanQueries(session, user_id)
    plan = await queries.plan(plan_id, lock=True)
    if plan is None or plan.status != "running":
        return outcome
    now = utcnow()
    steps = await queries.steps(plan_id)
    status = {step.step_key: step.status for step in steps}
    reasons: dict[str, str] = {}
    ready: list[Task] = []
    changed = True
    while changed:  # a skip can make more skips
        changed = False
        for step in steps:
            key = step.step_key or ""
            if status[key] != "blocked":
                continue
            needs = step.depends_on or []
            broken = [need for need in needs if status.get(need) in FAILED_STEP_STATES]
            if broken:
                status[key] = "skipped"
                reasons[key] = f"{key} needs {', '.join(broken)}, which did not complete"
                changed = True
            elif all(status.get(need) == "completed" for need in needs) and step not in ready:
                ready.append(step)
    for key, reason in reasons.items():
        step = next(s for s in steps if s.step_key == key)
        await queries.set_step_statuses(
            [step.id],
            ("blocked",),
            now,
            status="skipped",
            error_code="agents.dependency_failed",
            error_detail=reason,
            finished_at=now,
        )
        # What the update wrote, told to the loaded rows without another write of it.
        _written(step, status="skipped", error_code="agents.dependency_failed", error_detail=reason)
    if ready:
        outcome.queued = await queries.set_step_statuses(
            [step.id for step in ready], ("blocked",), now, status="queued"
        )
        for step in ready:
            if step.id in outcome.queued:
                _written(step, status="queued")
                await bus.announce(session, step)
    if any(step.status not in ("completed", *FAILED_STEP_STATES) for step in steps):
        return outcome
    await _close(session, queries, plan, steps, outcome, now)
    return outcome


def _written(step: Task, **values: Any) -> None:
    for name, value in values.items():
        set_committed_value(step, name, value)


async def _close(
    session: AsyncSession,
    queries: PlanQueries,
    plan: Plan,
    steps: list[Task],
    outcome: Advance,
    now: dt.datetime,
) -> None:
    done = [step for step in steps if step.status == "completed"]
    plan.status = "completed" if len(done) == len(steps) else "partial" if done else "failed"
    plan.finished_at = now
    plan.updated_at = now
    if plan.status == "failed":
        plan.error_code = "agents.plan_failed"
        plan.error_detail = "No task of the plan completed"
    names = {item["id"]: item.get("agent_name") for item in plan.graph}
    outcome.account = [
        {
            "id": step.step_key,
            "task_id": str(step.id),
            "agent": names.get(step.step_key or ""),
            "status": step.status,
            "error_code": step.error_code,
            "error_detail": step.error_detail,
        }
        for step in steps
    ]
    content = _summary(plan, steps, names)
    outcome.answer = ChatMessage(
        id=new_id(),
        user_id=plan.user_id,
        project_id=plan.project_id,
        session_id=plan.session_id,
        role="assistant",
        content=content,
        agent_id=None,
        task_id=plan.id,
        created_at=now,
    )
    session.add(outcome.answer)
    root_status = "failed" if plan.status == "failed" else "completed"
    await queries.set_task(
        plan.id,
        ("waiting_plan",),
        status=root_status,
        result=content,
        error_code=plan.error_code,
        error_detail=plan.error_detail,
        finished_at=now,
        updated_at=now,
    )
    outcome.finished = plan


def _summary(plan: Plan, steps: list[Task], names: dict[str, Any]) -> str:
    """The plan's answer: the results of the steps nothing else builds on (the plan's
    ends), then an account of the steps that did not complete."""
    needed = {need for step in steps for need in (step.depends_on or [])}
    ends = [step for step in steps if step.step_key not in needed and step.status == "completed"]
    parts = [
        (step.result or "").strip() if len(ends) == 1 else f"## {step.step_key}\n{step.result}"
        for step in ends
    ]
    missing = [step for step in steps if step.status != "completed"]
    if missing:
        lines = [
            f"- {step.step_key} ({names.get(step.step_key or '')}): {step.status}"
            + (f" — {step.error_detail}" if step.error_detail else "")
            for step in missing
        ]
        parts.append(
            f"Plan {plan.status}: {len(steps) - len(missing)} of {len(steps)} tasks "
            "completed.\n" + "\n".join(lines)
        )
    return "\n\n".join(part for part in parts if part) or f"Plan {plan.status}."


async def cancel(
    session: AsyncSession, user_id: UUID, plan: Plan, reason: str
) -> tuple[list[UUID], Advance]:
    """Cancel a plan that has not ended and its unfinished steps; the cancelled task ids
    (for the runner to stop) and the account to publish."""
    now = utcnow()
    queries = PlanQueries(session, user_id)
    steps = await queries.steps(plan.id)
    cancelled = await queries.set_step_statuses(
        [step.id for step in steps],
        ("queued", "blocked", "running", "waiting_approval", "waiting_tool"),
        now,
        status="cancelled",
        error_code="cancelled",
        error_detail=reason,
        finished_at=now,
    )
    if await queries.set_task(
        plan.id,
        ("queued", "running", "waiting_approval", "waiting_plan"),
        status="cancelled",
        error_code="cancelled",
        error_detail=reason,
        finished_at=now,
        updated_at=now,
    ):
        cancelled.append(plan.id)
    plan.status = "cancelled"
    plan.error_code = "cancelled"
    plan.error_detail = reason
    plan.finished_at = now
    plan.updated_at = now
    for step in steps:
        if step.id in cancelled:
            step.status = "cancelled"
    outcome = Advance(finished=plan)
    outcome.account = [
        {"id": step.step_key, "task_id": str(step.id), "status": step.status} for step in steps
    ]
    return cancelled, outcome
