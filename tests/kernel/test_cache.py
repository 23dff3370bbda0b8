"""The kernel cache: the memory backend always, the Redis backend with
`VECHE_TEST_REDIS_URL`; both behave the same through the `Cache` protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import TEST_REDIS_URL, make_settings
from veche.kernel.cache import (
    Cache,
    CacheUnavailable,
    MemoryCache,
    RedisCache,
    cache_from_settings,
)

BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.skipif(not TEST_REDIS_URL, reason="no Redis")),
]


@pytest.fixture(params=BACKENDS)
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    made: Cache
    if request.param == "redis":
        assert TEST_REDIS_URL is not None
        made = RedisCache(TEST_REDIS_URL, namespace="veche-test-cache")
        await made.delete(["a", "b", "c", "gone"])
    else:
        made = MemoryCache()
    yield made
    if request.param == "redis":
        await made.delete(["a", "b", "c", "gone"])
    await made.close()


async def test_set_get_and_delete(cache: Cache) -> None:
    assert await cache.get("a") is None
    await cache.set("a", b"one", 60)
    await cache.set_many({"b": b"two", "c": b"three"}, 60)

    assert await cache.get("a") == b"one"
    assert await cache.get_many(["a", "missing", "c"]) == [b"one", None, b"three"]
    assert await cache.get_many([]) == []
    assert await cache.delete(["a", "b", "gone"]) == 2
    assert await cache.get_many(["a", "b", "c"]) == [None, None, b"three"]
    assert await cache.delete([]) == 0
    await cache.ping()


async def test_entries_expire(cache: Cache) -> None:
    await cache.set("a", b"short", 0.05)
    await cache.set("b", b"long", 60)
    await asyncio.sleep(0.15)

    assert await cache.get_many(["a", "b"]) == [None, b"long"]


async def test_overwriting_keeps_the_newest_value(cache: Cache) -> None:
    await cache.set("a", b"old", 60)
    await cache.set("a", b"new", 60)

    assert await cache.get("a") == b"new"


async def test_memory_cache_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(max_entries=2)
    await cache.set("a", b"1", 60)
    await cache.set("b", b"2", 60)
    assert await cache.get("a") == b"1"  # now "b" is the least recently used
    await cache.set("c", b"3", 60)

    assert len(cache) == 2
    assert await cache.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
    await cache.set("a", b"gone", 0)  # a non-positive time to live removes the entry
    assert await cache.get("a") is None
    with pytest.raises(ValueError, match="at least one entry"):
        MemoryCache(max_entries=0)


async def test_the_backend_follows_the_settings(tmp_path: Path) -> None:
    memory = cache_from_settings(make_settings(tmp_path, "sqlite+aiosqlite://", redis_url=None))
    assert memory.kind == "memory"
    await memory.close()
    redis_cache = cache_from_settings(
        make_settings(tmp_path, "sqlite+aiosqlite://", redis_url="redis://127.0.0.1:1/0")
    )
    assert redis_cache.kind == "redis"
    await redis_cache.close()


async def test_an_unreachable_redis_is_cache_unavailable() -> None:
    cache = RedisCache("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(CacheUnavailable):
            await cache.get("a")
        with pytest.raises(CacheUnavailable):
            await cache.set("a", b"x", 10)
        with pytest.raises(CacheUnavailable):
            await cache.delete(["a"])
        with pytest.raises(CacheUnavailable):
            await cache.ping()
    finally:
        await cache.close()
