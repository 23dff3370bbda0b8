"""Identity use cases: registration, sign-in, token rotation, sessions, profile, roles.

Plain async Python over one database session (the caller's unit of work): nothing here
commits. Checks that must hold under concurrency are single conditional UPDATEs or unique
constraints, so they hold the same way on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, NoReturn
from uuid import UUID

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from veche.kernel import audit
from veche.kernel.db import new_id, utcnow
from veche.kernel.errors import FieldError
from veche.kernel.identity import errors
from veche.kernel.identity.models import AuthSession, ExternalIdentity, RefreshToken, User
from veche.kernel.identity.passwords import password_problems
from veche.kernel.identity.tokens import (
    AccessClaims,
    InvalidToken,
    hash_refresh_token,
    new_refresh_token,
)
from veche.kernel.ratelimit import LimitState
from veche.kernel.runtime import Kernel

# Built once: constructing the statement costs more than running it on every request.
_TOKEN_OWNER = (
    select(User, AuthSession.revoked_at)
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(User.id == bindparam("user_id"), AuthSession.id == bindparam("session_id"))
)


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    session_id: UUID


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str | None
    user_agent: str | None
    device_name: str | None = None


@dataclass(frozen=True, slots=True)
class Authenticated:
    user: User
    session_id: UUID


class IdentityService:
    def __init__(self, session: AsyncSession, kernel: Kernel) -> None:
        self.session = session
        self.kernel = kernel
        self.auth = kernel.settings.auth

    # -- accounts ------------------------------------------------------------------

    async def register(
        self, *, email: str, password: str, display_name: str, role: str = "user"
    ) -> User:
        """Create an account; the email must be new and the password pass the policy."""
        self._check_password(password, email=email, display_name=display_name)
        if await self._user_by_email(email) is not None:
            raise errors.EmailTaken(f"An account with {email} already exists")
        user = User(
            id=new_id(),
            email=email,
            display_name=display_name,
            password_hash=await self.kernel.passwords.hash(password),
            role=role,
        )
        self.session.add(user)
        try:
            await self.session.flush()
        except IntegrityError as exc:  # a concurrent registration won the race
            raise errors.EmailTaken(f"An account with {email} already exists") from exc
        audit.record(
            self.session,
            "auth.registered",
            actor_id=user.id,
            target_type="user",
            target_id=user.id,
            data={"role": role},
        )
        return user

    def _check_password(self, password: str, *, email: str, display_name: str) -> None:
        reasons = password_problems(password, self.auth, email=email, user_inputs=(display_name,))
        if reasons:
            detail = "Password " + "; ".join(reasons)
            field = FieldError(loc=["body", "password"], msg=detail, type="password_policy")
            raise errors.WeakPassword(detail, extra={"errors": [field.model_dump()]})

    async def _user_by_email(self, email: str) -> User | None:
        user: User | None = await self.session.scalar(select(User).where(User.email == email))
        return user

    async def get_user(self, user_id: UUID) -> User:
        user = await self.session.get(User, user_id)
        if user is None:
            raise errors.UserNotFound()
        return user

    # -- sign-in -------------------------------------------------------------------

    async def login(self, *, email: str, password: str, client: ClientInfo) -> IssuedTokens:
        limiter = self.kernel.limiter
        ip = client.ip or "unknown"
        pair_limit = limiter.items(self.auth.login_failures_per_account_ip)
        ip_limit = limiter.items(self.auth.login_failures_per_ip)
        account_limit = limiter.items(self.auth.login_failures_per_account)

        user = await self._user_by_email(email)
        refusal = await limiter.test(pair_limit, "login-pair", email, ip) or await limiter.test(
            ip_limit, "login-ip", ip
        )
        if refusal is None and user is not None and not await self._known_ip(user.id, ip):
            # Only strangers are held to the per-account limit: an attacker hammering an
            # account from elsewhere never locks its owner out from their usual address.
            refusal = await limiter.test(account_limit, "login-account", email)
        if refusal is not None:
            self._record_login_failure(user, email, "throttled")
            raise _throttled(refusal)

        if user is None or user.password_hash is None:
            await self.kernel.passwords.waste_time(password)
            check_valid, new_hash = False, None
        else:
            check = await self.kernel.passwords.verify(password, user.password_hash)
            check_valid, new_hash = check.valid, check.new_hash

        if not check_valid or user is None:
            await limiter.hit(pair_limit, "login-pair", email, ip)
            await limiter.hit(ip_limit, "login-ip", ip)
            await limiter.hit(account_limit, "login-account", email)
            self._record_login_failure(user, email, "bad_credentials")
            raise errors.InvalidCredentials(commit=True)
        if not user.is_active:
            self._record_login_failure(user, email, "disabled")
            raise errors.AccountDisabled("This account is disabled", commit=True)

        await limiter.clear(pair_limit, "login-pair", email, ip)
        if new_hash is not None:
            user.password_hash = new_hash
        user.last_login_at = utcnow()
        issued = await self._start_session(user, client)
        audit.record(
            self.session,
            "auth.login",
            actor_id=user.id,
            target_type="session",
            target_id=issued.session_id,
        )
        return issued

    def _record_login_failure(self, user: User | None, email: str, reason: str) -> None:
        audit.record(
            self.session,
            "auth.login_failed",
            actor_id=None,
            target_type="user" if user else None,
            target_id=user.id if user else None,
            data={"reason": reason, "email_known": user is not None},
        )

    async def _known_ip(self, user_id: UUID, ip: str) -> bool:
        found = await self.session.scalar(
            select(AuthSession.id)
            .where(AuthSession.user_id == user_id, AuthSession.ip == ip)
            .limit(1)
        )
        return found is not None

    async def _start_session(self, user: User, client: ClientInfo) -> IssuedTokens:
        now = utcnow()
        auth_session = AuthSession(
            id=new_id(),
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=now + dt.timedelta(seconds=self.auth.session_max_age_seconds),
            ip=client.ip,
            user_agent=(client.user_agent or "")[:512] or None,
            device_name=client.device_name,
        )
        self.session.add(auth_session)
        return await self._issue(user.id, auth_session, now)

    async def _issue(
        self, user_id: UUID, auth_session: AuthSession, now: dt.datetime
    ) -> IssuedTokens:
        refresh_token = new_refresh_token()
        expires_at = min(
            now + dt.timedelta(seconds=self.auth.refresh_token_ttl_seconds),
            auth_session.expires_at,
        )
        self.session.add(
            RefreshToken(
                id=new_id(),
                session_id=auth_session.id,
                token_hash=hash_refresh_token(refresh_token),
                created_at=now,
                expires_at=expires_at,
            )
        )
        await self.session.flush()
        access_token, ttl = self.kernel.tokens.issue(user_id, auth_session.id)
        return IssuedTokens(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=ttl,
            refresh_expires_in=max(0, int((expires_at - now).total_seconds())),
            session_id=auth_session.id,
        )

    # -- refresh rotation ----------------------------------------------------------

    async def refresh(self, *, refresh_token: str, client: ClientInfo) -> IssuedTokens:
        """Trade a refresh token for a new pair; a token presented twice revokes its family."""
        row = (
            await self.session.execute(
                select(RefreshToken, AuthSession, User)
                .join(AuthSession, AuthSession.id == RefreshToken.session_id)
                .join(User, User.id == AuthSession.user_id)
                .where(RefreshToken.token_hash == hash_refresh_token(refresh_token))
            )
        ).one_or_none()
        if row is None:
            raise errors.InvalidRefreshToken()
        token, auth_session, user = row
        now = utcnow()
        if token.used_at is not None:
            await self._reject_reuse(auth_session, user)
        if (
            auth_session.revoked_at is not None
            or auth_session.expires_at <= now
            or token.expires_at <= now
            or not user.is_active
        ):
            raise errors.InvalidRefreshToken()
        claimed = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(claimed) != 1:  # a concurrent request used it first
            await self._reject_reuse(auth_session, user)
        auth_session.last_used_at = now
        auth_session.ip = client.ip or auth_session.ip
        if client.user_agent:
            auth_session.user_agent = client.user_agent[:512]
        return await self._issue(user.id, auth_session, now)

    async def _reject_reuse(self, auth_session: AuthSession, user: User) -> NoReturn:
        """Revoke the token's whole family and refuse: the token leaked or was replayed."""
        await self.session.execute(
            update(AuthSession)
            .where(AuthSession.id == auth_session.id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason="refresh_token_reused")
            .execution_options(synchronize_session=False)
        )
        audit.record(
            self.session,
            "auth.refresh_token_reused",
            actor_id=None,
            target_type="session",
            target_id=auth_session.id,
            data={"user_id": str(user.id)},
        )
        raise errors.RefreshTokenReused(
            "This refresh token was already used; its session has been revoked. Sign in again.",
            commit=True,
        )

    # -- sessions ------------------------------------------------------------------

    async def active_sessions(self, user_id: UUID) -> list[AuthSession]:
        result = await self.session.scalars(
            select(AuthSession)
            .where(
                AuthSession.user_id == user_id,
                AuthSession.revoked_at.is_(None),
                AuthSession.expires_at > utcnow(),
            )
            .order_by(AuthSession.last_used_at.desc(), AuthSession.id.desc())
        )
        return list(result.all())

    async def revoke_session(self, user_id: UUID, session_id: UUID, reason: str) -> None:
        """Sign one of the user's sessions out; another user's session is 'not found'."""
        result = await self.session.execute(
            update(AuthSession)
            .where(
                AuthSession.id == session_id,
                AuthSession.user_id == user_id,
                AuthSession.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow(), revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) != 1:
            raise errors.SessionNotFound()
        audit.record(
            self.session,
            "auth.session_revoked",
            actor_id=user_id,
            target_type="session",
            target_id=session_id,
            data={"reason": reason},
        )

    async def revoke_all_sessions(
        self, user: User, reason: str, *, keep: UUID | None = None, cut_access: bool = True
    ) -> int:
        """Revoke every session of the user but `keep`; cut off their access tokens."""
        statement = (
            update(AuthSession)
            .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )
        if keep is not None:
            statement = statement.where(AuthSession.id != keep)
        result = await self.session.execute(statement)
        if cut_access:
            user.tokens_valid_after = utcnow()
        return _rowcount(result)

    async def _attach(self, user: User) -> User:
        """This session's instance of a user loaded elsewhere (`CurrentUser` is detached)."""
        return await self.session.merge(user, load=False)

    async def logout_everywhere(self, user: User) -> int:
        user = await self._attach(user)
        count = await self.revoke_all_sessions(user, "logout_everywhere")
        audit.record(
            self.session,
            "auth.logout_everywhere",
            actor_id=user.id,
            target_type="user",
            target_id=user.id,
            data={"sessions": count},
        )
        return count

    # -- profile -------------------------------------------------------------------

    async def update_me(
        self, user: User, changes: dict[str, Any], *, current_session: UUID
    ) -> User:
        user = await self._attach(user)
        if "display_name" in changes and changes["display_name"] is not None:
            user.display_name = changes["display_name"]
        if "locale" in changes and changes["locale"] is not None:
            user.locale = changes["locale"]
        new_password = changes.get("new_password")
        if new_password is not None:
            await self._change_password(
                user, changes["current_password"], new_password, current_session
            )
        await self.session.flush()
        return user

    async def _change_password(
        self, user: User, current: str, new: str, current_session: UUID
    ) -> None:
        check = (
            await self.kernel.passwords.verify(current, user.password_hash)
            if user.password_hash
            else None
        )
        if check is None or not check.valid:
            raise errors.WrongPassword("The current password is wrong")
        self._check_password(new, email=user.email, display_name=user.display_name)
        user.password_hash = await self.kernel.passwords.hash(new)
        # Other devices are signed out and their access tokens stop working at once (the
        # session check in `authenticate`); this device keeps its session.
        revoked = await self.revoke_all_sessions(
            user, "password_changed", keep=current_session, cut_access=False
        )
        audit.record(
            self.session,
            "auth.password_changed",
            actor_id=user.id,
            target_type="user",
            target_id=user.id,
            data={"sessions_revoked": revoked},
        )

    # -- administration ------------------------------------------------------------

    async def admin_update(self, actor: User, user_id: UUID, changes: dict[str, Any]) -> User:
        user = await self.get_user(user_id)
        role = changes.get("role")
        is_active = changes.get("is_active")
        demotes = role is not None and role != "admin" and user.role == "admin"
        disables = is_active is False and user.role == "admin" and user.is_active
        if (demotes or disables) and await self._active_admins() <= 1:
            raise errors.LastAdmin("Promote another admin first")
        if role is not None and role != user.role:
            audit.record(
                self.session,
                "user.role_changed",
                actor_id=actor.id,
                target_type="user",
                target_id=user.id,
                data={"from": user.role, "to": role},
            )
            user.role = role
        if is_active is not None and is_active != user.is_active:
            user.is_active = is_active
            if not is_active:
                await self.revoke_all_sessions(user, "account_disabled")
            audit.record(
                self.session,
                "user.disabled" if not is_active else "user.enabled",
                actor_id=actor.id,
                target_type="user",
                target_id=user.id,
            )
        await self.session.flush()
        return user

    async def _active_admins(self) -> int:
        count = await self.session.scalar(
            select(func.count()).select_from(User).where(User.role == "admin", User.is_active)
        )
        return int(count or 0)

    # -- external identities -------------------------------------------------------

    async def link_identity(
        self, user: User, provider: str, subject: str, data: dict[str, Any] | None = None
    ) -> ExternalIdentity:
        """Link an account at another provider (e.g. Telegram) to this user."""
        existing = await self.user_by_identity(provider, subject)
        if existing is not None and existing.id != user.id:
            raise errors.IdentityAlreadyLinked()
        if existing is not None:
            identity = await self.session.scalar(
                select(ExternalIdentity).where(
                    ExternalIdentity.provider == provider, ExternalIdentity.subject == subject
                )
            )
            assert identity is not None
            return identity
        identity = ExternalIdentity(
            id=new_id(), user_id=user.id, provider=provider, subject=subject, data=data or {}
        )
        self.session.add(identity)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise errors.IdentityAlreadyLinked() from exc
        audit.record(
            self.session,
            "auth.identity_linked",
            actor_id=user.id,
            target_type="user",
            target_id=user.id,
            data={"provider": provider},
        )
        return identity

    async def user_by_identity(self, provider: str, subject: str) -> User | None:
        user: User | None = await self.session.scalar(
            select(User)
            .join(ExternalIdentity, ExternalIdentity.user_id == User.id)
            .where(ExternalIdentity.provider == provider, ExternalIdentity.subject == subject)
        )
        return user


async def authenticate(kernel: Kernel, token: str) -> Authenticated:
    """The user behind an access token, if the token and its session still stand.

    The lookup runs outside the request's unit of work (`Database.read_one`), so a request
    that only reads pays for one query; the user it returns is detached from any session.
    """
    try:
        claims: AccessClaims = kernel.tokens.verify(token)
    except InvalidToken as exc:
        if exc.expired:
            raise errors.ExpiredAccessToken("The access token has expired") from exc
        raise errors.InvalidAccessToken(f"The access token is invalid: {exc.reason}") from exc
    row = await kernel.db.read_one(
        _TOKEN_OWNER, {"user_id": claims.user_id, "session_id": claims.session_id}
    )
    if row is None:
        raise errors.InvalidAccessToken("The access token's session does not exist")
    user: User = row[0]
    if row[1] is not None:
        raise errors.InvalidAccessToken("The access token's session was signed out")
    if not user.is_active:
        raise errors.AccountDisabled("This account is disabled")
    cutoff = user.tokens_valid_after
    if cutoff is not None and claims.issued_at < cutoff.timestamp():
        raise errors.InvalidAccessToken("The access token was revoked")
    return Authenticated(user=user, session_id=claims.session_id)


def _throttled(state: LimitState) -> errors.LoginThrottled:
    wait = max(state.reset_after, 1)
    return errors.LoginThrottled(
        f"Too many failed sign-ins; try again in {wait} s",
        headers=state.headers(),
        commit=True,
    )


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
