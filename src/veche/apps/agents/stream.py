"""The session event stream: what happens in a chat session, published on the kernel's
realtime hub in order.

Each session has one channel, `agents_session:<user hex>:<session hex>`; the user's id in
the name lets the channel policy decide without a database read, and the session endpoint
checks ownership (404) before it opens the stream. Every event is `{event_type, payload,
timestamp, session_id}`.

Events that follow a database change go out only once that change commits
(`after_commit`); all events of a process pass through one queue, so a session's events
reach the hub in the order they were produced.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.models import ChatMessage
from veche.kernel.db import on_outcome
from veche.kernel.identity.models import User
from veche.kernel.realtime import ChannelPolicy, Hub

log = structlog.get_logger("veche.agents.stream")

CHANNEL_PREFIX = "agents_session:"
# How long closing waits for the events still queued to reach the hub.
CLOSE_TIMEOUT_SECONDS = 5.0


class EventType(StrEnum):
    MESSAGE_CREATED = "MESSAGE_CREATED"
    DIRECT_AGENT_CALL = "DIRECT_AGENT_CALL"
    CONTEXT_RETRIEVED = "CONTEXT_RETRIEVED"
    TASK_STARTED = "TASK_STARTED"
    TASK_PROGRESS = "TASK_PROGRESS"
    TASK_COMPLETED = "TASK_COMPLETED"
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
    APPROVAL_EXPIRING = "APPROVAL_EXPIRING"
    APPROVAL_RESOLVED = "APPROVAL_RESOLVED"
    TOOL_CALL_REQUESTED = "TOOL_CALL_REQUESTED"
    PLAN_CREATED = "PLAN_CREATED"
    PLAN_APPROVAL_REQUIRED = "PLAN_APPROVAL_REQUIRED"
    PLAN_COMPLETED = "PLAN_COMPLETED"
    ERROR = "ERROR"


def session_channel(user_id: UUID, session_id: UUID) -> str:
    return f"{CHANNEL_PREFIX}{user_id.hex}:{session_id.hex}"


def _own_session_channel(user: User, channel: str) -> bool:
    return channel.startswith(f"{CHANNEL_PREFIX}{user.id.hex}:")


# Only the owner reads a session's stream; only the server writes it.
SESSION_POLICY = ChannelPolicy(subscribe=_own_session_channel, presence=False)


@dataclass(frozen=True, slots=True)
class _Pending:
    channel: str
    event_type: str
    data: dict[str, Any]
    done: asyncio.Future[None] | None


def message_payload(message: ChatMessage) -> dict[str, Any]:
    return {
        "message_id": str(message.id),
        "role": message.role,
        "content": message.content,
        "agent_id": None if message.agent_id is None else str(message.agent_id),
        "task_id": None if message.task_id is None else str(message.task_id),
    }


def event_body(session_id: UUID, event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "payload": payload,
        "timestamp": datetime.now(UTC).isoformat(),
        "session_id": str(session_id),
    }


class SessionEvents:
    """Publishes session events on the hub, in order, from one background task."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def publish(
        self, user_id: UUID, session_id: UUID, event_type: str, payload: dict[str, Any]
    ) -> None:
        """Publish now, after whatever is already queued, and wait until the hub has taken
        it (or failed to: that is logged, not raised)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(user_id, session_id, event_type, payload, done)
        await done

    def after_commit(
        self,
        db: AsyncSession,
        user_id: UUID,
        session_id: UUID,
        event_type: str,
        payload: dict[str, Any],
    ) -> None:
        """Publish once `db`'s transaction commits; nothing if it rolls back."""
        on_outcome(db, committed=lambda: self._put(user_id, session_id, event_type, payload, None))

    def _put(
        self,
        user_id: UUID,
        session_id: UUID,
        event_type: str,
        payload: dict[str, Any],
        done: asyncio.Future[None] | None,
    ) -> None:
        data = event_body(session_id, event_type, payload)
        self._queue.put_nowait(
            _Pending(session_channel(user_id, session_id), event_type, data, done)
        )
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._drain(), name="agents-session-events"
            )

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self.hub.publish(item.channel, item.data, event=item.event_type)
            except Exception as exc:  # the stream is best effort; the rows are the record
                log.warning("session_event_failed", event_type=item.event_type, error=str(exc))
            finally:
                # A publisher waits for its turn, not for success: a hub outage must not
                # fail the run that produced the event.
                if item.done is not None and not item.done.done():
                    item.done.set_result(None)
                self._queue.task_done()

    async def flush(self) -> None:
        """Wait until everything queued so far is published."""
        if self._task is not None and not self._task.done():
            await self._queue.join()

    async def aclose(self) -> None:
        """Publish what is queued, for at most `CLOSE_TIMEOUT_SECONDS` (a hub whose
        backend has already gone may never take it), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
