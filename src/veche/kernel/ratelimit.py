"""Rate limits on the `limits` library: sliding window counters in memory, or in Redis when
`VECHE_REDIS_URL` is set so every replica shares them.

Routes declare a named policy (`Depends(rate_limit("auth"))`); the policy's limits come
from `VECHE_RATE_LIMITS`. Callers are keyed by user when a valid access token is presented,
else by client address. Every limited response carries `X-RateLimit-Limit`,
`X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until the window frees a request);
a refusal is a 429 problem with `Retry-After`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from veche.kernel.context import current_request
from veche.kernel.errors import TooManyRequests
from veche.settings import Settings


@dataclass(frozen=True, slots=True)
class LimitState:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(self.reset_after, 1))
        return headers


def _storage(settings: Settings) -> Storage:
    if settings.redis_url:
        storage = storage_from_string(f"async+{settings.redis_url}", implementation="redispy")
        assert isinstance(storage, Storage)
        return storage
    return MemoryStorage()


class RateLimiter:
    """Named policies over one storage."""

    def __init__(self, settings: Settings) -> None:
        self.storage = _storage(settings)
        # Sliding window counters: O(1) per hit in memory and Redis, and close to a moving
        # window's accuracy (a moving window keeps one entry per request).
        self._strategy = SlidingWindowCounterRateLimiter(self.storage)
        self._parsed: dict[str, list[RateLimitItem]] = {}
        self._policies = {name: self.items(spec) for name, spec in settings.rate_limits.items()}

    def items(self, spec: str) -> list[RateLimitItem]:
        """The limits a spec such as `5/15minutes;100/day` describes (parsed once)."""
        parsed = self._parsed.get(spec)
        if parsed is None:
            parsed = self._parsed[spec] = list(parse_many(spec))
        return parsed

    def policy(self, name: str) -> list[RateLimitItem]:
        return self._policies.get(name) or self._policies["default"]

    async def hit(self, items: list[RateLimitItem], *identifiers: str) -> LimitState:
        """Count one request against every item; the tightest item decides the answer."""
        states = [await self._hit_one(item, identifiers) for item in items]
        refused = [state for state in states if not state.allowed]
        if refused:
            return max(refused, key=lambda state: state.reset_after)
        return min(states, key=lambda state: (state.remaining, -state.reset_after))

    async def test(self, items: list[RateLimitItem], *identifiers: str) -> LimitState | None:
        """The refusing state if any item is exhausted, without counting a request."""
        for item in items:
            if not await self._strategy.test(item, *identifiers):
                return await self._state(item, identifiers, allowed=False)
        return None

    async def clear(self, items: list[RateLimitItem], *identifiers: str) -> None:
        for item in items:
            await self._strategy.clear(item, *identifiers)

    async def _hit_one(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> LimitState:
        allowed = await self._strategy.hit(item, *identifiers)
        return await self._state(item, identifiers, allowed=allowed)

    async def _state(
        self, item: RateLimitItem, identifiers: tuple[str, ...], *, allowed: bool
    ) -> LimitState:
        stats = await self._strategy.get_window_stats(item, *identifiers)
        reset_after = max(0, math.ceil(stats.reset_time - time.time()))
        if reset_after == 0 and stats.remaining < item.amount:
            # In a window's first second the Redis storage reports a TTL of exactly two
            # windows, which the sliding-window arithmetic turns into "resets now": the
            # window has in fact just begun.
            reset_after = item.get_expiry()
        return LimitState(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after=reset_after,
        )

    async def check_storage(self) -> None:
        if not await self.storage.check():
            raise ConnectionError("rate limit storage is not reachable")


def caller_key(request: Request) -> str:
    """`user:<id>` for a caller with a valid access token, else `ip:<address>`."""
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token:
        tokens = request.app.state.kernel.tokens
        try:
            return f"user:{tokens.verify(token.strip()).user_id}"
        except Exception:  # noqa: S110 - an invalid token is limited by address instead
            pass
    context = current_request()
    return f"ip:{context.client_ip if context and context.client_ip else 'unknown'}"


def rate_limit(policy: str) -> Callable[[Request], Awaitable[None]]:
    """A route dependency that applies the named policy to the caller."""

    async def dependency(request: Request) -> None:
        limiter: RateLimiter = request.app.state.kernel.limiter
        state = await limiter.hit(limiter.policy(policy), policy, caller_key(request))
        publish_headers(state)
        if not state.allowed:
            raise TooManyRequests(
                f"Rate limit for {policy!r} reached; retry in {max(state.reset_after, 1)} s",
                headers=state.headers(),
            )

    dependency.__name__ = f"rate_limit_{policy}"
    return dependency


def publish_headers(state: LimitState) -> None:
    """Attach the state's headers to the current response, whatever its status."""
    context = current_request()
    if context is not None:
        context.response_headers.update(state.headers())
