"""What every part of a run shares: its task and saved state, its stream events, saving
its progress, and the failures that end it."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from veche.apps.agents.models import Task
from veche.apps.agents.repository import RunnerQueries
from veche.apps.agents.stream import EventType
from veche.kernel import utcnow

if TYPE_CHECKING:
    from veche.apps.agents.runner import Runner

log = structlog.get_logger("veche.agents.runner")

# How much of a tool's result the model sees (the full result is the tool's own cap).
MAX_TOOL_RESULT_CHARS = 32_000
# How much of a dependency's result a plan's step sees.
MAX_INPUT_CHARS = 8_000
# Rough tokens of a text, for trimming history to the token budget.
CHARS_PER_TOKEN = 4


class Stopped(Exception):
    """The task is no longer running (cancelled, deleted): stop without touching it."""


class Failed(Exception):
    """The run ends failed, with a stable code and a detail for the stream."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def dump(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def clip(text: str, limit: int = MAX_TOOL_RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


class RunBase:
    """A run's task, its saved state and the runtime it works in."""

    def __init__(self, runner: Runner, task: Task) -> None:
        self.runner = runner
        self.runtime = runner.runtime
        self.kernel = runner.kernel
        self.settings = runner.settings
        self.task = task
        self.user_id = task.user_id
        self.state: dict[str, Any] = dict(task.state or {})

    # -- events and saving -------------------------------------------------------------------

    def _about(self) -> dict[str, Any]:
        """What every event of this run carries: the task, and for a plan's step its plan."""
        about: dict[str, Any] = {"task_id": str(self.task.id)}
        if self.task.plan_id is not None:
            about["plan_id"] = str(self.task.plan_id)
            about["step"] = self.task.step_key
        return about

    async def _publish(self, event_type: EventType, payload: dict[str, Any]) -> None:
        await self.runtime.events.publish(
            self.user_id, self.task.session_id, event_type, {**self._about(), **payload}
        )

    async def _save(self, **values: Any) -> None:
        async with self.kernel.db.unit_of_work() as session:
            if not await RunnerQueries(session).save(
                self.task.id, utcnow(), state=self.state, **values
            ):
                raise Stopped

    def _duration_ms(self, now: dt.datetime) -> int | None:
        started = self.task.started_at
        return None if started is None else int((now - started).total_seconds() * 1000)
