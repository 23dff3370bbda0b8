"""A small byte cache for computed responses: in process memory when embedded, in Redis
when `VECHE_REDIS_URL` is set so every replica (and the worker whose event consumers
invalidate entries) shares it.

It stores bytes under string keys with a time to live and nothing more: callers own
their serialization and their invalidation. Both backends bound what they hold (memory:
an entry count with least-recently-used eviction; Redis: every key expires), so a cache
can never grow without limit. A cache is a help, never a source of truth: a caller that
cannot reach it should compute the answer instead (`CacheUnavailable` says so).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Protocol

from veche.settings import Settings

__all__ = [
    "Cache",
    "CacheUnavailable",
    "MemoryCache",
    "RedisCache",
    "cache_from_settings",
]

DEFAULT_MAX_ENTRIES = 50_000


class CacheUnavailable(Exception):
    """The cache backend could not be reached; compute the value without it."""


class Cache(Protocol):
    """Bytes under string keys, each with a time to live in seconds."""

    kind: str

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` in their order (None where missing), in one round trip."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...

    async def set_many(self, values: Mapping[str, bytes], ttl_seconds: float) -> None:
        """Store every pair with the same time to live, in one round trip."""
        ...

    async def delete(self, keys: Sequence[str]) -> int:
        """Remove the keys; how many existed."""
        ...

    async def ping(self) -> None:
        """Raise `CacheUnavailable` unless the backend answers (for readiness checks)."""
        ...

    async def close(self) -> None: ...


class MemoryCache:
    """One process's cache: a dict in least-recently-used order with expiry times.

    Only right when one process both serves reads and runs the consumers that
    invalidate them (the embedded default, `VECHE_ROLE=all`); several processes need Redis.
    """

    kind = "memory"

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a memory cache holds at least one entry")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (time.monotonic() + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def set_many(self, values: Mapping[str, bytes], ttl_seconds: float) -> None:
        for key, value in values.items():
            await self.set(key, value, ttl_seconds)

    async def delete(self, keys: Sequence[str]) -> int:
        return sum(self._entries.pop(key, None) is not None for key in keys)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()


class RedisCache:
    """Keys under `<namespace>:cache:` in Redis, each with a millisecond expiry."""

    kind = "redis"

    def __init__(self, url: str, *, namespace: str = "veche") -> None:
        import redis.asyncio as redis

        self._client = redis.from_url(url)
        self._prefix = f"{namespace}:cache:"

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            values = await self._client.mget([self._key(key) for key in keys])
        except Exception as exc:  # any connection or protocol failure: compute instead
            raise CacheUnavailable(str(exc)) from exc
        return [value if isinstance(value, bytes) else None for value in values]

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        await self.set_many({key: value}, ttl_seconds)

    async def set_many(self, values: Mapping[str, bytes], ttl_seconds: float) -> None:
        if not values:
            return
        milliseconds = max(1, int(ttl_seconds * 1000))
        try:
            async with self._client.pipeline(transaction=False) as pipeline:
                for key, value in values.items():
                    pipeline.set(self._key(key), value, px=milliseconds)
                await pipeline.execute()
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        try:
            removed = await self._client.delete(*[self._key(key) for key in keys])
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from exc
        return int(removed)

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except Exception as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self._client.aclose()


def cache_from_settings(settings: Settings, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> Cache:
    """Redis when `VECHE_REDIS_URL` is set (shared by every replica), else process memory."""
    if settings.redis_url:
        return RedisCache(settings.redis_url, namespace=settings.realtime.namespace)
    return MemoryCache(max_entries=max_entries)
