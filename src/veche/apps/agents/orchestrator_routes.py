"""`/api/v1/agents/orchestrator/config`, `/plans`, `/bus` and the agents' bus lifecycle
(`/agents/{id}/deregister`, `/agents/{id}/register`). Another user's plan or agent is a
404, never a 403."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from veche.apps.agents.bus_service import BusService
from veche.apps.agents.chat_schemas import TaskRead
from veche.apps.agents.models import Plan
from veche.apps.agents.planning import MAX_PLAN_TASKS
from veche.apps.agents.routes import agent_read
from veche.apps.agents.runtime import runtime_of
from veche.apps.agents.schemas import AgentLifecycle, AgentRead
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
NEWEST_FIRST = SortKey.parse("-created_at")
PlanStatus = Literal[
    "awaiting_approval",
    "running",
    "completed",
    "partial",
    "failed",
    "cancelled",
    "rejected",
    "invalid",
]
MAX_MONEY = 1_000_000.0


async def bus_service(session: DbSession, kernel: KernelDep, user: CurrentUser) -> BusService:
    return BusService(session, user.id, runtime_of(kernel))


Buses = Annotated[BusService, Depends(bus_service)]


# -- schemas ------------------------------------------------------------------------------


class ConfigBody(BaseModel):
    """The whole configuration: a field left out takes its default."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="The AI purpose whose model profile plans (as an agent's `model`)",
    )
    max_parallel_tasks: int = Field(3, ge=1, le=20, strict=True)
    approval_cost_threshold: float = Field(
        0.1, ge=0, le=MAX_MONEY, description="Plans estimated to cost more wait for approval"
    )
    approval_tasks_threshold: int = Field(
        5,
        ge=1,
        le=MAX_PLAN_TASKS,
        strict=True,
        description="Plans with more tasks wait for approval",
    )
    budget: float = Field(
        1.0, gt=0, le=MAX_MONEY, description="Plans estimated to cost more are refused"
    )


class ConfigRead(ConfigBody):
    updated_at: dt.datetime | None = Field(description="Null while every field is a default")


class PlanStepRead(BaseModel):
    id: str = Field(description="The plan's id of the step")
    description: str
    agent_id: UUID | None
    agent_name: str | None
    depends_on: list[str]
    assigned_by: Literal["model", "capabilities"]
    note: str | None
    task: TaskRead | None = Field(description="The step's task; null for an invalid plan")
    result: str | None


class PlanRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    project_id: UUID
    session_id: UUID
    message_id: UUID
    request: str
    status: PlanStatus
    waves: list[list[str]]
    estimate: dict[str, int | float]
    max_parallel: int
    cached_from: UUID | None
    error_code: str | None
    error_detail: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None


class PlanDetail(PlanRead):
    tasks: list[PlanStepRead]


class AgentLoadRead(BaseModel):
    agent_id: UUID
    name: str
    lifecycle: AgentLifecycle
    status: str
    concurrency_limit: int
    queued: int = Field(description="Tasks waiting: queued, or a plan's steps waiting for inputs")
    in_flight: int = Field(description="Running, or paused for an approval or a tool result")
    completed: int
    failed: int
    mean_wait_ms: float | None = Field(description="Queued -> started, over recent tasks")
    mean_duration_ms: float | None


class BusRead(BaseModel):
    queued: int
    in_flight: int
    agent_queue_limit: int
    user_queue_limit: int
    agents: list[AgentLoadRead]


def plan_detail(plan: Plan, steps: dict[str, Any]) -> PlanDetail:
    tasks = []
    for item in plan.graph:
        task = steps.get(item["id"])
        tasks.append(
            PlanStepRead(
                **item,
                task=None if task is None else TaskRead.model_validate(task),
                result=None if task is None else task.result,
            )
        )
    return PlanDetail(**PlanRead.model_validate(plan).model_dump(), tasks=tasks)


# -- the orchestrator's configuration -----------------------------------------------------


@router.get(
    "/orchestrator/config",
    response_model=ConfigRead,
    responses=problem_openapi(401),
    summary="Your orchestrator's configuration",
)
async def get_config(buses: Buses) -> ConfigRead:
    row = await buses.config()
    if row is None:
        return ConfigRead(updated_at=None)
    return ConfigRead.model_validate(row, from_attributes=True)


@router.put(
    "/orchestrator/config",
    response_model=ConfigRead,
    responses=problem_openapi(401, 413, 415),
    summary="Replace your orchestrator's configuration",
)
async def put_config(body: ConfigBody, buses: Buses) -> ConfigRead:
    row = await buses.set_config(body.model_dump())
    return ConfigRead.model_validate(row, from_attributes=True)


# -- plans --------------------------------------------------------------------------------


@router.get(
    "/plans",
    response_model=Page[PlanRead],
    responses=problem_openapi(400, 401),
    summary="Your plans, newest first",
)
async def list_plans(
    session: DbSession,
    kernel: KernelDep,
    buses: Buses,
    page: Paging,
    project_id: Annotated[UUID | None, Query()] = None,
    session_id: Annotated[UUID | None, Query()] = None,
) -> Page[PlanRead]:
    rows, next_cursor = await paginate(
        session,
        buses.plans.plans(project_id, session_id),
        Plan,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"agents.plans|project={project_id}|session={session_id}",
    )
    return Page(items=[PlanRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/plans/{plan_id}",
    response_model=PlanDetail,
    responses=problem_openapi(401, 404),
    summary="A plan with its task graph and each task's state",
)
async def get_plan(plan_id: UUID, buses: Buses) -> PlanDetail:
    plan, steps = await buses.plan(plan_id)
    return plan_detail(plan, steps)


@router.post(
    "/plans/{plan_id}/cancel",
    response_model=PlanDetail,
    responses=problem_openapi(401, 404, 409),
    summary="Cancel a plan that has not ended, with its unfinished tasks",
)
async def cancel_plan(plan_id: UUID, buses: Buses) -> PlanDetail:
    plan, steps = await buses.cancel(plan_id)
    return plan_detail(plan, steps)


# -- the bus ------------------------------------------------------------------------------


@router.get(
    "/bus",
    response_model=BusRead,
    responses=problem_openapi(401),
    summary="Your agents' queues and work in flight",
)
async def get_bus(buses: Buses) -> BusRead:
    loads = await buses.loads()
    settings = buses.runtime.settings
    return BusRead(
        queued=sum(load.queued for load in loads),
        in_flight=sum(load.in_flight for load in loads),
        agent_queue_limit=settings.agent_queue_limit,
        user_queue_limit=settings.user_queue_limit,
        agents=[
            AgentLoadRead(
                agent_id=load.agent.id,
                name=load.agent.name,
                lifecycle=load.agent.lifecycle,
                status=load.agent.status,
                concurrency_limit=int(load.agent.config.get("concurrency_limit", 3)),
                queued=load.queued,
                in_flight=load.in_flight,
                completed=load.completed,
                failed=load.failed,
                mean_wait_ms=load.mean_wait_ms,
                mean_duration_ms=load.mean_duration_ms,
            )
            for load in loads
        ],
    )


@router.post(
    "/agents/{agent_id}/deregister",
    response_model=AgentRead,
    responses=problem_openapi(401, 404),
    summary="Take an agent off the bus: it finishes its work and takes no new work",
)
async def deregister_agent(agent_id: UUID, buses: Buses) -> AgentRead:
    return agent_read(await buses.deregister(agent_id))


@router.post(
    "/agents/{agent_id}/register",
    response_model=AgentRead,
    responses=problem_openapi(401, 404),
    summary="Put a draining or deregistered agent back on the bus",
)
async def register_agent(agent_id: UUID, buses: Buses) -> AgentRead:
    return agent_read(await buses.register(agent_id))
