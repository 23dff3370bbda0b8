"""Chat sessions in direct mode over HTTP (in-process): sessions, messages and their
tasks, queue policies, cancelling, failures of the model, client-side tools, and the
rules every endpoint keeps (401, 404 across users, 422, 413)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI

from tests.apps.agents.chat_support import PREFIX, User, chat_settings, wait_for_task
from tests.conftest import client_for
from tests.fakes.openai_server import ChatReply, FakeOpenAI
from tests.helpers import assert_problem, signed_up
from veche.apps.agents import module as agents_module
from veche.settings import AISettings, Settings


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


async def _post(http: httpx.AsyncClient, user: User, path: str, body: Any) -> httpx.Response:
    return await http.post(f"{PREFIX}{path}", json=body, headers=user.headers)


async def _made(http: httpx.AsyncClient, user: User, path: str, body: Any) -> dict[str, Any]:
    response = await _post(http, user, path, body)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


class Setup:
    def __init__(self, project: dict[str, Any], agent: dict[str, Any], chat: dict[str, Any]):
        self.project = project
        self.agent = agent
        self.chat = chat
        self.base = f"/projects/{project['id']}/sessions/{chat['id']}"


async def _setup(
    http: httpx.AsyncClient, user: User, *, tools: list[str] | None = None, **session: Any
) -> Setup:
    project = await _made(http, user, "/projects", {"name": "Harbour"})
    agent = await _made(
        http,
        user,
        "/agents",
        {"name": "helper", "tools": tools or [], "system_prompt": "Be brief."},
    )
    chat = await _made(http, user, f"/projects/{project['id']}/sessions", session)
    return Setup(project, agent, chat)


async def _send(
    http: httpx.AsyncClient, user: User, setup: Setup, content: str = "hello"
) -> httpx.Response:
    return await _post(
        http,
        user,
        f"{setup.base}/messages",
        {"content": content, "target_agent": setup.agent["id"]},
    )


async def _finished(
    http: httpx.AsyncClient, user: User, setup: Setup, task_id: str, *states: str
) -> dict[str, Any]:
    return await wait_for_task(
        http, user.headers, setup.project["id"], setup.chat["id"], task_id, *states
    )


# -- sessions ---------------------------------------------------------------------------


async def test_sessions_are_created_listed_changed_and_deleted(
    http: httpx.AsyncClient, ann: User
) -> None:
    project = await _made(http, ann, "/projects", {"name": "Harbour"})
    base = f"/projects/{project['id']}/sessions"
    first = await _made(http, ann, base, {"title": "Plans"})
    assert first["queue_policy"] == "enqueue"
    second = await _made(http, ann, base, {"queue_policy": "reject"})
    listed = await http.get(f"{PREFIX}{base}", headers=ann.headers, params={"limit": 1})
    assert [item["id"] for item in listed.json()["items"]] == [second["id"]]
    cursor = listed.json()["next_cursor"]
    rest = await http.get(f"{PREFIX}{base}", headers=ann.headers, params={"cursor": cursor})
    assert [item["id"] for item in rest.json()["items"]] == [first["id"]]

    changed = await http.patch(
        f"{PREFIX}{base}/{first['id']}",
        json={"title": "Plans, revised", "queue_policy": "interrupt"},
        headers=ann.headers,
    )
    assert changed.status_code == 200
    assert (changed.json()["title"], changed.json()["queue_policy"]) == (
        "Plans, revised",
        "interrupt",
    )
    deleted = await http.delete(f"{PREFIX}{base}/{first['id']}", headers=ann.headers)
    assert deleted.status_code == 204
    gone = await http.get(f"{PREFIX}{base}/{first['id']}", headers=ann.headers)
    assert_problem(gone, 404, "agents.session_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"queue_policy": "later"},
        {"title": "a\x00b"},
        {"title": "x" * 201},
        {"unknown": 1},
        [],
    ],
)
async def test_malformed_sessions_are_refused(
    http: httpx.AsyncClient, ann: User, body: Any
) -> None:
    project = await _made(http, ann, "/projects", {"name": "Harbour"})
    response = await _post(http, ann, f"/projects/{project['id']}/sessions", body)
    assert_problem(response, 422, "validation_failed")


async def test_malformed_and_oversized_messages_are_refused(
    http: httpx.AsyncClient, ann: User
) -> None:
    setup = await _setup(http, ann)
    path = f"{setup.base}/messages"
    for body in (
        {"content": ""},
        {"content": "x" * 20_001},
        {"content": "a\x00b"},
        {"content": "hi", "target_agent": "not-a-uuid"},
        {"content": "hi", "extra": True},
    ):
        assert_problem(await _post(http, ann, path, body), 422, "validation_failed")
    huge = await http.post(
        f"{PREFIX}{path}",
        content=b'{"content": "' + b"x" * 3_000_000 + b'"}',
        headers={**ann.headers, "content-type": "application/json"},
    )
    assert huge.status_code == 413
    unknown_agent = await _post(http, ann, path, {"content": "hi", "target_agent": str(uuid4())})
    assert_problem(unknown_agent, 404, "agents.agent_not_found")


# -- running ----------------------------------------------------------------------------


async def test_a_message_gets_an_answer_and_the_history_is_paged(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_text("Hello to you.")
    response = await _send(http, ann, setup)
    assert response.status_code == 202, response.text
    task = await _finished(http, ann, setup, response.json()["task"]["id"])
    assert task["status"] == "completed"
    assert task["duration_ms"] is not None
    sent = fake_openai.requests_to("/chat/completions")[-1].body["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[-1] == {"role": "user", "content": "hello"}
    first = await http.get(
        f"{PREFIX}{setup.base}/messages", headers=ann.headers, params={"limit": 1}
    )
    assert [m["content"] for m in first.json()["items"]] == ["Hello to you."]
    rest = await http.get(
        f"{PREFIX}{setup.base}/messages",
        headers=ann.headers,
        params={"cursor": first.json()["next_cursor"]},
    )
    assert [m["content"] for m in rest.json()["items"]] == ["hello"]


async def test_the_history_window_moves_half_a_window_at_a_time(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    """At most 10 earlier messages, and once the session is longer the window's start
    moves 5 messages at a time, so runs in a row begin with the same messages."""
    setup = await _setup(http, ann)
    rounds = 10
    fake_openai.script("chat", *[ChatReply(content=f"answer {k}") for k in range(rounds)])
    seen: list[list[str]] = []
    for k in range(rounds):
        response = await _send(http, ann, setup, f"question {k}")
        assert response.status_code == 202, response.text
        task = await _finished(http, ann, setup, response.json()["task"]["id"])
        assert task["status"] == "completed"
        sent = fake_openai.requests_to("/chat/completions")[-1].body["messages"]
        assert sent[-1] == {"role": "user", "content": f"question {k}"}
        seen.append(
            [
                item["content"]
                for item in sent[1:-1]
                if not item["content"].startswith("Context from your memory")
            ]
        )
    everything = [text for k in range(rounds) for text in (f"question {k}", f"answer {k}")]
    # Up to 10 earlier messages everything is kept; then 12 -> start at 5, 14 -> 5, 16 -> 10.
    assert seen[5] == everything[:10]
    assert seen[6] == everything[5:12]
    assert seen[7] == everything[5:14]
    assert seen[8] == everything[10:16]
    assert seen[9] == everything[10:18]
    assert all(len(history) <= 10 for history in seen)


@pytest.mark.parametrize(("floor", "recalled"), [(None, True), (0.0, True), (0.9999, False)])
async def test_memories_under_the_relevance_floor_stay_out_of_the_prompt(
    app_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    floor: float | None,
    recalled: bool,
) -> None:
    """The fake embeddings are hashes: another question scores well under 0.9999. The
    OpenAI-compatible provider has no floor of its own, so None keeps every hit."""
    settings = chat_settings(settings_factory, fake_openai, memory_min_score=floor)
    app = await app_factory(settings, [agents_module])
    async with client_for(app) as client:
        ann = await _user(client, "ann@example.com")
        setup = await _setup(client, ann)
        fake_openai.script("chat", ChatReply(content="Noted."), ChatReply(content="Again."))
        first = await _send(client, ann, setup, "Remember the harbour code 1234.")
        await _finished(client, ann, setup, first.json()["task"]["id"])
        other = await _made(client, ann, f"/projects/{setup.project['id']}/sessions", {})
        second = await _post(
            client,
            ann,
            f"/projects/{setup.project['id']}/sessions/{other['id']}/messages",
            {"content": "Which code did I give you?", "target_agent": setup.agent["id"]},
        )
        task = await wait_for_task(
            client, ann.headers, setup.project["id"], other["id"], second.json()["task"]["id"]
        )
        assert task["status"] == "completed"
    prompt = fake_openai.requests_to("/chat/completions")[-1].body["messages"]
    assert prompt[-1]["content"] == "Which code did I give you?"
    with_memory = any("harbour code 1234" in item["content"] for item in prompt[:-1])
    assert with_memory is recalled


async def test_a_message_without_an_agent_goes_to_the_users_only_agent(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_text("Noted.")
    response = await _post(http, ann, f"{setup.base}/messages", {"content": "note to self"})
    assert response.status_code == 202, response.text
    task = response.json()["task"]
    assert (task["kind"], task["agent_id"], task["plan_id"]) == ("chat", setup.agent["id"], None)
    assert (await _finished(http, ann, setup, task["id"]))["status"] == "completed"


async def test_a_refused_request_fails_the_task_and_the_session_stays_usable(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_error(400)
    task = (await _send(http, ann, setup)).json()["task"]["id"]
    failed = await _finished(http, ann, setup, task)
    assert failed["status"] == "failed"
    assert failed["error_code"] == "ai_provider_rejected"
    assert "sk-test-key" not in str(failed)
    fake_openai.reply_text("Back again.")
    again = await _send(http, ann, setup)
    assert again.status_code == 202, again.text
    assert (await _finished(http, ann, setup, again.json()["task"]["id"]))["status"] == "completed"


async def test_an_answer_stands_when_its_memory_cannot_be_embedded(
    app_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    fake_openai: FakeOpenAI,
) -> None:
    settings = chat_settings(settings_factory, fake_openai).model_copy(
        update={
            "embeddings_provider": "openai",
            "embeddings_base_url": fake_openai.base_url,
            "embeddings_model": "fake-embedder",
            "ai": AISettings(max_retries=0, embedding_dimensions=16),
        }
    )
    app = await app_factory(settings, [agents_module])
    async with client_for(app) as http:
        ann = await _user(http, "ann@example.com")
        setup = await _setup(http, ann)
        context = f"{PREFIX}/agents/{setup.agent['id']}/context"
        params = {"project_id": setup.project["id"]}
        # The recall's embedding and the new entry's both fail: no memory, an answer.
        fake_openai.reply_error(503, endpoint="embeddings", times=2)
        fake_openai.reply_text("Hello there.")
        task = (await _send(http, ann, setup)).json()["task"]["id"]
        assert (await _finished(http, ann, setup, task))["status"] == "completed"
        listed = await http.get(f"{PREFIX}{setup.base}/messages", headers=ann.headers)
        assert listed.json()["items"][0]["content"] == "Hello there."
        remembered = await http.get(context, params=params, headers=ann.headers)
        assert remembered.status_code == 200, remembered.text
        assert remembered.json()["items"] == []
        # Embeddings answer again: the next exchange is remembered.
        fake_openai.reply_text("Again.")
        task = (await _send(http, ann, setup, "once more")).json()["task"]["id"]
        assert (await _finished(http, ann, setup, task))["status"] == "completed"
        remembered = await http.get(context, params=params, headers=ann.headers)
        assert [item["response"] for item in remembered.json()["items"]] == ["Again."]
        assert len(fake_openai.requests_to("/embeddings")) == 4


async def test_an_unavailable_model_puts_the_agent_in_error_with_a_clear_refusal(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_error(503, times=1000)
    task = (await _send(http, ann, setup)).json()["task"]["id"]
    failed = await _finished(http, ann, setup, task)
    # A transient failure is retried (three claims by default) before it is final.
    assert (failed["error_code"], failed["attempts"]) == ("ai_provider_unavailable", 3)
    refused = await _send(http, ann, setup)
    assert_problem(refused, 503, "agents.agent_unavailable")
    assert int(refused.headers["retry-after"]) > 0
    # Routing passes over an agent in error: with no other agent there is nobody to ask.
    unrouted = await _post(http, ann, f"{setup.base}/messages", {"content": "noted"})
    assert_problem(unrouted, 409, "agents.no_agents")


async def test_the_reject_policy_refuses_a_second_message_and_enqueue_runs_them_in_order(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann, queue_policy="reject")
    fake_openai.script("chat", ChatReply(content="slow", delay=0.5))
    first = await _send(http, ann, setup, "one")
    busy = await _send(http, ann, setup, "two")
    assert_problem(busy, 409, "agents.session_busy")
    await _finished(http, ann, setup, first.json()["task"]["id"])

    queued = await _made(http, ann, f"/projects/{setup.project['id']}/sessions", {})
    setup.chat = queued
    setup.base = f"/projects/{setup.project['id']}/sessions/{queued['id']}"
    fake_openai.script(
        "chat", ChatReply(content="first answer", delay=0.3), ChatReply(content="second answer")
    )
    one = (await _send(http, ann, setup, "one")).json()["task"]["id"]
    two = (await _send(http, ann, setup, "two")).json()["task"]["id"]
    assert (await _finished(http, ann, setup, two))["status"] == "completed"
    assert (await _finished(http, ann, setup, one))["status"] == "completed"
    history = await http.get(f"{PREFIX}{setup.base}/messages", headers=ann.headers)
    contents = [m["content"] for m in reversed(history.json()["items"])]
    # Both questions were stored at once; the answers came one after the other.
    assert contents == ["one", "two", "first answer", "second answer"]
    # The second run saw the first exchange in its history.
    last = fake_openai.requests_to("/chat/completions")[-1].body["messages"]
    assert [m["content"] for m in last if m["role"] != "system"][-3:] == [
        "one",
        "first answer",
        "two",
    ]


async def test_interrupt_cancels_the_running_message(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann, queue_policy="interrupt")
    fake_openai.script(
        "chat", ChatReply(content="never seen", delay=2.0), ChatReply(content="fresh")
    )
    first = (await _send(http, ann, setup, "one")).json()["task"]["id"]
    await _finished(http, ann, setup, first, "running")
    second = (await _send(http, ann, setup, "two")).json()["task"]["id"]
    assert (await _finished(http, ann, setup, first))["status"] == "cancelled"
    assert (await _finished(http, ann, setup, second))["status"] == "completed"


async def test_cancel_stops_the_run(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.script("chat", ChatReply(content="too late", delay=2.0))
    task = (await _send(http, ann, setup)).json()["task"]["id"]
    await _finished(http, ann, setup, task, "running")
    response = await _post(http, ann, f"{setup.base}/cancel", {})
    assert response.status_code == 200
    assert response.json()["cancelled"] == [task]
    assert (await _finished(http, ann, setup, task))["status"] == "cancelled"
    history = await http.get(f"{PREFIX}{setup.base}/messages", headers=ann.headers)
    assert [m["role"] for m in history.json()["items"]] == ["user"]


# -- client-side tools ----------------------------------------------------------------------


async def test_a_client_side_tool_call_waits_for_the_users_machine(
    http: httpx.AsyncClient, ann: User, bob: User, fake_openai: FakeOpenAI
) -> None:
    project = await _made(http, ann, "/projects", {"name": "Harbour"})
    agent = await _made(
        http, ann, "/agents", {"name": "local", "tools": ["read_file"], "execution_mode": "client"}
    )
    chat = await _made(http, ann, f"/projects/{project['id']}/sessions", {})
    setup = Setup(project, agent, chat)
    fake_openai.reply_tool_call("read_file", {"path": "todo.txt"})
    fake_openai.reply_text("Your list says: buy rope.")
    task = (await _send(http, ann, setup, "what is on my list?")).json()["task"]["id"]
    await _finished(http, ann, setup, task, "waiting_tool")

    calls = await http.get(f"{PREFIX}{setup.base}/tasks", headers=ann.headers)
    assert calls.json()["items"][0]["status"] == "waiting_tool"
    # The call's id is on the stream; here we read it back from the history of the hub.
    call_id = await _requested_call(http, ann, setup)
    url = f"{PREFIX}{setup.base}/tool-calls/{call_id}/result"
    # Bob cannot see or answer Ann's call, even with his own session path.
    bob_setup = await _setup(http, bob)
    stranger = await http.post(
        f"{PREFIX}{bob_setup.base}/tool-calls/{call_id}/result",
        json={"output": "x"},
        headers=bob.headers,
    )
    assert_problem(stranger, 404, "agents.tool_call_not_found")
    assert_problem(await http.post(url, json={"output": "x"}), 401, "unauthorized")
    assert_problem(
        await http.post(url, json={"error": "e" * 2001}, headers=ann.headers),
        422,
        "validation_failed",
    )
    answered = await http.post(url, json={"output": {"content": "buy rope"}}, headers=ann.headers)
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "completed"
    again = await http.post(url, json={"output": "twice"}, headers=ann.headers)
    assert_problem(again, 409, "agents.tool_call_closed")
    assert (await _finished(http, ann, setup, task))["status"] == "completed"
    tool_message = fake_openai.requests_to("/chat/completions")[-1].body["messages"][-1]
    assert tool_message["role"] == "tool"
    assert "buy rope" in tool_message["content"]


async def _requested_call(http: httpx.AsyncClient, user: User, setup: Setup) -> str:
    """The id of the session's one requested tool call (also on the stream)."""
    response = await http.get(
        f"{PREFIX}{setup.base}/tool-calls", headers=user.headers, params={"status": "requested"}
    )
    assert response.status_code == 200, response.text
    (call,) = response.json()["items"]
    assert (call["tool"], call["arguments"]) == ("read_file", {"path": "todo.txt"})
    call_id: str = call["id"]
    return call_id


# -- isolation and authentication -------------------------------------------------------------


async def test_every_chat_endpoint_hides_another_users_sessions(
    http: httpx.AsyncClient, ann: User, bob: User, fake_openai: FakeOpenAI
) -> None:
    setup = await _setup(http, ann)
    fake_openai.reply_text("hi")
    task = (await _send(http, ann, setup)).json()["task"]["id"]
    await _finished(http, ann, setup, task)
    pid, sid = setup.project["id"], setup.chat["id"]
    base = f"{PREFIX}/projects/{pid}/sessions"
    calls = [
        ("GET", f"{base}", None, "agents.project_not_found"),
        ("POST", f"{base}", {}, "agents.project_not_found"),
        ("GET", f"{base}/{sid}", None, "agents.project_not_found"),
        ("PATCH", f"{base}/{sid}", {"title": "mine"}, "agents.project_not_found"),
        ("DELETE", f"{base}/{sid}", None, "agents.project_not_found"),
        ("GET", f"{base}/{sid}/messages", None, "agents.project_not_found"),
        ("POST", f"{base}/{sid}/messages", {"content": "x"}, "agents.project_not_found"),
        ("GET", f"{base}/{sid}/tasks", None, "agents.project_not_found"),
        ("POST", f"{base}/{sid}/cancel", {}, "agents.project_not_found"),
        ("GET", f"{base}/{sid}/events", None, "agents.project_not_found"),
        ("GET", f"{base}/{sid}/tool-calls", None, "agents.project_not_found"),
        ("GET", f"{base}/{sid}/tool-calls/{uuid4()}", None, "agents.project_not_found"),
        (
            "POST",
            f"{base}/{sid}/tool-calls/{uuid4()}/result",
            {"output": 1},
            "agents.project_not_found",
        ),
    ]
    for method, url, body, code in calls:
        response = await http.request(method, url, json=body, headers=bob.headers)
        assert_problem(response, 404, code)
        anonymous = await http.request(method, url, json=body)
        assert_problem(anonymous, 401, "unauthorized")
    # Bob's own project with Ann's session id, and Ann's agent as Bob's target: still 404.
    bob_setup = await _setup(http, bob)
    response = await http.get(
        f"{PREFIX}/projects/{bob_setup.project['id']}/sessions/{sid}", headers=bob.headers
    )
    assert_problem(response, 404, "agents.session_not_found")
    response = await _post(
        http, bob, f"{bob_setup.base}/messages", {"content": "x", "target_agent": setup.agent["id"]}
    )
    assert_problem(response, 404, "agents.agent_not_found")
    # Ann's data is untouched.
    history = await http.get(f"{PREFIX}{setup.base}/messages", headers=ann.headers)
    assert len(history.json()["items"]) == 2
