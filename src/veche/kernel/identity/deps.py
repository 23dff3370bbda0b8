"""Route dependencies for callers: `CurrentUser`, `CurrentAuth`, roles and permissions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from veche.kernel.context import current_request
from veche.kernel.deps import KernelDep
from veche.kernel.errors import Unauthorized
from veche.kernel.identity.errors import PermissionDenied
from veche.kernel.identity.models import User
from veche.kernel.identity.service import Authenticated, authenticate

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An access token from `POST /api/v1/auth/login` or `/refresh`.",
)

# What each role may do beyond using its own account. Admins may do everything.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "user": frozenset(),
    "admin": frozenset({"*"}),
}


def has_permission(user: User, permission: str) -> bool:
    granted = ROLE_PERMISSIONS.get(user.role, frozenset())
    return "*" in granted or permission in granted


async def current_auth(
    kernel: KernelDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Authenticated:
    if credentials is None:
        raise Unauthorized("Send an access token as 'Authorization: Bearer <token>'")
    authenticated = await authenticate(kernel, credentials.credentials)
    context = current_request()
    if context is not None:
        context.user_id = authenticated.user.id
    return authenticated


CurrentAuth = Annotated[Authenticated, Depends(current_auth)]


async def current_user(authenticated: CurrentAuth) -> User:
    return authenticated.user


# The caller's account, read per request outside the unit of work: detached, so load or
# merge it into the request's session (`IdentityService` does) before changing it.
CurrentUser = Annotated[User, Depends(current_user)]


def require_permission(permission: str) -> Callable[[User], Awaitable[User]]:
    """A dependency that lets only users holding `permission` through."""

    async def dependency(user: CurrentUser) -> User:
        if not has_permission(user, permission):
            raise PermissionDenied(f"This needs the {permission!r} permission")
        return user

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency


def require_role(role: str) -> Callable[[User], Awaitable[User]]:
    """A dependency that lets only users with `role` through."""

    async def dependency(user: CurrentUser) -> User:
        if user.role != role:
            raise PermissionDenied(f"This needs the {role!r} role")
        return user

    dependency.__name__ = f"require_role_{role}"
    return dependency


AdminUser = Annotated[User, Depends(require_role("admin"))]
