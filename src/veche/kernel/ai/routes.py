"""`/api/v1/ai/*`: usage (own; admins: everyone's) and the configured model profiles."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import ColumnElement, func, select

from veche.kernel.ai.models import AIUsage
from veche.kernel.ai.usage import day_start
from veche.kernel.deps import DbSession, KernelDep
from veche.kernel.errors import BadRequest, Forbidden, problem_openapi
from veche.kernel.http import api_router
from veche.kernel.identity.deps import CurrentUser, has_permission
from veche.kernel.pagination import CursorCodec, Page, PageParams, SortKey, page_params, paginate
from veche.kernel.ratelimit import rate_limit

router = api_router("/api/v1/ai", tags=["ai"], dependencies=[Depends(rate_limit("default"))])

READ_ALL = "ai:usage:read"


def _iso_only(value: object) -> object:
    # Pydantic also reads "0" or "1.7e9" as Unix time; the schema promises ISO 8601 only.
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("expected an ISO 8601 date-time with a UTC offset")
    return value


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]")
IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
AppName = Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Purpose = Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]


class UsageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    user_id: UUID | None
    app: str
    purpose: str
    kind: str
    provider: str
    model: str
    prompt: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    outcome: str
    cost: float
    created_at: dt.datetime


class UsageTotal(BaseModel):
    app: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float


class BudgetRead(BaseModel):
    daily_tokens: int = Field(description="tokens per UTC day; 0 means no limit")
    used_today: int
    remaining: int | None
    resets_at: dt.datetime


class UsageSummary(BaseModel):
    since: dt.datetime | None
    until: dt.datetime | None
    budget: BudgetRead | None = Field(description="the caller's own budget")
    totals: list[UsageTotal]


class ProviderHealthRead(BaseModel):
    state: str
    detail: str


class ProfileRead(BaseModel):
    purpose: str
    provider: str
    model: str
    temperature: float
    max_tokens: int
    timeout_seconds: float
    health: ProviderHealthRead


class EmbeddingsRead(BaseModel):
    provider: str
    model: str
    dimensions: int | None
    vector_store: str


class ModelsRead(BaseModel):
    profiles: list[ProfileRead]
    embeddings: EmbeddingsRead


class UsageFilters:
    """Whose usage, from when, for which app and purpose; checked against the caller."""

    def __init__(
        self,
        user: CurrentUser,
        user_id: Annotated[
            UUID | None, Query(description="someone else's usage (admins only)")
        ] = None,
        app: AppName = None,
        purpose: Purpose = None,
        since: Annotated[IsoDatetime | None, Query(description="from (inclusive)")] = None,
        until: Annotated[IsoDatetime | None, Query(description="to (exclusive)")] = None,
    ) -> None:
        everyone = has_permission(user, READ_ALL)
        if user_id is not None and user_id != user.id and not everyone:
            raise Forbidden("Only administrators can read other people's usage")
        if since and until and since >= until:
            raise BadRequest("'since' must be before 'until'")
        self.caller = user
        self.user_id = user_id if everyone else user.id
        self.app = app
        self.purpose = purpose
        self.since = since
        self.until = until

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.user_id is not None:
            clauses.append(AIUsage.user_id == self.user_id)
        if self.app is not None:
            clauses.append(AIUsage.app == self.app)
        if self.purpose is not None:
            clauses.append(AIUsage.purpose == self.purpose)
        if self.since is not None:
            clauses.append(AIUsage.created_at >= self.since)
        if self.until is not None:
            clauses.append(AIUsage.created_at < self.until)
        return clauses

    @property
    def scope(self) -> str:
        return (
            f"ai.usage|caller={self.caller.id}|user={self.user_id}|app={self.app}"
            f"|purpose={self.purpose}|since={self.since}|until={self.until}"
        )


Filters = Annotated[UsageFilters, Depends()]


@router.get(
    "/usage",
    response_model=Page[UsageRead],
    responses=problem_openapi(400, 401, 403, 422),
    summary="AI calls, newest first: your own, or (admins) anyone's",
)
async def list_usage(
    session: DbSession,
    kernel: KernelDep,
    filters: Filters,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[UsageRead]:
    await kernel.ai.ledger.flush()  # with the calls this process has not stored yet
    statement = select(AIUsage).where(*filters.clauses())
    rows, next_cursor = await paginate(
        session,
        statement,
        AIUsage,
        sort=SortKey.parse("-created_at"),
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=filters.scope,
    )
    return Page(items=[UsageRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/usage/summary",
    response_model=UsageSummary,
    responses=problem_openapi(400, 401, 403, 422),
    summary="Totals per app and model (default: today, UTC) and your token budget",
)
async def usage_summary(
    session: DbSession, kernel: KernelDep, filters: Filters, user: CurrentUser
) -> UsageSummary:
    await kernel.ai.ledger.flush()  # with the calls this process has not stored yet
    if filters.since is None and filters.until is None:
        filters.since = day_start(dt.datetime.now(dt.UTC))
    statement = (
        select(
            AIUsage.app,
            AIUsage.model,
            func.count(),
            func.coalesce(func.sum(AIUsage.prompt_tokens), 0),
            func.coalesce(func.sum(AIUsage.completion_tokens), 0),
            func.coalesce(func.sum(AIUsage.cost), 0.0),
        )
        .where(*filters.clauses())
        .group_by(AIUsage.app, AIUsage.model)
        .order_by(AIUsage.app, AIUsage.model)
    )
    totals = [
        UsageTotal(
            app=app,
            model=model,
            calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=cost,
        )
        for app, model, calls, prompt, completion, cost in (await session.execute(statement))
    ]
    budget = await kernel.ai.ledger.budget(user.id)
    return UsageSummary(
        since=filters.since,
        until=filters.until,
        budget=BudgetRead(
            daily_tokens=budget.daily_tokens,
            used_today=budget.used_today,
            remaining=budget.remaining,
            resets_at=budget.resets_at,
        ),
        totals=totals,
    )


@router.get(
    "/models",
    response_model=ModelsRead,
    responses=problem_openapi(401),
    summary="The configured model profiles with their provider's health, and embeddings",
)
async def list_models(kernel: KernelDep, _: CurrentUser) -> ModelsRead:
    ai = kernel.ai
    profiles = [
        ProfileRead(
            purpose=status.purpose,
            provider=status.provider,
            model=status.model,
            temperature=status.temperature,
            max_tokens=status.max_tokens,
            timeout_seconds=status.timeout_seconds,
            health=ProviderHealthRead(state=status.health.state, detail=status.health.detail),
        )
        for status in ai.llm.statuses()
    ]
    return ModelsRead(
        profiles=profiles,
        embeddings=EmbeddingsRead(
            provider=ai.embeddings_provider,
            model=ai.embeddings_model,
            dimensions=ai.embedding_dimensions,
            vector_store=ai.vector_store_kind,
        ),
    )
