"""The worker space manager in memory, with an injected clock: lazy and concurrency-safe
creation, idle release, the configuration cache and its invalidation, per-agent
concurrency limits, counters, reset, health and stats."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import pytest

from veche.apps.agents.errors import SpaceBusy
from veche.apps.agents.models import Agent
from veche.apps.agents.spaces import AgentSnapshot, WorkerSpace, WorkerSpaceManager
from veche.settings import AgentsSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_manager(clock: FakeClock, **settings: Any) -> WorkerSpaceManager:
    values: dict[str, Any] = {"space_idle_seconds": 900, "config_cache_ttl_seconds": 60}
    values.update(settings)
    return WorkerSpaceManager(AgentsSettings(**values), clock=clock)


def snapshot(user_id: UUID, *, limit: int = 3, agent_id: UUID | None = None) -> AgentSnapshot:
    return AgentSnapshot(
        id=agent_id or uuid4(),
        user_id=user_id,
        name="coder",
        version=1,
        system_prompt="",
        model="default",
        tools=(),
        capabilities=(),
        concurrency_limit=limit,
        memory_limit=1000,
        execution_mode="server",
    )


class Loader:
    """Counts how often the cache had to read the configuration."""

    def __init__(self, agent: AgentSnapshot) -> None:
        self.agent = agent
        self.calls = 0

    async def __call__(self) -> AgentSnapshot:
        self.calls += 1
        return replace(self.agent, version=self.calls)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(clock: FakeClock) -> WorkerSpaceManager:
    return make_manager(clock)


def test_a_snapshot_copies_the_current_configuration() -> None:
    agent = Agent(id=uuid4(), user_id=uuid4(), name="ops", status="ready", version=4)
    agent.config = {
        "system_prompt": "keep the lights on",
        "model": "planner",
        "tools": ["read_file"],
        "capabilities": ["devops"],
        "concurrency_limit": 2,
        "memory_limit": 50,
        "execution_mode": "client",
    }
    taken = AgentSnapshot.from_row(agent)
    assert taken == AgentSnapshot(
        id=agent.id,
        user_id=agent.user_id,
        name="ops",
        version=4,
        system_prompt="keep the lights on",
        model="planner",
        tools=("read_file",),
        capabilities=("devops",),
        concurrency_limit=2,
        memory_limit=50,
        execution_mode="client",
    )
    agent.config["tools"].append("write_file")  # the snapshot does not follow the row
    assert taken.tools == ("read_file",)


async def test_spaces_are_made_on_first_use_one_per_project(
    manager: WorkerSpaceManager, clock: FakeClock
) -> None:
    user, project, other_project = uuid4(), uuid4(), uuid4()
    assert manager.get(user, project) is None
    assert manager.stats()["spaces"] == 0

    space = await manager.acquire(user, project)
    assert space.status == "idle"
    assert space.created_at == clock.now
    assert await manager.acquire(user, project) is space
    assert manager.get(user, project) is space
    other = await manager.acquire(user, other_project)
    assert other is not space
    stats = manager.stats()
    assert stats["spaces"] == 2
    assert stats["users"] == 1
    assert stats["per_user"] == {str(user): 2}
    assert stats["created"] == 2


async def test_concurrent_first_uses_get_one_space(
    manager: WorkerSpaceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    initialized: list[WorkerSpace] = []
    original = WorkerSpace.initialize

    async def slow_initialize(self: WorkerSpace) -> None:
        initialized.append(self)
        await gate.wait()  # every other acquire arrives while this one is still opening
        await original(self)

    monkeypatch.setattr(WorkerSpace, "initialize", slow_initialize)
    user, project = uuid4(), uuid4()
    pending = [asyncio.ensure_future(manager.acquire(user, project)) for _ in range(10)]
    await settle()
    gate.set()
    spaces = await asyncio.gather(*pending)
    assert len(initialized) == 1
    assert all(space is spaces[0] for space in spaces)
    assert manager.stats()["created"] == 1


async def test_idle_spaces_are_released_but_not_busy_ones(
    manager: WorkerSpaceManager, clock: FakeClock
) -> None:
    user = uuid4()
    quiet = await manager.acquire(user, uuid4())
    busy = await manager.acquire(user, uuid4())
    recent = await manager.acquire(user, uuid4())
    agent = snapshot(user)
    clock.advance(600)
    await manager.acquire(user, recent.project_id)  # used again: its idle time restarts
    async with busy.running(agent):
        clock.advance(400)
        assert await manager.release_idle() == 1  # only `quiet` (1000 s unused)
        assert manager.get(user, quiet.project_id) is None
        assert quiet.status == "closed"
        assert manager.get(user, busy.project_id) is busy
    clock.advance(900)
    assert await manager.release_idle() == 2  # busy finished 900 s ago; recent 1300 s
    assert manager.stats() == {
        "spaces": 0,
        "users": 0,
        "by_status": {"active": 0, "idle": 0, "closed": 0, "error": 0},
        "per_user": {},
        "running": 0,
        "created": 3,
        "released": 3,
    }


async def test_acquire_sweeps_idle_spaces_where_the_health_job_does_not_run(
    manager: WorkerSpaceManager, clock: FakeClock
) -> None:
    user = uuid4()
    forgotten = await manager.acquire(user, uuid4())
    clock.advance(901)
    await manager.acquire(user, uuid4())
    assert manager.get(user, forgotten.project_id) is None


async def test_release_closes_and_forgets_a_space(manager: WorkerSpaceManager) -> None:
    user, project = uuid4(), uuid4()
    space = await manager.acquire(user, project)
    await manager.release(user, project)
    assert space.status == "closed"
    assert manager.get(user, project) is None
    await manager.release(user, project)  # twice is fine
    again = await manager.acquire(user, project)
    assert again is not space
    assert again.status == "idle"


async def test_configurations_are_cached_for_the_ttl(
    manager: WorkerSpaceManager, clock: FakeClock
) -> None:
    user = uuid4()
    space = await manager.acquire(user, uuid4())
    load = Loader(snapshot(user))
    first = await space.agent_config(load.agent.id, load)
    clock.advance(59)
    assert await space.agent_config(load.agent.id, load) is first
    assert load.calls == 1
    clock.advance(1)
    reloaded = await space.agent_config(load.agent.id, load)
    assert (load.calls, reloaded.version) == (2, 2)
    assert space.stats()["cache"] == {"agents": 1, "hits": 1, "misses": 2, "invalidations": 0}


async def test_a_zero_ttl_caches_nothing(clock: FakeClock) -> None:
    manager = make_manager(clock, config_cache_ttl_seconds=0)
    user = uuid4()
    space = await manager.acquire(user, uuid4())
    load = Loader(snapshot(user))
    for _ in range(3):
        await space.agent_config(load.agent.id, load)
    assert load.calls == 3
    assert space.stats()["cache"]["agents"] == 0


async def test_invalidation_reaches_every_space_of_the_user_only(
    manager: WorkerSpaceManager,
) -> None:
    ann, bob = uuid4(), uuid4()
    agent_id = uuid4()
    ann_spaces = [await manager.acquire(ann, uuid4()) for _ in range(2)]
    bob_space = await manager.acquire(bob, uuid4())
    loads = {id(space): Loader(snapshot(ann, agent_id=agent_id)) for space in ann_spaces}
    bob_load = Loader(snapshot(bob, agent_id=agent_id))
    for space in ann_spaces:
        await space.agent_config(agent_id, loads[id(space)])
    await bob_space.agent_config(agent_id, bob_load)

    manager.invalidate_agent(ann, agent_id)
    for space in ann_spaces:
        await space.agent_config(agent_id, loads[id(space)])
        assert loads[id(space)].calls == 2
        assert space.stats()["cache"]["invalidations"] == 1
    await bob_space.agent_config(agent_id, bob_load)
    assert bob_load.calls == 1


async def test_a_load_that_raced_an_invalidation_is_not_cached(
    manager: WorkerSpaceManager,
) -> None:
    user = uuid4()
    space = await manager.acquire(user, uuid4())
    agent = snapshot(user)
    reading = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def slow_load() -> AgentSnapshot:
        nonlocal calls
        calls += 1
        reading.set()
        await release.wait()
        return agent

    pending = asyncio.ensure_future(space.agent_config(agent.id, slow_load))
    await reading.wait()
    manager.invalidate_agent(user, agent.id)  # the update committed while it was reading
    release.set()
    assert await pending is agent
    await space.agent_config(agent.id, slow_load)
    assert calls == 2


async def test_an_agent_runs_at_most_its_limit_across_the_users_spaces(
    manager: WorkerSpaceManager,
) -> None:
    user = uuid4()
    agent = snapshot(user, limit=2)
    spaces = [await manager.acquire(user, uuid4()) for _ in range(2)]
    finish = [asyncio.Event() for _ in range(4)]
    started: list[int] = []

    async def run(number: int, space: WorkerSpace) -> None:
        async with space.running(agent):
            started.append(number)
            await finish[number].wait()

    runs = [asyncio.ensure_future(run(n, spaces[n % 2])) for n in range(4)]
    await settle()
    assert started == [0, 1]
    assert manager.stats()["running"] == 2
    finish[1].set()
    await settle()
    assert started == [0, 1, 2]  # first come, first served
    finish[0].set()
    await settle()
    assert started == [0, 1, 2, 3]
    for event in finish:
        event.set()
    await asyncio.gather(*runs)
    assert manager.stats()["running"] == 0


async def test_limits_are_per_agent_and_per_user(manager: WorkerSpaceManager) -> None:
    ann, bob = uuid4(), uuid4()
    shared_id = uuid4()  # the same id under two users never shares slots
    agents = [snapshot(ann, limit=1), snapshot(ann, limit=1), snapshot(bob, limit=1)]
    agents.append(snapshot(ann, limit=1, agent_id=shared_id))
    agents.append(snapshot(bob, limit=1, agent_id=shared_id))
    hold = asyncio.Event()
    started: list[AgentSnapshot] = []

    async def run(agent: AgentSnapshot) -> None:
        space = await manager.acquire(agent.user_id, uuid4())
        async with space.running(agent):
            started.append(agent)
            await hold.wait()

    runs = [asyncio.ensure_future(run(agent)) for agent in agents]
    await settle()
    assert len(started) == 5
    hold.set()
    await asyncio.gather(*runs)


async def test_a_waiter_that_gives_up_takes_no_slot(manager: WorkerSpaceManager) -> None:
    user = uuid4()
    agent = snapshot(user, limit=1)
    space = await manager.acquire(user, uuid4())
    release = asyncio.Event()

    async def hold() -> None:
        async with space.running(agent):
            await release.wait()

    holder = asyncio.ensure_future(hold())
    await settle()
    waiter = asyncio.ensure_future(hold())
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    async with space.running(agent):  # the slot is free again
        assert space.running_count == 1
    tasks = space.stats()["tasks"]
    assert (tasks["started"], tasks["cancelled"]) == (2, 0)  # the waiter never ran


async def test_runs_are_counted_with_their_outcome_and_duration(
    manager: WorkerSpaceManager, clock: FakeClock
) -> None:
    user = uuid4()
    agent = snapshot(user)
    space = await manager.acquire(user, uuid4())

    async with space.running(agent):
        assert space.status == "active"
        clock.advance(2)

    async def failing() -> None:
        async with space.running(agent):
            clock.advance(4)
            raise RuntimeError("the provider fell over")

    with pytest.raises(RuntimeError, match="fell over"):
        await failing()

    async def cancelled() -> None:
        async with space.running(agent):
            clock.advance(6)
            await asyncio.Event().wait()

    task = asyncio.ensure_future(cancelled())
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    expected = {
        "started": 3,
        "running": 0,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 1,
        "success_rate": 0.5,
        "average_duration_ms": 4000.0,
    }
    stats = space.stats()
    assert stats["tasks"] == expected
    assert stats["agents"] == {str(agent.id): expected}
    assert stats["status"] == "idle"
    live = manager.agent_counters(user, agent.id)
    assert live is not None
    assert live.as_dict() == expected
    assert manager.agent_counters(user, uuid4()) is None


async def test_an_agent_runs_only_in_its_users_spaces(manager: WorkerSpaceManager) -> None:
    space = await manager.acquire(uuid4(), uuid4())
    with pytest.raises(ValueError, match="own user"):
        space.running(snapshot(uuid4()))


async def test_reset_drops_cache_and_counters_but_not_while_running(
    manager: WorkerSpaceManager,
) -> None:
    user = uuid4()
    space = await manager.acquire(user, uuid4())
    agent = snapshot(user)
    load = Loader(agent)
    await space.agent_config(agent.id, load)
    async with space.running(agent):
        with pytest.raises(SpaceBusy):
            await space.reset()
    await space.reset()
    stats = space.stats()
    assert stats["resets"] == 1
    assert stats["cache"] == {"agents": 0, "hits": 0, "misses": 0, "invalidations": 0}
    assert stats["tasks"]["started"] == 0
    assert stats["agents"] == {}
    await space.agent_config(agent.id, load)
    assert load.calls == 2


async def test_health_and_the_readiness_check(
    manager: WorkerSpaceManager, clock: FakeClock
) -> None:
    await manager.check()  # no spaces: ready
    user = uuid4()
    space = await manager.acquire(user, uuid4())
    clock.advance(12.5)
    assert await space.health() == {
        "healthy": True,
        "status": "idle",
        "problems": [],
        "running": 0,
        "idle_seconds": 12.5,
    }
    await manager.check()

    space.fail("vector store unreachable")
    health = await space.health()
    assert (health["healthy"], health["status"]) == (False, "error")
    assert health["problems"] == ["vector store unreachable"]
    assert manager.stats()["by_status"]["error"] == 1
    with pytest.raises(RuntimeError, match="1 worker space"):
        await manager.check()
    await space.reset()  # a reset clears the error
    await manager.check()


async def test_a_closed_manager_releases_everything_and_refuses_work(
    manager: WorkerSpaceManager,
) -> None:
    spaces = [await manager.acquire(uuid4(), uuid4()) for _ in range(3)]
    await manager.aclose()
    assert all(space.status == "closed" for space in spaces)
    assert manager.stats()["spaces"] == 0
    with pytest.raises(RuntimeError, match="closed"):
        await manager.acquire(uuid4(), uuid4())
    with pytest.raises(RuntimeError, match="closed"):
        await manager.check()


async def test_a_space_that_fails_to_open_is_not_kept(
    manager: WorkerSpaceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: WorkerSpace) -> None:
        raise OSError("no room")

    monkeypatch.setattr(WorkerSpace, "initialize", broken)
    user, project = uuid4(), uuid4()
    with pytest.raises(OSError, match="no room"):
        await manager.acquire(user, project)
    assert manager.get(user, project) is None
