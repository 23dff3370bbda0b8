"""Events the agents app publishes (version 1 of each payload)."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class TaskQueued(BaseModel):
    """`agents.task.queued`: a task entered the agent bus's queue (a workers' wake-up;
    the task's row is the source of truth)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: UUID
    user_id: UUID
    session_id: UUID
    agent_id: UUID | None
    kind: Literal["chat", "plan", "step"]
