"""Request and response shapes of chat sessions, messages, tasks and client tool calls."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

QueuePolicy = Literal["enqueue", "reject", "interrupt"]
TaskStatus = Literal[
    "queued",
    "blocked",
    "running",
    "waiting_approval",
    "waiting_tool",
    "waiting_plan",
    "completed",
    "failed",
    "cancelled",
    "skipped",
]
TaskKind = Literal["chat", "plan", "step"]
ToolCallStatus = Literal["requested", "completed", "expired", "cancelled"]
MAX_MESSAGE = 20_000
MAX_TOOL_OUTPUT = 1_000_000

# Printable text (newlines and tabs allowed) without other control characters.
Title = Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionCreate(_Strict):
    title: Title = ""
    queue_policy: QueuePolicy = Field(
        "enqueue",
        description="What a message sent while another is processed does: wait its turn "
        "(`enqueue`), be refused with 409 (`reject`), or cancel the running one (`interrupt`)",
    )


class SessionUpdate(_Strict):
    title: Title | None = None
    queue_policy: QueuePolicy | None = None

    @field_validator("title", "queue_policy", mode="before")
    @classmethod
    def _present(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be left out, not set to null")
        return value


class SessionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    project_id: UUID
    title: str
    queue_policy: QueuePolicy
    created_at: dt.datetime
    updated_at: dt.datetime


class MessageCreate(_Strict):
    content: str = Field(min_length=1, max_length=MAX_MESSAGE)
    target_agent: UUID | None = Field(
        None,
        description="The agent that answers (direct mode); without one the message is routed: "
        "to the one agent that clearly matches it, else to the orchestrator's plan",
    )

    _content = field_validator("content")(_no_nul)


class MessageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    session_id: UUID
    role: Literal["user", "assistant"]
    content: str
    agent_id: UUID | None
    task_id: UUID | None
    created_at: dt.datetime


class TaskRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    session_id: UUID
    agent_id: UUID | None
    message_id: UUID
    status: TaskStatus
    kind: TaskKind = Field(
        description="`chat`: one agent's run; `plan`: an orchestrated message (its id is the "
        "plan's); `step`: one task of a plan"
    )
    plan_id: UUID | None
    step: str | None = Field(validation_alias="step_key", description="The plan's id of this step")
    depends_on: list[str] | None
    attempts: int
    error_code: str | None
    error_detail: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_ms: int | None


class MessageAccepted(BaseModel):
    message: MessageRead
    task: TaskRead | None = Field(
        description="The run this message started (a `chat` task, or a `plan` task when the "
        "message was orchestrated)"
    )


class CancelResult(BaseModel):
    cancelled: list[UUID] = Field(description="The tasks that were stopped")


class ToolCallResult(_Strict):
    """What the user's machine reports for a client-side tool call."""

    output: Any = Field(None, description="The tool's result (any JSON), when it succeeded")
    error: Annotated[str, Field(max_length=2000)] | None = Field(
        None, description="Why the tool failed, when it did"
    )

    @field_validator("error")
    @classmethod
    def _error_text(cls, value: str | None) -> str | None:
        return None if value is None else _no_nul(value)


class ToolCallRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    session_id: UUID
    task_id: UUID
    tool: str
    arguments: dict[str, Any]
    status: ToolCallStatus
    created_at: dt.datetime
    expires_at: dt.datetime
    completed_at: dt.datetime | None
