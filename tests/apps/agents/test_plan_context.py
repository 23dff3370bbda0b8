"""The per-process cache of what a plan's steps share: one load per plan, however many
steps ask at once; failures and gone plans are not kept; bounded."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from veche.apps.agents.models import ChatMessage
from veche.apps.agents.plan_context import PlanContext, PlanContexts


def _context(text: str = "the request") -> PlanContext:
    message = ChatMessage(id=uuid4(), role="user", content=text)
    return PlanContext(message, (), ({"id": "a", "description": "Do a"},))


class Loader:
    """Counts its loads; each waits for `release` (set by default) before answering."""

    def __init__(self, result: PlanContext | Exception | None) -> None:
        self.result = result
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> PlanContext | None:
        self.calls += 1
        await self.release.wait()
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def test_concurrent_steps_share_one_load_and_later_ones_find_it() -> None:
    contexts = PlanContexts()
    plan_id = uuid4()
    loader = Loader(_context())
    loader.release.clear()
    waiting = [asyncio.create_task(contexts.get(plan_id, loader)) for _ in range(5)]
    await asyncio.sleep(0)
    loader.release.set()
    found = await asyncio.gather(*waiting)
    assert loader.calls == 1
    assert all(item is found[0] for item in found)
    assert await contexts.get(plan_id, loader) is found[0]
    assert loader.calls == 1
    contexts.drop(plan_id)
    assert len(contexts) == 0
    await contexts.get(plan_id, loader)
    assert loader.calls == 2


async def test_a_gone_plan_or_a_failed_load_is_not_kept() -> None:
    contexts = PlanContexts()
    plan_id = uuid4()
    assert await contexts.get(plan_id, Loader(None)) is None
    assert len(contexts) == 0
    with pytest.raises(RuntimeError, match="database down"):
        await contexts.get(plan_id, Loader(RuntimeError("database down")))
    assert len(contexts) == 0
    context = _context()
    assert await contexts.get(plan_id, Loader(context)) is context


async def test_waiters_see_the_loads_failure() -> None:
    contexts = PlanContexts()
    plan_id = uuid4()
    loader = Loader(RuntimeError("database down"))
    loader.release.clear()
    first = asyncio.create_task(contexts.get(plan_id, loader))
    await asyncio.sleep(0)
    second = asyncio.create_task(contexts.get(plan_id, loader))
    await asyncio.sleep(0)
    loader.release.set()
    for task in (first, second):
        with pytest.raises(RuntimeError, match="database down"):
            await task
    assert loader.calls == 1


async def test_a_waiter_loads_itself_when_the_loading_step_is_cancelled() -> None:
    contexts = PlanContexts()
    plan_id = uuid4()
    stuck = Loader(_context("never"))
    stuck.release.clear()
    loading = asyncio.create_task(contexts.get(plan_id, stuck))
    await asyncio.sleep(0)
    fresh = _context("fresh")
    waiting = asyncio.create_task(contexts.get(plan_id, Loader(fresh)))
    await asyncio.sleep(0)
    loading.cancel()  # the step that was loading is cut short (its plan cancelled)
    with pytest.raises(asyncio.CancelledError):
        await loading
    assert await waiting is fresh


async def test_a_cancelled_waiter_leaves_the_load_to_the_others() -> None:
    contexts = PlanContexts()
    plan_id = uuid4()
    loader = Loader(_context())
    loader.release.clear()
    loading = asyncio.create_task(contexts.get(plan_id, loader))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(contexts.get(plan_id, loader))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    loader.release.set()
    assert (await loading) is not None
    assert loader.calls == 1


async def test_the_cache_keeps_the_most_recently_used_plans() -> None:
    contexts = PlanContexts(size=2)
    plans: list[UUID] = [uuid4() for _ in range(3)]
    loaders = [Loader(_context(str(index))) for index in range(3)]
    await contexts.get(plans[0], loaders[0])
    await contexts.get(plans[1], loaders[1])
    await contexts.get(plans[0], loaders[0])  # used again: the newest
    await contexts.get(plans[2], loaders[2])  # plans[1] goes
    assert len(contexts) == 2
    await contexts.get(plans[0], loaders[0])
    await contexts.get(plans[1], loaders[1])
    assert [loader.calls for loader in loaders] == [1, 2, 1]
