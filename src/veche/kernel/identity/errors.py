"""Identity's expected failures, each with its status and stable code."""

from __future__ import annotations

from veche.kernel.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ProblemError,
    TooManyRequests,
    Unauthorized,
)


class EmailTaken(Conflict):
    code = "auth.email_taken"
    title = "Email already registered"


class WeakPassword(ProblemError):
    status = 422
    code = "auth.weak_password"
    title = "Password does not meet the policy"


class InvalidCredentials(Unauthorized):
    code = "auth.invalid_credentials"
    title = "Email or password is wrong"


class AccountDisabled(Forbidden):
    code = "auth.account_disabled"
    title = "Account disabled"


class LoginThrottled(TooManyRequests):
    code = "auth.login_throttled"
    title = "Too many failed sign-ins"


class InvalidRefreshToken(Unauthorized):
    code = "auth.invalid_refresh_token"
    title = "Refresh token is invalid or expired"


class RefreshTokenReused(Unauthorized):
    code = "auth.refresh_token_reused"
    title = "Refresh token was already used"


class InvalidAccessToken(Unauthorized):
    code = "auth.invalid_token"
    title = "Access token is invalid"


class ExpiredAccessToken(Unauthorized):
    code = "auth.token_expired"
    title = "Access token has expired"


class WrongPassword(Forbidden):
    code = "auth.wrong_password"
    title = "Current password is wrong"


class SessionNotFound(NotFound):
    code = "auth.session_not_found"
    title = "Session not found"


class UserNotFound(NotFound):
    code = "user.not_found"
    title = "User not found"


class LastAdmin(Conflict):
    code = "user.last_admin"
    title = "The last active admin cannot be removed"


class IdentityAlreadyLinked(Conflict):
    code = "auth.identity_linked"
    title = "External identity already linked to another user"


class PermissionDenied(Forbidden):
    code = "auth.permission_denied"
    title = "Permission denied"
