"""`/api/v1/admin/events/*`: consumers and their lag, dead letters and replays (admins)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from veche.kernel.deps import DbSession, KernelDep
from veche.kernel.errors import problem_openapi
from veche.kernel.events import service
from veche.kernel.events.consumers import CONSUMER_NAME
from veche.kernel.events.models import DeadLetter
from veche.kernel.http import api_router
from veche.kernel.identity.deps import require_permission
from veche.kernel.identity.models import User
from veche.kernel.pagination import CursorCodec, Page, PageParams, SortKey, page_params, paginate
from veche.kernel.ratelimit import rate_limit

router = api_router(
    "/api/v1/admin/events",
    tags=["admin", "events"],
    dependencies=[Depends(rate_limit("admin"))],
)

Reader = Annotated[User, Depends(require_permission("events:read"))]
Manager = Annotated[User, Depends(require_permission("events:manage"))]
ConsumerName = Annotated[str, Path(pattern=CONSUMER_NAME.pattern, max_length=100)]


class ConsumerRead(BaseModel):
    name: str
    event_types: list[str]
    lag: int = Field(description="published events it has not handled yet")
    dead_letters: int


class DeadLetterRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    consumer: str
    event_id: UUID
    event_type: str
    error_type: str
    error_message: str
    attempts: int
    created_at: dt.datetime
    updated_at: dt.datetime


class DeadLetterDetail(DeadLetterRead):
    event: dict[str, Any]


class ReplayRead(BaseModel):
    replayed: list[UUID] = Field(description="dead letters handled and removed")
    failed: list[UUID] = Field(description="dead letters that failed again and stay")


class DeadLetterReplay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consumer: Annotated[str | None, Field(pattern=CONSUMER_NAME.pattern, max_length=100)] = None


class ConsumerRewind(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: dt.datetime = Field(description="deliver the consumer's events from this time on")


class RewindRead(BaseModel):
    consumer: str
    since: dt.datetime


@router.get(
    "/consumers",
    response_model=list[ConsumerRead],
    responses=problem_openapi(401, 403),
    summary="Every event consumer of the mounted apps, with its lag",
)
async def list_consumers(kernel: KernelDep, _: Reader) -> list[ConsumerRead]:
    return [
        ConsumerRead(
            name=status.name,
            event_types=list(status.event_types),
            lag=status.lag,
            dead_letters=status.dead_letters,
        )
        for status in await service.consumer_statuses(kernel)
    ]


@router.post(
    "/consumers/{name}/replay",
    response_model=RewindRead,
    responses=problem_openapi(401, 403, 404, 409, 415),
    summary="Deliver a consumer's events again from a time on",
    description="Answers 409 `events.pruned`, with `retained_since`, when events from "
    "`since` on may have been pruned by retention.",
)
async def rewind_consumer(
    name: ConsumerName, body: ConsumerRewind, kernel: KernelDep, _: Manager
) -> RewindRead:
    since = body.since if body.since.tzinfo else body.since.replace(tzinfo=dt.UTC)
    await service.rewind_consumer(kernel, name, since)
    return RewindRead(consumer=name, since=since)


@router.get(
    "/dead-letters",
    response_model=Page[DeadLetterRead],
    responses=problem_openapi(400, 401, 403),
    summary="Events consumers gave up on, newest first",
)
async def list_dead_letters(
    session: DbSession,
    kernel: KernelDep,
    _: Reader,
    page: Annotated[PageParams, Depends(page_params)],
    consumer: Annotated[str | None, Query(pattern=CONSUMER_NAME.pattern, max_length=100)] = None,
) -> Page[DeadLetterRead]:
    statement = select(DeadLetter)
    if consumer is not None:
        statement = statement.where(DeadLetter.consumer == consumer)
    rows, next_cursor = await paginate(
        session,
        statement,
        DeadLetter,
        sort=SortKey.parse("-created_at"),
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"admin.events.dead_letters|consumer={consumer}",
    )
    return Page(items=[DeadLetterRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/dead-letters/{dead_letter_id}",
    response_model=DeadLetterDetail,
    responses=problem_openapi(401, 403, 404),
    summary="One dead letter with its event",
)
async def get_dead_letter(dead_letter_id: UUID, session: DbSession, _: Reader) -> DeadLetterDetail:
    row = await session.get(DeadLetter, dead_letter_id)
    if row is None:
        raise service.DeadLetterNotFound(f"No dead letter has the id {dead_letter_id}")
    return DeadLetterDetail.model_validate(row)


@router.post(
    "/dead-letters/{dead_letter_id}/replay",
    response_model=ReplayRead,
    responses=problem_openapi(401, 403, 404),
    summary="Hand one dead letter's event to its consumer again",
)
async def replay_dead_letter(dead_letter_id: UUID, kernel: KernelDep, _: Manager) -> ReplayRead:
    handled = await service.replay_dead_letter(kernel, dead_letter_id)
    return ReplayRead(
        replayed=[dead_letter_id] if handled else [], failed=[] if handled else [dead_letter_id]
    )


@router.post(
    "/dead-letters/replay",
    response_model=ReplayRead,
    responses=problem_openapi(401, 403, 404, 415),
    summary="Replay the oldest dead letters, of one consumer or all (up to 1000)",
)
async def replay_dead_letters(body: DeadLetterReplay, kernel: KernelDep, _: Manager) -> ReplayRead:
    result = await service.replay_dead_letters(kernel, body.consumer)
    return ReplayRead(replayed=result.replayed, failed=result.failed)
