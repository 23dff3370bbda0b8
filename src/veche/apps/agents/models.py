"""The agents app's tables: projects (each with a workspace directory), agents with their
immutable configuration versions, chat sessions with their messages and tasks, approvals
(requests, standing rules, each user's policy), client-side tool calls and the memory
ledger. Every table carries `user_id`, the column the app's one scoping helper filters on."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
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
    # On the agent bus: `active` takes work; `draining` takes none and finishes what it
    # has; `deregistered` has nothing left (see bus.py).
    lifecycle: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    status: Mapped[str] = mapped_column(String(16), default="ready")
    # Why the agent is in `error` (a stable code) and since when; cleared on recovery.
    status_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
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


class ChatSession(IdMixin, TimestampMixin, Base):
    """A conversation inside a project. `queue_policy` says what a message that arrives
    while another is being processed does: wait its turn, be refused, or interrupt."""

    __tablename__ = "agents_sessions"
    __table_args__ = (
        Index(
            "ix_agents_sessions_user_id_project_id_created_at",
            "user_id",
            "project_id",
            "created_at",
        ),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[UUID] = mapped_column(ForeignKey("agents_projects.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200), default="")
    queue_policy: Mapped[str] = mapped_column(String(16), default="enqueue")


class ChatMessage(IdMixin, Base):
    """One message of a session: the user's (`role=user`, with the task it started) or an
    agent's answer (`role=assistant`)."""

    __tablename__ = "agents_messages"
    __table_args__ = (
        Index("ix_agents_messages_session_id_created_at", "session_id", "created_at"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[UUID] = mapped_column(ForeignKey("agents_projects.id", ondelete="CASCADE"))
    session_id: Mapped[UUID] = mapped_column(ForeignKey("agents_sessions.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    agent_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("agents_agents.id", ondelete="SET NULL"), default=None
    )
    task_id: Mapped[UUID | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Task(IdMixin, TimestampMixin, Base):
    """One run of an agent for one user message. `state` holds the conversation the run
    has built so far (the LLM messages, tool calls and results, rejections), written after
    every step, so a run paused for an approval or a client's tool result, or cut off by a
    restart, goes on from where it stood."""

    __tablename__ = "agents_tasks"
    __table_args__ = (
        Index("ix_agents_tasks_session_id_created_at", "session_id", "created_at"),
        # An agent's latest finished tasks (their mean run time), and its tasks by status.
        Index("ix_agents_tasks_agent_id_status_finished_at", "agent_id", "status", "finished_at"),
        Index("ix_agents_tasks_status", "status"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[UUID] = mapped_column(ForeignKey("agents_projects.id", ondelete="CASCADE"))
    session_id: Mapped[UUID] = mapped_column(ForeignKey("agents_sessions.id", ondelete="CASCADE"))
    agent_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("agents_agents.id", ondelete="SET NULL"), default=None
    )
    message_id: Mapped[UUID] = mapped_column()
    # queued, running, waiting_approval, waiting_tool, completed, failed, cancelled
    status: Mapped[str] = mapped_column(String(24), default="queued")
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_detail: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    duration_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    # `chat`: a direct run; `plan`: the planning and coordination of an orchestrated
    # message (its id is the plan's id); `step`: one task of a plan, run by its agent.
    kind: Mapped[str] = mapped_column(String(8), default="chat", server_default="chat")
    plan_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("agents_plans.id", ondelete="CASCADE"), default=None, index=True
    )
    step_key: Mapped[str | None] = mapped_column(String(32), default=None)
    depends_on: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    # Claims so far, and the earliest time of the next one (a retry's backoff).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    not_before: Mapped[dt.datetime | None] = mapped_column(default=None)
    # A step's answer, handed to the steps that depend on it.
    result: Mapped[str | None] = mapped_column(Text, default=None)


class Approval(IdMixin, Base):
    """A tool call waiting for (or given) the user's decision."""

    __tablename__ = "agents_approvals"
    __table_args__ = (
        Index("ix_agents_approvals_user_id_status_created_at", "user_id", "status", "created_at"),
        Index("ix_agents_approvals_status_expires_at", "status", "expires_at"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[UUID] = mapped_column(ForeignKey("agents_projects.id", ondelete="CASCADE"))
    session_id: Mapped[UUID] = mapped_column(ForeignKey("agents_sessions.id", ondelete="CASCADE"))
    task_id: Mapped[UUID] = mapped_column(ForeignKey("agents_tasks.id", ondelete="CASCADE"))
    agent_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("agents_agents.id", ondelete="SET NULL"), default=None
    )
    call_id: Mapped[str] = mapped_column(String(100))
    tool: Mapped[str] = mapped_column(String(32))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON)
    risk: Mapped[str] = mapped_column(String(8))
    risk_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    # pending, approved, rejected, expired, cancelled
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # user, batch, rule, policy, timeout, system
    decided_by: Mapped[str | None] = mapped_column(String(16), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    warned_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ApprovalRule(IdMixin, Base):
    """A standing approval: calls of `tool` whose path matches `path_pattern` run without
    asking, in one session (`session_id` set) or in the whole project."""

    __tablename__ = "agents_approval_rules"
    __table_args__ = (
        Index("ix_agents_approval_rules_user_id_project_id", "user_id", "project_id"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[UUID] = mapped_column(ForeignKey("agents_projects.id", ondelete="CASCADE"))
    session_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("agents_sessions.id", ondelete="CASCADE"), default=None
    )
    tool: Mapped[str] = mapped_column(String(32))
    path_pattern: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApprovalPolicy(Base):
    """A user's approval policy: `always` confirm, confirm what is at or above `threshold`
    (`risky`), or `never` confirm; `auto_approve_low` lets LOW calls run at once."""

    __tablename__ = "agents_approval_policies"

    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    mode: Mapped[str] = mapped_column(String(16), default="risky")
    threshold: Mapped[str] = mapped_column(String(8), default="MEDIUM")
    auto_approve_low: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ClientToolCall(IdMixin, Base):
    """A tool call an agent in client execution mode asked the user's machine to run."""

    __tablename__ = "agents_tool_calls"
    __table_args__ = (Index("ix_agents_tool_calls_status_expires_at", "status", "expires_at"),)

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[UUID] = mapped_column(ForeignKey("agents_projects.id", ondelete="CASCADE"))
    session_id: Mapped[UUID] = mapped_column(ForeignKey("agents_sessions.id", ondelete="CASCADE"))
    task_id: Mapped[UUID] = mapped_column(ForeignKey("agents_tasks.id", ondelete="CASCADE"))
    call_id: Mapped[str] = mapped_column(String(100))
    tool: Mapped[str] = mapped_column(String(32))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON)
    # requested, completed, expired, cancelled
    status: Mapped[str] = mapped_column(String(16), default="requested")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    completed_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class MemoryEntry(IdMixin, Base):
    """The ledger of an agent's memory in one project: one row per remembered interaction,
    its embedding in the kernel vector store under the same id."""

    __tablename__ = "agents_memory"
    __table_args__ = (
        Index(
            "ix_agents_memory_agent_id_project_id_created_at",
            "agent_id",
            "project_id",
            "created_at",
        ),
        # A search filtered by type asks the ledger for the few entries of that type.
        Index(
            "ix_agents_memory_agent_id_project_id_type_created_at",
            "agent_id",
            "project_id",
            "type",
            "created_at",
        ),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[UUID] = mapped_column(ForeignKey("agents_agents.id", ondelete="CASCADE"))
    project_id: Mapped[UUID] = mapped_column(ForeignKey("agents_projects.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    success: Mapped[bool] = mapped_column(Boolean)
    request: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OrchestratorConfig(Base):
    """A user's orchestrator: the AI purpose that plans, how many of a plan's tasks run at
    once, when a plan waits for approval, and the most a plan may cost."""

    __tablename__ = "agents_orchestrator_configs"

    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(64), default="default")
    max_parallel_tasks: Mapped[int] = mapped_column(Integer, default=3)
    approval_cost_threshold: Mapped[float] = mapped_column(Float, default=0.1)
    approval_tasks_threshold: Mapped[int] = mapped_column(Integer, default=5)
    budget: Mapped[float] = mapped_column(Float, default=1.0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Plan(TimestampMixin, Base):
    """An orchestrated message's plan: its task graph (`graph`: the steps with their agents
    and dependencies, `waves`: the order they run in), its estimate, and how it went. Its id
    is the id of the `plan` task that made it; each step is a `step` task with `plan_id`."""

    __tablename__ = "agents_plans"
    __table_args__ = (
        Index("ix_agents_plans_user_id_created_at", "user_id", "created_at"),
        Index("ix_agents_plans_user_id_cache_key", "user_id", "cache_key"),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True)
    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[UUID] = mapped_column(ForeignKey("agents_projects.id", ondelete="CASCADE"))
    session_id: Mapped[UUID] = mapped_column(ForeignKey("agents_sessions.id", ondelete="CASCADE"))
    message_id: Mapped[UUID] = mapped_column()
    request: Mapped[str] = mapped_column(Text)
    cache_key: Mapped[str] = mapped_column(String(64))
    # awaiting_approval, running, completed, partial, failed, cancelled, rejected, invalid
    status: Mapped[str] = mapped_column(String(24))
    graph: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    waves: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    estimate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    max_parallel: Mapped[int] = mapped_column(Integer)
    cached_from: Mapped[UUID | None] = mapped_column(default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_detail: Mapped[str | None] = mapped_column(Text, default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
