"""Projects over HTTP: CRUD, workspaces, pagination, bad input and isolation between users."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.apps.agents.http_support import (
    PREFIX,
    Caller,
    agents_app,
    ann,
    bob,
    create_project,
    http,
)
from tests.helpers import assert_problem
from veche.kernel import AuditEvent, Kernel
from veche.settings import Settings

__all__ = ["agents_app", "ann", "bob", "http"]  # fixtures


def workspace_of(settings: Settings, caller: Caller, project_id: str) -> Path:
    return settings.data_dir / "agents" / "workspaces" / caller.user_id / project_id


async def test_create_read_update_delete_a_project(
    http: httpx.AsyncClient, ann: Caller, settings: Settings
) -> None:
    created = await create_project(http, ann, "Lighthouse", description="Keeps time")
    assert created["name"] == "Lighthouse"
    assert created["description"] == "Keeps time"
    project_url = f"{PREFIX}/projects/{created['id']}"

    fetched = await http.get(project_url, headers=ann.headers)
    assert fetched.status_code == 200
    assert fetched.json() == created

    renamed = await http.patch(project_url, json={"name": "Beacon"}, headers=ann.headers)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Beacon"
    assert renamed.json()["description"] == "Keeps time"  # left out: kept

    described = await http.patch(project_url, json={"description": ""}, headers=ann.headers)
    assert described.status_code == 200, described.text
    assert described.json() == {
        **renamed.json(),
        "description": "",
        "updated_at": described.json()["updated_at"],
    }

    deleted = await http.delete(project_url, headers=ann.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(
        await http.get(project_url, headers=ann.headers), 404, "agents.project_not_found"
    )
    assert_problem(
        await http.delete(project_url, headers=ann.headers), 404, "agents.project_not_found"
    )


async def test_a_project_gets_a_private_workspace_removed_with_it(
    http: httpx.AsyncClient, ann: Caller, settings: Settings
) -> None:
    project = await create_project(http, ann)
    workspace = workspace_of(settings, ann, project["id"])
    assert workspace.is_dir()
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
    assert stat.S_IMODE(workspace.parent.stat().st_mode) == 0o700
    (workspace / "notes").mkdir()
    (workspace / "notes" / "todo.md").write_text("- ship\n")
    outside = settings.data_dir / "outside.txt"
    outside.write_text("keep me\n")
    (workspace / "link").symlink_to(outside)

    response = await http.delete(f"{PREFIX}/projects/{project['id']}", headers=ann.headers)
    assert response.status_code == 204
    assert not workspace.exists()
    trash = settings.data_dir / "agents" / "workspaces" / ".trash"
    for _ in range(200):  # deleted in a worker thread once the transaction committed
        if not any(trash.iterdir()):
            break
        await asyncio.sleep(0.01)
    assert not any(trash.iterdir())
    assert outside.read_text() == "keep me\n"  # a link is removed, never followed


async def test_a_delete_that_rolls_back_keeps_the_workspace_files(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI, settings: Settings
) -> None:
    from veche.apps.agents.service import ProjectService
    from veche.apps.agents.workspace import WorkspaceRoot

    project = await create_project(http, ann)
    workspace = workspace_of(settings, ann, project["id"])
    (workspace / "draft.md").write_text("unsaved thoughts\n")
    kernel: Kernel = agents_app.state.kernel

    async def delete_then_fail() -> None:
        async with kernel.db.unit_of_work() as session:
            service = ProjectService(session, UUID(ann.user_id), WorkspaceRoot(settings.data_dir))
            await service.delete(UUID(project["id"]))
            assert not workspace.exists()  # moved aside while the transaction is open
            raise RuntimeError("the transaction fails after the delete")

    with pytest.raises(RuntimeError):
        await delete_then_fail()
    assert (workspace / "draft.md").read_text() == "unsaved thoughts\n"
    still = await http.get(f"{PREFIX}/projects/{project['id']}", headers=ann.headers)
    assert still.status_code == 200


async def test_the_trash_left_by_a_dead_process_is_swept_and_a_fresh_one_kept(
    settings: Settings,
) -> None:
    from veche.apps.agents.workspace import WorkspaceRoot

    root = WorkspaceRoot(settings.data_dir)
    trash = root.root / ".trash"
    trash.mkdir(parents=True, exist_ok=True)
    left = trash / "left-by-a-crash"
    (left / "notes").mkdir(parents=True)
    (left / "notes" / "a.md").write_text("old\n")
    outside = settings.data_dir / "outside-trash.txt"
    outside.write_text("keep me\n")
    (left / "link").symlink_to(outside)
    fresh = trash / "transaction-in-flight"
    fresh.mkdir()
    # Both were moved in just now: within the grace period both stay; past it both go.
    assert await root.sweep_trash(older_than=3600) == 0
    assert await root.sweep_trash(older_than=-1) == 2
    assert not left.exists()
    assert not fresh.exists()
    assert outside.read_text() == "keep me\n"  # a link is removed, never followed
    assert await root.sweep_trash(older_than=-1) == 0
    assert await WorkspaceRoot(settings.data_dir / "nowhere").sweep_trash() == 0


async def test_the_row_keeps_the_workspace_relative_to_the_data_dir(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    from veche.apps.agents.models import Project

    project = await create_project(http, ann)
    kernel: Kernel = agents_app.state.kernel
    async with kernel.db.unit_of_work() as session:
        row = await session.get(Project, UUID(project["id"]))
    assert row is not None
    assert row.workspace == f"{ann.user_id}/{project['id']}"
    assert not Path(row.workspace).is_absolute()


async def test_changes_are_audited(
    http: httpx.AsyncClient, ann: Caller, agents_app: FastAPI
) -> None:
    project = await create_project(http, ann)
    url = f"{PREFIX}/projects/{project['id']}"
    await http.patch(url, json={"description": "new"}, headers=ann.headers)
    await http.delete(url, headers=ann.headers)
    kernel: Kernel = agents_app.state.kernel
    async with kernel.db.unit_of_work() as session:
        rows = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.target_id == project["id"])
                .order_by(AuditEvent.occurred_at)
            )
        ).all()
    assert [row.action for row in rows] == [
        "agents.project.created",
        "agents.project.updated",
        "agents.project.deleted",
    ]
    assert {str(row.actor_id) for row in rows} == {ann.user_id}
    assert rows[1].data == {"fields": ["description"]}


async def test_pages_through_projects_without_repeats(http: httpx.AsyncClient, ann: Caller) -> None:
    names = [f"project {index}" for index in range(7)]
    for name in names:
        await create_project(http, ann, name)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await http.get(f"{PREFIX}/projects", params=params, headers=ann.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [item["name"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(names))  # newest first, each once


async def test_a_forged_cursor_is_a_bad_request(http: httpx.AsyncClient, ann: Caller) -> None:
    response = await http.get(
        f"{PREFIX}/projects", params={"cursor": "bm90IGEgY3Vyc29y"}, headers=ann.headers
    )
    assert_problem(response, 400, "pagination.invalid_cursor")


async def test_duplicate_names_conflict(http: httpx.AsyncClient, ann: Caller, bob: Caller) -> None:
    await create_project(http, ann, "Lighthouse")
    other = await create_project(http, ann, "Beacon")
    again = await http.post(f"{PREFIX}/projects", json={"name": "Lighthouse"}, headers=ann.headers)
    assert_problem(again, 409, "agents.project_name_taken")
    renamed = await http.patch(
        f"{PREFIX}/projects/{other['id']}", json={"name": "Lighthouse"}, headers=ann.headers
    )
    assert_problem(renamed, 409, "agents.project_name_taken")
    same = await http.patch(
        f"{PREFIX}/projects/{other['id']}", json={"name": "Beacon"}, headers=ann.headers
    )
    assert same.status_code == 200  # keeping its own name is no conflict
    await create_project(http, bob, "Lighthouse")  # names are unique per user only


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": " leading space"}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 7}, "name"),
        ({"name": "ok", "description": "d" * 2001}, "description"),
        ({"name": "ok", "owner": "someone"}, "owner"),
    ],
)
async def test_malformed_projects_are_refused_with_field_errors(
    http: httpx.AsyncClient, ann: Caller, body: dict[str, object], field: str
) -> None:
    problem = assert_problem(
        await http.post(f"{PREFIX}/projects", json=body, headers=ann.headers),
        422,
        "validation_failed",
    )
    assert any(error["loc"][-1] == field for error in problem["errors"]), problem


async def test_malformed_updates_are_refused(http: httpx.AsyncClient, ann: Caller) -> None:
    project = await create_project(http, ann)
    url = f"{PREFIX}/projects/{project['id']}"
    for body in ({"name": None}, {"description": None}, {"id": project["id"]}, {"name": ""}):
        assert_problem(
            await http.patch(url, json=body, headers=ann.headers), 422, "validation_failed"
        )
    nul = await http.patch(url, json={"name": "bad\u0000name"}, headers=ann.headers)
    problem = assert_problem(nul, 422, "validation_failed")
    assert problem["errors"][0]["type"] == "nul_character"
    bad_id = await http.get(f"{PREFIX}/projects/not-a-uuid", headers=ann.headers)
    assert_problem(bad_id, 422, "validation_failed")
    unchanged = await http.get(url, headers=ann.headers)
    assert unchanged.json() == project


async def test_an_oversized_body_is_refused(http: httpx.AsyncClient, ann: Caller) -> None:
    huge = {"name": "big", "description": "x" * (2 * 1024 * 1024)}
    response = await http.post(f"{PREFIX}/projects", json=huge, headers=ann.headers)
    assert_problem(response, 413, "payload_too_large")
    listed = await http.get(f"{PREFIX}/projects", headers=ann.headers)
    assert listed.json()["items"] == []


async def test_a_body_that_is_not_json_is_refused(http: httpx.AsyncClient, ann: Caller) -> None:
    response = await http.post(
        f"{PREFIX}/projects",
        content=b"name=x",
        headers={**ann.headers, "content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "unsupported_media_type")


async def test_every_project_endpoint_needs_a_token(http: httpx.AsyncClient, ann: Caller) -> None:
    project = await create_project(http, ann)
    url = f"{PREFIX}/projects/{project['id']}"
    for method, path, body in [
        ("POST", f"{PREFIX}/projects", {"name": "x"}),
        ("GET", f"{PREFIX}/projects", None),
        ("GET", url, None),
        ("PATCH", url, {"name": "x"}),
        ("DELETE", url, None),
    ]:
        response = await http.request(method, path, json=body)
        assert_problem(response, 401, "unauthorized")
        bad = await http.request(
            method, path, json=body, headers={"Authorization": "Bearer not-a-token"}
        )
        assert bad.status_code == 401, (method, path)
    still = await http.get(url, headers=ann.headers)
    assert still.status_code == 200


async def test_another_users_project_does_not_exist_for_them(
    http: httpx.AsyncClient, ann: Caller, bob: Caller, settings: Settings
) -> None:
    project = await create_project(http, ann, "Private", description="ann's")
    await create_project(http, bob, "Bob's own")
    url = f"{PREFIX}/projects/{project['id']}"
    for method, body in [("GET", None), ("PATCH", {"name": "taken over"}), ("DELETE", None)]:
        response = await http.request(method, url, json=body, headers=bob.headers)
        problem = assert_problem(response, 404, "agents.project_not_found")
        assert "Private" not in problem["detail"]
    listed = (await http.get(f"{PREFIX}/projects", headers=bob.headers)).json()
    assert [item["name"] for item in listed["items"]] == ["Bob's own"]
    mine = await http.get(url, headers=ann.headers)
    assert mine.json() == project  # untouched by bob's attempts
    assert workspace_of(settings, ann, project["id"]).is_dir()
