"""What the HTTP tests of the agents app share: the app with only the agents module
mounted, and two signed-in users."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import client_for
from tests.helpers import bearer, signed_up
from veche.apps.agents import module as agents_module
from veche.settings import Settings

PREFIX = "/api/v1/agents"


@dataclass
class Caller:
    headers: dict[str, str]
    user_id: str


@pytest.fixture
async def agents_app(app_factory: Callable[..., Any], settings: Settings) -> FastAPI:
    app: FastAPI = await app_factory(settings, [agents_module])
    return app


@pytest.fixture
async def http(agents_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(agents_app) as client:
        yield client


@pytest.fixture
async def ann(http: httpx.AsyncClient) -> Caller:
    tokens = await signed_up(http, "ann@example.com", "Ann")
    return Caller(bearer(tokens), tokens["user"]["id"])


@pytest.fixture
async def bob(http: httpx.AsyncClient) -> Caller:
    tokens = await signed_up(http, "bob@example.com", "Bob")
    return Caller(bearer(tokens), tokens["user"]["id"])


async def create_project(
    http: httpx.AsyncClient, caller: Caller, name: str = "Lighthouse", **fields: Any
) -> dict[str, Any]:
    response = await http.post(
        f"{PREFIX}/projects", json={"name": name, **fields}, headers=caller.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_agent(
    http: httpx.AsyncClient, caller: Caller, name: str = "coder", **fields: Any
) -> dict[str, Any]:
    response = await http.post(
        f"{PREFIX}/agents", json={"name": name, **fields}, headers=caller.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
