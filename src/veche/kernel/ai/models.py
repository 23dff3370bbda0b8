"""The table of AI calls: who asked, for what, which model, what it took and cost."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from sqlalchemy import BigInteger, Date, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from veche.kernel.db import Base, IdMixin, utcnow


class AIUsage(IdMixin, Base):
    """One model call. Written in its own transaction, so a failing request still counts."""

    __tablename__ = "ai_usage"
    __table_args__ = (
        Index("ix_ai_usage_user_id_created_at", "user_id", "created_at"),
        Index("ix_ai_usage_app_created_at", "app", "created_at"),
    )

    user_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    app: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # chat | stream | structured | embedding
    provider: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str | None] = mapped_column(String(200))  # template name@version
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32))  # ok, or the error's stable code
    cost: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class AIUsageDay(Base):
    """The tokens of a user's calls on one UTC day that one ledger (one per process) has
    stored, and the last of that ledger's writes they include (`batch`). Written in the
    same transaction as the calls' rows, so a budget check reads these few rows instead of
    summing the day's calls (`veche.kernel.ai.usage`)."""

    __tablename__ = "ai_usage_days"

    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    ledger_id: Mapped[UUID] = mapped_column(primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger)
    batch: Mapped[int] = mapped_column(BigInteger)
