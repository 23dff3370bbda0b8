"""`/api/v1/agents/*`: the caller's projects and agents. Thin handlers: parse, call a
service, shape the response. Another user's objects answer 404, never 403."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Path, Response, status

from veche.apps.agents.models import Agent, AgentVersion, Project
from veche.apps.agents.runtime import runtime_of
from veche.apps.agents.schemas import (
    AgentConfig,
    AgentPatch,
    AgentRead,
    AgentVersionRead,
    ProjectCreate,
    ProjectRead,
    ProjectUpdate,
)
from veche.apps.agents.service import AgentService, ProjectService, version_key
from veche.apps.agents.workspace import WorkspaceRoot
from veche.kernel import (
    CursorCodec,
    DbSession,
    KernelDep,
    Page,
    PageParams,
    SortKey,
    api_router,
    page_params,
    paginate,
    problem_openapi,
    rate_limit,
)
from veche.kernel.identity import CurrentUser

router = api_router(tags=["agents"], dependencies=[Depends(rate_limit("default"))])

Paging = Annotated[PageParams, Depends(page_params)]
VersionNumber = Annotated[int, Path(ge=1, le=1_000_000)]
NEWEST_FIRST = SortKey.parse("-created_at")


async def project_service(
    session: DbSession, kernel: KernelDep, user: CurrentUser
) -> ProjectService:
    runtime = runtime_of(kernel)
    return ProjectService(
        session,
        user.id,
        WorkspaceRoot(kernel.settings.data_dir),
        runtime.memory,
        spaces=runtime.spaces,
    )


async def agent_service(session: DbSession, kernel: KernelDep, user: CurrentUser) -> AgentService:
    runtime = runtime_of(kernel)
    return AgentService(session, user.id, runtime.memory, spaces=runtime.spaces)


Projects = Annotated[ProjectService, Depends(project_service)]
Agents = Annotated[AgentService, Depends(agent_service)]


def agent_read(agent: Agent) -> AgentRead:
    return AgentRead.model_validate(
        {
            **agent.config,
            "id": agent.id,
            "key": version_key(agent.user_id, agent.name, agent.version),
            "name": agent.name,
            "status": agent.status,
            "lifecycle": agent.lifecycle,
            "version": agent.version,
            "created_at": agent.created_at,
            "updated_at": agent.updated_at,
        }
    )


def version_read(version: AgentVersion) -> AgentVersionRead:
    return AgentVersionRead.model_validate(
        {
            **version.config,
            "id": version.id,
            "key": version_key(version.user_id, version.name, version.number),
            "agent_id": version.agent_id,
            "version": version.number,
            "name": version.name,
            "created_at": version.created_at,
        }
    )


# -- projects ---------------------------------------------------------------------------


@router.post(
    "/projects",
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectRead,
    responses=problem_openapi(401, 409, 413, 415),
    summary="Create a project, with its workspace directory",
)
async def create_project(body: ProjectCreate, projects: Projects) -> ProjectRead:
    return ProjectRead.model_validate(await projects.create(body))


@router.get(
    "/projects",
    response_model=Page[ProjectRead],
    responses=problem_openapi(400, 401),
    summary="Your projects, newest first",
)
async def list_projects(
    session: DbSession, kernel: KernelDep, projects: Projects, page: Paging
) -> Page[ProjectRead]:
    rows, next_cursor = await paginate(
        session,
        projects.scoped.select(Project),
        Project,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope="agents.projects",
    )
    return Page(items=[ProjectRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/projects/{project_id}",
    response_model=ProjectRead,
    responses=problem_openapi(401, 404),
    summary="One of your projects",
)
async def get_project(project_id: UUID, projects: Projects) -> ProjectRead:
    return ProjectRead.model_validate(await projects.get(project_id))


@router.patch(
    "/projects/{project_id}",
    response_model=ProjectRead,
    responses=problem_openapi(401, 404, 409, 413, 415),
    summary="Rename a project or change its description",
)
async def update_project(project_id: UUID, body: ProjectUpdate, projects: Projects) -> ProjectRead:
    return ProjectRead.model_validate(await projects.update(project_id, body))


@router.delete(
    "/projects/{project_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 404),
    summary="Delete a project and its workspace directory",
)
async def delete_project(project_id: UUID, projects: Projects) -> Response:
    await projects.delete(project_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- agents -----------------------------------------------------------------------------


@router.post(
    "/agents",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentRead,
    responses=problem_openapi(401, 409, 413, 415),
    summary="Create an agent; its configuration becomes version 1",
)
async def create_agent(body: AgentConfig, agents: Agents) -> AgentRead:
    return agent_read(await agents.create(body))


@router.get(
    "/agents",
    response_model=Page[AgentRead],
    responses=problem_openapi(400, 401),
    summary="Your agents with their current configuration, newest first",
)
async def list_agents(
    session: DbSession, kernel: KernelDep, agents: Agents, page: Paging
) -> Page[AgentRead]:
    rows, next_cursor = await paginate(
        session,
        agents.scoped.select(Agent),
        Agent,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope="agents.agents",
    )
    return Page(items=[agent_read(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/agents/{agent_id}",
    response_model=AgentRead,
    responses=problem_openapi(401, 404),
    summary="One of your agents with its current configuration",
)
async def get_agent(agent_id: UUID, agents: Agents) -> AgentRead:
    return agent_read(await agents.get(agent_id))


@router.put(
    "/agents/{agent_id}",
    response_model=AgentRead,
    responses=problem_openapi(401, 404, 409, 413, 415),
    summary="Replace an agent's configuration; a new version, fields left out at defaults",
)
async def replace_agent(agent_id: UUID, body: AgentConfig, agents: Agents) -> AgentRead:
    return agent_read(await agents.replace(agent_id, body))


@router.patch(
    "/agents/{agent_id}",
    response_model=AgentRead,
    responses=problem_openapi(401, 404, 409, 413, 415),
    summary="Change some of an agent's configuration; a new version",
)
async def patch_agent(agent_id: UUID, body: AgentPatch, agents: Agents) -> AgentRead:
    return agent_read(await agents.patch(agent_id, body))


@router.delete(
    "/agents/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 404),
    summary="Delete an agent and all its versions",
)
async def delete_agent(agent_id: UUID, agents: Agents) -> Response:
    await agents.delete(agent_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/agents/{agent_id}/versions",
    response_model=Page[AgentVersionRead],
    responses=problem_openapi(400, 401, 404),
    summary="An agent's configuration versions, newest first",
)
async def list_agent_versions(
    agent_id: UUID, session: DbSession, kernel: KernelDep, agents: Agents, page: Paging
) -> Page[AgentVersionRead]:
    agent = await agents.get(agent_id)
    rows, next_cursor = await paginate(
        session,
        agents.scoped.versions(agent.id),
        AgentVersion,
        sort=SortKey.parse("-number"),
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"agents.agent_versions|agent={agent.id}",
    )
    return Page(items=[version_read(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/agents/{agent_id}/versions/{version}",
    response_model=AgentVersionRead,
    responses=problem_openapi(401, 404),
    summary="One configuration version of an agent",
)
async def get_agent_version(
    agent_id: UUID, version: VersionNumber, agents: Agents
) -> AgentVersionRead:
    return version_read(await agents.version(agent_id, version))
