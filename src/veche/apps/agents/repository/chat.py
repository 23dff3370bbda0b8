"""Sessions, messages, tasks and client tool calls; the runner's cross-user queries."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Integer,
    Select,
    bindparam,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from veche.apps.agents.models import (
    Agent,
    Approval,
    ChatMessage,
    ChatSession,
    ClientToolCall,
    Plan,
    Task,
)
from veche.apps.agents.repository.scoped import Scoped, rowcount
from veche.kernel.db import Database

# -- chat ---------------------------------------------------------------------------------

# A task in one of these states is not finished. A `chat` or `plan` task in one of them
# holds its session: the next message waits behind it (`waiting_plan`: a plan's steps are
# running; `blocked`: a step waits for the steps it depends on).
ACTIVE_TASK_STATES = (
    "queued",
    "running",
    "waiting_approval",
    "waiting_tool",
    "waiting_plan",
    "blocked",
)
# The parts of the runner's look-up for work after the queued tasks, by number.
PAUSED_PARTS = {1: "waiting_approval", 2: "waiting_tool"}
# A plan's steps in these states count against its `max_parallel`.
STEP_SLOT_STATES = ("running", "waiting_approval", "waiting_tool")


class ChatQueries(Scoped):
    """One user's sessions, messages, tasks and client tool calls."""

    def sessions(self, project_id: UUID) -> Select[ChatSession]:
        return self.select(ChatSession).where(ChatSession.project_id == project_id)

    async def chat_session(self, project_id: UUID, session_id: UUID) -> ChatSession | None:
        row: ChatSession | None = await self.session.scalar(
            self.sessions(project_id).where(ChatSession.id == session_id)
        )
        return row

    def messages(self, session_id: UUID) -> Select[ChatMessage]:
        return self.select(ChatMessage).where(ChatMessage.session_id == session_id)

    async def recent_messages(
        self, session_id: UUID, limit: int, *, before: UUID | None = None, step: int = 1
    ) -> list[ChatMessage]:
        """The newest `limit` messages of a session, oldest first. With `before` (the
        message a run answers): the messages sent before it and every answer so far (the
        answers of earlier messages queued with it come after it in time), not itself nor
        the user messages queued behind it.

        With `step` > 1 the window's oldest message moves `step` messages at a time: a
        full window keeps between `limit - step + 1` and `limit` messages, and consecutive
        runs see the same first messages (a model's prompt cache reuses an unchanged
        start; a window sliding by one message would change it on every run)."""
        statement = self.messages(session_id)
        if before is not None:
            anchor = select(ChatMessage.created_at).where(
                ChatMessage.id == before, ChatMessage.user_id == self.user_id
            )
            statement = statement.where(
                ChatMessage.id != before,
                (ChatMessage.created_at <= anchor.scalar_subquery())
                | (ChatMessage.role == "assistant"),
            )
        ordered = statement.order_by(ChatMessage.created_at.desc(), ChatMessage.id.desc())
        if step <= 1:
            rows = await self.session.scalars(ordered.limit(limit))
            return list(reversed(rows.all()))
        # The total beside each row (a window function over the whole filtered set).
        counted = await self.session.execute(ordered.add_columns(func.count().over()).limit(limit))
        found = counted.all()
        if not found:
            return []
        total = found[0][1]
        start = max(0, -(-(total - limit) // step) * step)  # rounded up to a whole step
        return [row[0] for row in reversed(found[: total - start])]

    def tasks(self, session_id: UUID) -> Select[Task]:
        return self.select(Task).where(Task.session_id == session_id)

    async def active_tasks(self, session_id: UUID) -> list[Task]:
        rows = await self.session.scalars(
            self.tasks(session_id)
            .where(Task.status.in_(ACTIVE_TASK_STATES))
            .order_by(Task.created_at, Task.id)
        )
        return list(rows.all())

    async def task(self, task_id: UUID) -> Task | None:
        return await self.get(Task, task_id)

    def session_tool_calls(self, session_id: UUID, status: str | None) -> Select[ClientToolCall]:
        statement = self.select(ClientToolCall).where(ClientToolCall.session_id == session_id)
        if status is not None:
            statement = statement.where(ClientToolCall.status == status)
        return statement

    async def tool_calls(self, task_id: UUID) -> list[ClientToolCall]:
        rows = await self.session.scalars(
            self.select(ClientToolCall)
            .where(ClientToolCall.task_id == task_id)
            .order_by(ClientToolCall.created_at)
        )
        return list(rows.all())

    async def cancel_tool_calls(self, task_ids: list[UUID], now: dt.datetime) -> None:
        await self.session.execute(
            update(ClientToolCall)
            .where(
                ClientToolCall.user_id == self.user_id,
                ClientToolCall.task_id.in_(task_ids),
                ClientToolCall.status == "requested",
            )
            .values(status="cancelled", completed_at=now)
            .execution_options(synchronize_session=False)
        )

    async def complete_tool_call(
        self, call_id: UUID, result: dict[str, Any], now: dt.datetime
    ) -> bool:
        """Store the result of a call still waiting for one; False if it no longer is."""
        outcome = await self.session.execute(
            update(ClientToolCall)
            .where(
                ClientToolCall.user_id == self.user_id,
                ClientToolCall.id == call_id,
                ClientToolCall.status == "requested",
            )
            .values(status="completed", result=result, completed_at=now)
            .execution_options(synchronize_session=False)
        )
        return rowcount(outcome) == 1

    async def cancel_tasks(self, task_ids: list[UUID], now: dt.datetime) -> list[UUID]:
        """Cancel the tasks of `task_ids` that are still active; the ids that were."""
        if not task_ids:
            return []
        cancelled = await self.session.scalars(
            update(Task)
            .where(
                Task.user_id == self.user_id,
                Task.id.in_(task_ids),
                Task.status.in_(ACTIVE_TASK_STATES),
            )
            .values(status="cancelled", finished_at=now, updated_at=now, error_code="cancelled")
            .returning(Task.id)
            .execution_options(synchronize_session=False)
        )
        return list(cancelled.all())


@functools.cache
def _runnable_statement(limit: int) -> Select[Any]:
    """The runner's look-up for work, built once (it runs on every pass): queued tasks
    that may start (`now` bound at execution), then paused ones whose approvals, or client
    tool calls, are all answered; each part oldest first and at most `limit` long, all in
    one statement (one round trip)."""
    earlier = aliased(Task)
    ahead = (
        select(earlier.id)
        .where(
            earlier.session_id == Task.session_id,
            earlier.kind != "step",
            earlier.status.in_(ACTIVE_TASK_STATES),
            (earlier.created_at < Task.created_at)
            | ((earlier.created_at == Task.created_at) & (earlier.id < Task.id)),
        )
        .exists()
    )
    sibling = aliased(Task)
    busy_steps = (
        select(func.count())
        .where(sibling.plan_id == Task.plan_id, sibling.status.in_(STEP_SLOT_STATES))
        .scalar_subquery()
    )
    plan_slots = select(Plan.max_parallel).where(Plan.id == Task.plan_id).scalar_subquery()
    peer = aliased(Task)
    busy_runs = (
        select(func.count())
        .where(peer.agent_id == Task.agent_id, peer.status == "running")
        .scalar_subquery()
    )
    agent_slots = (
        select(Agent.config["concurrency_limit"].as_integer())
        .where(Agent.id == Task.agent_id)
        .scalar_subquery()
    )
    now = bindparam("now", type_=Task.not_before.type)
    queued = (
        select(
            literal(0).label("part"),
            Task.created_at.label("since"),
            Task.id,
            Task.kind,
            Task.plan_id,
            (plan_slots - busy_steps).label("plan_free"),
            Task.agent_id,
            (agent_slots - busy_runs).label("agent_free"),
        )
        .where(
            Task.status == "queued",
            Task.not_before.is_(None) | (Task.not_before <= now),
            Task.agent_id.is_(None) | (agent_slots > busy_runs),
            ((Task.kind == "step") & (plan_slots > busy_steps)) | ((Task.kind != "step") & ~ahead),
        )
        .order_by(Task.created_at, Task.id)
        .limit(limit)
    )
    pending_approval = (
        select(Approval.id)
        .where(Approval.task_id == Task.id, Approval.status == "pending")
        .exists()
    )
    waiting_approval = (
        select(*_paused_columns(1))
        .where(Task.status == "waiting_approval", ~pending_approval)
        .order_by(Task.updated_at)
        .limit(limit)
    )
    open_call = (
        select(ClientToolCall.id)
        .where(ClientToolCall.task_id == Task.id, ClientToolCall.status == "requested")
        .exists()
    )
    waiting_tool = (
        select(*_paused_columns(2))
        .where(Task.status == "waiting_tool", ~open_call)
        .order_by(Task.updated_at)
        .limit(limit)
    )
    parts = union_all(
        *(select(part.subquery()) for part in (queued, waiting_approval, waiting_tool))
    ).subquery()
    return select(parts).order_by(parts.c.part, parts.c.since, parts.c.id)


def _paused_columns(part: int) -> tuple[Any, ...]:
    """A paused task's row in the look-up for work: the queued part's columns, the limits
    left empty (a paused run already holds its slots)."""
    # Typed: PostgreSQL matches each column's type across the parts of a union.
    no_id, no_count = cast(null(), Task.id.type), cast(null(), Integer)
    return (
        literal(part).label("part"),
        Task.updated_at.label("since"),
        Task.id,
        Task.kind,
        no_id.label("plan_id"),
        no_count.label("plan_free"),
        no_id.label("agent_id"),
        no_count.label("agent_free"),
    )


@dataclass(frozen=True, slots=True)
class Runnable:
    """A task the runner may claim now, from `status`, with the room left for more tasks
    of its plan and of its agent (None: no such limit applies)."""

    task_id: UUID
    status: str
    plan_id: UUID | None = None
    plan_free: int | None = None
    agent_id: UUID | None = None
    agent_free: int | None = None


class RunnerQueries:
    """What the chat runner reads and writes across users: finding work, claiming it with
    conditional updates, saving a run's progress. Every other query of a run goes through
    the task owner's `ChatQueries`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    async def runnable(db: Database, limit: int, now: dt.datetime) -> list[Runnable]:
        """Tasks that can go on now, oldest first: queued ones at the head of their session
        (a plan's steps run side by side) whose backoff is over and whose agent runs fewer
        tasks than its `concurrency_limit` (and, for a step, whose plan fewer steps than
        its `max_parallel`), and paused ones whose approvals or tool calls are all
        answered. Each carries how many more tasks of its agent and plan may start, so a
        caller claiming several at once keeps within both. One statement outside any
        transaction (`Database.read_all`): the claim checks each task's status again."""
        rows = await db.read_all(_runnable_statement(limit), {"now": now})
        found = []
        for part, _, task_id, kind, plan_id, plan_free, agent_id, agent_free in rows:
            if part == 0:
                found.append(
                    Runnable(
                        task_id,
                        "queued",
                        plan_id if kind == "step" else None,
                        int(plan_free) if kind == "step" else None,
                        agent_id,
                        None if agent_id is None else int(agent_free),
                    )
                )
            else:
                found.append(Runnable(task_id, PAUSED_PARTS[part]))
        return found

    async def get(self, task_id: UUID) -> Task | None:
        row: Task | None = await self.session.scalar(select(Task).where(Task.id == task_id))
        return row

    async def claim_many(self, wanted: list[tuple[UUID, str]], now: dt.datetime) -> list[Task]:
        """Move each (task, status) to `running` if the task is still in that status; the
        tasks that were, in the order asked (one statement per status: the update returns
        the rows)."""
        by_status: dict[str, list[UUID]] = {}
        for task_id, from_status in wanted:
            by_status.setdefault(from_status, []).append(task_id)
        claimed: dict[UUID, Task] = {}
        for from_status, task_ids in by_status.items():
            rows = await self.session.scalars(
                update(Task)
                .where(Task.id.in_(task_ids), Task.status == from_status)
                .values(
                    status="running",
                    updated_at=now,
                    # A paused run going on is the same attempt; a queued one is a new one.
                    attempts=Task.attempts + (1 if from_status == "queued" else 0),
                    not_before=None,
                    # The first claim is the run's start (kept through pauses and retries).
                    started_at=func.coalesce(Task.started_at, now),
                )
                .returning(Task)
                .execution_options(populate_existing=True)
            )
            claimed.update((row.id, row) for row in rows.all())
        return [claimed[task_id] for task_id, _ in wanted if task_id in claimed]

    async def save(self, task_id: UUID, now: dt.datetime, **values: Any) -> bool:
        """Write a running task's progress; False if it is no longer running (cancelled)."""
        outcome = await self.session.execute(
            update(Task)
            .where(Task.id == task_id, Task.status == "running")
            .values(updated_at=now, **values)
            .execution_options(synchronize_session=False)
        )
        return rowcount(outcome) == 1

    async def heartbeat(self, task_ids: list[UUID], now: dt.datetime) -> None:
        if task_ids:
            await self.session.execute(
                update(Task)
                .where(Task.id.in_(task_ids), Task.status == "running")
                .values(updated_at=now)
                .execution_options(synchronize_session=False)
            )

    async def requeue_stale(
        self, older_than: dt.datetime, now: dt.datetime, max_attempts: int
    ) -> list[tuple[UUID, UUID, UUID | None, str]]:
        """Running tasks nobody has touched since `older_than` (their process died) go back
        to the queue, to go on from their last saved step, unless they have had
        `max_attempts` claims: those fail (`agents.worker_lost`). The ones that failed, as
        (id, user, plan, kind)."""
        stale = (Task.status == "running") & (Task.updated_at < older_than)
        failed = await self.session.execute(
            update(Task)
            .where(stale, Task.attempts >= max_attempts)
            .values(
                status="failed",
                error_code="agents.worker_lost",
                error_detail=f"The process running it stopped answering {max_attempts} times",
                finished_at=now,
                updated_at=now,
            )
            .returning(Task.id, Task.user_id, Task.plan_id, Task.kind)
            .execution_options(synchronize_session=False)
        )
        lost = [(row[0], row[1], row[2], row[3]) for row in failed.all()]
        await self.session.execute(
            update(Task)
            .where(stale)
            .values(status="queued", updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return lost

    async def release(self, task_ids: list[UUID], now: dt.datetime) -> int:
        """Give back this process's running tasks at shutdown: queued again at once, the
        claim not counted against their attempts."""
        if not task_ids:
            return 0
        outcome = await self.session.execute(
            update(Task)
            .where(Task.id.in_(task_ids), Task.status == "running")
            .values(status="queued", updated_at=now, attempts=Task.attempts - 1)
            .execution_options(synchronize_session=False)
        )
        return rowcount(outcome)

    async def retry_later(self, task_id: UUID, now: dt.datetime, at: dt.datetime) -> bool:
        """Put a running task back in the queue, not to be claimed before `at`."""
        outcome = await self.session.execute(
            update(Task)
            .where(Task.id == task_id, Task.status == "running")
            .values(status="queued", not_before=at, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return rowcount(outcome) == 1

    async def queued_total(self) -> int:
        """Tasks waiting on the bus, all users (the queue-size gauge)."""
        return int(
            await self.session.scalar(
                select(func.count()).where(Task.status.in_(("queued", "blocked")))
            )
            or 0
        )

    async def expire_tool_calls(self, now: dt.datetime) -> list[UUID]:
        """Client tool calls past their deadline become `expired`; their tasks' ids."""
        expired = await self.session.execute(
            update(ClientToolCall)
            .where(ClientToolCall.status == "requested", ClientToolCall.expires_at <= now)
            .values(status="expired", completed_at=now)
            .returning(ClientToolCall.task_id)
            .execution_options(synchronize_session=False)
        )
        return list(dict.fromkeys(row[0] for row in expired.all()))
