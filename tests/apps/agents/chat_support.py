"""What the chat tests share: settings that point the LLM gateway at the fake OpenAI
server, a live server running the agents app, and a reader of the session event stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fakes.openai_server import MODEL, FakeOpenAI
from tests.helpers import bearer, signed_up
from tests.live import serve
from veche.apps.agents import module as agents_module
from veche.kernel import build_app
from veche.settings import AgentsSettings, AISettings, RealtimeSettings, Settings

PREFIX = "/api/v1/agents"
WAIT = 20.0


def chat_settings(
    settings_factory: Callable[..., Settings], fake: FakeOpenAI, **agents: Any
) -> Settings:
    return settings_factory(
        llm_provider="openai",
        llm_base_url=fake.base_url,
        llm_model=MODEL,
        llm_api_key="sk-test-key",
        # Retries of transient failures back off for tens of milliseconds, not seconds.
        agents=AgentsSettings(
            **{
                "runner_poll_seconds": 0.05,
                "retry_base_seconds": 0.05,
                "retry_max_seconds": 0.2,
                **agents,
            }
        ),
        realtime=RealtimeSettings(heartbeat_seconds=0.5, shutdown_timeout_seconds=3.0),
        # The bus's retries are what these tests exercise; the OpenAI client's own (with
        # its backoff of seconds) are the gateway's, tested there.
        ai=AISettings(max_retries=0),
    )


@dataclass
class User:
    tokens: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.tokens)

    @property
    def id(self) -> str:
        user_id: str = self.tokens["user"]["id"]
        return user_id


@dataclass
class LiveAgents:
    url: str
    settings: Settings

    def workspace(self, user: User, project_id: str) -> Path:
        """A project's workspace directory."""
        return self.settings.data_dir / "agents" / "workspaces" / user.id / project_id

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(WAIT))

    async def account(self, email: str) -> User:
        async with self.http() as http:
            name = email.split("@", maxsplit=1)[0]
            return User(await signed_up(http, email=email, display_name=name))


@pytest.fixture
def live_agents(
    clean: None, settings_factory: Callable[..., Settings], fake_openai: FakeOpenAI
) -> Iterator[LiveAgents]:
    settings = chat_settings(settings_factory, fake_openai)
    app = build_app(settings, [agents_module])
    with serve(app) as url:
        try:
            yield LiveAgents(url, settings)
        finally:
            app.state.kernel.realtime.request_shutdown()


@dataclass
class EventReader:
    """Reads a session's NDJSON event stream, line by line."""

    response: httpx.Response
    seen: list[dict[str, Any]]
    _lines: AsyncIterator[str] | None = None

    async def _next(self) -> dict[str, Any] | None:
        if self._lines is None:
            self._lines = self.response.aiter_lines()
        async for line in self._lines:
            if line:
                event: dict[str, Any] = orjson.loads(line)
                self.seen.append(event)
                return event
        return None

    async def next_of(self, *kinds: str, within: float = WAIT) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                event = await self._next()
                assert event is not None, f"the stream ended; seen {self.types()}"
                if event["event_type"] in kinds:
                    return event

        return await asyncio.wait_for(find(), within)

    def types(self) -> list[str]:
        return [event["event_type"] for event in self.seen if event["event_type"] != "HEARTBEAT"]


@contextlib.asynccontextmanager
async def session_events(
    http: httpx.AsyncClient, user: User, project_id: str, session_id: str, **params: Any
) -> AsyncIterator[EventReader]:
    url = f"{PREFIX}/projects/{project_id}/sessions/{session_id}/events"
    async with http.stream("GET", url, headers=user.headers, params=params) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        yield EventReader(response, [])


async def create(
    http: httpx.AsyncClient, user: User, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await http.post(f"{PREFIX}{path}", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def wait_for_task(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    project_id: str,
    session_id: str,
    task_id: str,
    *states: str,
) -> dict[str, Any]:
    """Poll the session's tasks until `task_id` reaches one of `states`."""
    wanted = states or ("completed", "failed", "cancelled")
    url = f"{PREFIX}/projects/{project_id}/sessions/{session_id}/tasks"

    async def poll() -> dict[str, Any]:
        while True:
            response = await http.get(url, headers=headers, params={"limit": 100})
            assert response.status_code == 200, response.text
            for task in response.json()["items"]:
                if task["id"] == task_id and task["status"] in wanted:
                    found: dict[str, Any] = task
                    return found
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), WAIT)
