"""`/api/v1/admin/*`: the audit trail and user administration, for admins only."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from veche.kernel.audit import AuditEvent
from veche.kernel.deps import DbSession, KernelDep
from veche.kernel.errors import problem_openapi
from veche.kernel.http import api_router
from veche.kernel.identity.deps import require_permission
from veche.kernel.identity.models import Role, User
from veche.kernel.identity.schemas import UserAdminUpdate, UserRead
from veche.kernel.identity.service import IdentityService
from veche.kernel.pagination import CursorCodec, Page, PageParams, SortKey, page_params, paginate
from veche.kernel.ratelimit import rate_limit

router = api_router(
    "/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(rate_limit("admin"))],
)

Pagination = Annotated[PageParams, Depends(page_params)]


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    occurred_at: dt.datetime
    actor_id: UUID | None
    action: str
    target_type: str | None
    target_id: str | None
    request_id: str | None
    ip: str | None
    data: dict[str, Any]


def _scope(name: str, **filters: object) -> str:
    parts = [f"{key}={value}" for key, value in sorted(filters.items()) if value is not None]
    return "|".join([name, *parts])


@router.get(
    "/audit",
    response_model=Page[AuditEventRead],
    responses=problem_openapi(400, 401, 403),
    summary="The audit trail, newest first by default",
)
async def list_audit_events(
    session: DbSession,
    kernel: KernelDep,
    _: Annotated[User, Depends(require_permission("audit:read"))],
    page: Pagination,
    actor_id: UUID | None = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    target_type: Annotated[str | None, Query(max_length=64)] = None,
    target_id: Annotated[str | None, Query(max_length=128)] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    sort: Literal["-occurred_at", "occurred_at"] = "-occurred_at",
) -> Page[AuditEventRead]:
    statement = select(AuditEvent)
    if actor_id is not None:
        statement = statement.where(AuditEvent.actor_id == actor_id)
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    if target_type is not None:
        statement = statement.where(AuditEvent.target_type == target_type)
    if target_id is not None:
        statement = statement.where(AuditEvent.target_id == target_id)
    if since is not None:
        statement = statement.where(AuditEvent.occurred_at >= _aware(since))
    if until is not None:
        statement = statement.where(AuditEvent.occurred_at < _aware(until))
    scope = _scope(
        "admin.audit",
        actor_id=actor_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
    )
    rows, next_cursor = await paginate(
        session,
        statement,
        AuditEvent,
        sort=SortKey.parse(sort),
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=scope,
    )
    return Page(items=[AuditEventRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/users",
    response_model=Page[UserRead],
    responses=problem_openapi(400, 401, 403),
    summary="Accounts, newest first by default",
)
async def list_users(
    session: DbSession,
    kernel: KernelDep,
    _: Annotated[User, Depends(require_permission("users:read"))],
    page: Pagination,
    role: Role | None = None,
    is_active: bool | None = None,
    sort: Literal["-created_at", "created_at", "email", "-email"] = "-created_at",
) -> Page[UserRead]:
    statement = select(User)
    if role is not None:
        statement = statement.where(User.role == role)
    if is_active is not None:
        statement = statement.where(User.is_active == is_active)
    rows, next_cursor = await paginate(
        session,
        statement,
        User,
        sort=SortKey.parse(sort),
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=_scope("admin.users", role=role, is_active=is_active),
    )
    return Page(items=[UserRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.patch(
    "/users/{user_id}",
    response_model=UserRead,
    responses=problem_openapi(401, 403, 404, 409, 415),
    summary="Change a user's role or disable the account",
)
async def update_user(
    user_id: UUID,
    body: UserAdminUpdate,
    session: DbSession,
    kernel: KernelDep,
    actor: Annotated[User, Depends(require_permission("users:manage"))],
) -> UserRead:
    user = await IdentityService(session, kernel).admin_update(
        actor, user_id, body.model_dump(exclude_unset=True)
    )
    return UserRead.model_validate(user)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
