"""The agents app's tables: projects (each with a workspace directory) and agents with
their immutable configuration versions. Every table carries `user_id`, the column the
app's one scoping helper filters on."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from veche.kernel import Base, IdMixin, TimestampMixin, utcnow


class Project(IdMixin, TimestampMixin, Base):
    __tablename__ = "agents_projects"
    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        Index("ix_agents_projects_user_id_created_at", "user_id", "created_at"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    # Relative to the workspaces root (`<user id>/<project id>`), so the data directory
    # can move without rewriting rows.
    workspace: Mapped[str] = mapped_column(String(255))


class Agent(IdMixin, TimestampMixin, Base):
    __tablename__ = "agents_agents"
    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        Index("ix_agents_agents_user_id_created_at", "user_id", "created_at"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="ready")
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The current version's configuration (everything but the name), copied from it.
    config: Mapped[dict[str, Any]] = mapped_column(JSON)


class AgentVersion(IdMixin, Base):
    """One configuration an agent had; written once, never changed."""

    __tablename__ = "agents_agent_versions"
    __table_args__ = (UniqueConstraint("agent_id", "number"),)

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[UUID] = mapped_column(ForeignKey("agents_agents.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
