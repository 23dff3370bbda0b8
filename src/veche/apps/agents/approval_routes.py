"""`/api/v1/agents/approvals*`: the caller's approval requests, standing rules, policy and
metrics. Thin handlers over `ApprovalService`; another user's request, rule, session or
project answers 404, never 403. The request and response shapes live here with the
routes that use them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from fastapi import Depends, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from veche.apps.agents.approval_policy import RULE_TOOLS, normalize_pattern
from veche.apps.agents.approvals import (
    MAX_BATCH_IDS,
    MAX_REASON,
    ApprovalMetrics,
    ApprovalService,
    ApprovalStatus,
    PolicyMode,
    RuleScope,
    Threshold,
)
from veche.apps.agents.models import Approval, ApprovalPolicy, ApprovalRule
from veche.apps.agents.runtime import runtime_of
from veche.apps.agents.schemas import ToolName
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

router = api_router(tags=["agents approvals"], dependencies=[Depends(rate_limit("default"))])

Paging = Annotated[PageParams, Depends(page_params)]
NEWEST_FIRST = SortKey.parse("-created_at")
Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON, pattern=r"\S")]
RuleTool = Literal["read_file", "write_file", "list_directory"]
assert set(get_args(RuleTool)) == set(RULE_TOOLS)


# -- shapes -------------------------------------------------------------------------------


class ApprovalRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    project_id: UUID
    session_id: UUID
    task_id: UUID
    agent_id: UUID | None
    call_id: str
    tool: str
    arguments: dict[str, Any]
    risk: str = Field(description="LOW, MEDIUM, HIGH or UNKNOWN (treated as HIGH)")
    risk_reasons: list[str]
    status: ApprovalStatus
    decided_by: str | None = Field(description="user, batch, rule, policy, timeout or system")
    reason: str | None
    attempt: int
    created_at: dt.datetime
    expires_at: dt.datetime
    warned_at: dt.datetime | None
    resolved_at: dt.datetime | None


class ConfirmBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = None


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class RuleCreate(BaseModel):
    """A standing approval: `tool` on paths matching `path_pattern` (an fnmatch glob
    relative to the workspace), in one session or remembered for the project."""

    model_config = ConfigDict(extra="forbid")

    tool: RuleTool
    path_pattern: str = Field(min_length=1, max_length=200)
    scope: RuleScope
    session_id: UUID | None = None
    project_id: UUID | None = None

    @field_validator("path_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        return normalize_pattern(value)

    @model_validator(mode="after")
    def _target(self) -> RuleCreate:
        if self.scope == "session" and self.session_id is None:
            raise ValueError("a session rule needs session_id")
        if self.scope == "project" and self.session_id is None and self.project_id is None:
            raise ValueError("a project rule needs project_id or session_id")
        return self


class RuleRead(BaseModel):
    id: UUID
    project_id: UUID
    session_id: UUID | None
    scope: RuleScope
    tool: str
    path_pattern: str
    created_at: dt.datetime


class BatchBody(BaseModel):
    """Confirm or reject many requests: by `ids`, or every pending one of a kind (`tool`,
    `session_id`, `project_id`, at least one); and/or grant a standing `rule`, which also
    approves the pending requests it covers."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["confirm", "reject"] | None = None
    ids: Annotated[list[UUID], Field(min_length=1, max_length=MAX_BATCH_IDS)] | None = None
    tool: ToolName | None = None
    session_id: UUID | None = None
    project_id: UUID | None = None
    reason: Reason | None = None
    rule: RuleCreate | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BatchBody:
        selector = any(value is not None for value in (self.tool, self.session_id, self.project_id))
        if self.ids is not None and selector:
            raise ValueError("give ids or a kind (tool, session_id, project_id), not both")
        if self.action is None:
            if self.ids is not None or selector:
                raise ValueError("ids or a kind need an action")
            if self.rule is None:
                raise ValueError("give an action with ids or a kind, or a rule")
        elif self.ids is None and not selector:
            raise ValueError("an action needs ids or a kind (tool, session_id, project_id)")
        if self.action == "reject" and self.reason is None:
            raise ValueError("a rejection needs a reason")
        return self


class SkippedRead(BaseModel):
    id: UUID
    status: str = Field(description="why it was left alone: the status it already had")


class BatchRead(BaseModel):
    resolved: list[ApprovalRead]
    skipped: list[SkippedRead]
    rule: RuleRead | None


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: PolicyMode = "risky"
    threshold: Threshold = "MEDIUM"
    auto_approve_low: StrictBool = True


class PolicyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    mode: PolicyMode
    threshold: Threshold
    auto_approve_low: bool
    updated_at: dt.datetime


class MetricsRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    total: int
    auto_approved: int = Field(description="approved at once by the policy or a rule")
    requested: int = Field(description="asked the user")
    pending: int
    approved: int
    rejected: int
    expired: int
    cancelled: int
    approval_rate: float | None = Field(description="approved / (approved+rejected+expired)")
    rejection_rate: float | None
    timeout_rate: float | None
    response_time_avg_seconds: float | None
    response_time_median_seconds: float | None


def rule_read(rule: ApprovalRule) -> RuleRead:
    return RuleRead(
        id=rule.id,
        project_id=rule.project_id,
        session_id=rule.session_id,
        scope="project" if rule.session_id is None else "session",
        tool=rule.tool,
        path_pattern=rule.path_pattern,
        created_at=rule.created_at,
    )


# -- dependency ---------------------------------------------------------------------------


async def approval_service(
    session: DbSession, kernel: KernelDep, user: CurrentUser
) -> ApprovalService:
    runtime = runtime_of(kernel)
    return ApprovalService(session, user.id, runtime.settings, runtime.events, runtime.wake)


Approvals = Annotated[ApprovalService, Depends(approval_service)]


# -- fixed paths first: `/approvals/{approval_id}` would swallow them ----------------------


@router.get(
    "/approvals/policy",
    response_model=PolicyRead,
    responses=problem_openapi(401),
    summary="Your approval policy (the defaults until you set one)",
)
async def get_policy(approvals: Approvals) -> ApprovalPolicy:
    return await approvals.policy()


@router.put(
    "/approvals/policy",
    response_model=PolicyRead,
    responses=problem_openapi(401, 413, 415),
    summary="Set your approval policy; fields left out take their defaults",
)
async def put_policy(body: PolicyBody, approvals: Approvals) -> ApprovalPolicy:
    return await approvals.set_policy(
        mode=body.mode, threshold=body.threshold, auto_approve_low=body.auto_approve_low
    )


@router.get(
    "/approvals/metrics",
    response_model=MetricsRead,
    responses=problem_openapi(401),
    summary="Approval, rejection and timeout rates and response times over your history",
)
async def get_metrics(approvals: Approvals) -> ApprovalMetrics:
    return await approvals.metrics()


@router.get(
    "/approvals/rules",
    response_model=Page[RuleRead],
    responses=problem_openapi(400, 401, 404),
    summary="Your standing approval rules, newest first",
)
async def list_rules(
    session: DbSession,
    kernel: KernelDep,
    approvals: Approvals,
    page: Paging,
    project_id: UUID | None = None,
    session_id: UUID | None = None,
) -> Page[RuleRead]:
    await approvals.check_rule_filters(project_id, session_id)
    rows, next_cursor = await paginate(
        session,
        approvals.queries.rules(project_id=project_id, session_id=session_id),
        ApprovalRule,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"agents.approval_rules|project={project_id}|session={session_id}",
    )
    return Page(items=[rule_read(row) for row in rows], next_cursor=next_cursor)


@router.post(
    "/approvals/rules",
    status_code=status.HTTP_201_CREATED,
    response_model=RuleRead,
    responses=problem_openapi(401, 404, 409, 413, 415),
    summary="Grant a standing approval rule (pending requests are left alone; see batch)",
)
async def create_rule(body: RuleCreate, approvals: Approvals) -> RuleRead:
    return rule_read(await approvals.create_rule(**body.model_dump()))


@router.delete(
    "/approvals/rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 404),
    summary="Withdraw a standing approval rule",
)
async def delete_rule(rule_id: UUID, approvals: Approvals) -> Response:
    await approvals.delete_rule(rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/approvals/batch",
    response_model=BatchRead,
    responses=problem_openapi(401, 404, 409, 413, 415),
    summary="Confirm or reject many requests, and/or grant a standing rule",
)
async def batch(body: BatchBody, approvals: Approvals) -> BatchRead:
    result = await approvals.batch(
        action=body.action,
        ids=body.ids,
        tool=body.tool,
        project_id=body.project_id,
        session_id=body.session_id,
        reason=body.reason,
        rule=None if body.rule is None else body.rule.model_dump(),
    )
    return BatchRead(
        resolved=[ApprovalRead.model_validate(row) for row in result.resolved],
        skipped=[SkippedRead(id=item.approval_id, status=item.status) for item in result.skipped],
        rule=None if result.rule is None else rule_read(result.rule),
    )


# -- requests -----------------------------------------------------------------------------


@router.get(
    "/approvals",
    response_model=Page[ApprovalRead],
    responses=problem_openapi(400, 401),
    summary="Your approval requests and their history, newest first",
)
async def list_approvals(
    session: DbSession,
    kernel: KernelDep,
    approvals: Approvals,
    page: Paging,
    status_filter: Annotated[ApprovalStatus | None, Query(alias="status")] = None,
    session_id: UUID | None = None,
    task_id: UUID | None = None,
) -> Page[ApprovalRead]:
    statement = approvals.queries.approvals(
        status=status_filter, session_id=session_id, task_id=task_id
    )
    rows, next_cursor = await paginate(
        session,
        statement,
        Approval,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"agents.approvals|status={status_filter}|session={session_id}|task={task_id}",
    )
    return Page(items=[ApprovalRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/approvals/{approval_id}",
    response_model=ApprovalRead,
    responses=problem_openapi(401, 404),
    summary="One approval request",
)
async def get_approval(approval_id: UUID, approvals: Approvals) -> Approval:
    return await approvals.get(approval_id)


@router.post(
    "/approvals/{approval_id}/confirm",
    response_model=ApprovalRead,
    responses=problem_openapi(401, 404, 409, 413, 415),
    summary="Let the call run; its task goes on",
)
async def confirm_approval(
    approval_id: UUID, approvals: Approvals, body: ConfirmBody | None = None
) -> Approval:
    return await approvals.confirm(approval_id, None if body is None else body.reason)


@router.post(
    "/approvals/{approval_id}/reject",
    response_model=ApprovalRead,
    responses=problem_openapi(401, 404, 409, 413, 415),
    summary="Refuse the call, saying why; the agent may revise it",
)
async def reject_approval(approval_id: UUID, body: RejectBody, approvals: Approvals) -> Approval:
    return await approvals.reject(approval_id, body.reason)
