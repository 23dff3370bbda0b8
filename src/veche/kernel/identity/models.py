"""Identity tables: users, sign-in sessions (refresh token families), refresh tokens and
linked external identities."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args
from uuid import UUID

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from veche.kernel.db import Base, IdMixin, TimestampMixin, utcnow

Role = Literal["user", "admin"]
ROLES: tuple[str, ...] = get_args(Role)


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32), default="user")
    locale: Mapped[str] = mapped_column(String(35), default="en")
    is_active: Mapped[bool] = mapped_column(default=True)
    # Access tokens issued before this instant are refused (logout everywhere, disabling).
    tokens_valid_after: Mapped[dt.datetime | None]
    last_login_at: Mapped[dt.datetime | None]


class AuthSession(IdMixin, Base):
    """One sign-in on one device: a family of refresh tokens that rotate within it."""

    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_user_id_revoked_at", "user_id", "revoked_at"),)

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    device_name: Mapped[str | None] = mapped_column(String(100))


class RefreshToken(IdMixin, Base):
    __tablename__ = "auth_refresh_tokens"

    session_id: Mapped[UUID] = mapped_column(
        ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class ExternalIdentity(IdMixin, Base):
    """An account at another provider (Telegram, ...) linked to a Veche user."""

    __tablename__ = "user_identities"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
