"""The audit trail: who did what to which target, written in the same transaction as the
change it describes, so a rolled-back change leaves no audit row and a committed one
always has its row."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Index, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from veche.kernel.context import current_request
from veche.kernel.db import Base, IdMixin, new_id, utcnow


class AuditEvent(IdMixin, Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_actor_id_occurred_at", "actor_id", "occurred_at"),
        Index("ix_audit_events_action_occurred_at", "action", "occurred_at"),
        Index("ix_audit_events_target", "target_type", "target_id"),
    )

    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[UUID | None]
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(128))
    ip: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def record(
    session: AsyncSession,
    action: str,
    *,
    actor_id: UUID | None,
    target_type: str | None = None,
    target_id: UUID | str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit row to the caller's transaction (it commits or rolls back with it)."""
    context = current_request()
    event = AuditEvent(
        id=new_id(),
        occurred_at=utcnow(),
        actor_id=actor_id,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        request_id=context.request_id if context else None,
        ip=context.client_ip if context else None,
        data=data or {},
    )
    session.add(event)
    return event
