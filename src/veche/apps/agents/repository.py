"""Every query of the agents app, through `Scoped`: the one place that confines reads and
writes to the caller's own rows. A row of another user is indistinguishable from a row
that does not exist, which the services turn into a 404 with the app's own code."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import ColumnElement, Select, Update, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from veche.apps.agents.models import (
    Agent,
    AgentVersion,
    Approval,
    ApprovalRule,
    ChatMessage,
    ChatSession,
    ClientToolCall,
    MemoryEntry,
    Project,
    Task,
)

Owned = TypeVar(
    "Owned",
    Project,
    Agent,
    AgentVersion,
    ChatSession,
    ChatMessage,
    Task,
    Approval,
    ApprovalRule,
    ClientToolCall,
    MemoryEntry,
)


class Scoped:
    """Queries over one user's projects, agents and agent versions."""

    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id

    def select(self, model: type[Owned]) -> Select[Owned]:
        return select(model).where(model.user_id == self.user_id)

    async def get(self, model: type[Owned], row_id: UUID) -> Owned | None:
        statement = self.select(model).where(model.id == row_id)
        row: Owned | None = await self.session.scalar(statement)
        return row

    async def name_taken(
        self, model: type[Project] | type[Agent], name: str, *, excluding: UUID | None = None
    ) -> bool:
        statement = (
            select(func.count()).select_from(model).where(model.user_id == self.user_id)
        ).where(model.name == name)
        if excluding is not None:
            statement = statement.where(model.id != excluding)
        return bool(await self.session.scalar(statement))

    def versions(self, agent_id: UUID) -> Select[AgentVersion]:
        return self.select(AgentVersion).where(AgentVersion.agent_id == agent_id)

    async def version(self, agent_id: UUID, number: int) -> AgentVersion | None:
        statement = self.versions(agent_id).where(AgentVersion.number == number)
        row: AgentVersion | None = await self.session.scalar(statement)
        return row

    async def delete_versions(self, agent_id: UUID) -> None:
        # Issued explicitly rather than left to ON DELETE CASCADE: SQLite only cascades
        # with its foreign-key pragma on, and the scope holds here too.
        await self.session.execute(
            delete(AgentVersion).where(
                AgentVersion.user_id == self.user_id, AgentVersion.agent_id == agent_id
            )
        )


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
        return _rowcount(outcome) == 1

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
        if _rowcount(outcome) != 1:
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
        return _rowcount(outcome) == 1

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
        return _rowcount(outcome)

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


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


# -- memory -------------------------------------------------------------------------------


class MemoryQueries(Scoped):
    """One user's memory ledger (`agents_memory`): the rows whose embeddings the vector
    store holds under the same ids. Each query has a `*_statement` builder (so a test can
    check that every one carries the user) and a method that runs it."""

    # Bound parameters per statement stay far below SQLite's limit (32,766).
    ID_BATCH = 1000

    def _ids(self, agent_id: UUID) -> Select[tuple[UUID]]:
        return select(MemoryEntry.id).where(
            MemoryEntry.user_id == self.user_id, MemoryEntry.agent_id == agent_id
        )

    def entries(
        self,
        agent_id: UUID,
        project_id: UUID | None = None,
        *,
        type: str | None = None,
        success: bool | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> Select[MemoryEntry]:
        """The agent's entries (in one project, if given) that pass the filters; `since`
        inclusive, `until` exclusive."""
        statement = self.select(MemoryEntry).where(MemoryEntry.agent_id == agent_id)
        return statement.where(*_memory_clauses(project_id, type, success, since, until))

    def matching_ids_statement(
        self,
        agent_id: UUID,
        project_id: UUID,
        *,
        type: str | None = None,
        success: bool | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> Select[tuple[UUID]]:
        clauses = _memory_clauses(project_id, type, success, since, until)
        return self._ids(agent_id).where(*clauses)

    async def matching_ids(
        self,
        agent_id: UUID,
        project_id: UUID,
        *,
        type: str | None = None,
        success: bool | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[UUID]:
        statement = self.matching_ids_statement(
            agent_id, project_id, type=type, success=success, since=since, until=until
        )
        return list((await self.session.scalars(statement)).all())

    def by_ids_statement(self, ids: list[UUID]) -> Select[MemoryEntry]:
        return self.select(MemoryEntry).where(MemoryEntry.id.in_(ids))

    async def entries_by_id(self, ids: list[UUID]) -> dict[UUID, MemoryEntry]:
        found: dict[UUID, MemoryEntry] = {}
        for start in range(0, len(ids), self.ID_BATCH):
            batch = ids[start : start + self.ID_BATCH]
            rows = await self.session.scalars(self.by_ids_statement(batch))
            found.update((row.id, row) for row in rows.all())
        return found

    def entries_after_statement(
        self,
        agent_id: UUID,
        project_id: UUID | None,
        after: tuple[dt.datetime, UUID] | None,
        limit: int,
    ) -> Select[MemoryEntry]:
        statement = self.entries(agent_id, project_id)
        if after is not None:
            created_at, entry_id = after
            statement = statement.where(
                (MemoryEntry.created_at > created_at)
                | ((MemoryEntry.created_at == created_at) & (MemoryEntry.id > entry_id))
            )
        return statement.order_by(MemoryEntry.created_at, MemoryEntry.id).limit(limit)

    async def entries_after(
        self,
        agent_id: UUID,
        project_id: UUID | None,
        after: tuple[dt.datetime, UUID] | None,
        limit: int,
    ) -> list[MemoryEntry]:
        """A page of entries oldest first, strictly after the (created_at, id) key."""
        statement = self.entries_after_statement(agent_id, project_id, after, limit)
        return list((await self.session.scalars(statement)).all())

    def ids_beyond_statement(
        self, agent_id: UUID, project_id: UUID, keep: int
    ) -> Select[tuple[UUID]]:
        return (
            self._ids(agent_id)
            .where(MemoryEntry.project_id == project_id)
            .order_by(MemoryEntry.created_at.desc(), MemoryEntry.id.desc())
            .offset(keep)
        )

    async def ids_beyond(self, agent_id: UUID, project_id: UUID, keep: int) -> list[UUID]:
        """Ids of the entries of one agent and project older than its newest `keep`."""
        statement = self.ids_beyond_statement(agent_id, project_id, keep)
        return list((await self.session.scalars(statement)).all())

    def ids_older_than_statement(
        self, agent_id: UUID, project_id: UUID | None, before: dt.datetime
    ) -> Select[tuple[UUID]]:
        return self._ids(agent_id).where(*_memory_clauses(project_id, None, None, None, before))

    async def ids_older_than(
        self, agent_id: UUID, project_id: UUID | None, before: dt.datetime
    ) -> list[UUID]:
        statement = self.ids_older_than_statement(agent_id, project_id, before)
        return list((await self.session.scalars(statement)).all())

    def memory_projects_statement(self, agent_id: UUID) -> Select[tuple[UUID]]:
        return (
            select(MemoryEntry.project_id)
            .where(MemoryEntry.user_id == self.user_id, MemoryEntry.agent_id == agent_id)
            .distinct()
        )

    async def memory_projects(self, agent_id: UUID) -> list[UUID]:
        """The projects in which the agent has memory."""
        statement = self.memory_projects_statement(agent_id)
        return list((await self.session.scalars(statement)).all())

    def delete_entries_statement(self, ids: list[UUID]) -> Any:
        return (
            delete(MemoryEntry)
            .where(MemoryEntry.user_id == self.user_id, MemoryEntry.id.in_(ids))
            .execution_options(synchronize_session=False)
        )

    async def delete_entries(self, ids: list[UUID]) -> int:
        removed = 0
        for start in range(0, len(ids), self.ID_BATCH):
            batch = ids[start : start + self.ID_BATCH]
            removed += _rowcount(await self.session.execute(self.delete_entries_statement(batch)))
        return removed

    def delete_memory_statement(
        self, *, agent_id: UUID | None = None, project_id: UUID | None = None
    ) -> Any:
        if agent_id is None and project_id is None:
            raise ValueError("delete_memory needs an agent or a project")
        statement = delete(MemoryEntry).where(MemoryEntry.user_id == self.user_id)
        if agent_id is not None:
            statement = statement.where(MemoryEntry.agent_id == agent_id)
        if project_id is not None:
            statement = statement.where(MemoryEntry.project_id == project_id)
        return statement.execution_options(synchronize_session=False)

    async def delete_memory(
        self, *, agent_id: UUID | None = None, project_id: UUID | None = None
    ) -> int:
        """Every entry of an agent, of a project, or of an agent in a project."""
        statement = self.delete_memory_statement(agent_id=agent_id, project_id=project_id)
        return _rowcount(await self.session.execute(statement))

    def totals_statement(self, agent_id: UUID, project_id: UUID | None) -> Select[Any]:
        return select(
            func.count(),
            func.coalesce(func.sum(MemoryEntry.size_bytes), 0),
            func.count().filter(MemoryEntry.success.is_(True)),
            func.min(MemoryEntry.created_at),
            func.max(MemoryEntry.created_at),
        ).where(
            MemoryEntry.user_id == self.user_id,
            MemoryEntry.agent_id == agent_id,
            *_memory_clauses(project_id, None, None, None, None),
        )

    async def totals(
        self, agent_id: UUID, project_id: UUID | None
    ) -> tuple[int, int, int, dt.datetime | None, dt.datetime | None]:
        """Entries, text bytes, successes, oldest and newest time."""
        row = (await self.session.execute(self.totals_statement(agent_id, project_id))).one()
        oldest, newest = (_aware(value) for value in (row[3], row[4]))
        return int(row[0]), int(row[1]), int(row[2]), oldest, newest

    def counts_by_type_statement(self, agent_id: UUID, project_id: UUID | None) -> Select[Any]:
        return (
            select(MemoryEntry.type, func.count())
            .where(
                MemoryEntry.user_id == self.user_id,
                MemoryEntry.agent_id == agent_id,
                *_memory_clauses(project_id, None, None, None, None),
            )
            .group_by(MemoryEntry.type)
        )

    async def counts_by_type(self, agent_id: UUID, project_id: UUID | None) -> dict[str, int]:
        statement = self.counts_by_type_statement(agent_id, project_id)
        return {str(kind): int(count) for kind, count in (await self.session.execute(statement))}


def _memory_clauses(
    project_id: UUID | None,
    type: str | None,
    success: bool | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> list[Any]:
    clauses: list[Any] = []
    if project_id is not None:
        clauses.append(MemoryEntry.project_id == project_id)
    if type is not None:
        clauses.append(MemoryEntry.type == type)
    if success is not None:
        clauses.append(MemoryEntry.success.is_(success))
    if since is not None:
        clauses.append(MemoryEntry.created_at >= since)
    if until is not None:
        clauses.append(MemoryEntry.created_at < until)
    return clauses


def _aware(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite returns an aggregate of datetimes as text
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# -- approvals ----------------------------------------------------------------------------


class ApprovalQueries(Scoped):
    """One user's approval requests, standing rules and approval policy."""

    def approvals(
        self,
        *,
        status: str | None = None,
        session_id: UUID | None = None,
        task_id: UUID | None = None,
    ) -> Select[Approval]:
        statement = self.select(Approval)
        if status is not None:
            statement = statement.where(Approval.status == status)
        if session_id is not None:
            statement = statement.where(Approval.session_id == session_id)
        if task_id is not None:
            statement = statement.where(Approval.task_id == task_id)
        return statement

    async def approval(self, approval_id: UUID, *, fresh: bool = False) -> Approval | None:
        statement = self.approvals().where(Approval.id == approval_id)
        if fresh:  # after a conditional UPDATE: reload what the database holds
            statement = statement.execution_options(populate_existing=True)
        row: Approval | None = await self.session.scalar(statement)
        return row

    async def approvals_by_id(self, approval_ids: list[UUID]) -> list[Approval]:
        rows = await self.session.scalars(self.approvals().where(Approval.id.in_(approval_ids)))
        return list(rows.all())

    async def for_task(self, task_id: UUID) -> list[Approval]:
        rows = await self.session.scalars(
            self.approvals(task_id=task_id).order_by(Approval.created_at, Approval.id)
        )
        return list(rows.all())

    async def pending(
        self,
        *,
        tool: str | None = None,
        project_id: UUID | None = None,
        session_id: UUID | None = None,
        task_id: UUID | None = None,
        limit: int = 500,
    ) -> list[Approval]:
        """Pending requests, oldest first, narrowed by whichever of the filters are given."""
        statement = self.approvals(status="pending", session_id=session_id, task_id=task_id)
        if tool is not None:
            statement = statement.where(Approval.tool == tool)
        if project_id is not None:
            statement = statement.where(Approval.project_id == project_id)
        rows = await self.session.scalars(
            statement.order_by(Approval.created_at, Approval.id).limit(limit)
        )
        return list(rows.all())

    def resolve_statement(
        self,
        approval_id: UUID,
        *,
        status: str,
        decided_by: str,
        reason: str | None,
        now: dt.datetime,
    ) -> Any:
        return (
            update(Approval)
            .where(
                Approval.user_id == self.user_id,
                Approval.id == approval_id,
                Approval.status == "pending",
            )
            .values(status=status, decided_by=decided_by, reason=reason, resolved_at=now)
            .execution_options(synchronize_session=False)
        )

    async def resolve(
        self,
        approval_id: UUID,
        *,
        status: str,
        decided_by: str,
        reason: str | None,
        now: dt.datetime,
    ) -> Approval | None:
        """Resolve a request that is still pending; the updated row, or None if it no longer
        was (another request, process or the sweep got there first)."""
        outcome = await self.session.execute(
            self.resolve_statement(
                approval_id, status=status, decided_by=decided_by, reason=reason, now=now
            )
        )
        if _rowcount(outcome) != 1:
            return None
        return await self.approval(approval_id, fresh=True)

    async def outcome_counts(self) -> list[tuple[str, str | None, int]]:
        """(status, decided_by, count) over all the user's requests."""
        rows = await self.session.execute(
            select(Approval.status, Approval.decided_by, func.count())
            .where(Approval.user_id == self.user_id)
            .group_by(Approval.status, Approval.decided_by)
        )
        return [(status, decided_by, int(count)) for status, decided_by, count in rows.all()]

    async def response_times(self, limit: int) -> list[tuple[dt.datetime, dt.datetime]]:
        """(created_at, resolved_at) of the newest `limit` requests a person answered."""
        rows = await self.session.execute(
            select(Approval.created_at, Approval.resolved_at)
            .where(
                Approval.user_id == self.user_id,
                Approval.decided_by.in_(("user", "batch")),
                Approval.resolved_at.is_not(None),
            )
            .order_by(Approval.created_at.desc())
            .limit(limit)
        )
        return [(created, resolved) for created, resolved in rows.all() if resolved is not None]

    def rules(
        self, *, project_id: UUID | None = None, session_id: UUID | None = None
    ) -> Select[ApprovalRule]:
        statement = self.select(ApprovalRule)
        if project_id is not None:
            statement = statement.where(ApprovalRule.project_id == project_id)
        if session_id is not None:
            statement = statement.where(ApprovalRule.session_id == session_id)
        return statement

    async def rules_for_call(
        self, *, project_id: UUID, session_id: UUID, tool: str
    ) -> list[ApprovalRule]:
        """The rules that may cover a call: the project's, and the session's own."""
        rows = await self.session.scalars(
            self.rules(project_id=project_id)
            .where(
                ApprovalRule.tool == tool,
                ApprovalRule.session_id.is_(None) | (ApprovalRule.session_id == session_id),
            )
            .order_by(ApprovalRule.created_at, ApprovalRule.id)
        )
        return list(rows.all())

    async def same_rule(
        self, *, project_id: UUID, session_id: UUID | None, tool: str, path_pattern: str
    ) -> ApprovalRule | None:
        statement = self.rules(project_id=project_id).where(
            ApprovalRule.tool == tool, ApprovalRule.path_pattern == path_pattern
        )
        statement = statement.where(
            ApprovalRule.session_id.is_(None)
            if session_id is None
            else ApprovalRule.session_id == session_id
        )
        row: ApprovalRule | None = await self.session.scalar(statement.limit(1))
        return row

    async def rule_count(self, project_id: UUID) -> int:
        return int(
            await self.session.scalar(
                select(func.count())
                .select_from(ApprovalRule)
                .where(ApprovalRule.user_id == self.user_id, ApprovalRule.project_id == project_id)
            )
            or 0
        )

    async def delete_rule(self, rule_id: UUID) -> bool:
        outcome = await self.session.execute(
            delete(ApprovalRule)
            .where(ApprovalRule.user_id == self.user_id, ApprovalRule.id == rule_id)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(outcome) == 1

    def policy_statement(self) -> Any:
        from veche.apps.agents.models import ApprovalPolicy

        return select(ApprovalPolicy).where(ApprovalPolicy.user_id == self.user_id)

    async def policy(self) -> Any:
        """The user's `ApprovalPolicy` row, or None when they never set one."""
        return await self.session.scalar(self.policy_statement())


class ApprovalSweepQueries:
    """The expiry sweep's queries, across all users. Each change is a conditional UPDATE,
    so sweeps running in several processes at once never warn or expire a request twice."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def due_warnings(
        self, now: dt.datetime, warn_before: dt.timedelta, limit: int
    ) -> list[Approval]:
        rows = await self.session.scalars(
            select(Approval)
            .where(
                Approval.status == "pending",
                Approval.warned_at.is_(None),
                Approval.expires_at > now,
                Approval.expires_at <= now + warn_before,
            )
            .order_by(Approval.expires_at)
            .limit(limit)
        )
        return list(rows.all())

    async def mark_warned(self, approval_id: UUID, now: dt.datetime) -> bool:
        outcome = await self.session.execute(
            update(Approval)
            .where(
                Approval.id == approval_id,
                Approval.status == "pending",
                Approval.warned_at.is_(None),
            )
            .values(warned_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(outcome) == 1

    async def overdue(self, now: dt.datetime, limit: int) -> list[Approval]:
        rows = await self.session.scalars(
            select(Approval)
            .where(Approval.status == "pending", Approval.expires_at <= now)
            .order_by(Approval.expires_at)
            .limit(limit)
        )
        return list(rows.all())

    async def expire(self, approval_id: UUID, reason: str, now: dt.datetime) -> bool:
        outcome = await self.session.execute(
            update(Approval)
            .where(Approval.id == approval_id, Approval.status == "pending")
            .values(status="expired", decided_by="timeout", reason=reason, resolved_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(outcome) == 1


# -- agent health and metrics -----------------------------------------------------------

# The task states in which an agent is working; paused tasks (waiting for an approval or a
# client's tool result) do not keep it busy.
WORKING_TASK_STATES = ("running",)
FINISHED_TASK_STATES = ("completed", "failed", "cancelled")


class HealthQueries:
    """One user's agent statuses and task figures. Every statement is built by a method
    here that filters by the user, so the scoping test can check each one."""

    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id

    def agent_statement(self, agent_id: UUID) -> Select[Agent]:
        return select(Agent).where(Agent.user_id == self.user_id, Agent.id == agent_id)

    def working_statement(self, agent_id: UUID) -> Select[int]:
        return select(func.count()).where(
            Task.user_id == self.user_id,
            Task.agent_id == agent_id,
            Task.status.in_(WORKING_TASK_STATES),
        )

    def status_statement(
        self, agent_id: UUID, status: str, reason: str | None, now: dt.datetime
    ) -> Update:
        # `updated_at` is kept: it says when the configuration last changed, not the status.
        return (
            update(Agent)
            .where(Agent.user_id == self.user_id, Agent.id == agent_id)
            .values(
                status=status,
                status_reason=reason,
                status_changed_at=now,
                updated_at=Agent.updated_at,
            )
            .execution_options(synchronize_session=False)
        )

    def counts_statement(self, agent_id: UUID) -> Select[str, int]:
        return (
            select(Task.status, func.count())
            .where(Task.user_id == self.user_id, Task.agent_id == agent_id)
            .group_by(Task.status)
        )

    def _timed(self, agent_id: UUID) -> tuple[ColumnElement[bool], ...]:
        return (
            Task.user_id == self.user_id,
            Task.agent_id == agent_id,
            Task.status.in_(FINISHED_TASK_STATES),
            Task.duration_ms.is_not(None),
        )

    def mean_statement(self, agent_id: UUID) -> Select[int, float | None]:
        return select(func.count(), func.avg(Task.duration_ms)).where(*self._timed(agent_id))

    def ranked_statement(self, agent_id: UUID, rank: int) -> Select[int | None]:
        """The `rank`-th shortest duration (1-based)."""
        return (
            select(Task.duration_ms)
            .where(*self._timed(agent_id))
            .order_by(Task.duration_ms)
            .offset(rank - 1)
            .limit(1)
        )

    async def lock_agent(self, agent_id: UUID) -> Agent | None:
        """The agent's row, locked until the transaction ends (PostgreSQL; SQLite has one
        writer anyway), so two tasks of one agent change its status one after the other."""
        row: Agent | None = await self.session.scalar(
            self.agent_statement(agent_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return row

    async def working_tasks(self, agent_id: UUID) -> int:
        return int(await self.session.scalar(self.working_statement(agent_id)) or 0)

    async def set_status(
        self, agent_id: UUID, status: str, reason: str | None, now: dt.datetime
    ) -> None:
        await self.session.execute(self.status_statement(agent_id, status, reason, now))

    async def task_counts(self, agent_id: UUID) -> dict[str, int]:
        """The agent's tasks by status."""
        rows = await self.session.execute(self.counts_statement(agent_id))
        return {status: int(count) for status, count in rows.all()}

    async def durations(self, agent_id: UUID) -> tuple[int, float | None, int | None]:
        """Over the agent's finished tasks with a duration: how many, the mean and the
        95th percentile (nearest rank) in milliseconds."""
        row = (await self.session.execute(self.mean_statement(agent_id))).one()
        count, mean = int(row[0] or 0), (float(row[1]) if row[1] is not None else None)
        if not count:
            return 0, None, None
        rank = -(-95 * count // 100)  # ceil(0.95 * count)
        p95 = await self.session.scalar(self.ranked_statement(agent_id, rank))
        return count, mean, p95


class SystemQueries:
    """For the agents' health job only: statuses across all users. Nothing a request
    serves may use this class."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def failed_agents(self, since_before: dt.datetime) -> list[Agent]:
        """Agents in `error` since before `since_before`."""
        rows = await self.session.scalars(
            select(Agent).where(
                Agent.status == "error",
                Agent.status_changed_at.is_(None) | (Agent.status_changed_at <= since_before),
            )
        )
        return list(rows.all())

    async def recover(
        self, agent_id: UUID, changed_at: dt.datetime | None, now: dt.datetime
    ) -> bool:
        """Put an agent back to `ready` if it is still in the error the job looked at."""
        outcome = await self.session.execute(
            update(Agent)
            .where(
                Agent.id == agent_id,
                Agent.status == "error",
                Agent.status_changed_at == changed_at,
            )
            .values(
                status="ready",
                status_reason=None,
                status_changed_at=now,
                updated_at=Agent.updated_at,
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(outcome, "rowcount", 0) or 0) == 1

    async def release_idle_busy(self, now: dt.datetime) -> int:
        """`busy` agents with no working task (a crash left them so) back to `ready`."""
        working = (
            select(Task.id)
            .where(Task.agent_id == Agent.id, Task.status.in_(WORKING_TASK_STATES))
            .exists()
        )
        outcome = await self.session.execute(
            update(Agent)
            .where(Agent.status == "busy", ~working)
            .values(
                status="ready",
                status_reason=None,
                status_changed_at=now,
                updated_at=Agent.updated_at,
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(outcome, "rowcount", 0) or 0)
