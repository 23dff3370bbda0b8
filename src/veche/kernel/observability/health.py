"""`/health` says the process is alive; `/ready` says every dependency it needs answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from veche.kernel.errors import problem_openapi, problem_response
from veche.kernel.observability import metrics

ReadinessCheck = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_SECONDS = 3.0

router = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"]


class CheckResult(BaseModel):
    name: str
    ok: bool
    error: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: list[CheckResult]


async def run_check(name: str, check: ReadinessCheck) -> CheckResult:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await check()
    except TimeoutError:
        return CheckResult(name=name, ok=False, error=f"no answer in {CHECK_TIMEOUT_SECONDS} s")
    except Exception as exc:
        # The kind of failure only: messages may carry hosts or credentials.
        return CheckResult(name=name, ok=False, error=type(exc).__name__)
    return CheckResult(name=name, ok=True)


@router.get("/health", response_model=Health, summary="Liveness")
async def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: the database and every configured backend answer",
    responses=problem_openapi(503),
)
async def ready(request: Request) -> Response | Readiness:
    checks: dict[str, ReadinessCheck] = request.app.state.readiness_checks
    results = await asyncio.gather(*(run_check(name, check) for name, check in checks.items()))
    if all(result.ok for result in results):
        return Readiness(status="ready", checks=list(results))
    failing = ", ".join(result.name for result in results if not result.ok)
    return problem_response(
        503,
        "not_ready",
        "Not ready",
        f"Unreachable: {failing}",
        request=request,
        extra={"checks": [result.model_dump() for result in results]},
    )


@metrics_router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    metrics.update_pool(request.app.state.kernel.db.pool_status())
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
