"""The agents app: the personal multi-agent AI platform.

Projects with private workspaces; agents with validated, versioned configurations, status,
health and metrics; the tools they run inside a workspace (`tools`), behind approvals;
their memory in the kernel vector store; worker spaces per (user, project); chat sessions
run by `runner.Runner` on the agent bus (`bus`): direct to one agent, or orchestrated as a
plan of several agents' tasks (`orchestrator`), with a resumable NDJSON event stream.
Every query goes through `repository` and is confined to the caller.
"""

from __future__ import annotations

from veche.apps.agents import runtime
from veche.apps.agents.approval_routes import router as approval_router
from veche.apps.agents.bus import TASK_QUEUED, wake_runner
from veche.apps.agents.chat_routes import router as chat_router
from veche.apps.agents.health import health_job, spaces_ready
from veche.apps.agents.memory_routes import router as memory_router
from veche.apps.agents.orchestrator_routes import router as orchestrator_router
from veche.apps.agents.routes import router
from veche.apps.agents.space_routes import router as space_router
from veche.apps.agents.stream import CHANNEL_PREFIX, SESSION_POLICY
from veche.contracts.agents import TaskQueued
from veche.kernel import AppModule, Manifest

module = AppModule(
    name="agents",
    manifest=Manifest.from_package("veche.apps.agents"),
    routers=[
        router,
        chat_router,
        approval_router,
        memory_router,
        space_router,
        orchestrator_router,
    ],
    channel_policies={CHANNEL_PREFIX: SESSION_POLICY},
    on_startup=[runtime.start],
    on_shutdown=[runtime.stop],
    jobs=[health_job],
    events={TASK_QUEUED: TaskQueued},
    consumers=[wake_runner],
    readiness={"spaces": spaces_ready},
)
