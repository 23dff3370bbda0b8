"""Agent memory: what an agent did in a project, found again by meaning.

Each remembered interaction is one `agents_memory` row (the ledger, the source of truth)
and one vector in the kernel vector store under the same id, app `agents`, the user, and
the scope `agent:<agent id>:project:<project id>` (so the store's indexed scope column
confines a search to one user, agent and project). The payload carries the fields search
filters on: `agent_id`, `project_id`, `type`, `success` and `created_us` (creation time in
microseconds since the epoch).

Results always come from the ledger: a vector whose row is gone (deleted, or never
committed) is never returned, so the short windows in which the two disagree (see
`docs/agents-memory.md`) cannot show up in search results. Vectors are written before the
row commits (and removed if it rolls back) and deleted only once the row deletion commits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
import orjson
import structlog
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.errors import AgentNotFound, ProjectNotFound
from veche.apps.agents.models import Agent, MemoryEntry, Project
from veche.apps.agents.repository import MemoryQueries, MemoryReads
from veche.kernel import Database, new_id, utcnow
from veche.kernel.ai.services import AIServices
from veche.kernel.ai.vectors import VectorFilter, VectorHit, VectorRecord
from veche.kernel.db import on_outcome

log = structlog.get_logger("veche.agents.memory")

VECTOR_APP = "agents"
Vector = npt.NDArray[np.float32]
DEFAULT_LIMIT = 1000
# e5 reads about 5 ms per token: only the start of an interaction is embedded (the request
# first, so what was asked is what a later question finds).
EMBEDDED_CHARACTERS = 1000
# Extra hits fetched so that vectors without a row (being deleted) never shorten a result.
SLACK = 8
# With filters, the first search fetches this many times the wanted hits and filters them;
# only if too few pass does the ledger pick the candidates.
OVERFETCH = 20
MIN_OVERFETCH = 200
EXPORT_BATCH = 500
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def memory_scope(agent_id: UUID, project_id: UUID) -> str:
    """The vector-store scope of one agent's memory in one project."""
    return f"agent:{agent_id}:project:{project_id}"


def microseconds(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class MemoryHit:
    id: UUID
    request: str
    response: str
    type: str
    success: bool
    created_at: dt.datetime
    score: float


@dataclass(frozen=True, slots=True)
class MemoryFilters:
    """What a search keeps besides similarity: a type, an outcome, a time range
    (`since` inclusive, `until` exclusive)."""

    type: str | None = None
    success: bool | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @property
    def empty(self) -> bool:
        return self.type is None and self.success is None and not (self.since or self.until)

    def admits(self, payload: Mapping[str, Any]) -> bool:
        if self.type is not None and payload.get("type") != self.type:
            return False
        if self.success is not None and payload.get("success") is not self.success:
            return False
        created = payload.get("created_us")
        if self.since is not None and not (
            isinstance(created, int) and created >= microseconds(self.since)
        ):
            return False
        return self.until is None or (
            isinstance(created, int) and created < microseconds(self.until)
        )

    def as_query(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "success": self.success,
            "since": self.since,
            "until": self.until,
        }


@dataclass(frozen=True, slots=True)
class MemoryStats:
    entries: int
    vectors: int
    size_bytes: int
    vector_bytes: int
    success_rate: float | None
    by_type: dict[str, int]
    oldest: dt.datetime | None
    newest: dt.datetime | None


class AgentMemory:
    """Remember, recall, forget, prune, count and export agents' interactions."""

    def __init__(self, ai: AIServices) -> None:
        self.ai = ai
        self._pending: set[asyncio.Task[None]] = set()

    # -- ownership ------------------------------------------------------------------------

    async def owned_agent(self, db: AsyncSession, *, user_id: UUID, agent_id: UUID) -> Agent:
        agent = await MemoryQueries(db, user_id).get(Agent, agent_id)
        if agent is None:
            raise AgentNotFound(f"You have no agent {agent_id}")
        return agent

    async def owned_project(self, db: AsyncSession, *, user_id: UUID, project_id: UUID) -> Project:
        project = await MemoryQueries(db, user_id).get(Project, project_id)
        if project is None:
            raise ProjectNotFound(f"You have no project {project_id}")
        return project

    # -- writing --------------------------------------------------------------------------

    async def remember(
        self,
        db: AsyncSession,
        *,
        user_id: UUID,
        agent_id: UUID,
        project_id: UUID,
        request: str,
        response: str,
        type: str = "chat",
        success: bool = True,
        limit: int = DEFAULT_LIMIT,
        vector: Vector | None = None,
    ) -> MemoryEntry:
        """Store one interaction with its embedding (`vector`, from `embed_interaction`,
        or made here), then drop the oldest of this agent and project beyond `limit`.
        Joins the caller's transaction: the vector goes if it rolls back, and the pruned
        vectors go only once it commits."""
        if limit < 1:
            raise ValueError("a memory limit is at least 1")
        # Both in one statement, reading no row (a run calls this for every answer).
        agent_found, project_found = await MemoryQueries(db, user_id).exist(
            (Agent, agent_id), (Project, project_id)
        )
        if not agent_found:
            raise AgentNotFound(f"You have no agent {agent_id}")
        if not project_found:
            raise ProjectNotFound(f"You have no project {project_id}")
        if vector is None:
            vector = await self.embed_interaction(request, response)
        queries = MemoryQueries(db, user_id)
        # Read, and the vector stored, before this call's first write: a transaction that
        # has not written yet (a run's end) holds no writer for them on SQLite. The new
        # entry will be the newest, so those beyond `limit` with it are those beyond
        # `limit - 1` now.
        beyond = await queries.ids_beyond(agent_id, project_id, limit - 1)
        entry = MemoryEntry(
            id=new_id(),
            user_id=user_id,
            agent_id=agent_id,
            project_id=project_id,
            type=type,
            success=success,
            request=request,
            response=response,
            size_bytes=len(request.encode()) + len(response.encode()),
            created_at=utcnow(),
        )
        store = await self.ai.vectors()
        await store.upsert([self._record(entry, vector)])
        record_filter = VectorFilter(app=VECTOR_APP, user_id=user_id, ids=[str(entry.id)])
        self._when(db, rolled_back=lambda: store.delete(record_filter))
        db.add(entry)
        await db.flush()
        if beyond:
            await queries.delete_entries(beyond)
            self._delete_vectors_after_commit(db, user_id, beyond)
        return entry

    async def embed_interaction(self, request: str, response: str) -> Vector:
        """The embedding `remember` stores for an interaction. A caller that holds a
        transaction open makes it first: an embedding call can take a while."""
        text = f"{request}\n\n{response}"[:EMBEDDED_CHARACTERS]
        vector: Vector = (await self.ai.embedder.embed_passages([text]))[0]
        return vector

    @staticmethod
    def _record(entry: MemoryEntry, vector: Vector) -> VectorRecord:
        return VectorRecord(
            id=str(entry.id),
            vector=vector,
            app=VECTOR_APP,
            scope=memory_scope(entry.agent_id, entry.project_id),
            user_id=entry.user_id,
            payload={
                "agent_id": str(entry.agent_id),
                "project_id": str(entry.project_id),
                "type": entry.type,
                "success": entry.success,
                "created_us": microseconds(entry.created_at),
            },
        )

    # -- searching ------------------------------------------------------------------------

    async def recall(
        self,
        db: AsyncSession | Database,
        *,
        user_id: UUID,
        agent_id: UUID,
        project_id: UUID,
        query: str,
        limit: int = 5,
        type: str | None = None,
        success: bool | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[MemoryHit]:
        """The `limit` remembered interactions most similar to `query` that pass the
        filters, best first. `db` is a session, or the `Database` to read each row outside
        any transaction (`MemoryReads`)."""
        vector = await self.ai.embedder.embed_query(query)
        return await self.search(
            db,
            user_id=user_id,
            agent_id=agent_id,
            project_id=project_id,
            vector=vector,
            limit=limit,
            filters=MemoryFilters(type, success, since, until),
        )

    async def search(
        self,
        db: AsyncSession | Database,
        *,
        user_id: UUID,
        agent_id: UUID,
        project_id: UUID,
        vector: npt.NDArray[np.float32] | Sequence[float],
        limit: int = 5,
        filters: MemoryFilters | None = None,
    ) -> list[MemoryHit]:
        """`recall` with the query already embedded.

        Exact: the store scores every vector of the agent and project. Filters are applied
        to an over-fetched top list; when fewer than `limit` of it pass, the ledger names
        every entry that passes and the store ranks just those.
        """
        if limit < 1:
            return []
        filters = filters or MemoryFilters()
        store = await self.ai.vectors()
        scoped = VectorFilter(
            app=VECTOR_APP, user_id=user_id, scope=memory_scope(agent_id, project_id)
        )
        wanted = limit + SLACK
        fetch = wanted if filters.empty else max(wanted * OVERFETCH, MIN_OVERFETCH)
        hits = await store.search(vector, filter=scoped, limit=fetch)
        passed = [hit for hit in hits if filters.admits(hit.payload)]
        queries = MemoryReads(db, user_id)
        if len(passed) < wanted and len(hits) == fetch:
            candidates = await queries.matching_ids(agent_id, project_id, **filters.as_query())
            if not candidates:
                return []
            by_id = replace(scoped, ids=[str(candidate) for candidate in candidates])
            passed = await store.search(vector, filter=by_id, limit=wanted)
        return await self._from_ledger(queries, passed[:wanted], limit)

    @staticmethod
    async def _from_ledger(
        queries: MemoryReads, hits: list[VectorHit], limit: int
    ) -> list[MemoryHit]:
        rows = await queries.entries_by_id([UUID(hit.id) for hit in hits])
        found: list[MemoryHit] = []
        for hit in hits:
            row = rows.get(UUID(hit.id))
            if row is None:  # a vector whose row is gone or not committed
                continue
            found.append(
                MemoryHit(
                    id=row.id,
                    request=row.request,
                    response=row.response,
                    type=row.type,
                    success=row.success,
                    created_at=row.created_at,
                    score=hit.score,
                )
            )
        return found[:limit]

    # -- forgetting -----------------------------------------------------------------------

    async def forget_agent(self, db: AsyncSession, *, user_id: UUID, agent_id: UUID) -> int:
        """All of an agent's memory, in every project: the rows now, the vectors once the
        transaction commits. Returns how many entries went."""
        removed = await MemoryQueries(db, user_id).delete_memory(agent_id=agent_id)
        selector = VectorFilter(
            app=VECTOR_APP, user_id=user_id, payload={"agent_id": str(agent_id)}
        )
        self._delete_after_commit(db, selector)
        return removed

    async def forget_project(self, db: AsyncSession, *, user_id: UUID, project_id: UUID) -> int:
        """All memory kept in a project, of every agent."""
        removed = await MemoryQueries(db, user_id).delete_memory(project_id=project_id)
        selector = VectorFilter(
            app=VECTOR_APP, user_id=user_id, payload={"project_id": str(project_id)}
        )
        self._delete_after_commit(db, selector)
        return removed

    async def clear(
        self, db: AsyncSession, *, user_id: UUID, agent_id: UUID, project_id: UUID | None
    ) -> int:
        """An agent's memory in one project, or in all of them without a project."""
        if project_id is None:
            return await self.forget_agent(db, user_id=user_id, agent_id=agent_id)
        queries = MemoryQueries(db, user_id)
        removed = await queries.delete_memory(agent_id=agent_id, project_id=project_id)
        selector = VectorFilter(
            app=VECTOR_APP, user_id=user_id, scope=memory_scope(agent_id, project_id)
        )
        self._delete_after_commit(db, selector)
        return removed

    async def prune(
        self,
        db: AsyncSession,
        *,
        user_id: UUID,
        agent_id: UUID,
        project_id: UUID | None,
        keep_latest: int | None = None,
        older_than: dt.datetime | None = None,
    ) -> int:
        """Drop entries older than `older_than` and beyond the newest `keep_latest` of each
        project (one project if given). With neither, keep the agent's `memory_limit`."""
        agent = await self.owned_agent(db, user_id=user_id, agent_id=agent_id)
        if keep_latest is None and older_than is None:
            keep_latest = int(agent.config.get("memory_limit", DEFAULT_LIMIT))
        queries = MemoryQueries(db, user_id)
        doomed: set[UUID] = set()
        if older_than is not None:
            doomed.update(await queries.ids_older_than(agent_id, project_id, older_than))
        if keep_latest is not None:
            projects = (
                [project_id] if project_id is not None else await queries.memory_projects(agent_id)
            )
            for project in projects:
                doomed.update(await queries.ids_beyond(agent_id, project, keep_latest))
        if not doomed:
            return 0
        ids = sorted(doomed)
        removed = await queries.delete_entries(ids)
        self._delete_vectors_after_commit(db, user_id, ids)
        return removed

    def _delete_vectors_after_commit(
        self, db: AsyncSession, user_id: UUID, ids: Sequence[UUID]
    ) -> None:
        for start in range(0, len(ids), MemoryQueries.ID_BATCH):
            batch = [str(entry_id) for entry_id in ids[start : start + MemoryQueries.ID_BATCH]]
            self._delete_after_commit(db, VectorFilter(app=VECTOR_APP, user_id=user_id, ids=batch))

    def _delete_after_commit(self, db: AsyncSession, selector: VectorFilter) -> None:
        async def delete() -> int:
            store = await self.ai.vectors()
            return await store.delete(selector)

        self._when(db, committed=delete)

    def _when(
        self,
        db: AsyncSession,
        *,
        committed: Callable[[], Awaitable[Any]] | None = None,
        rolled_back: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """Run vector-store work once the transaction's outcome is known (the callbacks of
        `on_outcome` are synchronous: the work becomes a task, tracked until it ends)."""
        loop = asyncio.get_running_loop()

        def spawner(work: Callable[[], Awaitable[Any]] | None) -> Callable[[], None] | None:
            if work is None:
                return None

            def spawn() -> None:
                task = loop.create_task(self._quietly(work))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

            return spawn

        on_outcome(db, committed=spawner(committed), rolled_back=spawner(rolled_back))

    @staticmethod
    async def _quietly(work: Callable[[], Awaitable[Any]]) -> None:
        try:
            await work()
        except Exception:  # the rows are already right; a stray vector is never returned
            log.exception("agents.memory.vector_cleanup_failed")

    async def settle(self) -> None:
        """Wait for vector-store work scheduled by committed or rolled-back transactions."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- reading --------------------------------------------------------------------------

    def listing(
        self,
        db: AsyncSession,
        *,
        user_id: UUID,
        agent_id: UUID,
        project_id: UUID | None,
        filters: MemoryFilters,
    ) -> Select[MemoryEntry]:
        """The statement of an agent's entries that pass the filters, for a paged list."""
        return MemoryQueries(db, user_id).entries(agent_id, project_id, **filters.as_query())

    async def stats(
        self, db: AsyncSession, *, user_id: UUID, agent_id: UUID, project_id: UUID | None
    ) -> MemoryStats:
        queries = MemoryQueries(db, user_id)
        entries, size, successes, oldest, newest = await queries.totals(agent_id, project_id)
        by_type = await queries.counts_by_type(agent_id, project_id)
        store = await self.ai.vectors()
        if project_id is not None:
            selector = VectorFilter(
                app=VECTOR_APP, user_id=user_id, scope=memory_scope(agent_id, project_id)
            )
        else:
            selector = VectorFilter(
                app=VECTOR_APP, user_id=user_id, payload={"agent_id": str(agent_id)}
            )
        vectors = await store.count(selector)
        return MemoryStats(
            entries=entries,
            vectors=vectors,
            size_bytes=size,
            vector_bytes=vectors * store.dimensions * 4,
            success_rate=round(successes / entries, 4) if entries else None,
            by_type=by_type,
            oldest=oldest,
            newest=newest,
        )

    async def export(
        self,
        database: Database,
        *,
        user_id: UUID,
        agent_id: UUID,
        project_id: UUID | None,
        with_vectors: bool = False,
    ) -> AsyncIterator[bytes]:
        """The entries as JSON lines, oldest first, read in batches each in its own short
        transaction (so a long download holds no database snapshot open)."""
        after: tuple[dt.datetime, UUID] | None = None
        while True:
            async with database.sessions() as session:
                batch = await MemoryQueries(session, user_id).entries_after(
                    agent_id, project_id, after, EXPORT_BATCH
                )
            if not batch:
                return
            vectors = await self._vectors_of(user_id, batch) if with_vectors else {}
            lines = []
            for entry in batch:
                line: dict[str, Any] = {
                    "id": str(entry.id),
                    "agent_id": str(entry.agent_id),
                    "project_id": str(entry.project_id),
                    "type": entry.type,
                    "success": entry.success,
                    "request": entry.request,
                    "response": entry.response,
                    "size_bytes": entry.size_bytes,
                    "created_at": entry.created_at.isoformat(),
                }
                if with_vectors:
                    line["vector"] = vectors.get(str(entry.id))
                lines.append(orjson.dumps(line) + b"\n")
            yield b"".join(lines)
            if len(batch) < EXPORT_BATCH:
                return
            after = (batch[-1].created_at, batch[-1].id)

    async def _vectors_of(
        self, user_id: UUID, entries: list[MemoryEntry]
    ) -> dict[str, list[float]]:
        store = await self.ai.vectors()
        selector = VectorFilter(
            app=VECTOR_APP, user_id=user_id, ids=[str(entry.id) for entry in entries]
        )
        return {
            record.id: np.asarray(record.vector, dtype=np.float32).tolist()
            async for record in store.export(selector)
        }
