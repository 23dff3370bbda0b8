"""What every step of a plan reads alike, read once per plan and process.

A plan's steps share the user's message, the session's history before it and the plan's
graph: none of them changes once the plan runs (the steps' answers come after the
message, and a plan's graph is fixed when it is stored). The first step of a plan to
start in a process reads them; the steps starting beside it wait for that read instead of
making their own, and later steps find it here. Each step still reads its own inputs (the
results of the steps it depends on). The cache is bounded and drops a plan when it ends
here; a plan that ends in another process ages out.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from veche.apps.agents.models import ChatMessage

# Plans whose context a process keeps: more than run at once in any one process.
CACHED_PLANS = 256


@dataclass(frozen=True, slots=True)
class PlanContext:
    """The user's message, the session's history before it (oldest first) and the plan's
    graph. Read-only: the rows are detached and shared by the plan's steps."""

    message: ChatMessage
    history: tuple[ChatMessage, ...]
    graph: tuple[dict[str, Any], ...]


class PlanContexts:
    """Plan id -> its context, loaded once (concurrent askers share the one load)."""

    def __init__(self, size: int = CACHED_PLANS) -> None:
        self._size = size
        self._entries: OrderedDict[UUID, asyncio.Future[PlanContext | None]] = OrderedDict()

    async def get(
        self, plan_id: UUID, load: Callable[[], Awaitable[PlanContext | None]]
    ) -> PlanContext | None:
        """The plan's context, from `load` if nobody here has it yet; None (not kept)
        when `load` finds the plan or its message gone."""
        while (entry := self._entries.get(plan_id)) is not None:
            self._entries.move_to_end(plan_id)
            try:
                # Shielded: a step cancelled while it waits must not cancel the load.
                return await asyncio.shield(entry)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not entry.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The step that was loading it was cut short: load it here.
        entry = asyncio.get_running_loop().create_future()
        self._entries[plan_id] = entry
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        try:
            context = await load()
        except BaseException as error:
            self._forget(plan_id, entry)
            if isinstance(error, Exception):
                entry.set_exception(error)
                entry.exception()  # retrieved: nobody may be waiting
            else:
                entry.cancel()
            raise
        if context is None:
            self._forget(plan_id, entry)
        entry.set_result(context)
        return context

    def drop(self, plan_id: UUID) -> None:
        """Forget a plan that ended."""
        self._entries.pop(plan_id, None)

    def __len__(self) -> int:
        return len(self._entries)

    def _forget(self, plan_id: UUID, entry: asyncio.Future[PlanContext | None]) -> None:
        if self._entries.get(plan_id) is entry:
            del self._entries[plan_id]
