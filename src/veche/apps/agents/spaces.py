"""Worker spaces: the in-process runtime state of one user's project.

A `WorkerSpace` holds what a process keeps between the runs of one (user, project): the
agent configurations it has read (a TTL cache), counters of the runs it has made and how
they ended, and its lifecycle. The `WorkerSpaceManager` makes spaces lazily on first use,
forgets them when their project is deleted or when they have been idle too long, and
enforces each agent's `concurrency_limit` across all of a user's spaces.

Everything here lives in one process's memory: another replica has spaces of its own, and
a restart starts them afresh. The database stays the source of truth for agents and tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from veche.apps.agents.errors import SpaceBusy
from veche.apps.agents.models import Agent
from veche.settings import AgentsSettings

SpaceStatus = Literal["active", "idle", "closed", "error"]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """An agent's configuration as one run sees it, detached from any session."""

    id: UUID
    user_id: UUID
    name: str
    version: int
    system_prompt: str
    model: str
    tools: tuple[str, ...]
    capabilities: tuple[str, ...]
    concurrency_limit: int
    memory_limit: int
    execution_mode: str

    @classmethod
    def from_row(cls, agent: Agent) -> AgentSnapshot:
        config = agent.config
        return cls(
            id=agent.id,
            user_id=agent.user_id,
            name=agent.name,
            version=agent.version,
            system_prompt=str(config.get("system_prompt", "")),
            model=str(config.get("model", "default")),
            tools=tuple(config.get("tools", ())),
            capabilities=tuple(config.get("capabilities", ())),
            concurrency_limit=int(config.get("concurrency_limit", 3)),
            memory_limit=int(config.get("memory_limit", 1000)),
            execution_mode=str(config.get("execution_mode", "server")),
        )


@dataclass(slots=True)
class RunCounters:
    """How the runs of one agent (or of a whole space) went in this process."""

    started: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    total_duration: float = 0.0

    def finish(self, outcome: str, duration: float) -> None:
        self.running -= 1
        self.total_duration += duration
        if outcome == "succeeded":
            self.succeeded += 1
        elif outcome == "failed":
            self.failed += 1
        else:
            self.cancelled += 1

    def as_dict(self) -> dict[str, Any]:
        finished = self.succeeded + self.failed + self.cancelled
        verdicts = self.succeeded + self.failed
        return {
            "started": self.started,
            "running": self.running,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "success_rate": round(self.succeeded / verdicts, 4) if verdicts else None,
            "average_duration_ms": (
                round(self.total_duration * 1000 / finished, 1) if finished else None
            ),
        }

    def add(self, other: RunCounters) -> None:
        self.started += other.started
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.running += other.running
        self.total_duration += other.total_duration


class AgentSlots:
    """The runs of one agent under way in this process, and those waiting for a slot.

    First come, first served: a run waits while `running` is at the limit its snapshot
    carries (a limit lowered by an update applies to the next run to start). Releasing is
    synchronous, so a run that ends by cancellation always gives its slot back."""

    def __init__(self) -> None:
        self.running = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for _, future in self._waiters if not future.done())

    async def take(self, limit: int) -> None:
        if self.running < limit and not self.waiting:
            self.running += 1
            return
        entry = (limit, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except BaseException:
            future = entry[1]
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as the waiter gave up
            else:
                future.cancel()
                self._wake()
            raise

    def release(self) -> None:
        self.running -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            limit, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if self.running >= limit:
                return
            self._waiters.popleft()
            self.running += 1  # handed over: the waiter owns the slot when it wakes
            future.set_result(None)

    @property
    def unused(self) -> bool:
        return self.running == 0 and not self.waiting


class SlotRegistry:
    """Each agent's slots, shared by all the spaces of its user in this process."""

    def __init__(self) -> None:
        self._slots: dict[tuple[UUID, UUID], AgentSlots] = {}

    def of(self, user_id: UUID, agent_id: UUID) -> AgentSlots:
        return self._slots.setdefault((user_id, agent_id), AgentSlots())

    def running(self, user_id: UUID, agent_id: UUID) -> int:
        slots = self._slots.get((user_id, agent_id))
        return slots.running if slots else 0

    def forget_unused(self, user_id: UUID, agent_id: UUID) -> None:
        slots = self._slots.get((user_id, agent_id))
        if slots is not None and slots.unused:
            del self._slots[(user_id, agent_id)]


@dataclass(slots=True)
class _Cached:
    snapshot: AgentSnapshot
    expires_at: float


@dataclass(slots=True)
class _CacheStats:
    hits: int = 0
    misses: int = 0
    invalidations: int = 0


class WorkerSpace:
    """The runtime state of one (user, project) in this process."""

    def __init__(
        self,
        user_id: UUID,
        project_id: UUID,
        *,
        settings: AgentsSettings,
        slots: SlotRegistry,
        clock: Clock,
    ) -> None:
        self.user_id = user_id
        self.project_id = project_id
        self._settings = settings
        self._slots = slots
        self._clock = clock
        self.created_at = clock()
        self.last_used = self.created_at
        self._state: Literal["new", "open", "closed", "error"] = "new"
        self._error: str | None = None
        self._cache: dict[UUID, _Cached] = {}
        # Bumped by every invalidation, so a load that raced one is not cached.
        self._generations: dict[UUID, int] = {}
        self._cache_stats = _CacheStats()
        self._totals = RunCounters()
        self._agents: dict[UUID, RunCounters] = {}
        self._resets = 0

    # -- lifecycle --------------------------------------------------------------------

    @property
    def status(self) -> SpaceStatus:
        if self._state in ("closed", "error"):
            return self._state
        return "active" if self._totals.running else "idle"

    @property
    def running_count(self) -> int:
        return self._totals.running

    async def initialize(self) -> None:
        """Open the space. Its state is in memory and starts empty; nothing to load yet."""
        if self._state == "closed":
            raise RuntimeError("a closed worker space cannot be opened again")
        self._state = "open"
        self._error = None

    async def cleanup(self) -> None:
        """Close the space: drop its cache. Runs still under way finish normally."""
        self._cache.clear()
        self._generations.clear()
        self._state = "closed"

    async def reset(self) -> None:
        """Start over: drop the cache and zero the counters; refused while a run is on."""
        if self._totals.running:
            raise SpaceBusy(
                f"Project {self.project_id} has {self._totals.running} task(s) running; "
                "reset it when they have finished"
            )
        self._cache.clear()
        self._cache_stats = _CacheStats()
        self._totals = RunCounters()
        self._agents.clear()
        self._resets += 1
        self._error = None
        if self._state == "error":
            self._state = "open"
        self.last_used = self._clock()

    def fail(self, reason: str) -> None:
        """Mark the space broken (it reports unhealthy until reset or released)."""
        self._state = "error"
        self._error = reason

    async def health(self) -> dict[str, Any]:
        problems: list[str] = []
        if self._state == "closed":
            problems.append("closed")
        elif self._state == "error":
            problems.append(self._error or "error")
        elif self._state == "new":
            problems.append("not initialized")
        if self._totals.running < 0:
            problems.append("negative running count")
        return {
            "healthy": not problems,
            "status": self.status,
            "problems": problems,
            "running": self._totals.running,
            "idle_seconds": round(max(0.0, self._clock() - self.last_used), 3),
        }

    def idle_for(self, now: float) -> float:
        return now - self.last_used

    # -- agent configurations ---------------------------------------------------------

    async def agent_config(
        self, agent_id: UUID, load: Callable[[], Awaitable[AgentSnapshot]]
    ) -> AgentSnapshot:
        """The agent's configuration from the cache, or from `load` (then cached for
        `config_cache_ttl_seconds`; 0 caches nothing)."""
        self.last_used = now = self._clock()
        cached = self._cache.get(agent_id)
        if cached is not None and cached.expires_at > now:
            self._cache_stats.hits += 1
            return cached.snapshot
        self._cache_stats.misses += 1
        generation = self._generations.get(agent_id, 0)
        snapshot = await load()
        ttl = self._settings.config_cache_ttl_seconds
        if ttl > 0 and self._state == "open" and self._generations.get(agent_id, 0) == generation:
            self._cache[agent_id] = _Cached(snapshot, self._clock() + ttl)
        return snapshot

    def invalidate(self, agent_id: UUID) -> None:
        self._generations[agent_id] = self._generations.get(agent_id, 0) + 1
        if self._cache.pop(agent_id, None) is not None:
            self._cache_stats.invalidations += 1

    # -- runs -------------------------------------------------------------------------

    def running(self, agent: AgentSnapshot) -> AbstractAsyncContextManager[None]:
        """A run of `agent` in this space: waits for a slot under its concurrency limit,
        then counts the run and how it ended (an exception is a failure, a cancellation
        is counted apart) and how long it took."""
        if agent.user_id != self.user_id:
            raise ValueError("an agent runs only in its own user's worker spaces")
        return self._run(agent)

    @asynccontextmanager
    async def _run(self, agent: AgentSnapshot) -> AsyncIterator[None]:
        slots = self._slots.of(agent.user_id, agent.id)
        await slots.take(agent.concurrency_limit)
        counters = self._agents.setdefault(agent.id, RunCounters())
        for counter in (self._totals, counters):
            counter.started += 1
            counter.running += 1
        self.last_used = started = self._clock()
        outcome = "failed"
        try:
            yield
            outcome = "succeeded"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            slots.release()
            self._slots.forget_unused(agent.user_id, agent.id)
            self.last_used = ended = self._clock()
            for counter in (self._totals, counters):
                counter.finish(outcome, ended - started)

    def agent_counters(self, agent_id: UUID) -> RunCounters | None:
        return self._agents.get(agent_id)

    def stats(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "user_id": str(self.user_id),
            "project_id": str(self.project_id),
            "status": self.status,
            "uptime_seconds": round(now - self.created_at, 3),
            "idle_seconds": round(max(0.0, now - self.last_used), 3),
            "resets": self._resets,
            "cache": {
                "agents": len(self._cache),
                "hits": self._cache_stats.hits,
                "misses": self._cache_stats.misses,
                "invalidations": self._cache_stats.invalidations,
            },
            "tasks": self._totals.as_dict(),
            "agents": {str(agent_id): c.as_dict() for agent_id, c in self._agents.items()},
        }


@dataclass(slots=True)
class _UserSpaces:
    spaces: dict[UUID, WorkerSpace] = field(default_factory=dict)


class WorkerSpaceManager:
    """Every worker space of this process, by user and project."""

    def __init__(self, settings: AgentsSettings, *, clock: Clock = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._users: dict[UUID, _UserSpaces] = {}
        self._slots = SlotRegistry()
        self._lock = asyncio.Lock()
        self._closed = False
        self._created = 0
        self._released = 0
        self._last_sweep = clock()

    def get(self, user_id: UUID, project_id: UUID) -> WorkerSpace | None:
        """The space if this process has one; never makes it."""
        user = self._users.get(user_id)
        return user.spaces.get(project_id) if user else None

    def spaces_of(self, user_id: UUID) -> list[WorkerSpace]:
        user = self._users.get(user_id)
        return list(user.spaces.values()) if user else []

    async def acquire(self, user_id: UUID, project_id: UUID) -> WorkerSpace:
        """The project's space, made and initialized on first use. Concurrent first uses
        get the same space: creation happens under one lock."""
        if self._closed:
            raise RuntimeError("the worker space manager is closed")
        space = self.get(user_id, project_id)
        if space is None:
            async with self._lock:
                space = self.get(user_id, project_id)
                if space is None:
                    space = WorkerSpace(
                        user_id,
                        project_id,
                        settings=self._settings,
                        slots=self._slots,
                        clock=self._clock,
                    )
                    await space.initialize()
                    self._users.setdefault(user_id, _UserSpaces()).spaces[project_id] = space
                    self._created += 1
        space.last_used = self._clock()
        # A process whose health job runs elsewhere still lets go of idle spaces.
        if self._clock() - self._last_sweep >= self._settings.space_idle_seconds:
            await self.release_idle()
        return space

    async def release(self, user_id: UUID, project_id: UUID) -> None:
        """Close and forget the project's space (its project is gone)."""
        user = self._users.get(user_id)
        space = user.spaces.pop(project_id, None) if user else None
        if user is not None and not user.spaces:
            del self._users[user_id]
        if space is not None:
            self._released += 1
            await space.cleanup()

    def invalidate_agent(self, user_id: UUID, agent_id: UUID) -> None:
        """Drop the agent's cached configuration from every space of its user."""
        for space in self.spaces_of(user_id):
            space.invalidate(agent_id)

    async def release_idle(self) -> int:
        """Release the spaces unused for `space_idle_seconds` with nothing running."""
        now = self._last_sweep = self._clock()
        limit = self._settings.space_idle_seconds
        idle = [
            space
            for user in self._users.values()
            for space in user.spaces.values()
            if space.running_count == 0 and space.idle_for(now) >= limit
        ]
        for space in idle:
            await self.release(space.user_id, space.project_id)
        return len(idle)

    def agent_counters(self, user_id: UUID, agent_id: UUID) -> RunCounters | None:
        """The agent's runs in all its user's spaces here, or None if it has had none."""
        total: RunCounters | None = None
        for space in self.spaces_of(user_id):
            counters = space.agent_counters(agent_id)
            if counters is not None:
                total = total or RunCounters()
                total.add(counters)
        return total

    def stats(self) -> dict[str, Any]:
        by_status: dict[str, int] = {"active": 0, "idle": 0, "closed": 0, "error": 0}
        per_user: dict[str, int] = {}
        running = 0
        for user_id, user in self._users.items():
            per_user[str(user_id)] = len(user.spaces)
            for space in user.spaces.values():
                by_status[space.status] += 1
                running += space.running_count
        return {
            "spaces": sum(per_user.values()),
            "users": len(per_user),
            "by_status": by_status,
            "per_user": per_user,
            "running": running,
            "created": self._created,
            "released": self._released,
        }

    async def check(self) -> None:
        """For `/ready`: raise if the manager is closed or a space reports unhealthy."""
        if self._closed:
            raise RuntimeError("the worker space manager is closed")
        unhealthy = 0
        for user in list(self._users.values()):
            for space in list(user.spaces.values()):
                if not (await space.health())["healthy"]:
                    unhealthy += 1
        if unhealthy:
            raise RuntimeError(f"{unhealthy} worker space(s) unhealthy")

    async def aclose(self) -> None:
        """Close every space (at shutdown); later acquires are refused."""
        self._closed = True
        for user_id, user in list(self._users.items()):
            for project_id in list(user.spaces):
                await self.release(user_id, project_id)
