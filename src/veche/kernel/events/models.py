"""The tables of durable events: the outbox (the log, on the embedded backend), consumer
offsets, processed events (idempotency) and dead letters."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from veche.kernel.db import Base, IdMixin, utcnow


class OutboxEvent(Base):
    """An emitted event. `log_position` is given by the relay in commit order, so a
    consumer reading positions in order never skips a late-committing event."""

    __tablename__ = "event_outbox"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(200))
    actor_id: Mapped[UUID | None]
    occurred_at: Mapped[dt.datetime]
    schema_version: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    log_position: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    published_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class ConsumerOffset(Base):
    __tablename__ = "event_consumer_offsets"

    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    log_position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ProcessedEvent(Base):
    """One row per event a consumer has handled; committed with the handler's work."""

    __tablename__ = "event_processed"

    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[UUID] = mapped_column(primary_key=True)
    processed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DeadLetter(IdMixin, Base):
    """An event a consumer failed to handle after its last attempt."""

    __tablename__ = "event_dead_letters"
    __table_args__ = (
        UniqueConstraint("consumer", "event_id"),
        Index("ix_event_dead_letters_consumer_created_at", "consumer", "created_at"),
    )

    consumer: Mapped[str] = mapped_column(String(200))
    event_id: Mapped[UUID]
    event_type: Mapped[str] = mapped_column(String(200))
    event: Mapped[dict[str, Any]] = mapped_column(JSON)
    error_type: Mapped[str] = mapped_column(String(200))
    error_message: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
