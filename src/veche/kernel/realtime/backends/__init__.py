"""Where channel history, offsets and presence live, and how messages reach every replica.

`MemoryBackend` keeps them in this process (the embedded default); `RedisBackend` shares
them through Redis so every replica sees the same offsets and delivers every message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from veche.kernel.realtime.message import Member, Message, Position, PresenceEvent

Deliver = Callable[[Message | PresenceEvent], None]


@dataclass(frozen=True, slots=True)
class Recovery:
    """A channel's current position, and the messages a client missed since its own."""

    epoch: str
    offset: int
    messages: Sequence[Message]
    recovered: bool | None  # None: the client asked for no recovery


def recovery_from(
    epoch: str, top: int, history: Sequence[Message], since: Position | None
) -> Recovery:
    """What a client at `since` gets, given a channel's history (oldest first)."""
    if since is None:
        return Recovery(epoch, top, (), None)
    if since.epoch != epoch or since.offset > top or since.offset < 0:
        return Recovery(epoch, top, (), False)
    missed = [message for message in history if message.offset > since.offset]
    expected = top - since.offset
    if len(missed) != expected:  # some of them are no longer kept
        return Recovery(epoch, top, (), False)
    return Recovery(epoch, top, missed, True)


class Backend(Protocol):
    async def start(self, deliver: Deliver) -> None: ...

    async def close(self) -> None: ...

    async def append(self, channel: str, event: str, data: Any) -> Message: ...

    async def read(self, channel: str, since: Position | None) -> Recovery: ...

    async def join(self, channel: str, member: Member) -> None: ...

    async def refresh(self, entries: Sequence[tuple[str, Member]]) -> None:
        """Extend the presence of these (channel, member) entries that still exist."""
        ...

    async def leave(self, channel: str, member: Member) -> None: ...

    async def members(self, channel: str) -> list[Member]: ...

    async def sweep(self) -> None: ...

    async def ping(self) -> None: ...
