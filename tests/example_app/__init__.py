"""A tiny app that exists only in the tests: it exercises the module contract (routers,
manifest, hooks, readiness) and gives the error tests a route that fails."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy.exc
from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from veche.kernel import AppModule, Manifest, api_router, problem_openapi
from veche.kernel.identity import CurrentUser

router = api_router(tags=["example"])
started: list[str] = []


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(min_length=1, max_length=200)]
    count: Annotated[int, Field(ge=0, le=1000)] = 1

    @field_validator("count", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: object) -> object:
        # The fuzzer rightly calls `false` accepted as 0 a schema violation.
        if isinstance(value, bool):
            raise ValueError("must be an integer, not a boolean")
        return value


class Pong(BaseModel):
    app: str


class Who(BaseModel):
    user_id: str
    role: str


@router.get("/ping", response_model=Pong)
async def ping() -> Pong:
    return Pong(app="example")


@router.post("/echo", response_model=Echo, responses=problem_openapi(415))
async def echo(body: Echo, repeat: Annotated[int, Query(ge=1, le=3)] = 1) -> Echo:
    return Echo(text=body.text * repeat, count=body.count)


@router.get("/whoami", response_model=Who, responses=problem_openapi(401))
async def whoami(user: CurrentUser) -> Who:
    return Who(user_id=str(user.id), role=user.role)


@router.get("/boom", include_in_schema=False)
async def boom() -> None:
    raise RuntimeError("database password is hunter2")  # must never reach a client


@router.get("/busy", include_in_schema=False)
async def busy() -> None:
    # What SQLAlchemy's pool raises when no connection frees up within its timeout.
    raise sqlalchemy.exc.TimeoutError(
        "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00"
    )


async def _on_startup(_kernel: object) -> None:
    started.append("up")


async def _always_ready(_kernel: object) -> None:
    return None


module = AppModule(
    name="example",
    manifest=Manifest.from_package("tests.example_app"),
    routers=[router],
    on_startup=[_on_startup],
    readiness={"self": _always_ready},
)
