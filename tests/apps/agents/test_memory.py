"""Agent memory: the ledger rows and their vectors, over HTTP and through `AgentMemory`;
search by meaning with filters, pruning at the agent's limit, clearing, stats, export,
cascades on deletion, bad input and isolation between users."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.apps.agents.http_support import (
    PREFIX,
    Caller,
    agents_app,
    ann,
    bob,
    create_agent,
    create_project,
    http,
)
from tests.helpers import assert_problem
from veche.apps.agents.errors import AgentNotFound, ProjectNotFound
from veche.apps.agents.memory import (
    VECTOR_APP,
    AgentMemory,
    MemoryFilters,
    memory_scope,
    microseconds,
)
from veche.apps.agents.models import MemoryEntry
from veche.apps.agents.runtime import runtime_of
from veche.kernel import Kernel, new_id
from veche.kernel.ai.vectors import VectorFilter, VectorRecord

__all__ = ["agents_app", "ann", "bob", "http"]  # fixtures


def kernel_of(app: FastAPI) -> Kernel:
    kernel: Kernel = app.state.kernel
    return kernel


def memory_of(app: FastAPI) -> AgentMemory:
    return runtime_of(kernel_of(app)).memory


def context_url(agent: dict[str, Any], suffix: str = "") -> str:
    return f"{PREFIX}/agents/{agent['id']}/context{suffix}"


async def add(
    http: httpx.AsyncClient,
    caller: Caller,
    agent: dict[str, Any],
    project: dict[str, Any],
    request: str,
    response: str = "done",
    **fields: Any,
) -> dict[str, Any]:
    answer = await http.post(
        context_url(agent),
        json={"project_id": project["id"], "request": request, "response": response, **fields},
        headers=caller.headers,
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def ledger_count(app: FastAPI, **where: Any) -> int:
    async with kernel_of(app).db.unit_of_work() as session:
        statement = select(func.count()).select_from(MemoryEntry)
        for column, value in where.items():
            statement = statement.where(getattr(MemoryEntry, column) == value)
        return int(await session.scalar(statement) or 0)


async def vector_count(app: FastAPI, user_id: str, **payload: str) -> int:
    await memory_of(app).settle()
    store = await kernel_of(app).ai.vectors()
    selector = VectorFilter(app=VECTOR_APP, user_id=UUID(user_id), payload=payload)
    return await store.count(selector)


# -- over HTTP ----------------------------------------------------------------------------


async def test_interactions_are_listed_newest_first_and_found_by_meaning(
    http: httpx.AsyncClient, ann: Caller
) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    bread = await add(
        http, ann, agent, project, "How do I bake sourdough bread?", "Feed the starter first."
    )
    assert bread["type"] == "chat"
    assert bread["success"] is True
    assert bread["size_bytes"] == len(b"How do I bake sourdough bread?Feed the starter first.")
    await add(http, ann, agent, project, "The CI pipeline fails on the pytest step", "Fixed it.")
    await add(http, ann, agent, project, "Book a flight to Lisbon for Friday", "Booked.")

    listed = await http.get(context_url(agent), headers=ann.headers)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [item["request"][:8] for item in items] == ["Book a f", "The CI p", "How do I"]
    assert all(item["score"] is None for item in items)

    paged = await http.get(context_url(agent), params={"limit": 2}, headers=ann.headers)
    cursor = paged.json()["next_cursor"]
    assert cursor is not None
    rest = await http.get(
        context_url(agent), params={"limit": 2, "cursor": cursor}, headers=ann.headers
    )
    assert [item["id"] for item in rest.json()["items"]] == [bread["id"]]

    found = await http.get(
        context_url(agent),
        params={"project_id": project["id"], "q": "a recipe for baking bread", "limit": 3},
        headers=ann.headers,
    )
    assert found.status_code == 200, found.text
    hits = found.json()["items"]
    assert hits[0]["id"] == bread["id"]
    assert hits[0]["response"] == "Feed the starter first."
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert found.json()["next_cursor"] is None


async def test_filters_narrow_searches_and_lists(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    first = await add(http, ann, agent, project, "deploy the web service", type="tool")
    second = await add(
        http, ann, agent, project, "deploy the web service again", type="tool", success=False
    )
    third = await add(http, ann, agent, project, "deploy the web service once more")
    base = {"project_id": project["id"], "q": "deploy the service"}

    async def ids(**params: Any) -> list[str]:
        answer = await http.get(context_url(agent), params=params, headers=ann.headers)
        assert answer.status_code == 200, answer.text
        return [item["id"] for item in answer.json()["items"]]

    assert set(await ids(**base, type="tool")) == {first["id"], second["id"]}
    assert await ids(**base, type="tool", success="false") == [second["id"]]
    assert set(await ids(**base, success="true")) == {first["id"], third["id"]}
    assert await ids(**base, type="plan") == []
    assert await ids(type="tool", success="true") == [first["id"]]
    assert await ids(project_id=project["id"], type="chat") == [third["id"]]

    since = second["created_at"]
    assert set(await ids(**base, since=since)) == {second["id"], third["id"]}
    assert await ids(**base, since=since, until=third["created_at"]) == [second["id"]]
    assert await ids(until=second["created_at"]) == [first["id"]]
    assert memory_of(agents_app) is runtime_of(kernel_of(agents_app)).memory


async def test_memory_is_pruned_at_the_agents_limit(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann, memory_limit=3)
    project = await create_project(http, ann)
    other = await create_project(http, ann, "Harbour")
    added = [await add(http, ann, agent, project, f"question number {n}") for n in range(5)]
    kept_elsewhere = await add(http, ann, agent, other, "a question in another project")

    listed = (await http.get(context_url(agent), headers=ann.headers)).json()["items"]
    assert [item["id"] for item in listed] == [
        kept_elsewhere["id"],
        *[item["id"] for item in reversed(added[2:])],
    ]
    assert await vector_count(agents_app, ann.user_id, project_id=project["id"]) == 3
    assert await vector_count(agents_app, ann.user_id, project_id=other["id"]) == 1

    # Lowering the limit takes effect at the next write or at a prune without arguments.
    await http.patch(
        f"{PREFIX}/agents/{agent['id']}", json={"memory_limit": 1}, headers=ann.headers
    )
    pruned = await http.post(context_url(agent, "/prune"), json={}, headers=ann.headers)
    assert pruned.status_code == 200, pruned.text
    assert pruned.json() == {"removed": 2}
    assert await vector_count(agents_app, ann.user_id, project_id=project["id"]) == 1


async def test_prune_by_age_and_by_count(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    other = await create_project(http, ann, "Harbour")
    old = await add(http, ann, agent, project, "an old question")
    middle = await add(http, ann, agent, other, "a middle question")
    new = await add(http, ann, agent, project, "a new question")

    by_age = await http.post(
        context_url(agent, "/prune"),
        json={"older_than": middle["created_at"]},
        headers=ann.headers,
    )
    assert by_age.json() == {"removed": 1}
    by_count = await http.post(
        context_url(agent, "/prune"),
        json={"project_id": project["id"], "keep_latest": 0},
        headers=ann.headers,
    )
    assert by_count.json() == {"removed": 1}
    remaining = (await http.get(context_url(agent), headers=ann.headers)).json()["items"]
    assert [item["id"] for item in remaining] == [middle["id"]]
    assert await vector_count(agents_app, ann.user_id, agent_id=agent["id"]) == 1
    assert old["id"] != new["id"]


async def test_clearing_one_project_or_all(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    other = await create_project(http, ann, "Harbour")
    await add(http, ann, agent, project, "one")
    await add(http, ann, agent, project, "two")
    await add(http, ann, agent, other, "three")

    cleared = await http.delete(
        context_url(agent), params={"project_id": project["id"]}, headers=ann.headers
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json() == {"removed": 2}
    assert await vector_count(agents_app, ann.user_id, project_id=project["id"]) == 0
    assert await vector_count(agents_app, ann.user_id, project_id=other["id"]) == 1

    everything = await http.delete(context_url(agent), headers=ann.headers)
    assert everything.json() == {"removed": 1}
    assert await vector_count(agents_app, ann.user_id, agent_id=agent["id"]) == 0
    assert await ledger_count(agents_app, agent_id=UUID(agent["id"])) == 0


async def test_stats_count_entries_vectors_bytes_and_outcomes(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    other = await create_project(http, ann, "Harbour")
    empty = await http.get(context_url(agent, "/stats"), headers=ann.headers)
    assert empty.json() == {
        "entries": 0,
        "vectors": 0,
        "size_bytes": 0,
        "vector_bytes": 0,
        "success_rate": None,
        "by_type": {},
        "oldest": None,
        "newest": None,
    }
    first = await add(http, ann, agent, project, "ab", "cd")
    await add(http, ann, agent, project, "é", "", type="tool", success=False)
    await add(http, ann, agent, project, "x", "y", type="tool")
    last = await add(http, ann, agent, other, "z", "w")
    await memory_of(agents_app).settle()

    whole = (await http.get(context_url(agent, "/stats"), headers=ann.headers)).json()
    assert whole["entries"] == 4
    assert whole["vectors"] == 4
    assert whole["size_bytes"] == 4 + 2 + 2 + 2
    assert whole["vector_bytes"] == 4 * 384 * 4
    assert whole["success_rate"] == 0.75
    assert whole["by_type"] == {"chat": 2, "tool": 2}
    assert whole["oldest"] == first["created_at"]
    assert whole["newest"] == last["created_at"]

    one = await http.get(
        context_url(agent, "/stats"), params={"project_id": project["id"]}, headers=ann.headers
    )
    assert one.json()["entries"] == 3
    assert one.json()["vectors"] == 3
    assert one.json()["success_rate"] == round(2 / 3, 4)


async def test_export_is_json_lines_oldest_first(http: httpx.AsyncClient, ann: Caller) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    other = await create_project(http, ann, "Harbour")
    first = await add(http, ann, agent, project, "first question", "first answer")
    second = await add(http, ann, agent, other, "second\nquestion", 'with "quotes"', type="x")

    exported = await http.get(context_url(agent, "/export"), headers=ann.headers)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in exported.headers["content-disposition"]
    lines = exported.content.splitlines()
    assert len(lines) == 2
    rows = [orjson.loads(line) for line in lines]
    assert [row["id"] for row in rows] == [first["id"], second["id"]]
    assert rows[1] == {
        "id": second["id"],
        "agent_id": agent["id"],
        "project_id": other["id"],
        "type": "x",
        "success": True,
        "request": "second\nquestion",
        "response": 'with "quotes"',
        "size_bytes": second["size_bytes"],
        "created_at": rows[1]["created_at"],
    }
    assert dt.datetime.fromisoformat(rows[1]["created_at"]) == dt.datetime.fromisoformat(
        second["created_at"]
    )

    with_vectors = await http.get(
        context_url(agent, "/export"),
        params={"project_id": project["id"], "vectors": "true"},
        headers=ann.headers,
    )
    (only,) = [orjson.loads(line) for line in with_vectors.content.splitlines()]
    assert only["id"] == first["id"]
    assert len(only["vector"]) == 384
    assert abs(float(np.linalg.norm(only["vector"])) - 1.0) < 1e-4


async def test_deleting_an_agent_or_a_project_deletes_its_memory(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann)
    keeper = await create_agent(http, ann, "keeper")
    project = await create_project(http, ann)
    other = await create_project(http, ann, "Harbour")
    await add(http, ann, agent, project, "one")
    await add(http, ann, agent, other, "two")
    await add(http, ann, keeper, project, "three")
    await add(http, ann, keeper, other, "four")

    deleted = await http.delete(f"{PREFIX}/agents/{agent['id']}", headers=ann.headers)
    assert deleted.status_code == 204
    assert await ledger_count(agents_app, agent_id=UUID(agent["id"])) == 0
    assert await vector_count(agents_app, ann.user_id, agent_id=agent["id"]) == 0
    assert await vector_count(agents_app, ann.user_id, agent_id=keeper["id"]) == 2

    gone = await http.delete(f"{PREFIX}/projects/{project['id']}", headers=ann.headers)
    assert gone.status_code == 204
    assert await ledger_count(agents_app, project_id=UUID(project["id"])) == 0
    assert await vector_count(agents_app, ann.user_id, project_id=project["id"]) == 0
    assert await vector_count(agents_app, ann.user_id, project_id=other["id"]) == 1
    assert await ledger_count(agents_app, agent_id=UUID(keeper["id"])) == 1


async def test_another_users_agent_or_project_is_not_found_everywhere(
    http: httpx.AsyncClient, ann: Caller, bob: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    await add(http, ann, agent, project, "ann's secret plan")
    bobs_agent = await create_agent(http, bob)
    bobs_project = await create_project(http, bob)
    pid = project["id"]

    calls: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = [
        ("GET", "", {"project_id": pid}, None),
        ("GET", "", {"project_id": pid, "q": "plan"}, None),
        ("POST", "", None, {"project_id": bobs_project["id"], "request": "r", "response": "r"}),
        ("DELETE", "", {"project_id": pid}, None),
        ("GET", "/stats", {"project_id": pid}, None),
        ("GET", "/export", {"project_id": pid}, None),
        ("POST", "/prune", None, {"project_id": pid, "keep_latest": 0}),
    ]
    for method, suffix, params, body in calls:
        # Ann's agent through Bob's account, and Bob's agent with Ann's project.
        response = await http.request(
            method, context_url(agent, suffix), params=params, json=body, headers=bob.headers
        )
        assert_problem(response, 404, "agents.agent_not_found")
        own_body = {**body, "project_id": pid} if body is not None and "request" in body else body
        response = await http.request(
            method,
            context_url(bobs_agent, suffix),
            params=params,
            json=own_body,
            headers=bob.headers,
        )
        assert_problem(response, 404, "agents.project_not_found")
    # Ann's own agent with Bob's project.
    response = await http.post(
        context_url(agent),
        json={"project_id": bobs_project["id"], "request": "r", "response": "r"},
        headers=ann.headers,
    )
    assert_problem(response, 404, "agents.project_not_found")
    assert await ledger_count(agents_app, agent_id=UUID(agent["id"])) == 1
    assert await ledger_count(agents_app, user_id=UUID(bob.user_id)) == 0


async def test_unauthenticated_calls_are_refused(http: httpx.AsyncClient, ann: Caller) -> None:
    agent = await create_agent(http, ann)
    for method, suffix in [
        ("GET", ""),
        ("POST", ""),
        ("DELETE", ""),
        ("GET", "/stats"),
        ("GET", "/export"),
        ("POST", "/prune"),
    ]:
        body = {} if method == "POST" else None
        response = await http.request(method, context_url(agent, suffix), json=body)
        assert_problem(response, 401, "unauthorized")


async def test_bad_input_is_refused(http: httpx.AsyncClient, ann: Caller) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    good = {"project_id": project["id"], "request": "r", "response": "r"}
    bad_bodies: list[dict[str, Any]] = [
        {**good, "request": "x" * 20_001},
        {**good, "response": "x" * 20_001},
        {**good, "request": ""},
        {**good, "type": "Not A Slug"},
        {**good, "type": "x" * 33},
        {**good, "success": "yes"},
        {**good, "project_id": "not-a-uuid"},
        {**good, "vector": [0.1]},
        {key: value for key, value in good.items() if key != "project_id"},
    ]
    for body in bad_bodies:
        response = await http.post(context_url(agent), json=body, headers=ann.headers)
        assert_problem(response, 422, "validation_failed")
    huge = await http.post(
        context_url(agent),
        content=orjson.dumps({**good, "request": "x" * (2 * 1024 * 1024)}),
        headers={**ann.headers, "content-type": "application/json"},
    )
    assert huge.status_code == 413, huge.text
    for params in [
        {"since": "2026-01-01T00:00:00"},  # no offset
        {"success": "maybe"},
        {"type": "BAD TYPE"},
        {"limit": 0},
        {"limit": 101},
        {"project_id": "nope"},
        {"q": ""},
        {"q": "x" * 2001, "project_id": project["id"]},
    ]:
        response = await http.get(context_url(agent), params=params, headers=ann.headers)
        assert_problem(response, 422, "validation_failed")
    assert_problem(
        await http.get(context_url(agent), params={"q": "plan"}, headers=ann.headers),
        400,
        "agents.memory_project_required",
    )
    assert_problem(
        await http.get(
            context_url(agent),
            params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            headers=ann.headers,
        ),
        400,
        "agents.memory_time_range_invalid",
    )
    for body in [
        {"keep_latest": -1},
        {"keep_latest": True},
        {"older_than": "2026-01-01"},
        {"x": 1},
    ]:
        response = await http.post(context_url(agent, "/prune"), json=body, headers=ann.headers)
        assert_problem(response, 422, "validation_failed")
    assert_problem(
        await http.get(f"{PREFIX}/agents/not-a-uuid/context", headers=ann.headers),
        422,
        "validation_failed",
    )


# -- AgentMemory directly -----------------------------------------------------------------


async def test_remember_and_recall_through_the_runner_interface(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    memory = memory_of(agents_app)
    ids: dict[str, Any] = {
        "user_id": UUID(ann.user_id),
        "agent_id": UUID(agent["id"]),
        "project_id": UUID(project["id"]),
    }
    async with kernel_of(agents_app).db.unit_of_work() as session:
        for n in range(4):
            await memory.remember(
                session, **ids, request=f"note {n} about gardening tomatoes", response="ok", limit=3
            )
        await memory.remember(
            session, **ids, request="How do I reset my router password?", response="Hold reset."
        )
    async with kernel_of(agents_app).db.unit_of_work() as session:
        hits = await memory.recall(session, **ids, query="forgot the wifi router password")
        assert hits[0].request == "How do I reset my router password?"
        assert hits[0].response == "Hold reset."
        # limit=3 dropped the oldest of the first four; the last call kept up to 1000.
        assert len(hits) == 4
        assert await memory.recall(session, **ids, query="router", type="tool") == []
    assert await vector_count(agents_app, ann.user_id, project_id=project["id"]) == 4


async def test_recall_outside_a_transaction_reads_only_committed_entries_of_the_user(
    http: httpx.AsyncClient, ann: Caller, bob: Caller, agents_app: FastAPI
) -> None:
    """A run recalls through the `Database` (no transaction): the same hits as in a
    session, none of an entry whose transaction has not committed (its vector is already
    stored), and nothing under another user's id."""
    agent, project = await create_agent(http, ann), await create_project(http, ann)
    memory, db = memory_of(agents_app), kernel_of(agents_app).db
    ids: dict[str, Any] = {
        "user_id": UUID(ann.user_id),
        "agent_id": UUID(agent["id"]),
        "project_id": UUID(project["id"]),
    }
    async with db.unit_of_work() as session:
        await memory.remember(session, **ids, request="Where is the spare key?", response="Mat.")
    async with db.unit_of_work() as session:
        in_session = await memory.recall(session, **ids, query="spare key")
    outside = await memory.recall(db, **ids, query="spare key")
    assert [hit.id for hit in outside] == [hit.id for hit in in_session]
    assert outside[0].response == "Mat."
    assert await memory.recall(db, **ids, query="spare key", type="tool") == []

    async with db.unit_of_work() as session:
        await memory.remember(session, **ids, request="Where is the spare key now?", response="")
        assert await vector_count(agents_app, ann.user_id, project_id=project["id"]) == 2
        during = await memory.recall(db, **ids, query="spare key")
        assert [hit.request for hit in during] == ["Where is the spare key?"]
    assert len(await memory.recall(db, **ids, query="spare key")) == 2
    assert await memory.recall(db, **(ids | {"user_id": UUID(bob.user_id)}), query="key") == []


async def test_remember_refuses_another_users_agent_or_project_and_writes_nothing(
    http: httpx.AsyncClient, ann: Caller, bob: Caller, agents_app: FastAPI
) -> None:
    agent, project = await create_agent(http, ann), await create_project(http, ann)
    bobs_agent, bobs_project = await create_agent(http, bob), await create_project(http, bob)
    memory = memory_of(agents_app)
    cases = [
        (bobs_agent["id"], project["id"], AgentNotFound),
        (agent["id"], bobs_project["id"], ProjectNotFound),
        (str(new_id()), project["id"], AgentNotFound),
    ]
    for agent_id, project_id, error in cases:
        async with kernel_of(agents_app).db.unit_of_work() as session:
            with pytest.raises(error):
                await memory.remember(
                    session,
                    user_id=UUID(ann.user_id),
                    agent_id=UUID(agent_id),
                    project_id=UUID(project_id),
                    request="not kept",
                    response="",
                )
    async with kernel_of(agents_app).db.unit_of_work() as session:
        assert await session.scalar(select(func.count()).select_from(MemoryEntry)) == 0
    assert await vector_count(agents_app, ann.user_id, project_id=project["id"]) == 0
    assert await vector_count(agents_app, bob.user_id, project_id=bobs_project["id"]) == 0


async def test_a_rolled_back_remember_leaves_no_vector(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    memory = memory_of(agents_app)

    async def remember_then_fail() -> None:
        async with kernel_of(agents_app).db.unit_of_work() as session:
            await memory.remember(
                session,
                user_id=UUID(ann.user_id),
                agent_id=UUID(agent["id"]),
                project_id=UUID(project["id"]),
                request="never kept",
                response="",
            )
            raise RuntimeError("the transaction fails after remember")

    with pytest.raises(RuntimeError):
        await remember_then_fail()
    assert await ledger_count(agents_app, agent_id=UUID(agent["id"])) == 0
    assert await vector_count(agents_app, ann.user_id, agent_id=agent["id"]) == 0


async def test_a_rolled_back_forget_keeps_the_vectors(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    await add(http, ann, agent, project, "keep me")
    memory = memory_of(agents_app)

    async def forget_then_fail() -> None:
        async with kernel_of(agents_app).db.unit_of_work() as session:
            removed = await memory.forget_agent(
                session, user_id=UUID(ann.user_id), agent_id=UUID(agent["id"])
            )
            assert removed == 1
            raise RuntimeError("the transaction fails after forget")

    with pytest.raises(RuntimeError):
        await forget_then_fail()
    assert await ledger_count(agents_app, agent_id=UUID(agent["id"])) == 1
    assert await vector_count(agents_app, ann.user_id, agent_id=agent["id"]) == 1


async def test_filtered_search_is_exact_when_few_entries_pass(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    """More vectors than one over-fetch, and filters only a few of them pass: the ledger
    names the candidates and the result equals an exact search over those alone."""
    agent = await create_agent(http, ann)
    project = await create_project(http, ann)
    user_id, agent_id, project_id = UUID(ann.user_id), UUID(agent["id"]), UUID(project["id"])
    kernel = kernel_of(agents_app)
    store = await kernel.ai.vectors()
    rng = np.random.default_rng(7)
    count = 600
    vectors = rng.standard_normal((count, store.dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    entries = [
        MemoryEntry(
            id=new_id(),
            user_id=user_id,
            agent_id=agent_id,
            project_id=project_id,
            type="tool" if n % 100 == 0 else "chat",
            success=n % 3 != 0,
            request=f"request {n}",
            response="",
            size_bytes=9,
            created_at=start + dt.timedelta(minutes=n),
        )
        for n in range(count)
    ]
    async with kernel.db.unit_of_work() as session:
        session.add_all(entries)
    await store.upsert(
        [
            VectorRecord(
                id=str(entry.id),
                vector=vectors[n],
                app=VECTOR_APP,
                scope=memory_scope(agent_id, project_id),
                user_id=user_id,
                payload={
                    "agent_id": str(agent_id),
                    "project_id": str(project_id),
                    "type": entry.type,
                    "success": entry.success,
                    "created_us": microseconds(entry.created_at),
                },
            )
            for n, entry in enumerate(entries)
        ]
    )
    query = vectors[5] + 0.5 * vectors[300]

    def expected(keep: list[bool], limit: int) -> list[UUID]:
        rows = np.flatnonzero(keep)
        scores = vectors[rows] @ (query / np.linalg.norm(query))
        return [entries[rows[i]].id for i in np.argsort(-scores)[:limit]]

    cases = [
        (MemoryFilters(type="tool"), [e.type == "tool" for e in entries]),
        (MemoryFilters(success=False), [not e.success for e in entries]),
        (
            MemoryFilters(
                since=start + dt.timedelta(minutes=10), until=start + dt.timedelta(minutes=20)
            ),
            [10 <= n < 20 for n in range(count)],
        ),
        (MemoryFilters(), [True] * count),
    ]
    async with kernel.db.unit_of_work() as session:
        for filters, keep in cases:
            hits = await memory_of(agents_app).search(
                session,
                user_id=user_id,
                agent_id=agent_id,
                project_id=project_id,
                vector=query,
                limit=5,
                filters=filters,
            )
            assert [hit.id for hit in hits] == expected(keep, 5), filters
