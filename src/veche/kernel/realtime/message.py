"""The one message format of every transport, channel positions and the resume token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from veche.kernel.db import new_id
from veche.kernel.realtime.errors import InvalidChannel, InvalidResumeToken

# `<prefix>:<name>`: the prefix picks the policy; the name may hold further colons.
CHANNEL_PATTERN = re.compile(r"^([a-z][a-z0-9_]{0,31}:)[A-Za-z0-9._:@-]{1,200}$")
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}:$")
EVENT_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_TOKEN_VERSION = "v1"  # noqa: S105  (a format tag, not a secret)
_SIGNATURE_BYTES = 16


def channel_prefix(channel: str) -> str:
    """The policy prefix of a channel (`user:` of `user:42`); refuses a malformed name."""
    match = CHANNEL_PATTERN.match(channel) if isinstance(channel, str) else None
    if match is None:
        raise InvalidChannel(
            f"{str(channel)[:80]!r} is not a channel name like 'prefix:name' "
            "(letters, digits and ._:@- only)"
        )
    return match.group(1)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client stands in a channel: its epoch and the last offset it has seen."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a channel. Offsets grow by one per channel within an epoch; a new
    epoch (history lost, e.g. a restart of the embedded hub) starts them over."""

    channel: str
    epoch: str
    offset: int
    event: str
    data: Any
    id: str = field(default_factory=lambda: new_id().hex)
    published_at: float = field(default_factory=time.time)

    def frame(self) -> dict[str, Any]:
        return {
            "type": "message",
            "channel": self.channel,
            "event": self.event,
            "data": self.data,
            "offset": self.offset,
            "epoch": self.epoch,
            "id": self.id,
            "time": datetime.fromtimestamp(self.published_at, UTC).isoformat(),
        }

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "channel": self.channel,
                "epoch": self.epoch,
                "offset": self.offset,
                "event": self.event,
                "data": self.data,
                "id": self.id,
                "published_at": self.published_at,
            }
        )

    @classmethod
    def loads(cls, raw: bytes | str) -> Message:
        value = orjson.loads(raw)
        return cls(
            channel=value["channel"],
            epoch=value["epoch"],
            offset=int(value["offset"]),
            event=value["event"],
            data=value["data"],
            id=value["id"],
            published_at=float(value["published_at"]),
        )


@dataclass(frozen=True, slots=True)
class Member:
    """One connection present on a channel."""

    connection_id: str
    user_id: str

    def frame(self) -> dict[str, str]:
        return {"connection_id": self.connection_id, "user_id": self.user_id}


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A connection joined or left a channel. Ephemeral: no offset, not kept in history."""

    channel: str
    action: str  # "join" | "leave"
    member: Member

    def frame(self) -> dict[str, Any]:
        return {
            "type": "presence",
            "channel": self.channel,
            "action": self.action,
            **self.member.frame(),
        }


# Encoded frames kept per process; cleared whole when full.
_ENCODED_CACHE_SIZE = 2048


class EncodedFrames:
    """The bytes of a (frame, resume token) pair in one wire format, encoded once for every
    stream that sends the same pair: all subscribers of a one-channel stream get the same
    frame object and token for a message, so a fan-out to N streams encodes it once."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int, str], tuple[dict[str, Any], bytes]] = {}

    def get(
        self,
        kind: str,
        frame: dict[str, Any],
        token: str,
        encode: Callable[[dict[str, Any], str], bytes],
    ) -> bytes:
        key = (kind, id(frame), token)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is frame:  # the same object, not a reused id
            return entry[1]
        data = encode(frame, token)
        if len(self._entries) >= _ENCODED_CACHE_SIZE:
            self._entries.clear()
        self._entries[key] = (frame, data)
        return data


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ResumeTokens:
    """Opaque, signed tokens carrying a stream's position in each of its channels.

    Signed so a client cannot hand the server positions it never had; a token signed with
    a retired key is simply invalid (400) and the client starts afresh.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()
        return _b64(digest[:_SIGNATURE_BYTES])

    def encode(self, positions: Mapping[str, Position]) -> str:
        payload = {channel: [pos.epoch, pos.offset] for channel, pos in positions.items()}
        body = _b64(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
        return f"{_TOKEN_VERSION}.{body}.{self._sign(body)}"

    def decode(self, token: str) -> dict[str, Position]:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _TOKEN_VERSION or len(token) > 16_384:
            raise InvalidResumeToken("The resume token is malformed; reconnect without it")
        body, signature = parts[1], parts[2]
        if not hmac.compare_digest(self._sign(body), signature):
            raise InvalidResumeToken("The resume token's signature does not match")
        try:
            payload = orjson.loads(_unb64(body))
            positions = {
                channel: Position(str(epoch), int(offset))
                for channel, (epoch, offset) in payload.items()
            }
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidResumeToken("The resume token is malformed") from exc
        return positions
