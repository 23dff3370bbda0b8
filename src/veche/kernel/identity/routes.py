"""`/api/v1/auth/*` and `/api/v1/me`: thin handlers over `IdentityService`."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request, Response, status

from veche.kernel.context import current_request
from veche.kernel.deps import DbSession, KernelDep
from veche.kernel.errors import problem_openapi
from veche.kernel.http import api_router
from veche.kernel.identity.deps import CurrentAuth, CurrentUser
from veche.kernel.identity.schemas import (
    LoginRequest,
    MeUpdate,
    RefreshRequest,
    RegisterRequest,
    RevokedSessions,
    SessionList,
    SessionRead,
    TokenPair,
    UserRead,
)
from veche.kernel.identity.service import ClientInfo, IdentityService, IssuedTokens
from veche.kernel.ratelimit import rate_limit

auth_router = api_router("/api/v1/auth", tags=["auth"])
me_router = api_router("/api/v1/me", tags=["me"], dependencies=[Depends(rate_limit("default"))])

AuthLimit = Depends(rate_limit("auth"))


def _client(request: Request, device_name: str | None = None) -> ClientInfo:
    context = current_request()
    return ClientInfo(
        ip=context.client_ip if context else None,
        user_agent=request.headers.get("user-agent"),
        device_name=device_name,
    )


def _pair(issued: IssuedTokens) -> TokenPair:
    return TokenPair(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
        refresh_expires_in=issued.refresh_expires_in,
        session_id=issued.session_id,
    )


@auth_router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    dependencies=[AuthLimit],
    responses=problem_openapi(409, 415, 422, 429),
    summary="Create an account",
)
async def register(body: RegisterRequest, session: DbSession, kernel: KernelDep) -> UserRead:
    user = await IdentityService(session, kernel).register(
        email=body.email, password=body.password, display_name=body.display_name
    )
    return UserRead.model_validate(user)


@auth_router.post(
    "/login",
    response_model=TokenPair,
    dependencies=[AuthLimit],
    responses=problem_openapi(401, 403, 415, 429),
    summary="Sign in with email and password",
)
async def login(
    body: LoginRequest, request: Request, session: DbSession, kernel: KernelDep
) -> TokenPair:
    issued = await IdentityService(session, kernel).login(
        email=body.email, password=body.password, client=_client(request, body.device_name)
    )
    return _pair(issued)


@auth_router.post(
    "/refresh",
    response_model=TokenPair,
    dependencies=[Depends(rate_limit("auth_refresh"))],
    responses=problem_openapi(401, 415, 429),
    summary="Trade a refresh token for a new token pair",
    description="The presented refresh token stops working. Presenting one that was "
    "already used revokes its whole session.",
)
async def refresh(
    body: RefreshRequest, request: Request, session: DbSession, kernel: KernelDep
) -> TokenPair:
    issued = await IdentityService(session, kernel).refresh(
        refresh_token=body.refresh_token, client=_client(request)
    )
    return _pair(issued)


@auth_router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(rate_limit("default"))],
    responses=problem_openapi(401),
    summary="Sign this session out",
)
async def logout(auth: CurrentAuth, session: DbSession, kernel: KernelDep) -> Response:
    await IdentityService(session, kernel).revoke_session(auth.user.id, auth.session_id, "logout")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@auth_router.post(
    "/logout-all",
    response_model=RevokedSessions,
    dependencies=[Depends(rate_limit("default"))],
    responses=problem_openapi(401),
    summary="Sign out everywhere: every session and access token of this account",
)
async def logout_all(user: CurrentUser, session: DbSession, kernel: KernelDep) -> RevokedSessions:
    count = await IdentityService(session, kernel).logout_everywhere(user)
    return RevokedSessions(revoked=count)


@auth_router.get(
    "/sessions",
    response_model=SessionList,
    dependencies=[Depends(rate_limit("default"))],
    responses=problem_openapi(401),
    summary="The account's signed-in sessions",
)
async def list_sessions(auth: CurrentAuth, session: DbSession, kernel: KernelDep) -> SessionList:
    sessions = await IdentityService(session, kernel).active_sessions(auth.user.id)
    return SessionList(
        items=[
            SessionRead(
                id=item.id,
                device=item.device_name or item.user_agent,
                ip=item.ip,
                created_at=item.created_at,
                last_used_at=item.last_used_at,
                expires_at=item.expires_at,
                current=item.id == auth.session_id,
            )
            for item in sessions
        ]
    )


@auth_router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(rate_limit("default"))],
    responses=problem_openapi(401, 404),
    summary="Sign one session out",
)
async def revoke_session(
    session_id: UUID, user: CurrentUser, session: DbSession, kernel: KernelDep
) -> Response:
    await IdentityService(session, kernel).revoke_session(user.id, session_id, "revoked_by_user")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@me_router.get("", response_model=UserRead, responses=problem_openapi(401), summary="Who am I")
async def read_me(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)


@me_router.patch(
    "",
    response_model=UserRead,
    responses=problem_openapi(401, 403, 415, 422),
    summary="Change display name, locale or password",
    description="A password change needs the current password and signs every other session out.",
)
async def update_me(
    body: MeUpdate, auth: CurrentAuth, session: DbSession, kernel: KernelDep
) -> UserRead:
    changes = body.model_dump(exclude_unset=True)
    user = await IdentityService(session, kernel).update_me(
        auth.user, changes, current_session=auth.session_id
    )
    return UserRead.model_validate(user)


SessionIdPath = Annotated[UUID, "session id"]
