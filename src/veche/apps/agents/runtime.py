"""The agents app's per-process runtime: what its startup hook builds and its routes,
jobs and readiness check reach through `runtime_of(kernel)`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from veche.apps.agents.memory import AgentMemory
from veche.apps.agents.plan_context import PlanContexts
from veche.apps.agents.spaces import WorkerSpaceManager
from veche.apps.agents.stream import SessionEvents
from veche.apps.agents.workspace import WorkspaceRoot
from veche.kernel.runtime import Kernel
from veche.settings import AgentsSettings

if TYPE_CHECKING:
    from veche.apps.agents.runner import Runner

APP = "agents"


@dataclass(slots=True)
class AgentsRuntime:
    kernel: Kernel
    settings: AgentsSettings
    workspaces: WorkspaceRoot
    events: SessionEvents
    memory: AgentMemory
    spaces: WorkerSpaceManager
    # Called with a task's id when it may go on (an approval resolved, a message queued).
    wakers: list[Callable[[UUID], None]] = field(default_factory=list)
    # When this process's `agents.health` job last did its work (monotonic seconds).
    health_checked_at: float | None = None
    # Runs chat tasks; present in the `worker` and `all` roles.
    runner: Runner | None = None
    # What the steps of a plan read alike, read once per plan here.
    plan_contexts: PlanContexts = field(default_factory=PlanContexts)

    def wake(self, task_id: UUID) -> None:
        """The runner's fast path to a task that may go on; call it after the commit that
        made it so. The runner registers itself in `wakers`; it also polls, so a wake lost
        (or sent to another process) only delays the task."""
        for waker in list(self.wakers):
            waker(task_id)

    def stop_tasks(self, task_ids: list[UUID]) -> None:
        """Cut short this process's runs of tasks just cancelled in the database."""
        if self.runner is not None:
            self.runner.stop_tasks(task_ids)


def runtime_of(kernel: Kernel) -> AgentsRuntime:
    runtime: AgentsRuntime = kernel.apps[APP]
    return runtime


async def start(kernel: Kernel) -> None:
    kernel.apps[APP] = AgentsRuntime(
        kernel=kernel,
        settings=kernel.settings.agents,
        workspaces=WorkspaceRoot(kernel.settings.data_dir),
        events=SessionEvents(kernel.realtime),
        memory=AgentMemory(kernel.ai),
        spaces=WorkerSpaceManager(kernel.settings.agents),
    )
    if kernel.settings.role in ("worker", "all"):
        from veche.apps.agents.runner import Runner  # imports the app's services
        from veche.apps.agents.tools import detect_isolation_mode

        runtime = kernel.apps[APP]
        isolation = await asyncio.to_thread(detect_isolation_mode)
        runtime.runner = Runner(runtime, isolation)
        runtime.wakers.append(runtime.runner.wake)
        runtime.runner.start()


async def stop(kernel: Kernel) -> None:
    runtime = kernel.apps.pop(APP, None)
    if runtime is not None:
        if runtime.runner is not None:
            await runtime.runner.stop()
        await runtime.memory.settle()
        await runtime.spaces.aclose()
        await runtime.events.aclose()
