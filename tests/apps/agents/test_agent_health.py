"""Agent status, recovery and metrics on real rows, and the worker space endpoints:
transitions as tasks start and end, the health job, figures from task rows, and
isolation, authentication and validation on every new endpoint."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from tests.apps.agents.http_support import (
    PREFIX,
    Caller,
    ann,
    bob,
    create_agent,
    create_project,
    http,
)
from tests.conftest import PASSWORD
from tests.helpers import assert_problem, bearer, login
from veche.apps.agents import module as agents_module
from veche.apps.agents.health import (
    JOB_TICK,
    check_agents,
    run_health_job,
    task_finished,
    task_started,
)
from veche.apps.agents.models import Agent, ChatSession, Task
from veche.apps.agents.repository.orchestration import DURATION_SAMPLE
from veche.apps.agents.runtime import runtime_of
from veche.apps.agents.spaces import AgentSnapshot
from veche.kernel import Kernel, new_id
from veche.kernel.identity import IdentityService
from veche.settings import AISettings, LLMProfile, Settings

__all__ = ["ann", "bob", "http"]  # fixtures

BASE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
async def agents_app(
    app_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> FastAPI:
    # An OpenAI-compatible endpoint that is never called: its health is its circuit breaker.
    settings = settings_factory(
        llm_provider="openai",
        llm_base_url="http://127.0.0.1:9/v1",
        llm_model="test-model",
        ai=AISettings(profiles={"planner": LLMProfile(base_url="http://127.0.0.2:9/v1")}),
    )
    app: FastAPI = await app_factory(settings, [agents_module])
    return app


@pytest.fixture
def kernel(agents_app: FastAPI) -> Kernel:
    result: Kernel = agents_app.state.kernel
    return result


async def agent_row(kernel: Kernel, agent_id: str | UUID) -> Agent:
    async with kernel.db.unit_of_work() as session:
        row = await session.scalar(select(Agent).where(Agent.id == UUID(str(agent_id))))
        assert row is not None
        return row


async def set_agent(kernel: Kernel, agent_id: str | UUID, **values: Any) -> None:
    async with kernel.db.unit_of_work() as session:
        row = await session.get(Agent, UUID(str(agent_id)))
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)


async def add_tasks(
    kernel: Kernel, caller: Caller, project: dict[str, Any], agent: dict[str, Any], *rows: Any
) -> list[UUID]:
    """Task rows of `agent`, each `(status, duration_ms)`."""
    user_id, project_id = UUID(caller.user_id), UUID(project["id"])
    ids = []
    async with kernel.db.unit_of_work() as session:
        chat = ChatSession(id=new_id(), user_id=user_id, project_id=project_id)
        session.add(chat)
        await session.flush()
        for status, duration in rows:
            task = Task(
                id=new_id(),
                user_id=user_id,
                project_id=project_id,
                session_id=chat.id,
                agent_id=UUID(agent["id"]),
                message_id=uuid4(),
                status=status,
                duration_ms=duration,
            )
            session.add(task)
            ids.append(task.id)
    return ids


async def start(kernel: Kernel, caller: Caller, agent: dict[str, Any], task_id: UUID) -> None:
    async with kernel.db.unit_of_work() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        task.status = "running"
        await session.flush()
        await task_started(session, UUID(caller.user_id), UUID(agent["id"]))


async def finish(
    kernel: Kernel,
    caller: Caller,
    agent: dict[str, Any],
    task_id: UUID,
    status: str,
    error_code: str | None = None,
) -> None:
    async with kernel.db.unit_of_work() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        task.status = status
        task.error_code = error_code
        await task_finished(session, UUID(caller.user_id), UUID(agent["id"]), error_code=error_code)


@pytest.fixture
async def setup(http: httpx.AsyncClient, ann: Caller) -> tuple[dict[str, Any], dict[str, Any]]:
    return await create_project(http, ann), await create_agent(http, ann)


# -- status transitions -------------------------------------------------------------------


async def test_two_tasks_keep_the_agent_busy_until_both_end(
    kernel: Kernel, ann: Caller, setup: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    project, agent = setup
    first, second = await add_tasks(kernel, ann, project, agent, ("queued", None), ("queued", None))
    before = await agent_row(kernel, agent["id"])
    assert (before.status, before.status_changed_at) == ("ready", None)

    await start(kernel, ann, agent, first)
    busy = await agent_row(kernel, agent["id"])
    assert busy.status == "busy"
    assert busy.status_changed_at is not None
    await start(kernel, ann, agent, second)
    assert (await agent_row(kernel, agent["id"])).status_changed_at == busy.status_changed_at

    await finish(kernel, ann, agent, first, "completed")
    assert (await agent_row(kernel, agent["id"])).status == "busy"  # the second still runs
    await finish(kernel, ann, agent, second, "failed", "tool_rejected")
    ready = await agent_row(kernel, agent["id"])
    assert (ready.status, ready.status_reason) == ("ready", None)
    assert ready.status_changed_at is not None
    assert ready.status_changed_at >= busy.status_changed_at
    # Status changes are not configuration changes.
    assert ready.updated_at == before.updated_at


@pytest.mark.parametrize("code", ["ai_provider_unavailable", "ai_provider_timeout"])
async def test_a_provider_failure_puts_the_agent_in_error(
    kernel: Kernel, ann: Caller, setup: tuple[dict[str, Any], dict[str, Any]], code: str
) -> None:
    project, agent = setup
    (task,) = await add_tasks(kernel, ann, project, agent, ("queued", None))
    await start(kernel, ann, agent, task)
    await finish(kernel, ann, agent, task, "failed", code)
    row = await agent_row(kernel, agent["id"])
    assert (row.status, row.status_reason) == ("error", code)


async def test_other_failures_leave_an_error_and_a_success_clears_it(
    kernel: Kernel, ann: Caller, setup: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    project, agent = setup
    tasks = await add_tasks(kernel, ann, project, agent, *[("queued", None)] * 4)
    await start(kernel, ann, agent, tasks[0])
    await finish(kernel, ann, agent, tasks[0], "cancelled", "cancelled")
    assert (await agent_row(kernel, agent["id"])).status == "ready"  # no error for a cancel

    await set_agent(kernel, agent["id"], status="error", status_reason="ai_provider_timeout")
    await finish(kernel, ann, agent, tasks[1], "failed", "tool_rejected")
    assert (await agent_row(kernel, agent["id"])).status == "error"
    await finish(kernel, ann, agent, tasks[2], "cancelled", "cancelled")
    assert (await agent_row(kernel, agent["id"])).status_reason == "ai_provider_timeout"

    await start(kernel, ann, agent, tasks[3])  # trying again: busy
    assert (await agent_row(kernel, agent["id"])).status == "busy"
    await finish(kernel, ann, agent, tasks[3], "completed")
    row = await agent_row(kernel, agent["id"])
    assert (row.status, row.status_reason) == ("ready", None)


async def test_transitions_of_another_users_agent_change_nothing(
    kernel: Kernel, ann: Caller, bob: Caller, setup: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    _, agent = setup
    async with kernel.db.unit_of_work() as session:
        await task_started(session, UUID(bob.user_id), UUID(agent["id"]))
        await task_finished(
            session, UUID(bob.user_id), UUID(agent["id"]), error_code="ai_provider_timeout"
        )
    row = await agent_row(kernel, agent["id"])
    assert (row.status, row.status_changed_at) == ("ready", None)


# -- the health job -----------------------------------------------------------------------


async def test_the_job_recovers_agents_whose_provider_looks_usable(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    old = await create_agent(http, ann, "old")
    fresh = await create_agent(http, ann, "fresh")
    broken = await create_agent(http, ann, "broken", model="planner")
    failed_at = BASE - dt.timedelta(seconds=61)
    for agent in (old, broken):
        await set_agent(
            kernel,
            agent["id"],
            status="error",
            status_reason="ai_provider_unavailable",
            status_changed_at=failed_at,
        )
    await set_agent(
        kernel,
        fresh["id"],
        status="error",
        status_reason="ai_provider_timeout",
        status_changed_at=BASE - dt.timedelta(seconds=30),
    )
    # The planner purpose has its own endpoint, and its circuit is open.
    planner = kernel.ai.llm.provider(kernel.ai.llm.profile("planner"))
    default = kernel.ai.llm.provider(kernel.ai.llm.profile("default"))
    assert planner is not default
    breaker = planner.breaker  # type: ignore[attr-defined]
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()

    result = await check_agents(kernel, now=BASE)
    assert result["recovered"] == 1
    assert result["still_failing"] == 1
    recovered = await agent_row(kernel, old["id"])
    assert (recovered.status, recovered.status_reason) == ("ready", None)
    assert recovered.status_changed_at == BASE
    assert (await agent_row(kernel, fresh["id"])).status == "error"  # not long enough
    assert (await agent_row(kernel, broken["id"])).status_reason == "ai_provider_unavailable"

    breaker.record_success()  # the provider is back
    result = await check_agents(kernel, now=BASE + dt.timedelta(seconds=31))
    assert result["recovered"] == 2
    assert (await agent_row(kernel, broken["id"])).status == "ready"


async def test_the_job_frees_busy_agents_without_a_running_task(
    kernel: Kernel,
    ann: Caller,
    http: httpx.AsyncClient,
    setup: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    project, stuck = setup
    working = await create_agent(http, ann, "working")
    await add_tasks(kernel, ann, project, stuck, ("queued", None), ("waiting_approval", None))
    await add_tasks(kernel, ann, project, working, ("running", None))
    for agent in (stuck, working):
        await set_agent(kernel, agent["id"], status="busy", status_changed_at=BASE)

    result = await check_agents(kernel, now=BASE + dt.timedelta(seconds=1))
    assert result["unstuck"] == 1
    assert (await agent_row(kernel, stuck["id"])).status == "ready"
    assert (await agent_row(kernel, working["id"])).status == "busy"


async def test_the_job_releases_idle_spaces_and_keeps_its_own_pace(kernel: Kernel) -> None:
    runtime = runtime_of(kernel)
    user, project = uuid4(), uuid4()
    await runtime.spaces.acquire(user, project)
    job = next(job for job in agents_module.jobs if job.name == "agents.health")
    assert job.interval == JOB_TICK
    assert job.run is run_health_job

    space = runtime.spaces.get(user, project)
    assert space is not None
    space.last_used -= kernel.settings.agents.space_idle_seconds  # unused for long enough
    runtime.health_checked_at = None  # whatever the scheduler's tick at startup did
    await run_health_job(kernel)
    assert runtime.spaces.get(user, project) is None
    checked = runtime.health_checked_at
    assert checked is not None

    await runtime.spaces.acquire(user, project)
    space = runtime.spaces.get(user, project)
    assert space is not None
    space.last_used -= kernel.settings.agents.space_idle_seconds
    await run_health_job(kernel)  # within the interval: nothing done
    assert runtime.spaces.get(user, project) is space
    assert runtime.health_checked_at == checked


# -- metrics ------------------------------------------------------------------------------


async def test_metrics_come_from_the_task_rows(
    http: httpx.AsyncClient,
    kernel: Kernel,
    ann: Caller,
    setup: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    project, agent = setup
    durations = [100 * n for n in range(1, 18)]  # 17 completed: 100 .. 1700 ms
    await add_tasks(
        kernel,
        ann,
        project,
        agent,
        *[("completed", ms) for ms in durations],
        ("failed", 2000),
        ("failed", None),
        ("cancelled", 50),
        ("queued", None),
        ("running", None),
    )
    other = await create_agent(http, ann, "other")
    await add_tasks(kernel, ann, project, other, ("completed", 99_999))
    await set_agent(
        kernel,
        agent["id"],
        status="error",
        status_reason="ai_provider_timeout",
        status_changed_at=BASE,
    )

    response = await http.get(f"{PREFIX}/agents/{agent['id']}/metrics", headers=ann.headers)
    assert response.status_code == 200, response.text
    timed = [*durations, 2000, 50]  # 19 finished tasks with a duration
    assert response.json() == {
        "agent_id": agent["id"],
        "status": {
            "status": "error",
            "reason": "ai_provider_timeout",
            "since": "2030-01-01T00:00:00Z",
        },
        "tasks": {
            "total": 22,
            "completed": 17,
            "failed": 2,
            "cancelled": 1,
            "in_progress": 2,
            "success_rate": round(17 / 19, 4),
            "average_duration_ms": round(sum(timed) / len(timed), 1),
            # Nearest rank: ceil(0.95 * 19) = 19, the longest of the 19.
            "p95_duration_ms": 2000,
        },
        "live": None,
    }


async def test_the_bus_mean_run_time_is_over_the_latest_completed_tasks(
    http: httpx.AsyncClient,
    kernel: Kernel,
    ann: Caller,
    bob: Caller,
    setup: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """The planner's time estimate and `/bus` use each agent's mean over its latest
    `DURATION_SAMPLE` completed tasks: older runs, failures and other users' do not count."""
    project, agent = setup
    old = await add_tasks(kernel, ann, project, agent, *[("completed", 10_000)] * 30)
    latest = await add_tasks(
        kernel, ann, project, agent, *[("completed", 200)] * DURATION_SAMPLE, ("failed", 50_000)
    )
    async with kernel.db.unit_of_work() as session:
        for ids, finished in ((old, BASE), (latest, BASE + dt.timedelta(days=1))):
            await session.execute(update(Task).where(Task.id.in_(ids)).values(finished_at=finished))
    bobs_project, bobs_agent = await create_project(http, bob), await create_agent(http, bob)
    await add_tasks(kernel, bob, bobs_project, bobs_agent, ("completed", 99_999))

    response = await http.get(f"{PREFIX}/bus", headers=ann.headers)
    assert response.status_code == 200, response.text
    [load] = response.json()["agents"]
    assert load["agent_id"] == agent["id"]
    assert load["mean_duration_ms"] == 200.0
    assert load["completed"] == 30 + DURATION_SAMPLE


async def test_metrics_of_a_new_agent_and_live_counters(
    http: httpx.AsyncClient,
    kernel: Kernel,
    ann: Caller,
    setup: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    project, agent = setup
    response = await http.get(f"{PREFIX}/agents/{agent['id']}/metrics", headers=ann.headers)
    body = response.json()
    assert body["tasks"] == {
        "total": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "in_progress": 0,
        "success_rate": None,
        "average_duration_ms": None,
        "p95_duration_ms": None,
    }
    assert body["status"] == {"status": "ready", "reason": None, "since": None}

    space = await runtime_of(kernel).spaces.acquire(UUID(ann.user_id), UUID(project["id"]))
    async with space.running(AgentSnapshot.from_row(await agent_row(kernel, agent["id"]))):
        pass
    response = await http.get(f"{PREFIX}/agents/{agent['id']}/metrics", headers=ann.headers)
    live = response.json()["live"]
    assert (live["started"], live["succeeded"], live["running"]) == (1, 1, 0)


# -- worker space endpoints ---------------------------------------------------------------


async def test_spaces_are_listed_shown_and_reset(
    http: httpx.AsyncClient,
    kernel: Kernel,
    ann: Caller,
    bob: Caller,
    setup: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    project, agent = setup
    url = f"{PREFIX}/projects/{project['id']}/space"
    assert (await http.get(f"{PREFIX}/spaces", headers=ann.headers)).json() == {"items": []}
    assert_problem(await http.get(url, headers=ann.headers), 404, "agents.space_not_found")
    reset = await http.post(f"{url}/reset", headers=ann.headers)
    assert reset.status_code == 204  # nothing to reset

    spaces = runtime_of(kernel).spaces
    space = await spaces.acquire(UUID(ann.user_id), UUID(project["id"]))
    await spaces.acquire(UUID(bob.user_id), uuid4())  # another user's space stays unseen
    snapshot = AgentSnapshot.from_row(await agent_row(kernel, agent["id"]))

    async def load() -> AgentSnapshot:
        return snapshot

    await space.agent_config(snapshot.id, load)
    async with space.running(snapshot):
        shown = await http.get(url, headers=ann.headers)
        assert shown.status_code == 200, shown.text
        body = shown.json()
        assert body["project_id"] == project["id"]
        assert body["status"] == "active"
        assert body["health"] == {"healthy": True, "problems": []}
        assert body["cache"]["agents"] == 1
        assert body["tasks"]["running"] == 1
        listed = (await http.get(f"{PREFIX}/spaces", headers=ann.headers)).json()["items"]
        assert [item["project_id"] for item in listed] == [project["id"]]
        assert_problem(
            await http.post(f"{url}/reset", headers=ann.headers), 409, "agents.space_busy"
        )

    assert (await http.post(f"{url}/reset", headers=ann.headers)).status_code == 204
    body = (await http.get(url, headers=ann.headers)).json()
    assert (body["status"], body["resets"], body["cache"]["agents"]) == ("idle", 1, 0)
    assert body["tasks"]["started"] == 0


async def test_deleting_a_project_releases_its_space_and_updates_uncache_agents(
    http: httpx.AsyncClient,
    kernel: Kernel,
    ann: Caller,
    setup: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    project, agent = setup
    spaces = runtime_of(kernel).spaces
    user_id, agent_id = UUID(ann.user_id), UUID(agent["id"])
    space = await spaces.acquire(user_id, UUID(project["id"]))
    loads = 0

    async def load() -> AgentSnapshot:
        nonlocal loads
        loads += 1
        return AgentSnapshot.from_row(await agent_row(kernel, agent_id))

    assert (await space.agent_config(agent_id, load)).system_prompt == ""
    patched = await http.patch(
        f"{PREFIX}/agents/{agent['id']}", json={"system_prompt": "v2"}, headers=ann.headers
    )
    assert patched.status_code == 200
    assert (await space.agent_config(agent_id, load)).system_prompt == "v2"
    assert loads == 2
    await space.agent_config(agent_id, load)
    assert loads == 2  # cached again

    deleted = await http.delete(f"{PREFIX}/agents/{agent['id']}", headers=ann.headers)
    assert deleted.status_code == 204
    assert space.stats()["cache"]["agents"] == 0

    gone = await http.delete(f"{PREFIX}/projects/{project['id']}", headers=ann.headers)
    assert gone.status_code == 204
    assert spaces.get(user_id, UUID(project["id"])) is None
    assert space.status == "closed"


async def test_a_refused_update_keeps_the_cache(
    http: httpx.AsyncClient,
    kernel: Kernel,
    ann: Caller,
    setup: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    project, agent = setup
    await create_agent(http, ann, "taken")
    space = await runtime_of(kernel).spaces.acquire(UUID(ann.user_id), UUID(project["id"]))
    snapshot = AgentSnapshot.from_row(await agent_row(kernel, agent["id"]))

    async def load() -> AgentSnapshot:
        return snapshot

    await space.agent_config(snapshot.id, load)
    refused = await http.patch(
        f"{PREFIX}/agents/{agent['id']}", json={"name": "taken"}, headers=ann.headers
    )
    assert refused.status_code == 409
    assert space.stats()["cache"]["invalidations"] == 0


async def test_readiness_includes_the_spaces(http: httpx.AsyncClient, kernel: Kernel) -> None:
    response = await http.get("/ready")
    assert response.status_code == 200, response.text
    checks = {check["name"]: check["ok"] for check in response.json()["checks"]}
    assert checks["agents.spaces"] is True

    space = await runtime_of(kernel).spaces.acquire(uuid4(), uuid4())
    space.fail("broken")
    response = await http.get("/ready")
    assert response.status_code == 503
    failing = {check["name"] for check in response.json()["checks"] if not check["ok"]}
    assert failing == {"agents.spaces"}


async def test_the_admin_view_of_the_manager(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    assert_problem(
        await http.get(f"{PREFIX}/admin/spaces", headers=ann.headers), 403, "auth.permission_denied"
    )
    async with kernel.db.unit_of_work() as session:
        await IdentityService(session, kernel).register(
            email="root@example.com", password=PASSWORD, display_name="Root", role="admin"
        )
    admin = bearer(await login(http, email="root@example.com"))
    await runtime_of(kernel).spaces.acquire(UUID(ann.user_id), uuid4())
    response = await http.get(f"{PREFIX}/admin/spaces", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["spaces"], body["users"], body["per_user"]) == (1, 1, {ann.user_id: 1})


# -- isolation, authentication, validation --------------------------------------------


def new_endpoints(project_id: str, agent_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"{PREFIX}/agents/{agent_id}/metrics"),
        ("GET", f"{PREFIX}/projects/{project_id}/space"),
        ("POST", f"{PREFIX}/projects/{project_id}/space/reset"),
    ]


async def test_another_users_project_or_agent_is_not_found(
    http: httpx.AsyncClient,
    kernel: Kernel,
    ann: Caller,
    bob: Caller,
    setup: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    project, agent = setup
    await runtime_of(kernel).spaces.acquire(UUID(ann.user_id), UUID(project["id"]))
    codes = ["agents.agent_not_found", "agents.project_not_found", "agents.project_not_found"]
    for (method, url), code in zip(new_endpoints(project["id"], agent["id"]), codes, strict=True):
        assert_problem(await http.request(method, url, headers=bob.headers), 404, code)
        missing = url.replace(project["id"], str(uuid4())).replace(agent["id"], str(uuid4()))
        assert_problem(await http.request(method, missing, headers=ann.headers), 404, code)
    assert (await http.get(f"{PREFIX}/spaces", headers=bob.headers)).json() == {"items": []}


async def test_the_new_endpoints_need_a_token(http: httpx.AsyncClient) -> None:
    ids = str(uuid4())
    endpoints = [*new_endpoints(ids, ids), ("GET", f"{PREFIX}/spaces")]
    endpoints.append(("GET", f"{PREFIX}/admin/spaces"))
    for method, url in endpoints:
        response = await http.request(method, url)
        assert response.status_code == 401, (method, url)


async def test_malformed_ids_are_refused(http: httpx.AsyncClient, ann: Caller) -> None:
    for method, url in new_endpoints("not-a-uuid", "12345"):
        response = await http.request(method, url, headers=ann.headers)
        assert response.status_code == 422, (method, url, response.text)
