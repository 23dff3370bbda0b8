"""Identity: accounts, argon2id passwords, JWT access tokens, rotating refresh tokens with
reuse detection, sessions, roles and permissions, and linked external identities. One
account works in every app."""

from veche.kernel.identity.deps import (
    AdminUser,
    CurrentAuth,
    CurrentUser,
    has_permission,
    require_permission,
    require_role,
)
from veche.kernel.identity.models import AuthSession, ExternalIdentity, User
from veche.kernel.identity.service import Authenticated, IdentityService

__all__ = [
    "AdminUser",
    "AuthSession",
    "Authenticated",
    "CurrentAuth",
    "CurrentUser",
    "ExternalIdentity",
    "IdentityService",
    "User",
    "has_permission",
    "require_permission",
    "require_role",
]
