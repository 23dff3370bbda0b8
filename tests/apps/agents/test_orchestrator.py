"""The orchestrator and the agent bus over HTTP, against the fake OpenAI server: routing a
message without a target, plans that run in waves with their dependencies' results,
invalid plans, approval of large plans, partial success, cancelling, restarts, the
orchestrator's configuration, backpressure, retries, draining agents and concurrency
limits; with the rules every endpoint keeps (401, 404 across users, 422, 413)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import uuid4

import httpx
import orjson
import pytest
from fastapi import FastAPI

from tests.apps.agents.chat_support import (
    PREFIX,
    LiveAgents,
    User,
    chat_settings,
    create,
    session_events,
    wait_for_task,
)
from tests.conftest import client_for
from tests.fakes.openai_server import ChatReply, ErrorReply, FakeOpenAI
from tests.helpers import assert_problem, signed_up
from veche.apps.agents import module as agents_module
from veche.apps.agents.runtime import runtime_of
from veche.kernel import build_app
from veche.settings import ModelPrice, Settings

REQUEST = "Research the harbour's history, then write a short article about it"
WAIT = 20.0


def plan(*tasks: tuple[str, str | None, list[str]]) -> dict[str, Any]:
    return {
        "tasks": [
            {"id": key, "description": f"Do {key}", "agent": agent, "depends_on": needs}
            for key, agent, needs in tasks
        ]
    }


THREE = plan(("a", "researcher", []), ("b", "researcher", []), ("c", "writer", ["a", "b"]))


@pytest.fixture
async def chat_app(
    app_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    fake_openai: FakeOpenAI,
) -> FastAPI:
    app: FastAPI = await app_factory(chat_settings(settings_factory, fake_openai), [agents_module])
    return app


@pytest.fixture
async def http(chat_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(chat_app) as client:
        yield client


async def _user(http: httpx.AsyncClient, email: str) -> User:
    return User(await signed_up(http, email, email.split("@", maxsplit=1)[0]))


@pytest.fixture
async def ann(http: httpx.AsyncClient) -> User:
    return await _user(http, "ann@example.com")


@pytest.fixture
async def bob(http: httpx.AsyncClient) -> User:
    return await _user(http, "bob@example.com")


class Setup:
    def __init__(self, project: dict[str, Any], chat: dict[str, Any], agents: dict[str, Any]):
        self.project = project
        self.chat = chat
        self.agents = agents
        self.base = f"{PREFIX}/projects/{project['id']}/sessions/{chat['id']}"


async def _setup(http: httpx.AsyncClient, user: User, **agent_options: Any) -> Setup:
    project = await create(http, user, "/projects", {"name": "Harbour"})
    agents = {
        "researcher": await create(
            http,
            user,
            "/agents",
            {
                "name": "researcher",
                "capabilities": ["research", "history"],
                "system_prompt": "You find facts.",
                **agent_options,
            },
        ),
        "writer": await create(
            http,
            user,
            "/agents",
            {
                "name": "writer",
                "capabilities": ["writing", "article"],
                "system_prompt": "You write prose.",
                **agent_options,
            },
        ),
    }
    chat = await create(http, user, f"/projects/{project['id']}/sessions", {})
    return Setup(project, chat, agents)


async def _send(
    http: httpx.AsyncClient, user: User, setup: Setup, content: str = REQUEST
) -> dict[str, Any]:
    response = await http.post(
        f"{setup.base}/messages", json={"content": content}, headers=user.headers
    )
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def _plan(http: httpx.AsyncClient, user: User, plan_id: str, *states: str) -> dict[str, Any]:
    """Poll a plan until it reaches one of `states` (default: any final state)."""
    wanted = states or ("completed", "partial", "failed", "cancelled", "rejected", "invalid")

    async def poll() -> dict[str, Any]:
        while True:
            response = await http.get(f"{PREFIX}/plans/{plan_id}", headers=user.headers)
            if response.status_code == 200 and response.json()["status"] in wanted:
                found: dict[str, Any] = response.json()
                return found
            assert response.status_code in (200, 404), response.text
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), WAIT)


def _steps(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in detail["tasks"]}


def _chat_bodies(fake: FakeOpenAI) -> list[str]:
    return [
        orjson.dumps(request.body).decode() for request in fake.requests_to("/chat/completions")
    ]


# -- routing ------------------------------------------------------------------------------


async def test_a_message_that_one_agent_clearly_matches_goes_straight_to_it(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_text("The harbour was built in 1820.")
    accepted = await _send(http, ann, setup, "Research the history of the harbour")
    task = accepted["task"]
    assert (task["kind"], task["agent_id"]) == ("chat", setup.agents["researcher"]["id"])
    done = await wait_for_task(http, ann.headers, setup.project["id"], setup.chat["id"], task["id"])
    assert done["status"] == "completed"
    # No planning call: the only model call is the researcher's run.
    assert len(fake_openai.requests_to("/chat/completions")) == 1


async def test_a_message_for_several_agents_is_planned_and_runs_in_waves(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_json(THREE)
    fake_openai.script(
        "chat",
        ChatReply(content="FACT-ONE", delay=0.4),
        ChatReply(content="FACT-TWO", delay=0.4),
        ChatReply(content="The article."),
    )
    accepted = await _send(http, ann, setup)
    root = accepted["task"]
    assert (root["kind"], root["agent_id"]) == ("plan", None)

    detail = await _plan(http, ann, root["id"])
    assert detail["status"] == "completed"
    assert detail["waves"] == [["a", "b"], ["c"]]
    steps = _steps(detail)
    assert {key: step["agent_name"] for key, step in steps.items()} == {
        "a": "researcher",
        "b": "researcher",
        "c": "writer",
    }
    a, b, c = (steps[key]["task"] for key in "abc")
    assert all(task["status"] == "completed" for task in (a, b, c))
    # a and b ran side by side; c started only after both had finished.
    started = {key: dt.datetime.fromisoformat(steps[key]["task"]["started_at"]) for key in "abc"}
    finished = {key: dt.datetime.fromisoformat(steps[key]["task"]["finished_at"]) for key in "abc"}
    assert started["a"] < finished["b"]
    assert started["b"] < finished["a"]
    assert started["c"] >= max(finished["a"], finished["b"])
    # c's prompt carried both results; the plan's answer is c's.
    bodies = _chat_bodies(fake_openai)
    assert len(bodies) == 4
    assert "FACT-ONE" in bodies[3]
    assert "FACT-TWO" in bodies[3]
    assert {steps["a"]["result"], steps["b"]["result"]} == {"FACT-ONE", "FACT-TWO"}
    messages = await http.get(f"{setup.base}/messages", headers=ann.headers)
    latest = messages.json()["items"][0]
    assert (latest["role"], latest["content"], latest["task_id"]) == (
        "assistant",
        "The article.",
        root["id"],
    )
    # The estimate and the root task's end.
    assert detail["estimate"]["tasks"] == 3
    assert detail["estimate"]["parallel_ms"] < detail["estimate"]["sequential_ms"]
    root_done = await wait_for_task(
        http, ann.headers, setup.project["id"], setup.chat["id"], root["id"]
    )
    assert root_done["status"] == "completed"


async def test_the_stream_says_which_mode_a_message_took(
    live_agents: LiveAgents, fake_openai: FakeOpenAI
) -> None:
    ann = await live_agents.account("ann@example.com")
    async with live_agents.http() as http:
        setup = await _setup(http, ann)
        async with session_events(http, ann, setup.project["id"], setup.chat["id"]) as events:
            await events.next_of("STREAM_OPENED")
            fake_openai.reply_text("1820.")
            await _send(http, ann, setup, "Research the history of the harbour")
            direct = await events.next_of("DIRECT_AGENT_CALL")
            assert direct["payload"]["routed"] == "auto"
            assert direct["payload"]["agent_name"] == "researcher"
            await events.next_of("TASK_COMPLETED")

            fake_openai.reply_json(plan(("a", "researcher", []), ("b", "writer", ["a"])))
            fake_openai.reply_text("Facts.")
            fake_openai.reply_text("Article.")
            await _send(http, ann, setup)
            created = await events.next_of("PLAN_CREATED")
            assert [task["id"] for task in created["payload"]["tasks"]] == ["a", "b"]
            assert created["payload"]["waves"] == [["a"], ["b"]]
            assert created["payload"]["cached"] is False
            started = await events.next_of("TASK_STARTED")
            assert started["payload"]["step"] == "a"
            finished = await events.next_of("PLAN_COMPLETED")
            assert finished["payload"]["status"] == "completed"
            assert [task["status"] for task in finished["payload"]["tasks"]] == [
                "completed",
                "completed",
            ]
        kinds = events.types()
        assert kinds.index("PLAN_CREATED") < kinds.index("PLAN_COMPLETED")
        # The last step's completion is told before the plan's.
        assert kinds[-2:] == ["TASK_COMPLETED", "PLAN_COMPLETED"] or kinds[-3:-1] == [
            "TASK_COMPLETED",
            "MESSAGE_CREATED",
        ]


async def test_a_user_without_agents_gets_a_clear_refusal(
    http: httpx.AsyncClient, ann: User
) -> None:
    project = await create(http, ann, "/projects", {"name": "Empty"})
    chat = await create(http, ann, f"/projects/{project['id']}/sessions", {})
    response = await http.post(
        f"{PREFIX}/projects/{project['id']}/sessions/{chat['id']}/messages",
        json={"content": "hello"},
        headers=ann.headers,
    )
    assert_problem(response, 409, "agents.no_agents")


# -- invalid plans ------------------------------------------------------------------------


async def test_a_cyclic_plan_is_refused_with_the_cycle_named(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_json(
        plan(("a", "researcher", ["c"]), ("b", "writer", ["a"]), ("c", "writer", ["b"]))
    )
    root = (await _send(http, ann, setup))["task"]
    detail = await _plan(http, ann, root["id"])
    assert detail["status"] == "invalid"
    assert detail["error_code"] == "agents.plan_cycle"
    assert "a -> c -> b -> a" in detail["error_detail"]
    # The refused draft is kept for the user to inspect; no step ever ran.
    assert [step["id"] for step in detail["tasks"]] == ["a", "b", "c"]
    assert all(step["task"] is None for step in detail["tasks"])
    task = await wait_for_task(http, ann.headers, setup.project["id"], setup.chat["id"], root["id"])
    assert (task["status"], task["error_code"]) == ("failed", "agents.plan_cycle")
    assert len(fake_openai.requests_to("/chat/completions")) == 1


async def test_a_plan_naming_an_unknown_agent_is_given_one_by_capabilities(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_json(
        {
            "tasks": [
                {"id": "dig", "description": "Research the history archives", "agent": "ghost"},
                {"id": "draft", "description": "Write the article", "depends_on": ["dig"]},
            ]
        }
    )
    fake_openai.reply_text("Archives say 1820.")
    fake_openai.reply_text("An article.")
    root = (await _send(http, ann, setup))["task"]
    detail = await _plan(http, ann, root["id"])
    assert detail["status"] == "completed"
    steps = _steps(detail)
    assert (steps["dig"]["agent_name"], steps["dig"]["assigned_by"]) == (
        "researcher",
        "capabilities",
    )
    assert "ghost" in steps["dig"]["note"]
    assert steps["draft"]["agent_name"] == "writer"


async def test_a_model_answer_that_is_not_a_plan_fails_the_message_clearly(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_text("I cannot make plans.")
    fake_openai.reply_text('{"tasks": "no"}')  # the repair attempt fails too
    root = (await _send(http, ann, setup))["task"]
    task = await wait_for_task(http, ann.headers, setup.project["id"], setup.chat["id"], root["id"])
    assert (task["status"], task["error_code"]) == ("failed", "ai_invalid_output")
    missing = await http.get(f"{PREFIX}/plans/{root['id']}", headers=ann.headers)
    assert_problem(missing, 404, "agents.plan_not_found")


# -- approvals and budget -----------------------------------------------------------------


async def _configure(http: httpx.AsyncClient, user: User, **values: Any) -> dict[str, Any]:
    response = await http.put(f"{PREFIX}/orchestrator/config", json=values, headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_plan_over_the_threshold_waits_for_approval_then_runs(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    await _configure(http, ann, approval_tasks_threshold=2)
    fake_openai.reply_json(THREE)
    root = (await _send(http, ann, setup))["task"]
    waiting = await _plan(http, ann, root["id"], "awaiting_approval")
    assert all(step["task"]["status"] == "blocked" for step in waiting["tasks"])
    pending = await http.get(
        f"{PREFIX}/approvals", params={"status": "pending"}, headers=ann.headers
    )
    [approval] = pending.json()["items"]
    assert (approval["tool"], approval["task_id"]) == ("plan", root["id"])
    assert approval["arguments"]["tasks"] == 3
    assert len(fake_openai.requests_to("/chat/completions")) == 1  # nothing ran meanwhile

    fake_openai.reply_text("one")
    fake_openai.reply_text("two")
    fake_openai.reply_text("three")
    confirmed = await http.post(
        f"{PREFIX}/approvals/{approval['id']}/confirm", json={}, headers=ann.headers
    )
    assert confirmed.status_code == 200, confirmed.text
    assert (await _plan(http, ann, root["id"]))["status"] == "completed"


async def test_a_rejected_plan_runs_nothing(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    await _configure(http, ann, approval_tasks_threshold=1)
    fake_openai.reply_json(THREE)
    root = (await _send(http, ann, setup))["task"]
    await _plan(http, ann, root["id"], "awaiting_approval")
    [approval] = (
        await http.get(f"{PREFIX}/approvals", params={"status": "pending"}, headers=ann.headers)
    ).json()["items"]
    rejected = await http.post(
        f"{PREFIX}/approvals/{approval['id']}/reject",
        json={"reason": "too much"},
        headers=ann.headers,
    )
    assert rejected.status_code == 200, rejected.text
    detail = await _plan(http, ann, root["id"])
    assert (detail["status"], detail["error_code"]) == ("rejected", "agents.plan_rejected")
    assert all(step["task"]["status"] == "cancelled" for step in detail["tasks"])
    assert len(fake_openai.requests_to("/chat/completions")) == 1


async def test_a_plan_over_the_budget_is_refused(
    app_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    fake_openai: FakeOpenAI,
) -> None:
    settings = chat_settings(settings_factory, fake_openai)
    prices = {"fake-model": ModelPrice(input_per_million=1000.0)}
    priced = settings.model_copy(update={"ai": settings.ai.model_copy(update={"prices": prices})})
    app = await app_factory(priced, [agents_module])
    async with client_for(app) as http:
        ann = await _user(http, "ann@example.com")
        setup = await _setup(http, ann)
        await _configure(http, ann, budget=0.5)
        fake_openai.reply_json(THREE)
        root = (await _send(http, ann, setup))["task"]
        detail = await _plan(http, ann, root["id"])
        assert (detail["status"], detail["error_code"]) == ("rejected", "agents.plan_over_budget")
        assert detail["estimate"]["cost"] > 0.5
        assert len(fake_openai.requests_to("/chat/completions")) == 1


# -- partial success, cancelling, restarts -----------------------------------------------


async def test_a_failed_task_skips_only_its_dependents_and_the_plan_ends_partial(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    await _configure(http, ann, max_parallel_tasks=1)  # steps run in the plan's order
    fake_openai.reply_json(
        plan(("a", "researcher", []), ("b", "writer", ["a"]), ("c", "writer", []))
    )
    fake_openai.script("chat", ErrorReply(status=400))  # a: refused, not retried
    fake_openai.reply_text("c done")
    root = (await _send(http, ann, setup))["task"]
    detail = await _plan(http, ann, root["id"])
    assert detail["status"] == "partial"
    steps = _steps(detail)
    assert steps["a"]["task"]["status"] == "failed"
    assert steps["a"]["task"]["error_code"] == "ai_provider_rejected"
    assert steps["b"]["task"]["status"] == "skipped"
    assert steps["b"]["task"]["error_code"] == "agents.dependency_failed"
    assert steps["c"]["task"]["status"] == "completed"
    latest = (await http.get(f"{setup.base}/messages", headers=ann.headers)).json()["items"][0]
    assert latest["content"].startswith("c done")
    assert "1 of 3 tasks completed" in latest["content"]
    assert "b (writer): skipped" in latest["content"]


async def test_cancelling_a_running_plan_stops_its_tasks(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_json(THREE)
    fake_openai.script(
        "chat", ChatReply(content="slow", delay=2.0), ChatReply(content="slow", delay=2.0)
    )
    root = (await _send(http, ann, setup))["task"]
    await _plan(http, ann, root["id"], "running")
    cancelled = await http.post(f"{PREFIX}/plans/{root['id']}/cancel", headers=ann.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert {step["task"]["status"] for step in cancelled.json()["tasks"]} == {"cancelled"}
    again = await http.post(f"{PREFIX}/plans/{root['id']}/cancel", headers=ann.headers)
    assert_problem(again, 409, "agents.plan_closed")
    # The session takes new messages at once.
    fake_openai.reply_text("fresh")
    fresh = await _send(http, ann, setup, "Research the history of the harbour")
    done = await wait_for_task(
        http, ann.headers, setup.project["id"], setup.chat["id"], fresh["task"]["id"]
    )
    assert done["status"] == "completed"


async def _plan_with_step_a_running(
    http: httpx.AsyncClient, ann: User, setup: Setup, fake: FakeOpenAI, delay: float = 3.0
) -> dict[str, Any]:
    """Send a two-step plan (b needs a) whose step a waits `delay` seconds for the model;
    its task, once step a's model call has reached the model."""
    fake.reply_json(plan(("a", "researcher", []), ("b", "writer", ["a"])))
    fake.script("chat", ChatReply(content="cut short", delay=delay))
    root: dict[str, Any] = (await _send(http, ann, setup))["task"]

    async def a_running() -> None:
        # The fake server runs in its own thread: nothing here to wait on but its log.
        while len(fake.requests_to("/chat/completions")) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    await asyncio.wait_for(a_running(), WAIT)
    return root


async def test_an_agent_is_busy_while_its_step_runs_and_a_plan_reads_its_context_once(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI, chat_app: FastAPI
) -> None:
    setup = await _setup(http, ann)
    agents = setup.agents

    async def status(name: str) -> str:
        response = await http.get(f"{PREFIX}/agents/{agents[name]['id']}", headers=ann.headers)
        assert response.status_code == 200, response.text
        value: str = response.json()["status"]
        return value

    root = await _plan_with_step_a_running(http, ann, setup, fake_openai, delay=1.0)
    # Claimed, so busy; the writer's step b waits for a and its agent is not working.
    assert (await status("researcher"), await status("writer")) == ("busy", "ready")
    contexts = runtime_of(chat_app.state.kernel).plan_contexts
    assert len(contexts) == 1  # step a read what b will share
    fake_openai.reply_text("the article")
    detail = await _plan(http, ann, root["id"])
    assert detail["status"] == "completed"
    # Step b was written with the plan's request and a's result, from the shared context.
    assert REQUEST in _chat_bodies(fake_openai)[-1]
    assert "cut short" in _chat_bodies(fake_openai)[-1]
    assert (await status("researcher"), await status("writer")) == ("ready", "ready")
    assert len(contexts) == 0  # the plan ended: its context is dropped


async def test_a_restart_in_the_middle_of_a_plan_loses_no_task(
    app_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    fake_openai: FakeOpenAI,
) -> None:
    settings = chat_settings(settings_factory, fake_openai)
    first = build_app(settings, [agents_module])
    lifespan = first.router.lifespan_context(first)
    await lifespan.__aenter__()
    async with client_for(first) as http:
        ann = await _user(http, "ann@example.com")
        setup = await _setup(http, ann)
        root = await _plan_with_step_a_running(http, ann, setup, fake_openai)
    await lifespan.__aexit__(None, None, None)  # the server stops with step a mid-run

    fake_openai.reply_text("facts, again")
    fake_openai.reply_text("the article")
    second = await app_factory(settings, [agents_module])
    async with client_for(second) as http:
        detail = await _plan(http, ann, root["id"])
    assert detail["status"] == "completed"
    steps = _steps(detail)
    assert steps["a"]["result"] == "facts, again"
    assert steps["a"]["task"]["attempts"] == 1  # the interrupted claim was given back
    assert steps["b"]["result"] == "the article"


async def test_a_stopped_server_leaves_no_runner_behind(
    settings_factory: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    """The runner's loop ends when it is stopped even if it is woken at that moment (a
    run's end or another server's queued task does that). On Python 3.11 a loop waiting
    through `asyncio.wait_for` returned instead of ending, and went on claiming other
    servers' tasks from the shared database and failing them (seen in a full run)."""
    settings = chat_settings(settings_factory, fake_openai)
    first = build_app(settings, [agents_module])
    lifespan = first.router.lifespan_context(first)
    await lifespan.__aenter__()
    try:
        loops = [task for task in asyncio.all_tasks() if task.get_name() == "agents-runner"]
        assert len(loops) == 1
        async with client_for(first) as http:
            ann = await _user(http, "ann@example.com")
            await _plan_with_step_a_running(http, ann, await _setup(http, ann), fake_openai)
        runner = runtime_of(first.state.kernel).runner
        assert runner is not None
        runner.wake()
        await runner.stop()
        await asyncio.sleep(0.2)  # a loop that kept going would have looped by now
        assert loops[0].done()
    finally:
        await lifespan.__aexit__(None, None, None)


async def test_plans_are_reused_for_the_same_request_and_agents(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_json(plan(("a", "researcher", []), ("b", "writer", ["a"])))
    for text in ("one", "two", "three", "four"):
        fake_openai.reply_text(text)
    first = (await _send(http, ann, setup))["task"]
    assert (await _plan(http, ann, first["id"]))["cached_from"] is None
    second = (await _send(http, ann, setup, REQUEST.upper() + "!"))["task"]
    reused = await _plan(http, ann, second["id"])
    assert reused["status"] == "completed"
    assert reused["cached_from"] == first["id"]
    # One planning call for both: 1 plan + 2 steps + 2 steps.
    assert len(fake_openai.requests_to("/chat/completions")) == 5


# -- the orchestrator's configuration ----------------------------------------------------


async def test_the_configuration_has_defaults_and_is_replaced_whole(
    http: httpx.AsyncClient, ann: User, bob: User
) -> None:
    url = f"{PREFIX}/orchestrator/config"
    default = (await http.get(url, headers=ann.headers)).json()
    assert default == {
        "model": "default",
        "max_parallel_tasks": 3,
        "approval_cost_threshold": 0.1,
        "approval_tasks_threshold": 5,
        "budget": 1.0,
        "updated_at": None,
    }
    changed = await _configure(http, ann, model="planner", max_parallel_tasks=5)
    assert (changed["model"], changed["max_parallel_tasks"], changed["budget"]) == (
        "planner",
        5,
        1.0,
    )
    assert changed["updated_at"] is not None
    again = await _configure(http, ann, budget=2.5)
    assert (again["model"], again["budget"]) == ("default", 2.5)
    # Another user's configuration is their own.
    assert (await http.get(url, headers=bob.headers)).json()["updated_at"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"max_parallel_tasks": 0},
        {"max_parallel_tasks": 21},
        {"max_parallel_tasks": "3"},
        {"max_parallel_tasks": True},
        {"approval_tasks_threshold": 21},
        {"approval_cost_threshold": -1},
        {"budget": 0},
        {"budget": 1e12},
        {"model": "Bad Model"},
        {"model": "x" * 65},
        {"unknown": 1},
    ],
)
async def test_bad_configurations_are_refused_field_by_field(
    http: httpx.AsyncClient, ann: User, body: dict[str, Any]
) -> None:
    response = await http.put(f"{PREFIX}/orchestrator/config", json=body, headers=ann.headers)
    assert_problem(response, 422, "validation_failed")
    assert (await http.get(f"{PREFIX}/orchestrator/config", headers=ann.headers)).json()[
        "updated_at"
    ] is None


async def test_the_endpoints_need_a_token_and_hide_other_users_plans(
    http: httpx.AsyncClient, ann: User, bob: User, fake_openai: FakeOpenAI
) -> None:
    for method, path in (
        ("GET", "/orchestrator/config"),
        ("PUT", "/orchestrator/config"),
        ("GET", "/plans"),
        ("GET", f"/plans/{uuid4()}"),
        ("POST", f"/plans/{uuid4()}/cancel"),
        ("GET", "/bus"),
        ("POST", f"/agents/{uuid4()}/deregister"),
        ("POST", f"/agents/{uuid4()}/register"),
    ):
        response = await http.request(method, f"{PREFIX}{path}", json={})
        assert_problem(response, 401, "unauthorized")

    setup = await _setup(http, ann)
    fake_openai.reply_json(THREE)
    for text in ("1", "2", "3"):
        fake_openai.reply_text(text)
    root = (await _send(http, ann, setup))["task"]
    await _plan(http, ann, root["id"])
    for method, path in (("GET", f"/plans/{root['id']}"), ("POST", f"/plans/{root['id']}/cancel")):
        response = await http.request(method, f"{PREFIX}{path}", headers=bob.headers)
        assert_problem(response, 404, "agents.plan_not_found")
    assert (await http.get(f"{PREFIX}/plans", headers=bob.headers)).json()["items"] == []
    mine = (await http.get(f"{PREFIX}/plans", headers=ann.headers)).json()["items"]
    assert [item["id"] for item in mine] == [root["id"]]
    listed = await http.get(
        f"{PREFIX}/plans", params={"session_id": str(uuid4())}, headers=ann.headers
    )
    assert listed.json()["items"] == []
    robbed = await http.post(
        f"{PREFIX}/agents/{setup.agents['writer']['id']}/deregister", headers=bob.headers
    )
    assert_problem(robbed, 404, "agents.agent_not_found")
    revived = await http.post(
        f"{PREFIX}/agents/{setup.agents['writer']['id']}/register", headers=bob.headers
    )
    assert_problem(revived, 404, "agents.agent_not_found")
    # The bus shows each user only their own agents.
    assert (await http.get(f"{PREFIX}/bus", headers=bob.headers)).json()["agents"] == []
    mine_on_bus = (await http.get(f"{PREFIX}/bus", headers=ann.headers)).json()["agents"]
    assert {agent["name"] for agent in mine_on_bus} == {"researcher", "writer"}
    malformed = await http.get(f"{PREFIX}/plans/not-a-uuid", headers=ann.headers)
    assert_problem(malformed, 422, "validation_failed")
    oversized = await http.put(
        f"{PREFIX}/orchestrator/config",
        content=b'{"model": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        headers={**ann.headers, "content-type": "application/json"},
    )
    assert_problem(oversized, 413, "payload_too_large")


# -- the bus ------------------------------------------------------------------------------


async def test_a_full_agent_queue_answers_429_with_retry_after(
    app_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    fake_openai: FakeOpenAI,
) -> None:
    settings = chat_settings(settings_factory, fake_openai, agent_queue_limit=2)
    app = await app_factory(settings, [agents_module])
    async with client_for(app) as http:
        ann = await _user(http, "ann@example.com")
        setup = await _setup(http, ann, concurrency_limit=1)  # one runs, the rest wait
        researcher = setup.agents["researcher"]["id"]
        fake_openai.script("chat", *[ChatReply(content="slow", delay=1.0)] * 3)
        sessions = [
            await create(http, ann, f"/projects/{setup.project['id']}/sessions", {})
            for _ in range(4)
        ]
        answers = []
        for chat in sessions:
            answers.append(
                await http.post(
                    f"{PREFIX}/projects/{setup.project['id']}/sessions/{chat['id']}/messages",
                    json={"content": "dig", "target_agent": researcher},
                    headers=ann.headers,
                )
            )
        accepted = [answer for answer in answers if answer.status_code == 202]
        refused = [answer for answer in answers if answer.status_code != 202]
        assert len(accepted) >= 2
        assert refused
        problem = assert_problem(refused[0], 429, "agents.queue_full")
        assert "researcher" in problem["detail"]
        assert 1 <= int(refused[0].headers["retry-after"]) <= 300
        bus = (await http.get(f"{PREFIX}/bus", headers=ann.headers)).json()
        assert bus["agent_queue_limit"] == 2
        loads = {agent["name"]: agent for agent in bus["agents"]}
        assert loads["researcher"]["queued"] + loads["researcher"]["in_flight"] == len(accepted)


async def test_agent_concurrency_limits_hold_under_twenty_simultaneous_requests(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann, concurrency_limit=2)
    researcher = setup.agents["researcher"]["id"]
    fake_openai.script("chat", *[ChatReply(content="done", delay=0.15)] * 20)
    sessions = [
        await create(http, ann, f"/projects/{setup.project['id']}/sessions", {}) for _ in range(20)
    ]

    async def send(chat: dict[str, Any]) -> httpx.Response:
        return await http.post(
            f"{PREFIX}/projects/{setup.project['id']}/sessions/{chat['id']}/messages",
            json={"content": "dig", "target_agent": researcher},
            headers=ann.headers,
        )

    answers = await asyncio.gather(*(send(chat) for chat in sessions))
    assert [answer.status_code for answer in answers] == [202] * 20
    tasks = [
        await wait_for_task(
            http, ann.headers, setup.project["id"], chat["id"], answer.json()["task"]["id"]
        )
        for chat, answer in zip(sessions, answers, strict=True)
    ]
    assert {task["status"] for task in tasks} == {"completed"}
    # At no moment were more than two of the agent's runs between start and finish.
    moments = sorted(
        [(dt.datetime.fromisoformat(task["started_at"]), 1) for task in tasks]
        + [(dt.datetime.fromisoformat(task["finished_at"]), -1) for task in tasks]
    )
    running = peak = 0
    for _, change in moments:
        running += change
        peak = max(peak, running)
    assert peak == 2


async def test_a_transient_failure_is_retried_with_backoff(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    # One attempt's provider error (the client does not retry here), then an answer.
    fake_openai.reply_error(503)
    fake_openai.reply_text("Back.")
    chat = setup.chat
    answer = await http.post(
        f"{setup.base}/messages",
        json={"content": "dig", "target_agent": setup.agents["researcher"]["id"]},
        headers=ann.headers,
    )
    done = await wait_for_task(
        http, ann.headers, setup.project["id"], chat["id"], answer.json()["task"]["id"]
    )
    assert (done["status"], done["attempts"]) == ("completed", 2)


async def test_a_deregistered_agent_drains_and_takes_no_new_work(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    writer = setup.agents["writer"]["id"]
    fake_openai.script("chat", ChatReply(content="slow", delay=0.8))
    running = await http.post(
        f"{setup.base}/messages",
        json={"content": "write", "target_agent": writer},
        headers=ann.headers,
    )
    await wait_for_task(
        http,
        ann.headers,
        setup.project["id"],
        setup.chat["id"],
        running.json()["task"]["id"],
        "running",
    )
    drained = await http.post(f"{PREFIX}/agents/{writer}/deregister", headers=ann.headers)
    assert drained.status_code == 200, drained.text
    assert drained.json()["lifecycle"] == "draining"
    other = await create(http, ann, f"/projects/{setup.project['id']}/sessions", {})
    refused = await http.post(
        f"{PREFIX}/projects/{setup.project['id']}/sessions/{other['id']}/messages",
        json={"content": "write more", "target_agent": writer},
        headers=ann.headers,
    )
    assert_problem(refused, 409, "agents.agent_deregistered")
    finished = await wait_for_task(
        http, ann.headers, setup.project["id"], setup.chat["id"], running.json()["task"]["id"]
    )
    assert finished["status"] == "completed"  # the work in hand was finished
    agent = (await http.get(f"{PREFIX}/agents/{writer}", headers=ann.headers)).json()
    assert agent["lifecycle"] == "deregistered"
    # Routing passes over it: only the researcher is left, so it takes the message.
    fake_openai.reply_text("facts")
    routed = await _send(http, ann, Setup(setup.project, other, setup.agents), "write an article")
    assert routed["task"]["agent_id"] == setup.agents["researcher"]["id"]
    back = await http.post(f"{PREFIX}/agents/{writer}/register", headers=ann.headers)
    assert back.json()["lifecycle"] == "active"
