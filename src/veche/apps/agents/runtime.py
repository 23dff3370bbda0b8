"""The agents app's per-process runtime: what its startup hook builds and its routes,
jobs and readiness check reach through `runtime_of(kernel)`."""

from __future__ import annotations

from dataclasses import dataclass

from veche.apps.agents.stream import SessionEvents
from veche.apps.agents.workspace import WorkspaceRoot
from veche.kernel.runtime import Kernel
from veche.settings import AgentsSettings

APP = "agents"


@dataclass(slots=True)
class AgentsRuntime:
    kernel: Kernel
    settings: AgentsSettings
    workspaces: WorkspaceRoot
    events: SessionEvents


def runtime_of(kernel: Kernel) -> AgentsRuntime:
    runtime: AgentsRuntime = kernel.apps[APP]
    return runtime


async def start(kernel: Kernel) -> None:
    kernel.apps[APP] = AgentsRuntime(
        kernel=kernel,
        settings=kernel.settings.agents,
        workspaces=WorkspaceRoot(kernel.settings.data_dir),
        events=SessionEvents(kernel.realtime),
    )


async def stop(kernel: Kernel) -> None:
    runtime = kernel.apps.pop(APP, None)
    if runtime is not None:
        await runtime.events.aclose()
