"""The shared backend: offsets, history and presence in Redis, fan-out by Redis pub/sub.

A Lua script assigns each message its offset, appends it to the channel's history and
publishes it in one atomic step, so offsets are consistent across replicas and every
replica receives a channel's messages in offset order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as redis
import structlog

from veche.kernel.db import new_id
from veche.kernel.realtime.backends import Deliver, Recovery, recovery_from
from veche.kernel.realtime.message import Member, Message, Position, PresenceEvent
from veche.settings import RealtimeSettings

log = structlog.get_logger("veche.realtime")

# Channel state outlives its history so a returning client's epoch is still recognised.
STATE_TTL_SECONDS = 24 * 3600

_APPEND = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('EXPIRE', KEYS[1], ARGV[8])
local body = '{"channel":' .. cjson.encode(ARGV[2]) .. ',"epoch":' .. cjson.encode(epoch)
  .. ',"offset":' .. offset .. ',"event":' .. cjson.encode(ARGV[3]) .. ',"data":' .. ARGV[4]
  .. ',"id":' .. cjson.encode(ARGV[5]) .. ',"published_at":' .. ARGV[6] .. '}'
redis.call('RPUSH', KEYS[2], body)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[7]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[9])
redis.call('PUBLISH', KEYS[3], 'm' .. body)
return {epoch, offset}
"""

# Sets each (key, field) to its new value only where the field still exists.
_REFRESH = """
for i, key in ipairs(KEYS) do
  if redis.call('HEXISTS', key, ARGV[2 * i - 1]) == 1 then
    redis.call('HSET', key, ARGV[2 * i - 1], ARGV[2 * i])
  end
end
return #KEYS
"""
_REFRESH_BATCH = 500

_READ = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local offset = redis.call('HGET', KEYS[1], 'offset')
return {epoch, offset, redis.call('LRANGE', KEYS[2], 0, -1)}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBackend:
    def __init__(self, url: str, settings: RealtimeSettings) -> None:
        self.settings = settings
        self._client: redis.Redis = redis.from_url(url)
        prefix = f"{settings.namespace}:realtime"
        self._prefix = prefix
        self._bus = f"{prefix}:bus"
        self._presence_channels = f"{prefix}:presence-channels"
        self._append = self._client.register_script(_APPEND)
        self._read = self._client.register_script(_READ)
        self._refresh = self._client.register_script(_REFRESH)
        self._deliver: Deliver | None = None
        self._listener: asyncio.Task[None] | None = None

    def _state_key(self, channel: str) -> str:
        return f"{self._prefix}:state:{channel}"

    def _history_key(self, channel: str) -> str:
        return f"{self._prefix}:history:{channel}"

    def _presence_key(self, channel: str) -> str:
        return f"{self._prefix}:presence:{channel}"

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._bus)
        self._listener = asyncio.create_task(self._listen(pubsub), name="realtime-redis")

    async def _listen(self, pubsub: Any) -> None:
        while True:
            try:
                message = await pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: redis-py reconnects on next read
                log.warning("realtime_redis_listen_failed", error=str(exc))
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    await pubsub.subscribe(self._bus)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                self._dispatch(message["data"])
            except Exception as exc:  # a malformed bus message must not stop delivery
                log.warning("realtime_redis_bad_message", error=str(exc))

    def _dispatch(self, raw: bytes) -> None:
        if self._deliver is None:
            return
        kind, body = raw[:1], raw[1:]
        if kind == b"m":
            self._deliver(Message.loads(body))
        elif kind == b"p":
            value = orjson.loads(body)
            member = Member(value["connection_id"], value["user_id"])
            self._deliver(PresenceEvent(value["channel"], value["action"], member))

    async def close(self) -> None:
        self._deliver = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._client.aclose()

    async def append(self, channel: str, event: str, data: Any) -> Message:
        message_id, published_at = new_id().hex, time.time()
        keys = [self._state_key(channel), self._history_key(channel), self._bus]
        args: list[bytes | str | int] = [
            new_id().hex[-12:],
            channel,
            event,
            orjson.dumps(data),
            message_id,
            repr(published_at),
            self.settings.history_size,
            STATE_TTL_SECONDS,
            int(self.settings.history_ttl_seconds * 1000),
        ]
        epoch, offset = await self._append(keys=keys, args=args)
        return Message(channel, _text(epoch), int(offset), event, data, message_id, published_at)

    async def read(self, channel: str, since: Position | None) -> Recovery:
        keys = [self._state_key(channel), self._history_key(channel)]
        epoch, offset, raw = await self._read(
            keys=keys, args=[new_id().hex[-12:], STATE_TTL_SECONDS]
        )
        cutoff = time.time() - self.settings.history_ttl_seconds
        history = [m for m in (Message.loads(item) for item in raw) if m.published_at >= cutoff]
        return recovery_from(_text(epoch), int(offset), history, since)

    async def _announce(self, channel: str, action: str, member: Member) -> None:
        body = orjson.dumps({"channel": channel, "action": action, **member.frame()})
        await self._client.publish(self._bus, b"p" + body)

    def _entry(self, member: Member) -> bytes:
        expires = time.time() + self.settings.presence_ttl_seconds
        return orjson.dumps({"user_id": member.user_id, "expires": expires})

    async def join(self, channel: str, member: Member) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._presence_key(channel), member.connection_id, self._entry(member))
            pipe.sadd(self._presence_channels, channel)
            await pipe.execute()
        await self._announce(channel, "join", member)

    async def refresh(self, entries: Sequence[tuple[str, Member]]) -> None:
        # One script call per batch; an entry removed meanwhile (a leave) stays removed.
        for start in range(0, len(entries), _REFRESH_BATCH):
            batch = entries[start : start + _REFRESH_BATCH]
            keys = [self._presence_key(channel) for channel, _member in batch]
            args: list[bytes | str] = []
            for _channel, member in batch:
                args += [member.connection_id, self._entry(member)]
            await self._refresh(keys=keys, args=args)

    async def leave(self, channel: str, member: Member) -> None:
        # Whoever removes the entry announces the leave, so it is announced once.
        if await self._client.hdel(self._presence_key(channel), member.connection_id):
            await self._announce(channel, "leave", member)

    async def _entries(self, channel: str) -> list[tuple[Member, float]]:
        raw = await self._client.hgetall(self._presence_key(channel))
        entries = []
        for connection_id, body in raw.items():
            value = orjson.loads(body)
            entries.append((Member(_text(connection_id), value["user_id"]), value["expires"]))
        return entries

    async def members(self, channel: str) -> list[Member]:
        now = time.time()
        return [member for member, expires in await self._entries(channel) if expires > now]

    async def sweep(self) -> None:
        now = time.time()
        for raw_channel in await self._client.smembers(self._presence_channels):
            channel = _text(raw_channel)
            entries = await self._entries(channel)
            if not entries:
                await self._client.srem(self._presence_channels, channel)
            for member, expires in entries:
                if expires <= now:
                    await self.leave(channel, member)

    async def ping(self) -> None:
        await self._client.ping()
