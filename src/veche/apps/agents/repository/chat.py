"""Sessions, messages, tasks and client tool calls; the runner's cross-user queries."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from veche.apps.agents.models import (
    Approval,
    ChatMessage,
    ChatSession,
    ClientToolCall,
    Task,
)
from veche.apps.agents.repository.scoped import Scoped, rowcount

# -- chat ---------------------------------------------------------------------------------

# A task in one of these states holds its session: the next message waits behind it.
ACTIVE_TASK_STATES = ("queued", "running", "waiting_approval", "waiting_tool")


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
        self, session_id: UUID, limit: int, *, before: UUID | None = None
    ) -> list[ChatMessage]:
        """The newest `limit` messages of a session, oldest first. With `before` (the
        message a run answers): the messages sent before it and every answer so far (the
        answers of earlier messages queued with it come after it in time), not itself nor
        the user messages queued behind it."""
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
        rows = await self.session.scalars(
            statement.order_by(ChatMessage.created_at.desc(), ChatMessage.id.desc()).limit(limit)
        )
        return list(reversed(rows.all()))

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


class RunnerQueries:
    """What the chat runner reads and writes across users: finding work, claiming it with
    conditional updates, saving a run's progress. Every other query of a run goes through
    the task owner's `ChatQueries`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def runnable(self, limit: int) -> list[tuple[UUID, str]]:
        """Tasks that can go on now, oldest first, as (id, status): queued ones at the head
        of their session, and paused ones whose approvals or tool calls are all answered."""
        earlier = aliased(Task)
        ahead = (
            select(earlier.id)
            .where(
                earlier.session_id == Task.session_id,
                earlier.status.in_(ACTIVE_TASK_STATES),
                (earlier.created_at < Task.created_at)
                | ((earlier.created_at == Task.created_at) & (earlier.id < Task.id)),
            )
            .exists()
        )
        queued = await self.session.scalars(
            select(Task.id)
            .where(Task.status == "queued", ~ahead)
            .order_by(Task.created_at, Task.id)
            .limit(limit)
        )
        found: list[tuple[UUID, str]] = [(task_id, "queued") for task_id in queued.all()]
        pending_approval = (
            select(Approval.id)
            .where(Approval.task_id == Task.id, Approval.status == "pending")
            .exists()
        )
        waiting_approval = await self.session.scalars(
            select(Task.id)
            .where(Task.status == "waiting_approval", ~pending_approval)
            .order_by(Task.updated_at)
            .limit(limit)
        )
        found.extend((task_id, "waiting_approval") for task_id in waiting_approval.all())
        open_call = (
            select(ClientToolCall.id)
            .where(ClientToolCall.task_id == Task.id, ClientToolCall.status == "requested")
            .exists()
        )
        waiting_tool = await self.session.scalars(
            select(Task.id)
            .where(Task.status == "waiting_tool", ~open_call)
            .order_by(Task.updated_at)
            .limit(limit)
        )
        found.extend((task_id, "waiting_tool") for task_id in waiting_tool.all())
        return found

    async def claim(self, task_id: UUID, from_status: str, now: dt.datetime) -> Task | None:
        """Move a task to `running` if it is still in `from_status`; the task if it was."""
        outcome = await self.session.execute(
            update(Task)
            .where(Task.id == task_id, Task.status == from_status)
            .values(status="running", updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if rowcount(outcome) != 1:
            return None
        row: Task | None = await self.session.scalar(
            select(Task).where(Task.id == task_id).execution_options(populate_existing=True)
        )
        return row

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

    async def requeue_stale(self, older_than: dt.datetime, now: dt.datetime) -> int:
        """Running tasks nobody has touched since `older_than` (their process died) go back
        to the queue; their saved state lets them go on from their last step."""
        outcome = await self.session.execute(
            update(Task)
            .where(Task.status == "running", Task.updated_at < older_than)
            .values(status="queued", updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return rowcount(outcome)

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
