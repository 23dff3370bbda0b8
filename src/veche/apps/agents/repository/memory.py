"""The memory ledger's queries."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from sqlalchemy import Executable, Row, Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.models import (
    MemoryEntry,
)
from veche.apps.agents.repository.scoped import Scoped, rowcount
from veche.kernel.db import Database

# id, request, response, type, success, created_at
HitRow = Row[UUID, str, str, str, bool, dt.datetime]

# -- memory -------------------------------------------------------------------------------


class MemoryReads:
    """The two reads of a memory search: in a session's transaction, or (given the
    `Database`) each as one statement outside any transaction, which spares a run's recall,
    made before every answer, a BEGIN and a COMMIT. The vector store is read apart from
    the ledger either way."""

    def __init__(self, source: AsyncSession | Database, user_id: UUID) -> None:
        self.source = source
        self.user_id = user_id

    def matching_ids_statement(
        self,
        agent_id: UUID,
        project_id: UUID,
        *,
        type: str | None = None,
        success: bool | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> Select[UUID]:
        return select(MemoryEntry.id).where(
            MemoryEntry.user_id == self.user_id,
            MemoryEntry.agent_id == agent_id,
            *_memory_clauses(project_id, type, success, since, until),
        )

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
        return [row[0] for row in await self._all(statement)]

    def by_ids_statement(self, ids: list[UUID]) -> Select[UUID, str, str, str, bool, dt.datetime]:
        # Plain rows of the columns a recall shows: every run recalls, and building ORM
        # objects for them cost more than the query.
        return select(
            MemoryEntry.id,
            MemoryEntry.request,
            MemoryEntry.response,
            MemoryEntry.type,
            MemoryEntry.success,
            MemoryEntry.created_at,
        ).where(MemoryEntry.user_id == self.user_id, MemoryEntry.id.in_(ids))

    async def entries_by_id(self, ids: list[UUID]) -> dict[UUID, HitRow]:
        """The entries' id, request, response, type, success and created_at, by id."""
        found: dict[UUID, HitRow] = {}
        batch = MemoryQueries.ID_BATCH
        for start in range(0, len(ids), batch):
            rows = await self._all(self.by_ids_statement(ids[start : start + batch]))
            found.update((row[0], row) for row in rows)
        return found

    async def _all(self, statement: Executable) -> list[Any]:
        if isinstance(self.source, Database):
            return await self.source.read_all(statement)
        return list((await self.source.execute(statement)).all())


class MemoryQueries(Scoped):
    """One user's memory ledger (`agents_memory`): the rows whose embeddings the vector
    store holds under the same ids. Each query has a `*_statement` builder (so a test can
    check that every one carries the user) and a method that runs it."""

    # Bound parameters per statement stay far below SQLite's limit (32,766).
    ID_BATCH = 1000

    def _ids(self, agent_id: UUID) -> Select[UUID]:
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

    def ids_beyond_statement(self, agent_id: UUID, project_id: UUID, keep: int) -> Select[UUID]:
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
    ) -> Select[UUID]:
        return self._ids(agent_id).where(*_memory_clauses(project_id, None, None, None, before))

    async def ids_older_than(
        self, agent_id: UUID, project_id: UUID | None, before: dt.datetime
    ) -> list[UUID]:
        statement = self.ids_older_than_statement(agent_id, project_id, before)
        return list((await self.session.scalars(statement)).all())

    def memory_projects_statement(self, agent_id: UUID) -> Select[UUID]:
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
            removed += rowcount(await self.session.execute(self.delete_entries_statement(batch)))
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
        return rowcount(await self.session.execute(statement))

    def totals_statement(
        self, agent_id: UUID, project_id: UUID | None
    ) -> Select[int, int, int, dt.datetime, dt.datetime]:
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

    def counts_by_type_statement(self, agent_id: UUID, project_id: UUID | None) -> Select[str, int]:
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
