"""`/api/v1/agents/*` for the runtime: an agent's metrics and status, the caller's worker
spaces in this process, and an admin view of the space manager. Another user's project or
agent answers 404, never 403."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Response, status
from pydantic import BaseModel, Field

from veche.apps.agents.errors import SpaceNotFound
from veche.apps.agents.health import agent_metrics
from veche.apps.agents.runtime import runtime_of
from veche.apps.agents.schemas import AgentStatus
from veche.apps.agents.service import AgentService, ProjectService
from veche.apps.agents.spaces import RunCounters, WorkerSpace, WorkerSpaceManager
from veche.apps.agents.workspace import WorkspaceRoot
from veche.kernel import DbSession, KernelDep, api_router, problem_openapi, rate_limit
from veche.kernel.identity import AdminUser, CurrentUser

router = api_router(tags=["agents"], dependencies=[Depends(rate_limit("default"))])


async def project_service(
    session: DbSession, kernel: KernelDep, user: CurrentUser
) -> ProjectService:
    return ProjectService(session, user.id, WorkspaceRoot(kernel.settings.data_dir))


async def agent_service(session: DbSession, user: CurrentUser) -> AgentService:
    return AgentService(session, user.id)


async def space_manager(kernel: KernelDep) -> WorkerSpaceManager:
    return runtime_of(kernel).spaces


Projects = Annotated[ProjectService, Depends(project_service)]
Agents = Annotated[AgentService, Depends(agent_service)]
Spaces = Annotated[WorkerSpaceManager, Depends(space_manager)]


class RunFigures(BaseModel):
    """Runs counted by this process since its space was made or last reset."""

    started: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    success_rate: float | None = Field(description="succeeded / (succeeded + failed)")
    average_duration_ms: float | None


class CacheFigures(BaseModel):
    agents: int = Field(description="agent configurations cached now")
    hits: int
    misses: int
    invalidations: int


class SpaceHealth(BaseModel):
    healthy: bool
    problems: list[str]


class SpaceRead(BaseModel):
    project_id: UUID
    status: str = Field(description="active (a task running), idle, closed or error")
    uptime_seconds: float
    idle_seconds: float
    resets: int
    cache: CacheFigures
    tasks: RunFigures
    agents: dict[UUID, RunFigures]
    health: SpaceHealth


class SpaceList(BaseModel):
    items: list[SpaceRead]


class AgentStatusRead(BaseModel):
    status: AgentStatus
    reason: str | None = Field(description="why it is in error (a stable code)")
    since: dt.datetime | None


class TaskFigures(BaseModel):
    """From the agent's task rows, whichever process ran them."""

    total: int
    completed: int
    failed: int
    cancelled: int
    in_progress: int = Field(description="queued, running or waiting")
    success_rate: float | None = Field(description="completed / (completed + failed)")
    average_duration_ms: float | None
    p95_duration_ms: int | None


class AgentMetrics(BaseModel):
    agent_id: UUID
    status: AgentStatusRead
    tasks: TaskFigures
    live: RunFigures | None = Field(
        description="this process's counters for the agent, if one of its spaces ran it"
    )


class SpaceManagerStats(BaseModel):
    spaces: int
    users: int
    by_status: dict[str, int]
    per_user: dict[UUID, int]
    running: int
    created: int
    released: int


async def space_read(space: WorkerSpace) -> SpaceRead:
    health = await space.health()
    return SpaceRead.model_validate(
        {**space.stats(), "health": {"healthy": health["healthy"], "problems": health["problems"]}}
    )


def live_figures(counters: RunCounters | None) -> RunFigures | None:
    return None if counters is None else RunFigures.model_validate(counters.as_dict())


@router.get(
    "/agents/{agent_id}/metrics",
    response_model=AgentMetrics,
    responses=problem_openapi(401, 404),
    summary="An agent's status and task figures",
)
async def get_agent_metrics(
    agent_id: UUID, session: DbSession, user: CurrentUser, agents: Agents, spaces: Spaces
) -> AgentMetrics:
    agent = await agents.get(agent_id)
    figures = await agent_metrics(session, user.id, agent.id)
    return AgentMetrics(
        agent_id=agent.id,
        status=AgentStatusRead.model_validate(
            {
                "status": agent.status,
                "reason": agent.status_reason,
                "since": agent.status_changed_at,
            }
        ),
        tasks=TaskFigures.model_validate(figures),
        live=live_figures(spaces.agent_counters(user.id, agent.id)),
    )


@router.get(
    "/spaces",
    response_model=SpaceList,
    responses=problem_openapi(401),
    summary="Your worker spaces in the process that answers",
)
async def list_spaces(user: CurrentUser, spaces: Spaces) -> SpaceList:
    found = sorted(spaces.spaces_of(user.id), key=lambda space: space.created_at)
    return SpaceList(items=[await space_read(space) for space in found])


@router.get(
    "/projects/{project_id}/space",
    response_model=SpaceRead,
    responses=problem_openapi(401, 404),
    summary="A project's worker space in the process that answers",
)
async def get_space(
    project_id: UUID, user: CurrentUser, projects: Projects, spaces: Spaces
) -> SpaceRead:
    project = await projects.get(project_id)
    space = spaces.get(user.id, project.id)
    if space is None:
        raise SpaceNotFound(
            f"This process has no worker space for project {project.id} yet; "
            "one is made when a task first runs there"
        )
    return await space_read(space)


@router.post(
    "/projects/{project_id}/space/reset",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 404, 409),
    summary="Drop a worker space's cached configurations and counters",
)
async def reset_space(
    project_id: UUID, user: CurrentUser, projects: Projects, spaces: Spaces
) -> Response:
    project = await projects.get(project_id)
    space = spaces.get(user.id, project.id)
    if space is not None:
        await space.reset()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/admin/spaces",
    response_model=SpaceManagerStats,
    responses=problem_openapi(401, 403),
    summary="The worker space manager's figures in the process that answers (admins)",
)
async def space_manager_stats(_admin: AdminUser, spaces: Spaces) -> SpaceManagerStats:
    return SpaceManagerStats.model_validate(spaces.stats())
