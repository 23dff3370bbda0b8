"""The embedded backend: history, offsets and presence in this process only."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from veche.kernel.db import new_id
from veche.kernel.realtime.backends import Deliver, Recovery, recovery_from
from veche.kernel.realtime.message import Member, Message, Position, PresenceEvent
from veche.settings import RealtimeSettings


@dataclass(slots=True)
class _Channel:
    epoch: str = field(default_factory=lambda: new_id().hex[-12:])
    offset: int = 0
    history: deque[Message] = field(default_factory=deque)


class MemoryBackend:
    def __init__(self, settings: RealtimeSettings) -> None:
        self.settings = settings
        self._channels: dict[str, _Channel] = {}
        self._presence: dict[str, dict[str, tuple[Member, float]]] = {}
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._deliver = None

    def _emit(self, item: Message | PresenceEvent) -> None:
        if self._deliver is not None:
            self._deliver(item)

    def _channel(self, channel: str) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        self._prune(state)
        return state

    def _prune(self, state: _Channel) -> None:
        cutoff = time.time() - self.settings.history_ttl_seconds
        while state.history and (
            len(state.history) > self.settings.history_size
            or state.history[0].published_at < cutoff
        ):
            state.history.popleft()

    async def append(self, channel: str, event: str, data: Any) -> Message:
        state = self._channel(channel)
        state.offset += 1
        message = Message(channel, state.epoch, state.offset, event, data)
        state.history.append(message)
        self._prune(state)
        self._emit(message)
        return message

    async def read(self, channel: str, since: Position | None) -> Recovery:
        state = self._channel(channel)
        return recovery_from(state.epoch, state.offset, list(state.history), since)

    async def join(self, channel: str, member: Member) -> None:
        expires = time.monotonic() + self.settings.presence_ttl_seconds
        self._presence.setdefault(channel, {})[member.connection_id] = (member, expires)
        self._emit(PresenceEvent(channel, "join", member))

    async def refresh(self, entries: Sequence[tuple[str, Member]]) -> None:
        expires = time.monotonic() + self.settings.presence_ttl_seconds
        for channel, member in entries:
            present = self._presence.get(channel)
            if present is not None and member.connection_id in present:
                present[member.connection_id] = (member, expires)

    async def leave(self, channel: str, member: Member) -> None:
        entries = self._presence.get(channel, {})
        if entries.pop(member.connection_id, None) is not None:
            self._emit(PresenceEvent(channel, "leave", member))
        if not entries:
            self._presence.pop(channel, None)

    async def members(self, channel: str) -> list[Member]:
        now = time.monotonic()
        entries = self._presence.get(channel, {})
        return [member for member, expires in entries.values() if expires > now]

    async def sweep(self) -> None:
        now = time.monotonic()
        for channel, entries in list(self._presence.items()):
            for member, expires in list(entries.values()):
                if expires <= now:
                    await self.leave(channel, member)
        # An idle channel keeps its epoch and offset, only its history expires.
        for state in self._channels.values():
            self._prune(state)

    async def ping(self) -> None:
        return None
