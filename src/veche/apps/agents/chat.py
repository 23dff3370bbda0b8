"""Chat sessions: the rules of sessions, messages, cancelling and client tool results.

A message with a target agent becomes a queued `chat` task (direct mode). A message
without one is routed (`planning.route`): to the one agent that clearly matches it (a
`chat` task, `DIRECT_AGENT_CALL` says it was routed), else to the orchestrator (a `plan`
task; `PLAN_CREATED` follows). The runner (`runner.py`) picks tasks up after the commit;
one message's work runs at a time per session, and a message that arrives meanwhile
follows the session's queue policy. The bus (`bus.py`) refuses work past a full queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents import bus, planning
from veche.apps.agents.approvals import ApprovalService
from veche.apps.agents.chat_schemas import MessageCreate, SessionCreate, SessionUpdate
from veche.apps.agents.errors import (
    AgentNotAccepting,
    AgentNotFound,
    AgentUnavailable,
    NoAgents,
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
from veche.apps.agents.orchestrator import FINAL_PLAN_STATES, agent_cards
from veche.apps.agents.orchestrator import cancel as cancel_plan
from veche.apps.agents.repository import ChatQueries, PlanQueries
from veche.apps.agents.stream import EventType, message_payload
from veche.kernel import new_id, record, utcnow
from veche.kernel.db import on_outcome

if TYPE_CHECKING:
    from veche.apps.agents.runtime import AgentsRuntime


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
    ) -> tuple[ChatMessage, Task]:
        chat = await self.get(project_id, session_id)
        agent, kind, route = await self._route(data)
        active = await self.queries.active_tasks(chat.id)
        if active and chat.queue_policy == "reject":
            raise SessionBusy(
                "This session is still processing a message; wait for it, cancel it, "
                "or use the `enqueue` or `interrupt` queue policy"
            )
        await bus.admit(self.db, self.user_id, self.runtime.settings, agent)
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
        task = Task(
            id=new_id(),
            user_id=self.user_id,
            project_id=project_id,
            session_id=chat.id,
            agent_id=None if agent is None else agent.id,
            message_id=message.id,
            kind=kind,
            status="queued",
            state={"route": route} if route else {},
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        message.task_id = task.id
        self.db.add(task)
        self.db.add(message)
        chat.updated_at = now
        await self.db.flush()
        await bus.announce(self.db, task)
        events = self.runtime.events
        events.after_commit(
            self.db, self.user_id, chat.id, EventType.MESSAGE_CREATED, message_payload(message)
        )
        task_id = task.id
        on_outcome(self.db, committed=lambda: self.runtime.wake(task_id))
        return message, task

    async def _route(self, data: MessageCreate) -> tuple[Agent | None, str, str | None]:
        """Who takes a message: (agent, task kind, routing reason). A named agent must
        exist, take work and not be in error; an unnamed one is chosen by routing."""
        if data.target_agent is not None:
            agent = await self.queries.get(Agent, data.target_agent)
            if agent is None:
                raise AgentNotFound(f"You have no agent {data.target_agent}")
            self._check_available(agent)
            return agent, "chat", None
        agents = await PlanQueries(self.db, self.user_id).agents(accepting_only=True)
        decision = planning.route(data.content, agent_cards(agents))
        if decision.mode == "orchestrated":
            return None, "plan", decision.reason
        if decision.agent is None:
            raise NoAgents(
                "You have no active agent that could answer: create one, register it again, "
                "or name `target_agent`"
            )
        chosen = next(agent for agent in agents if agent.id == decision.agent.id)
        return chosen, "chat", decision.reason

    def _check_available(self, agent: Agent) -> None:
        if agent.lifecycle != "active":
            raise AgentNotAccepting(
                f"Agent {agent.name!r} is {agent.lifecycle} and takes no new messages; "
                "register it again to use it"
            )
        if agent.status == "error":
            raise AgentUnavailable(
                f"Agent {agent.name!r} is unavailable ({agent.status_reason or 'error'}); "
                "it is retried automatically",
                headers={"Retry-After": str(self.runtime.settings.error_recovery_seconds)},
            )

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
        plans = PlanQueries(self.db, self.user_id)
        for task in active:
            if task.kind == "plan" and task.id in ids:
                plan = await plans.plan(task.id)
                if plan is not None and plan.status not in FINAL_PLAN_STATES:
                    more, outcome = await cancel_plan(self.db, self.user_id, plan, reason)
                    ids.extend(task_id for task_id in more if task_id not in ids)
                    outcome.publish(self.db, self.runtime.events)
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
