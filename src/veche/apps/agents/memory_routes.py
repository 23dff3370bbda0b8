"""`/api/v1/agents/agents/{agent_id}/context*`: an agent's memory of its interactions, per
project: search and list it, add to it, clear, prune, count and export it. The agent and the
project must be the caller's; another user's are a 404."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query, status
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool

from veche.apps.agents.errors import MemorySearchNeedsProject, MemoryTimeRangeInvalid
from veche.apps.agents.memory import AgentMemory, MemoryFilters, MemoryHit
from veche.apps.agents.models import MemoryEntry
from veche.apps.agents.runtime import runtime_of
from veche.kernel import (
    CursorCodec,
    DbSession,
    KernelDep,
    Page,
    PageParams,
    SortKey,
    api_router,
    page_params,
    paginate,
    problem_openapi,
    rate_limit,
)
from veche.kernel.identity import CurrentUser

router = api_router(tags=["agents"], dependencies=[Depends(rate_limit("default"))])

MAX_TEXT = 20_000
MAX_QUERY = 2_000
TYPE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$"
NEWEST_FIRST = SortKey.parse("-created_at")

InteractionType = Annotated[
    str, Field(pattern=TYPE_PATTERN, max_length=32, description="e.g. chat, tool, plan")
]
InteractionText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Paging = Annotated[PageParams, Depends(page_params)]
ProjectFilter = Annotated[
    UUID | None, Query(description="one project; without it, all of the agent's projects")
]


def memory_of(kernel: KernelDep) -> AgentMemory:
    return runtime_of(kernel).memory


Memory = Annotated[AgentMemory, Depends(memory_of)]


class MemoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: UUID
    request: InteractionText
    response: Annotated[str, Field(max_length=MAX_TEXT)]
    type: InteractionType = "chat"
    success: StrictBool = True


class MemoryRead(BaseModel):
    id: UUID
    agent_id: UUID
    project_id: UUID
    type: str
    success: bool
    request: str
    response: str
    size_bytes: int
    created_at: dt.datetime
    score: float | None = Field(
        default=None, description="cosine similarity to `q`; null when listing"
    )


class MemoryStatsRead(BaseModel):
    entries: int = Field(description="rows in the memory ledger")
    vectors: int = Field(description="vectors in the vector store (equal unless mid-deletion)")
    size_bytes: int = Field(description="UTF-8 bytes of the stored requests and responses")
    vector_bytes: int = Field(description="bytes of float32 vectors")
    success_rate: float | None = Field(description="successful / all entries; null if none")
    by_type: dict[str, int]
    oldest: dt.datetime | None
    newest: dt.datetime | None


class MemoryPrune(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: UUID | None = None
    keep_latest: Annotated[int, Field(ge=0, le=100_000, strict=True)] | None = Field(
        default=None, description="keep this many newest entries of each project"
    )
    older_than: AwareDatetime | None = Field(default=None, description="drop entries before")


class MemoryRemoved(BaseModel):
    removed: int


class MemorySearch:
    """The query of `GET .../context`: a search with `q`, a list without."""

    def __init__(
        self,
        project_id: ProjectFilter = None,
        q: Annotated[
            str | None,
            Query(min_length=1, max_length=MAX_QUERY, description="search by meaning"),
        ] = None,
        type: Annotated[str | None, Query(pattern=TYPE_PATTERN, max_length=32)] = None,
        success: bool | None = None,
        since: Annotated[AwareDatetime | None, Query(description="from (inclusive)")] = None,
        until: Annotated[AwareDatetime | None, Query(description="to (exclusive)")] = None,
    ) -> None:
        if since is not None and until is not None and since >= until:
            raise MemoryTimeRangeInvalid("'since' must be before 'until'")
        if q is not None and project_id is None:
            raise MemorySearchNeedsProject("Memory is kept per project: give project_id")
        self.project_id = project_id
        self.q = q
        self.filters = MemoryFilters(type=type, success=success, since=since, until=until)


def entry_read(entry: MemoryEntry, score: float | None = None) -> MemoryRead:
    return MemoryRead(
        id=entry.id,
        agent_id=entry.agent_id,
        project_id=entry.project_id,
        type=entry.type,
        success=entry.success,
        request=entry.request,
        response=entry.response,
        size_bytes=entry.size_bytes,
        created_at=entry.created_at,
        score=score,
    )


def hit_read(hit: MemoryHit, agent_id: UUID, project_id: UUID) -> MemoryRead:
    return MemoryRead(
        id=hit.id,
        agent_id=agent_id,
        project_id=project_id,
        type=hit.type,
        success=hit.success,
        request=hit.request,
        response=hit.response,
        size_bytes=len(hit.request.encode()) + len(hit.response.encode()),
        created_at=hit.created_at,
        score=round(hit.score, 6),
    )


async def check_owner(
    memory: AgentMemory,
    session: DbSession,
    user_id: UUID,
    agent_id: UUID,
    project_id: UUID | None,
) -> None:
    """404 unless the agent (and the project, if named) are the caller's."""
    await memory.owned_agent(session, user_id=user_id, agent_id=agent_id)
    if project_id is not None:
        await memory.owned_project(session, user_id=user_id, project_id=project_id)


@router.get(
    "/agents/{agent_id}/context",
    response_model=Page[MemoryRead],
    responses=problem_openapi(400, 401, 404),
    summary="Search an agent's memory by meaning (`q`), or list it newest first",
)
async def list_context(
    agent_id: UUID,
    search: Annotated[MemorySearch, Depends()],
    session: DbSession,
    kernel: KernelDep,
    user: CurrentUser,
    memory: Memory,
    page: Paging,
) -> Page[MemoryRead]:
    await check_owner(memory, session, user.id, agent_id, search.project_id)
    if search.q is not None:
        assert search.project_id is not None
        hits = await memory.recall(
            session,
            user_id=user.id,
            agent_id=agent_id,
            project_id=search.project_id,
            query=search.q,
            limit=page.limit,
            **search.filters.as_query(),
        )
        items = [hit_read(hit, agent_id, search.project_id) for hit in hits]
        return Page(items=items, next_cursor=None)
    filters = search.filters
    rows, next_cursor = await paginate(
        session,
        memory.listing(
            session,
            user_id=user.id,
            agent_id=agent_id,
            project_id=search.project_id,
            filters=filters,
        ),
        MemoryEntry,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=(
            f"agents.memory|agent={agent_id}|project={search.project_id}|type={filters.type}"
            f"|success={filters.success}|since={filters.since}|until={filters.until}"
        ),
    )
    return Page(items=[entry_read(row) for row in rows], next_cursor=next_cursor)


@router.post(
    "/agents/{agent_id}/context",
    status_code=status.HTTP_201_CREATED,
    response_model=MemoryRead,
    responses=problem_openapi(401, 404, 413, 415),
    summary="Add one interaction to an agent's memory in a project",
)
async def add_context(
    agent_id: UUID, body: MemoryCreate, session: DbSession, user: CurrentUser, memory: Memory
) -> MemoryRead:
    agent = await memory.owned_agent(session, user_id=user.id, agent_id=agent_id)
    entry = await memory.remember(
        session,
        user_id=user.id,
        agent_id=agent_id,
        project_id=body.project_id,
        request=body.request,
        response=body.response,
        type=body.type,
        success=body.success,
        limit=int(agent.config.get("memory_limit", 1000)),
    )
    return entry_read(entry)


@router.delete(
    "/agents/{agent_id}/context",
    response_model=MemoryRemoved,
    responses=problem_openapi(401, 404),
    summary="Clear an agent's memory in one project, or in all of them",
)
async def clear_context(
    agent_id: UUID,
    session: DbSession,
    user: CurrentUser,
    memory: Memory,
    project_id: ProjectFilter = None,
) -> MemoryRemoved:
    await check_owner(memory, session, user.id, agent_id, project_id)
    removed = await memory.clear(session, user_id=user.id, agent_id=agent_id, project_id=project_id)
    return MemoryRemoved(removed=removed)


@router.get(
    "/agents/{agent_id}/context/stats",
    response_model=MemoryStatsRead,
    responses=problem_openapi(401, 404),
    summary="How much an agent remembers: entries, vectors, bytes, success rate, types",
)
async def context_stats(
    agent_id: UUID,
    session: DbSession,
    user: CurrentUser,
    memory: Memory,
    project_id: ProjectFilter = None,
) -> MemoryStatsRead:
    await check_owner(memory, session, user.id, agent_id, project_id)
    found = await memory.stats(session, user_id=user.id, agent_id=agent_id, project_id=project_id)
    return MemoryStatsRead(
        entries=found.entries,
        vectors=found.vectors,
        size_bytes=found.size_bytes,
        vector_bytes=found.vector_bytes,
        success_rate=found.success_rate,
        by_type=found.by_type,
        oldest=found.oldest,
        newest=found.newest,
    )


@router.get(
    "/agents/{agent_id}/context/export",
    response_class=StreamingResponse,
    responses={**problem_openapi(401, 404), 200: {"content": {"application/x-ndjson": {}}}},
    summary="An agent's memory as JSON lines, oldest first",
)
async def export_context(
    agent_id: UUID,
    session: DbSession,
    kernel: KernelDep,
    user: CurrentUser,
    memory: Memory,
    project_id: ProjectFilter = None,
    vectors: Annotated[bool, Query(description="include each entry's unit vector")] = False,
) -> StreamingResponse:
    await check_owner(memory, session, user.id, agent_id, project_id)
    lines = memory.export(
        kernel.db,
        user_id=user.id,
        agent_id=agent_id,
        project_id=project_id,
        with_vectors=vectors,
    )
    headers = {"Content-Disposition": f'attachment; filename="agent-{agent_id}-memory.jsonl"'}
    return StreamingResponse(lines, media_type="application/x-ndjson", headers=headers)


@router.post(
    "/agents/{agent_id}/context/prune",
    response_model=MemoryRemoved,
    responses=problem_openapi(401, 404, 413, 415),
    summary="Drop old entries: before a time, beyond the newest N, or beyond the agent's limit",
)
async def prune_context(
    agent_id: UUID, body: MemoryPrune, session: DbSession, user: CurrentUser, memory: Memory
) -> MemoryRemoved:
    await check_owner(memory, session, user.id, agent_id, body.project_id)
    removed = await memory.prune(
        session,
        user_id=user.id,
        agent_id=agent_id,
        project_id=body.project_id,
        keep_latest=body.keep_latest,
        older_than=body.older_than,
    )
    return MemoryRemoved(removed=removed)
