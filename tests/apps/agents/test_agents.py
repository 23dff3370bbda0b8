"""Agents over HTTP: validated configurations, immutable versions, bad input and isolation
between users."""

from __future__ import annotations

from typing import Any

import httpx
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
    http,
)
from tests.helpers import assert_problem
from veche.apps.agents.models import AgentVersion
from veche.kernel import AuditEvent, Kernel

__all__ = ["agents_app", "ann", "bob", "http"]  # fixtures

DEFAULTS = {
    "system_prompt": "",
    "model": "default",
    "tools": [],
    "capabilities": [],
    "concurrency_limit": 3,
    "memory_limit": 1000,
    "execution_mode": "server",
}


def config_of(item: dict[str, Any]) -> dict[str, Any]:
    return {key: item[key] for key in ("name", *DEFAULTS)}


async def test_an_agent_starts_ready_at_version_one_with_defaults(
    http: httpx.AsyncClient, ann: Caller
) -> None:
    agent = await create_agent(http, ann, "coder")
    assert config_of(agent) == {"name": "coder", **DEFAULTS}
    assert agent["status"] == "ready"
    assert agent["version"] == 1
    assert agent["key"] == f"user{ann.user_id.replace('-', '')[:8]}_coder_v1"
    fetched = await http.get(f"{PREFIX}/agents/{agent['id']}", headers=ann.headers)
    assert fetched.json() == agent
    listed = (await http.get(f"{PREFIX}/agents", headers=ann.headers)).json()
    assert listed == {"items": [agent], "next_cursor": None}


async def test_a_full_configuration_is_kept(http: httpx.AsyncClient, ann: Caller) -> None:
    config: dict[str, Any] = {
        "name": "ops-bot_2",
        "system_prompt": "You keep the lights on.\n" * 100,
        "model": "planner",
        "tools": ["read_file", "write_file", "list_directory", "execute_command"],
        "capabilities": ["python", "devops"],
        "concurrency_limit": 20,
        "memory_limit": 5000,
        "execution_mode": "client",
    }
    agent = await create_agent(http, ann, **config)
    assert config_of(agent) == config


async def test_every_update_is_a_new_readable_version(http: httpx.AsyncClient, ann: Caller) -> None:
    agent = await create_agent(http, ann, "coder", tools=["read_file"], system_prompt="v1")
    url = f"{PREFIX}/agents/{agent['id']}"

    second = await http.patch(url, json={"system_prompt": "v2"}, headers=ann.headers)
    assert second.status_code == 200, second.text
    assert second.json()["tools"] == ["read_file"]  # a patch keeps what it leaves out
    third = await http.put(
        url,
        json={"name": "writer", "system_prompt": "v3", "tools": ["write_file"]},
        headers=ann.headers,
    )
    assert third.status_code == 200, third.text
    assert third.json()["concurrency_limit"] == 3
    fourth = await http.patch(url, json={"concurrency_limit": 7}, headers=ann.headers)
    assert fourth.status_code == 200, fourth.text

    current = (await http.get(url, headers=ann.headers)).json()
    assert current["version"] == 4
    assert current["name"] == "writer"
    assert current["key"].endswith("_writer_v4")
    assert config_of(current) == {
        **DEFAULTS,
        "name": "writer",
        "system_prompt": "v3",
        "tools": ["write_file"],
        "concurrency_limit": 7,
    }
    assert current["created_at"] == agent["created_at"]

    listed = (await http.get(f"{url}/versions", headers=ann.headers)).json()
    assert [item["version"] for item in listed["items"]] == [4, 3, 2, 1]
    by_number = {item["version"]: item for item in listed["items"]}
    assert by_number[1]["system_prompt"] == "v1"
    assert by_number[1]["name"] == "coder"
    assert by_number[1]["key"].endswith("_coder_v1")
    assert by_number[2]["system_prompt"] == "v2"
    assert by_number[2]["tools"] == ["read_file"]
    assert by_number[3]["tools"] == ["write_file"]
    assert by_number[3]["concurrency_limit"] == 3
    assert by_number[4]["concurrency_limit"] == 7
    assert {item["agent_id"] for item in listed["items"]} == {agent["id"]}
    for number, item in by_number.items():
        one = await http.get(f"{url}/versions/{number}", headers=ann.headers)
        assert one.json() == item
    assert_problem(
        await http.get(f"{url}/versions/5", headers=ann.headers),
        404,
        "agents.agent_version_not_found",
    )

    page = (await http.get(f"{url}/versions", params={"limit": 3}, headers=ann.headers)).json()
    rest = await http.get(
        f"{url}/versions", params={"limit": 3, "cursor": page["next_cursor"]}, headers=ann.headers
    )
    assert [item["version"] for item in rest.json()["items"]] == [1]
    assert rest.json()["next_cursor"] is None


async def test_a_refused_update_makes_no_version(http: httpx.AsyncClient, ann: Caller) -> None:
    agent = await create_agent(http, ann, "coder")
    await create_agent(http, ann, "writer")
    url = f"{PREFIX}/agents/{agent['id']}"
    assert_problem(
        await http.patch(url, json={"name": "writer"}, headers=ann.headers),
        409,
        "agents.agent_name_taken",
    )
    assert_problem(
        await http.put(url, json={"name": "writer"}, headers=ann.headers),
        409,
        "agents.agent_name_taken",
    )
    assert_problem(
        await http.patch(url, json={"tools": ["rm_rf"]}, headers=ann.headers),
        422,
        "validation_failed",
    )
    assert (await http.get(url, headers=ann.headers)).json() == agent
    versions = (await http.get(f"{url}/versions", headers=ann.headers)).json()
    assert len(versions["items"]) == 1


async def test_duplicate_names_conflict_per_user(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    await create_agent(http, ann, "coder")
    again = await http.post(f"{PREFIX}/agents", json={"name": "coder"}, headers=ann.headers)
    assert_problem(again, 409, "agents.agent_name_taken")
    await create_agent(http, bob, "coder")


async def test_delete_removes_the_agent_and_its_versions(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    agent = await create_agent(http, ann, "coder")
    url = f"{PREFIX}/agents/{agent['id']}"
    await http.patch(url, json={"system_prompt": "again"}, headers=ann.headers)
    deleted = await http.delete(url, headers=ann.headers)
    assert deleted.status_code == 204
    for path in (url, f"{url}/versions", f"{url}/versions/1"):
        assert_problem(await http.get(path, headers=ann.headers), 404, "agents.agent_not_found")
    assert_problem(await http.delete(url, headers=ann.headers), 404, "agents.agent_not_found")
    kernel: Kernel = agents_app.state.kernel
    async with kernel.db.unit_of_work() as session:
        versions = await session.scalar(select(func.count()).select_from(AgentVersion))
        actions = (
            await session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.target_id == agent["id"])
                .order_by(AuditEvent.occurred_at)
            )
        ).all()
    assert versions == 0
    assert actions == ["agents.agent.created", "agents.agent.updated", "agents.agent.deleted"]
    await create_agent(http, ann, "coder")  # the name is free again


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "Coder"}, "name"),
        ({"name": "-coder"}, "name"),
        ({"name": "co der"}, "name"),
        ({"name": "c" * 65}, "name"),
        ({"name": "coder", "tools": ["rm_rf"]}, "tools"),
        ({"name": "coder", "tools": ["read_file", "read_file"]}, "tools"),
        ({"name": "coder", "tools": "read_file"}, "tools"),
        ({"name": "coder", "concurrency_limit": 0}, "concurrency_limit"),
        ({"name": "coder", "concurrency_limit": 21}, "concurrency_limit"),
        ({"name": "coder", "concurrency_limit": True}, "concurrency_limit"),
        ({"name": "coder", "concurrency_limit": 2.5}, "concurrency_limit"),
        ({"name": "coder", "memory_limit": 0}, "memory_limit"),
        ({"name": "coder", "system_prompt": "p" * 20_001}, "system_prompt"),
        ({"name": "coder", "execution_mode": "both"}, "execution_mode"),
        ({"name": "coder", "capabilities": ["Not A Tag"]}, "capabilities"),
        ({"name": "coder", "capabilities": [f"t{i}" for i in range(33)]}, "capabilities"),
        ({"name": "coder", "model": ""}, "model"),
        ({"name": "coder", "status": "busy"}, "status"),
        ({"name": "coder", "version": 9}, "version"),
    ],
)
async def test_malformed_configurations_are_refused_with_field_errors(
    http: httpx.AsyncClient, ann: Caller, body: dict[str, object], field: str
) -> None:
    response = await http.post(f"{PREFIX}/agents", json=body, headers=ann.headers)
    problem = assert_problem(response, 422, "validation_failed")
    assert any(field in error["loc"] for error in problem["errors"]), problem
    assert (await http.get(f"{PREFIX}/agents", headers=ann.headers)).json()["items"] == []


async def test_malformed_updates_are_refused(http: httpx.AsyncClient, ann: Caller) -> None:
    agent = await create_agent(http, ann, "coder")
    url = f"{PREFIX}/agents/{agent['id']}"
    for body in (
        {"name": None},
        {"tools": None},
        {"concurrency_limit": 0},
        {"status": "error"},
        {"memory_limit": False},
    ):
        response = await http.patch(url, json=body, headers=ann.headers)
        assert_problem(response, 422, "validation_failed")
    assert_problem(await http.put(url, json={}, headers=ann.headers), 422, "validation_failed")
    nul = await http.put(
        url, json={"name": "coder", "system_prompt": "a\u0000b"}, headers=ann.headers
    )
    assert assert_problem(nul, 422, "validation_failed")["errors"][0]["type"] == "nul_character"
    assert_problem(
        await http.get(f"{url}/versions/0", headers=ann.headers), 422, "validation_failed"
    )
    assert (await http.get(url, headers=ann.headers)).json() == agent


async def test_an_oversized_body_is_refused(http: httpx.AsyncClient, ann: Caller) -> None:
    huge = {"name": "coder", "system_prompt": "x" * (2 * 1024 * 1024)}
    response = await http.post(f"{PREFIX}/agents", json=huge, headers=ann.headers)
    assert_problem(response, 413, "payload_too_large")


async def test_every_agent_endpoint_needs_a_token(http: httpx.AsyncClient, ann: Caller) -> None:
    agent = await create_agent(http, ann, "coder")
    url = f"{PREFIX}/agents/{agent['id']}"
    for method, path, body in [
        ("POST", f"{PREFIX}/agents", {"name": "x"}),
        ("GET", f"{PREFIX}/agents", None),
        ("GET", url, None),
        ("PUT", url, {"name": "x"}),
        ("PATCH", url, {"name": "x"}),
        ("DELETE", url, None),
        ("GET", f"{url}/versions", None),
        ("GET", f"{url}/versions/1", None),
    ]:
        assert_problem(await http.request(method, path, json=body), 401, "unauthorized")
    assert (await http.get(url, headers=ann.headers)).json() == agent


async def test_another_users_agent_does_not_exist_for_them(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    agent = await create_agent(http, ann, "secret-agent", system_prompt="ann's secrets")
    await create_agent(http, bob, "bobs-agent")
    url = f"{PREFIX}/agents/{agent['id']}"
    for method, path, body in [
        ("GET", url, None),
        ("PUT", url, {"name": "stolen"}),
        ("PATCH", url, {"system_prompt": "obey bob"}),
        ("DELETE", url, None),
        ("GET", f"{url}/versions", None),
        ("GET", f"{url}/versions/1", None),
    ]:
        response = await http.request(method, path, json=body, headers=bob.headers)
        problem = assert_problem(response, 404, "agents.agent_not_found")
        assert "secret" not in problem["detail"]
    listed = (await http.get(f"{PREFIX}/agents", headers=bob.headers)).json()
    assert [item["name"] for item in listed["items"]] == ["bobs-agent"]
    assert (await http.get(url, headers=ann.headers)).json() == agent
    versions = (await http.get(f"{url}/versions", headers=ann.headers)).json()
    assert len(versions["items"]) == 1


async def test_pages_through_agents_without_repeats(http: httpx.AsyncClient, ann: Caller) -> None:
    names = [f"agent-{index}" for index in range(5)]
    for name in names:
        await create_agent(http, ann, name)
    first = (await http.get(f"{PREFIX}/agents", params={"limit": 2}, headers=ann.headers)).json()
    seen = [item["name"] for item in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = await http.get(
            f"{PREFIX}/agents", params={"limit": 2, "cursor": cursor}, headers=ann.headers
        )
        seen += [item["name"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
    assert seen == list(reversed(names))
