"""Cached first feed pages and `/me` answers, per user, on the kernel cache (Redis with
`VECHE_REDIS_URL`, else process memory), built by the startup hook into
`kernel.apps["blog.cache"]`.

Invalidation is by generation rather than by deleting entries: each user has a
generation token per kind (`feed`, `me`); an entry records the token it was computed
under and counts only while that token is current. Invalidating writes a fresh token.
A read that began before a change and stores its (stale) answer after the invalidation
therefore stores it under the old token, where nobody looks: deleting the entry instead
would let that late write bring the stale page back until it expired.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from veche.kernel import Kernel
from veche.kernel.cache import Cache, CacheUnavailable, cache_from_settings
from veche.kernel.db import on_outcome

log = structlog.get_logger("veche.blog.cache")

KEY = "blog.cache"
FEED = "feed"
ME = "me"
# Generation tokens outlive every entry made under them (see `FeedCache.generation_seconds`).
MIN_GENERATION_SECONDS = 86_400.0
CHUNK = 500


@dataclass(slots=True)
class FeedCache:
    cache: Cache
    feed_seconds: float
    me_seconds: float
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def generation_seconds(self) -> float:
        return max(MIN_GENERATION_SECONDS, 4 * max(self.feed_seconds, self.me_seconds))

    def ttl(self, kind: str) -> float:
        return self.feed_seconds if kind == FEED else self.me_seconds

    @staticmethod
    def _entry_key(kind: str, user_id: UUID, variant: str) -> str:
        return f"blog:{kind}:{user_id}:{variant}"

    @staticmethod
    def _generation_key(kind: str, user_id: UUID) -> str:
        return f"blog:{kind}-generation:{user_id}"

    async def lookup(
        self, kind: str, user_id: UUID, variant: str = ""
    ) -> tuple[bytes | None, str | None]:
        """The cached body if still current, and the token to store a fresh one under
        (None: the cache is off or unreachable, do not store)."""
        if self.ttl(kind) <= 0:
            return None, None
        try:
            entry, generation = await self.cache.get_many(
                [self._entry_key(kind, user_id, variant), self._generation_key(kind, user_id)]
            )
        except CacheUnavailable as exc:
            log.warning("cache_unavailable", error=str(exc))
            return None, None
        token = generation.decode() if generation is not None else "0"
        if entry is not None:
            stored, _, body = entry.partition(b"\n")
            if stored.decode() == token:
                return body, token
        return None, token

    async def store(
        self, kind: str, user_id: UUID, token: str | None, body: bytes, variant: str = ""
    ) -> None:
        if token is None:
            return
        try:
            await self.cache.set(
                self._entry_key(kind, user_id, variant),
                token.encode() + b"\n" + body,
                self.ttl(kind),
            )
        except CacheUnavailable as exc:
            log.warning("cache_unavailable", error=str(exc))

    async def invalidate(self, kind: str, user_ids: Iterable[UUID]) -> None:
        """Every cached `kind` answer of these users stops counting, in one round trip per
        500 users."""
        ids = list(dict.fromkeys(user_ids))
        for start in range(0, len(ids), CHUNK):
            fresh = {
                self._generation_key(kind, user_id): secrets.token_hex(8).encode()
                for user_id in ids[start : start + CHUNK]
            }
            try:
                await self.cache.set_many(fresh, self.generation_seconds)
            except CacheUnavailable as exc:  # entries then live out their time to live
                log.warning("cache_invalidation_failed", kind=kind, error=str(exc))
                return

    def invalidate_after_commit(
        self, session: AsyncSession, kind: str, user_ids: Iterable[UUID]
    ) -> None:
        """Invalidate once the session's transaction commits: earlier, a read could cache
        the state from before the change again."""
        ids = list(user_ids)
        on_outcome(session, committed=lambda: self.spawn(self.invalidate(kind, ids)))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine in the background, kept until done (drained at shutdown)."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


async def start(kernel: Kernel) -> None:
    settings = kernel.settings.blog
    kernel.apps[KEY] = FeedCache(
        cache=cache_from_settings(kernel.settings),
        feed_seconds=settings.feed_cache_seconds,
        me_seconds=settings.me_cache_seconds,
    )


async def stop(kernel: Kernel) -> None:
    feed_cache = kernel.apps.pop(KEY, None)
    if isinstance(feed_cache, FeedCache):
        await feed_cache.drain()
        await feed_cache.cache.close()


def feed_cache_of(kernel: Kernel) -> FeedCache:
    feed_cache = kernel.apps.get(KEY)
    if not isinstance(feed_cache, FeedCache):
        raise RuntimeError("the blog app is not started in this process")
    return feed_cache


async def cache_ready(kernel: Kernel) -> None:
    await feed_cache_of(kernel).cache.ping()
