"""One client connection of the realtime hub: its user, subscriptions, positions and
bounded queue of frames, and why a server ends a connection."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from veche.kernel.db import new_id
from veche.kernel.identity.models import User
from veche.kernel.realtime import metrics
from veche.kernel.realtime.message import Member, Message, Position

if TYPE_CHECKING:
    from veche.kernel.runtime import Kernel

# WebSocket close codes for the reasons a server ends a connection.
CLOSE_CODES = {
    "shutdown": 1012,
    "slow_consumer": 1013,
    "goodbye": 1000,
    "token_expired": 4001,
    "session_revoked": 4001,
}
# Reasons that end a connection because its access token ran out or its session was
# signed out: the client needs a fresh token before it reconnects.
AUTH_REASONS = frozenset({"token_expired", "session_revoked"})


def _isoformat(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame for one client, with the client's positions once it has it."""

    frame: dict[str, Any]
    positions: tuple[tuple[str, Position], ...]


class _Closed:
    pass


class _Heartbeat:
    pass


CLOSED = _Closed()
HEARTBEAT = _Heartbeat()  # nothing was sent for a while: the transport says it is alive
Item = Outgoing | _Heartbeat | _Closed


class Connection:
    """One client connection: its user, subscriptions, positions and bounded queue.

    The queue is a deque with one waiter: a transport awaits `next()` with no timer of its
    own (the hub's pulse queues `HEARTBEAT` into idle connections), so delivering a frame
    costs one append and, when the transport was waiting, one wake-up.
    """

    def __init__(
        self, user: User, transport: str, queue_size: int, kernel: Kernel | None = None
    ) -> None:
        self.id = new_id().hex
        self.user = user
        # For policies whose checks and handlers need the process's services.
        self.kernel = kernel
        self.transport = transport
        self.member = Member(self.id, str(user.id))
        self.channels: set[str] = set()
        self.present: set[str] = set()  # channels where it is a presence entry
        self.positions: dict[str, Position] = {}
        self.close_reason: str | None = None
        self.final_frame: dict[str, Any] | None = None
        self.expires_at: float | None = None  # its access token's `exp`, Unix seconds
        self.last_queued = time.monotonic()  # when a frame was last queued
        self._auth_timer: asyncio.TimerHandle | None = None
        self._auth_generation = 0
        self._limit = queue_size
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._pending: dict[str, list[Message]] = {}

    @property
    def closing(self) -> bool:
        return self.close_reason is not None

    def _snapshot(self) -> tuple[tuple[str, Position], ...]:
        return tuple(self.positions.items())

    def _push(self, item: Item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def send(self, frame: dict[str, Any]) -> bool:
        """Queue a frame; a full queue closes the connection (it resumes from its offset)."""
        if self.closing:
            return False
        if len(self._items) >= self._limit:
            metrics.DROPPED.labels(self.transport, "slow_consumer").inc(len(self._items))
            self.close("slow_consumer")
            return False
        self.last_queued = time.monotonic()
        self._push(Outgoing(frame, self._snapshot()))
        return True

    def heartbeat(self) -> None:
        """Queue a heartbeat unless something is already waiting to be sent."""
        if not self.closing and not self._items:
            self.last_queued = time.monotonic()
            self._push(HEARTBEAT)

    def offer(self, message: Message, frame: dict[str, Any] | None = None) -> bool:
        """Queue a channel message unless the client already has it. `frame` is the
        message's frame when the caller built it once for all its subscribers (never
        changed by a transport)."""
        pending = self._pending.get(message.channel)
        if pending is not None:
            pending.append(message)
            return True
        position = self.positions.get(message.channel)
        if (
            position is not None
            and position.epoch == message.epoch
            and message.offset <= position.offset
        ):
            return False
        self.positions[message.channel] = Position(message.epoch, message.offset)
        return self.send(frame if frame is not None else message.frame())

    @property
    def expires_at_text(self) -> str | None:
        return None if self.expires_at is None else _isoformat(self.expires_at)

    def close(self, reason: str, final: dict[str, Any] | None = None) -> None:
        """End the connection: what is queued is dropped, the transport says why (with
        `final` if given) and stops."""
        if self.closing:
            return
        self.close_reason = reason
        self.final_frame = final
        self._cancel_auth_timer()
        self._items.clear()
        self._push(CLOSED)

    def _cancel_auth_timer(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    async def next(self) -> Item:
        """The next item: a frame, `HEARTBEAT`, or `CLOSED` (which stays: the connection
        is over)."""
        items = self._items
        while not items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = items[0]
        if item is not CLOSED:
            items.popleft()
        return item

    def ready(self, limit: int) -> list[Outgoing]:
        """Up to `limit` more frames already queued (none past a heartbeat or the end), for
        a transport that writes several in one go."""
        taken: list[Outgoing] = []
        items = self._items
        while items and len(taken) < limit:
            item = items[0]
            if not isinstance(item, Outgoing):
                break
            items.popleft()
            taken.append(item)
        return taken
