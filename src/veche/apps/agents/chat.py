"""Chat sessions in direct mode: the rules of sessions, messages, cancelling and client
tool results. A message with a target agent becomes a queued task that the runner
(`runner.py`) picks up after the commit; one task runs at a time per session, and a
message that arrives meanwhile follows the session's queue policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.approvals import ApprovalService
from veche.apps.agents.chat_schemas import MessageCreate, SessionCreate, SessionUpdate
from veche.apps.agents.errors import (
    AgentNotFound,
    AgentUnavailable,
    ProjectNotFound,
    SessionBusy,
    SessionNotFound,
    ToolCallClosed,
    ToolCallNotFound,
)
from veche.apps.agents.models import (
    Agent,
    ChatMessage,
    ChatSession,
    ClientToolCall,
    Project,
    Task,
)
from veche.apps.agents.repository import ChatQueries
from veche.apps.agents.stream import EventType
from veche.kernel import new_id, record, utcnow
from veche.kernel.db import on_outcome

if TYPE_CHECKING:
    from veche.apps.agents.runtime import AgentsRuntime


def message_payload(message: ChatMessage) -> dict[str, Any]:
    return {
        "message_id": str(message.id),
        "role": message.role,
        "content": message.content,
        "agent_id": None if message.agent_id is None else str(message.agent_id),
        "task_id": None if message.task_id is None else str(message.task_id),
    }


class ChatService:
    def __init__(self, db: AsyncSession, user_id: UUID, runtime: AgentsRuntime) -> None:
        self.db = db
        self.user_id = user_id
        self.runtime = runtime
        self.queries = ChatQueries(db, user_id)

    # -- sessions --------------------------------------------------------------------------

    async def project(self, project_id: UUID) -> Project:
        project = await self.queries.get(Project, project_id)
        if project is None:
            raise ProjectNotFound(f"You have no project {project_id}")
        return project

    async def get(self, project_id: UUID, session_id: UUID) -> ChatSession:
        await self.project(project_id)
        chat = await self.queries.chat_session(project_id, session_id)
        if chat is None:
            raise SessionNotFound(f"Project {project_id} has no session {session_id}")
        return chat

    async def create(self, project_id: UUID, data: SessionCreate) -> ChatSession:
        await self.project(project_id)
        chat = ChatSession(
            id=new_id(),
            user_id=self.user_id,
            project_id=project_id,
            title=data.title,
            queue_policy=data.queue_policy,
        )
        self.db.add(chat)
        self._audit("agents.session.created", chat.id, {"project_id": str(project_id)})
        await self.db.flush()
        return chat

    async def update(self, project_id: UUID, session_id: UUID, data: SessionUpdate) -> ChatSession:
        chat = await self.get(project_id, session_id)
        changes = data.model_dump(exclude_unset=True)
        for field, value in changes.items():
            setattr(chat, field, value)
        chat.updated_at = utcnow()
        self._audit("agents.session.updated", chat.id, {"fields": sorted(changes)})
        await self.db.flush()
        return chat

    async def delete(self, project_id: UUID, session_id: UUID) -> None:
        """Delete a session with its messages, tasks and approvals; a run in progress stops."""
        chat = await self.get(project_id, session_id)
        await self._stop(chat, reason="session deleted")
        await self.db.delete(chat)
        self._audit("agents.session.deleted", chat.id, {"project_id": str(project_id)})
        await self.db.flush()

    # -- messages --------------------------------------------------------------------------

    async def post(
        self, project_id: UUID, session_id: UUID, data: MessageCreate
    ) -> tuple[ChatMessage, Task | None]:
        chat = await self.get(project_id, session_id)
        agent = None
        if data.target_agent is not None:
            agent = await self.queries.get(Agent, data.target_agent)
            if agent is None:
                raise AgentNotFound(f"You have no agent {data.target_agent}")
            if agent.status == "error":
                raise AgentUnavailable(
                    f"Agent {agent.name!r} is unavailable ({agent.status_reason or 'error'}); "
                    "it is retried automatically",
                    headers={"Retry-After": str(self.runtime.settings.error_recovery_seconds)},
                )
            active = await self.queries.active_tasks(chat.id)
            if active and chat.queue_policy == "reject":
                raise SessionBusy(
                    "This session is still processing a message; wait for it, cancel it, "
                    "or use the `enqueue` or `interrupt` queue policy"
                )
            if active and chat.queue_policy == "interrupt":
                await self._cancel(chat, active, reason="interrupted by a new message")
        now = utcnow()
        message = ChatMessage(
            id=new_id(),
            user_id=self.user_id,
            project_id=project_id,
            session_id=chat.id,
            role="user",
            content=data.content,
            agent_id=None,
            created_at=now,
        )
        task = None
        if agent is not None:
            task = Task(
                id=new_id(),
                user_id=self.user_id,
                project_id=project_id,
                session_id=chat.id,
                agent_id=agent.id,
                message_id=message.id,
                status="queued",
                state={},
                created_at=now,
                updated_at=now,
            )
            message.task_id = task.id
            self.db.add(task)
        self.db.add(message)
        chat.updated_at = now
        await self.db.flush()
        events = self.runtime.events
        events.after_commit(
            self.db, self.user_id, chat.id, EventType.MESSAGE_CREATED, message_payload(message)
        )
        if task is not None:
            task_id = task.id
            on_outcome(self.db, committed=lambda: self.runtime.wake(task_id))
        return message, task

    # -- cancelling -------------------------------------------------------------------------

    async def cancel(self, project_id: UUID, session_id: UUID) -> list[UUID]:
        chat = await self.get(project_id, session_id)
        return await self._stop(chat, reason="cancelled by the user")

    async def _stop(self, chat: ChatSession, *, reason: str) -> list[UUID]:
        active = await self.queries.active_tasks(chat.id)
        return await self._cancel(chat, active, reason=reason)

    async def _cancel(self, chat: ChatSession, active: list[Task], *, reason: str) -> list[UUID]:
        now = utcnow()
        ids = await self.queries.cancel_tasks([task.id for task in active], now)
        if not ids:
            return []
        await self.queries.cancel_tool_calls(ids, now)
        approvals = ApprovalService(
            self.db, self.user_id, self.runtime.settings, self.runtime.events, self.runtime.wake
        )
        for task_id in ids:
            await approvals.cancel_for_task(task_id, reason)
            self.runtime.events.after_commit(
                self.db,
                self.user_id,
                chat.id,
                EventType.TASK_COMPLETED,
                {"task_id": str(task_id), "status": "cancelled", "reason": reason},
            )
        self._audit("agents.session.cancelled", chat.id, {"tasks": [str(i) for i in ids]})
        cancelled = list(ids)
        on_outcome(self.db, committed=lambda: self.runtime.stop_tasks(cancelled))
        return cancelled

    # -- client tool calls ------------------------------------------------------------------

    async def tool_call(self, call_id: UUID) -> ClientToolCall:
        call = await self.queries.get(ClientToolCall, call_id)
        if call is None:
            raise ToolCallNotFound(f"You have no tool call {call_id}")
        return call

    async def tool_result(self, call_id: UUID, result: dict[str, Any]) -> ClientToolCall:
        """Store what the user's machine returned for a call still waiting for it."""
        call = await self.tool_call(call_id)
        if not await self.queries.complete_tool_call(call.id, result, utcnow()):
            await self.db.refresh(call)
            raise ToolCallClosed(f"Tool call {call_id} is {call.status}, not waiting for a result")
        await self.db.refresh(call)
        task_id = call.task_id
        on_outcome(self.db, committed=lambda: self.runtime.wake(task_id))
        return call

    def _audit(self, action: str, session_id: UUID, data: dict[str, Any]) -> None:
        record(
            self.db,
            action,
            actor_id=self.user_id,
            target_type="agents.session",
            target_id=session_id,
            data=data,
        )
