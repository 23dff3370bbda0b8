"""Approvals: the policy and rules the gate applies, the user's decisions over HTTP, the
expiry sweep, the events on the session stream, history, metrics and isolation. Sessions
and tasks are made as plain rows; everything runs on the real migrated database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI

from tests.apps.agents.http_support import (
    PREFIX,
    Caller,
    agents_app,
    ann,
    bob,
    create_project,
    http,
)
from tests.conftest import client_for
from tests.helpers import assert_problem
from veche.apps.agents import module as agents_module
from veche.apps.agents.approval_policy import call_path, needs_confirmation, normalize_pattern
from veche.apps.agents.approval_sweep import sweep_approvals
from veche.apps.agents.approvals import ApprovalService
from veche.apps.agents.models import Approval, ChatSession, Task
from veche.apps.agents.runtime import runtime_of
from veche.apps.agents.stream import session_channel
from veche.apps.agents.tools.risk import Risk
from veche.kernel import Kernel, new_id, utcnow
from veche.kernel.realtime import Position
from veche.settings import Settings

__all__ = ["agents_app", "ann", "bob", "http"]  # fixtures

APPROVALS = f"{PREFIX}/approvals"


@dataclass
class Paused:
    """A task of a caller's, in a session of one of their projects."""

    task: Task
    project_id: UUID
    session_id: UUID


def kernel_of(app: FastAPI) -> Kernel:
    kernel: Kernel = app.state.kernel
    return kernel


@pytest.fixture
def kernel(agents_app: FastAPI) -> Kernel:
    return kernel_of(agents_app)


@pytest.fixture
def wakes(kernel: Kernel) -> list[UUID]:
    """Every task id the app wakes, in order (the runner's registration point)."""
    woken: list[UUID] = []
    runtime_of(kernel).wakers.append(woken.append)
    return woken


async def make_task(
    kernel: Kernel,
    caller: Caller,
    project_id: str | UUID,
    *,
    session_id: UUID | None = None,
) -> Paused:
    user_id = UUID(caller.user_id)
    project = UUID(str(project_id))
    async with kernel.db.unit_of_work() as db:
        if session_id is None:
            chat = ChatSession(id=new_id(), user_id=user_id, project_id=project, title="chat")
            db.add(chat)
            await db.flush()
            session_id = chat.id
        task = Task(
            id=new_id(),
            user_id=user_id,
            project_id=project,
            session_id=session_id,
            message_id=new_id(),
            status="running",
        )
        db.add(task)
    return Paused(task, project, session_id)


async def paused_task(http: httpx.AsyncClient, kernel: Kernel, caller: Caller) -> Paused:
    project = await create_project(http, caller, f"P {new_id().hex[-12:]}")
    return await make_task(kernel, caller, project["id"])


async def gate(
    kernel: Kernel,
    paused: Paused,
    *,
    tool: str = "write_file",
    arguments: dict[str, Any] | None = None,
    risk: Risk = Risk.MEDIUM,
    attempt: int = 1,
    wake: Callable[[UUID], None] | None = None,
) -> Approval:
    runtime = runtime_of(kernel)
    async with kernel.db.unit_of_work() as db:
        service = ApprovalService(
            db, paused.task.user_id, runtime.settings, runtime.events, wake or runtime.wake
        )
        return await service.gate(
            task=paused.task,
            call_id=f"call-{new_id().hex[:6]}",
            tool=tool,
            arguments={"path": "notes.md", "content": "x"} if arguments is None else arguments,
            risk=risk,
            reasons=["writes a file"],
            attempt=attempt,
        )


async def stream_events(kernel: Kernel, paused: Paused) -> list[tuple[str, dict[str, Any]]]:
    """(event type, payload) of everything published on the task's session channel."""
    await runtime_of(kernel).events.flush()
    channel = session_channel(paused.task.user_id, paused.session_id)
    top = await kernel.realtime.backend.read(channel, None)
    history = await kernel.realtime.backend.read(channel, Position(top.epoch, 0))
    return [(message.event, message.data["payload"]) for message in history.messages]


async def set_policy(http: httpx.AsyncClient, caller: Caller, **policy: Any) -> dict[str, Any]:
    response = await http.put(f"{APPROVALS}/policy", json=policy, headers=caller.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- the policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "threshold", "auto_low", "risk", "asks"),
    [
        ("risky", "MEDIUM", True, Risk.LOW, False),
        ("risky", "MEDIUM", True, Risk.MEDIUM, True),
        ("risky", "MEDIUM", True, Risk.HIGH, True),
        ("risky", "HIGH", True, Risk.MEDIUM, False),
        ("risky", "HIGH", True, Risk.HIGH, True),
        ("risky", "HIGH", True, Risk.UNKNOWN, True),
        ("risky", "LOW", True, Risk.LOW, False),
        ("risky", "LOW", False, Risk.LOW, True),
        ("always", "HIGH", False, Risk.LOW, True),
        ("always", "HIGH", True, Risk.LOW, False),
        ("always", "HIGH", True, Risk.MEDIUM, True),
        ("never", "LOW", False, Risk.HIGH, False),
        ("never", "LOW", False, Risk.UNKNOWN, False),
    ],
)
def test_the_policy_decides_what_asks(
    mode: str, threshold: str, auto_low: bool, risk: Risk, asks: bool
) -> None:
    assert needs_confirmation(mode, threshold, auto_low, risk) is asks


async def test_the_default_policy_pauses_risky_calls_with_deadlines_by_risk(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    paused = await paused_task(http, kernel, ann)
    low = await gate(kernel, paused, tool="read_file", arguments={"path": "a.py"}, risk=Risk.LOW)
    assert (low.status, low.decided_by) == ("approved", "policy")
    assert low.resolved_at is not None
    medium = await gate(kernel, paused, risk=Risk.MEDIUM)
    high = await gate(kernel, paused, risk=Risk.HIGH)
    unknown = await gate(
        kernel, paused, tool="delete_file", arguments={"path": "x"}, risk=Risk.UNKNOWN
    )
    assert [row.status for row in (medium, high, unknown)] == ["pending"] * 3
    assert medium.expires_at - medium.created_at == timedelta(seconds=300)
    assert high.expires_at - high.created_at == timedelta(seconds=600)
    assert unknown.expires_at - unknown.created_at == timedelta(seconds=600)
    assert unknown.risk == "UNKNOWN"

    events = await stream_events(kernel, paused)
    assert [event for event, _ in events] == ["APPROVAL_REQUIRED"] * 3
    first = events[0][1]
    assert first == {
        "approval_id": str(medium.id),
        "task_id": str(paused.task.id),
        "call_id": medium.call_id,
        "tool": "write_file",
        "arguments": {"path": "notes.md", "content": "x"},
        "risk": "MEDIUM",
        "reasons": ["writes a file"],
        "expires_at": medium.expires_at.isoformat(),
        "attempt": 1,
    }
    # Every call is in the history, the auto-approved one too.
    listed = (await http.get(APPROVALS, headers=ann.headers)).json()["items"]
    assert {item["id"] for item in listed} == {str(row.id) for row in (low, medium, high, unknown)}


async def test_the_policy_endpoint_changes_what_the_gate_does(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    default = (await http.get(f"{APPROVALS}/policy", headers=ann.headers)).json()
    assert {key: default[key] for key in ("mode", "threshold", "auto_approve_low")} == {
        "mode": "risky",
        "threshold": "MEDIUM",
        "auto_approve_low": True,
    }
    paused = await paused_task(http, kernel, ann)

    await set_policy(http, ann, mode="never")
    high = await gate(
        kernel, paused, tool="execute_command", arguments={"program": "ls"}, risk=Risk.HIGH
    )
    assert (high.status, high.decided_by) == ("approved", "policy")

    stored = await set_policy(http, ann, mode="always", auto_approve_low=False)
    assert stored["threshold"] == "MEDIUM"
    assert (await http.get(f"{APPROVALS}/policy", headers=ann.headers)).json() == stored
    low = await gate(kernel, paused, tool="read_file", arguments={"path": "a.py"}, risk=Risk.LOW)
    assert low.status == "pending"
    assert low.expires_at - low.created_at == timedelta(seconds=300)

    await set_policy(http, ann, mode="risky", threshold="HIGH")
    medium = await gate(kernel, paused, risk=Risk.MEDIUM)
    unknown = await gate(kernel, paused, tool="nope", arguments={}, risk=Risk.UNKNOWN)
    assert (medium.status, unknown.status) == ("approved", "pending")


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "sometimes"},
        {"threshold": "UNKNOWN"},
        {"auto_approve_low": "yes"},
        {"auto_approve_low": 1},
        {"mode": "never", "extra": True},
    ],
)
async def test_a_malformed_policy_is_refused(
    http: httpx.AsyncClient, ann: Caller, body: dict[str, Any]
) -> None:
    response = await http.put(f"{APPROVALS}/policy", json=body, headers=ann.headers)
    assert_problem(response, 422, "validation_failed")


async def test_a_call_revised_too_often_is_rejected_at_once(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    paused = await paused_task(http, kernel, ann)
    last_allowed = await gate(kernel, paused, attempt=4)  # the first try and 3 retries
    assert last_allowed.status == "pending"
    over = await gate(kernel, paused, attempt=5)
    assert (over.status, over.decided_by) == ("rejected", "system")


# -- rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "normalized"),
    [("docs/*", "docs/*"), ("./src//*.py", "src/*.py"), ("*.md", "*.md"), (".", ".")],
)
def test_patterns_are_normalized(pattern: str, normalized: str) -> None:
    assert normalize_pattern(pattern) == normalized


@pytest.mark.parametrize(
    ("tool", "arguments", "path"),
    [
        ("write_file", {"path": "./docs/a.md"}, "docs/a.md"),
        ("list_directory", {}, "."),
        ("read_file", {"path": "../etc/passwd"}, None),
        ("read_file", {"path": "/etc/passwd"}, None),
        ("read_file", {"path": 3}, None),
        ("execute_command", {"program": "ls"}, None),
    ],
)
def test_the_path_a_rule_sees(tool: str, arguments: dict[str, Any], path: str | None) -> None:
    assert call_path(tool, arguments) == path


async def test_session_rules_cover_their_session_and_project_rules_the_project(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    paused = await paused_task(http, kernel, ann)
    sibling = await make_task(kernel, ann, paused.project_id)  # another session, same project
    response = await http.post(
        f"{APPROVALS}/rules",
        json={
            "tool": "write_file",
            "path_pattern": "docs/*",
            "scope": "session",
            "session_id": str(paused.session_id),
        },
        headers=ann.headers,
    )
    assert response.status_code == 201, response.text
    session_rule = response.json()
    assert session_rule["scope"] == "session"
    assert session_rule["project_id"] == str(paused.project_id)

    covered = await gate(kernel, paused, arguments={"path": "docs/guide/intro.md", "content": ""})
    assert (covered.status, covered.decided_by) == ("approved", "rule")
    other_path = await gate(kernel, paused, arguments={"path": "src/main.py", "content": ""})
    other_tool = await gate(kernel, paused, tool="read_file", arguments={"path": "docs/.env"})
    other_session = await gate(kernel, sibling, arguments={"path": "docs/a.md", "content": ""})
    unknown = await gate(
        kernel, paused, arguments={"path": "docs/a.md", "sneaky": 1}, risk=Risk.UNKNOWN
    )
    assert [row.status for row in (other_path, other_tool, other_session, unknown)] == [
        "pending"
    ] * 4

    project_rule = await http.post(
        f"{APPROVALS}/rules",
        json={
            "tool": "write_file",
            "path_pattern": "*.md",
            "scope": "project",
            "project_id": str(paused.project_id),
        },
        headers=ann.headers,
    )
    assert project_rule.status_code == 201, project_rule.text
    assert project_rule.json()["session_id"] is None
    remembered = await gate(kernel, sibling, arguments={"path": "notes/today.md", "content": ""})
    assert (remembered.status, remembered.decided_by) == ("approved", "rule")

    # The same rule again is the same rule.
    again = await http.post(
        f"{APPROVALS}/rules",
        json={
            "tool": "write_file",
            "path_pattern": "./*.md",
            "scope": "project",
            "session_id": str(sibling.session_id),
        },
        headers=ann.headers,
    )
    assert again.json()["id"] == project_rule.json()["id"]

    listed = (await http.get(f"{APPROVALS}/rules", headers=ann.headers)).json()
    assert [item["id"] for item in listed["items"]] == [
        project_rule.json()["id"],
        session_rule["id"],
    ]
    only_session = await http.get(
        f"{APPROVALS}/rules", params={"session_id": str(paused.session_id)}, headers=ann.headers
    )
    assert [item["id"] for item in only_session.json()["items"]] == [session_rule["id"]]

    deleted = await http.delete(f"{APPROVALS}/rules/{session_rule['id']}", headers=ann.headers)
    assert deleted.status_code == 204
    after = await gate(kernel, paused, arguments={"path": "docs/x.txt", "content": ""})
    assert after.status == "pending"
    gone = await http.delete(f"{APPROVALS}/rules/{session_rule['id']}", headers=ann.headers)
    assert_problem(gone, 404, "agents.approval_rule_not_found")


@pytest.mark.parametrize(
    "rule",
    [
        {"path_pattern": "/etc/*"},
        {"path_pattern": "../*"},
        {"path_pattern": "docs/../../x"},
        {"path_pattern": "~/x"},
        {"path_pattern": "a\\b"},
        {"path_pattern": ""},
        {"path_pattern": "   "},
        {"path_pattern": "a\tb"},
        {"path_pattern": "x" * 201},
        {"tool": "execute_command", "path_pattern": "git"},
        {"tool": "delete_file"},
        {"scope": "galaxy"},
        {"scope": "session", "session_id": None},
        {"scope": "project", "project_id": None},
        {"path_pattern": 5},
    ],
)
async def test_invalid_rules_are_refused(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller, rule: dict[str, Any]
) -> None:
    paused = await paused_task(http, kernel, ann)
    body = {
        "tool": "write_file",
        "path_pattern": "docs/*",
        "scope": "project",
        "project_id": str(paused.project_id),
        "session_id": str(paused.session_id),
        **rule,
    }
    if body.get("scope") == "project" and "project_id" in rule:
        body.pop("session_id")
    response = await http.post(f"{APPROVALS}/rules", json=body, headers=ann.headers)
    assert_problem(response, 422, "validation_failed")
    batch = await http.post(f"{APPROVALS}/batch", json={"rule": body}, headers=ann.headers)
    assert_problem(batch, 422, "validation_failed")


async def test_a_rule_needs_a_session_of_its_project(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    first = await paused_task(http, kernel, ann)
    second = await paused_task(http, kernel, ann)
    response = await http.post(
        f"{APPROVALS}/rules",
        json={
            "tool": "read_file",
            "path_pattern": "*",
            "scope": "session",
            "session_id": str(first.session_id),
            "project_id": str(second.project_id),
        },
        headers=ann.headers,
    )
    assert_problem(response, 422, "agents.approval_rule_invalid")


# -- decisions ----------------------------------------------------------------------------


async def test_confirm_and_reject_resolve_publish_and_wake(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller, wakes: list[UUID]
) -> None:
    paused = await paused_task(http, kernel, ann)
    first = await gate(kernel, paused)
    second = await gate(kernel, paused, risk=Risk.HIGH)

    fetched = await http.get(f"{APPROVALS}/{first.id}", headers=ann.headers)
    assert fetched.json()["status"] == "pending"
    assert fetched.json()["risk_reasons"] == ["writes a file"]

    confirmed = await http.post(f"{APPROVALS}/{first.id}/confirm", headers=ann.headers)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "approved"
    assert confirmed.json()["decided_by"] == "user"
    assert confirmed.json()["reason"] is None
    assert confirmed.json()["resolved_at"] is not None

    rejected = await http.post(
        f"{APPROVALS}/{second.id}/reject",
        json={"reason": "not the config, please"},
        headers=ann.headers,
    )
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["status"], rejected.json()["reason"]) == (
        "rejected",
        "not the config, please",
    )
    assert wakes == [paused.task.id, paused.task.id]

    events = await stream_events(kernel, paused)
    resolved = [payload for event, payload in events if event == "APPROVAL_RESOLVED"]
    assert resolved == [
        {
            "approval_id": str(first.id),
            "task_id": str(paused.task.id),
            "status": "approved",
            "decided_by": "user",
            "reason": None,
        },
        {
            "approval_id": str(second.id),
            "task_id": str(paused.task.id),
            "status": "rejected",
            "decided_by": "user",
            "reason": "not the config, please",
        },
    ]

    for approval_id, action, body in [
        (first.id, "confirm", None),
        (first.id, "reject", {"reason": "changed my mind"}),
        (second.id, "confirm", {"reason": "fine after all"}),
    ]:
        again = await http.post(
            f"{APPROVALS}/{approval_id}/{action}", json=body, headers=ann.headers
        )
        problem = assert_problem(again, 409, "agents.approval_not_pending")
        assert problem["approval_status"] in {"approved", "rejected"}
    assert len(wakes) == 2


async def test_a_confirmation_may_carry_a_reason(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    paused = await paused_task(http, kernel, ann)
    approval = await gate(kernel, paused)
    response = await http.post(
        f"{APPROVALS}/{approval.id}/confirm", json={"reason": "looks right"}, headers=ann.headers
    )
    assert response.json()["reason"] == "looks right"


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("reject", None),
        ("reject", {}),
        ("reject", {"reason": ""}),
        ("reject", {"reason": "   "}),
        ("reject", {"reason": "x" * 2001}),
        ("reject", {"reason": 42}),
        ("confirm", {"reason": "x" * 2001}),
        ("confirm", {"because": "yes"}),
    ],
)
async def test_malformed_decisions_are_refused(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller, action: str, body: Any
) -> None:
    paused = await paused_task(http, kernel, ann)
    approval = await gate(kernel, paused)
    response = await http.post(
        f"{APPROVALS}/{approval.id}/{action}", json=body, headers=ann.headers
    )
    assert_problem(response, 422, "validation_failed")
    still = await http.get(f"{APPROVALS}/{approval.id}", headers=ann.headers)
    assert still.json()["status"] == "pending"
    not_an_id = await http.post(f"{APPROVALS}/nope/confirm", headers=ann.headers)
    assert_problem(not_an_id, 422, "validation_failed")


async def test_an_answer_after_the_deadline_finds_the_request_expired(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller, wakes: list[UUID]
) -> None:
    paused = await paused_task(http, kernel, ann)
    approval = await gate(kernel, paused)
    async with kernel.db.unit_of_work() as db:
        row = await db.get(Approval, approval.id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    response = await http.post(f"{APPROVALS}/{approval.id}/confirm", headers=ann.headers)
    assert_problem(response, 409, "agents.approval_expired")
    stored = (await http.get(f"{APPROVALS}/{approval.id}", headers=ann.headers)).json()
    assert (stored["status"], stored["decided_by"], stored["reason"]) == (
        "expired",
        "timeout",
        "timed out",
    )
    assert wakes == [paused.task.id]


# -- batches ------------------------------------------------------------------------------


async def test_batch_by_ids_and_by_kind(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller, wakes: list[UUID]
) -> None:
    paused = await paused_task(http, kernel, ann)
    other = await make_task(kernel, ann, paused.project_id)
    writes = [await gate(kernel, paused) for _ in range(3)]
    command = await gate(
        kernel, paused, tool="execute_command", arguments={"program": "ls"}, risk=Risk.HIGH
    )
    elsewhere = await gate(kernel, other)

    by_ids = await http.post(
        f"{APPROVALS}/batch",
        json={
            "action": "confirm",
            "ids": [str(writes[0].id), str(writes[0].id), str(writes[1].id)],
        },
        headers=ann.headers,
    )
    assert by_ids.status_code == 200, by_ids.text
    assert [item["id"] for item in by_ids.json()["resolved"]] == [
        str(writes[0].id),
        str(writes[1].id),
    ]
    assert {item["decided_by"] for item in by_ids.json()["resolved"]} == {"batch"}

    by_kind = await http.post(
        f"{APPROVALS}/batch",
        json={
            "action": "reject",
            "tool": "write_file",
            "session_id": str(paused.session_id),
            "reason": "no writes today",
        },
        headers=ann.headers,
    )
    assert by_kind.status_code == 200, by_kind.text
    assert [item["id"] for item in by_kind.json()["resolved"]] == [str(writes[2].id)]
    assert by_kind.json()["resolved"][0]["reason"] == "no writes today"

    states = {
        row["id"]: row["status"]
        for row in (await http.get(APPROVALS, headers=ann.headers)).json()["items"]
    }
    assert states[str(command.id)] == "pending"
    assert states[str(elsewhere.id)] == "pending"

    repeated = await http.post(
        f"{APPROVALS}/batch",
        json={"action": "confirm", "ids": [str(writes[0].id), str(command.id)]},
        headers=ann.headers,
    )
    assert [item["id"] for item in repeated.json()["resolved"]] == [str(command.id)]
    assert repeated.json()["skipped"] == [{"id": str(writes[0].id), "status": "approved"}]
    assert len(wakes) == 4


async def test_a_batch_rule_approves_what_it_covers(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    paused = await paused_task(http, kernel, ann)
    docs = await gate(kernel, paused, arguments={"path": "docs/a.md", "content": ""})
    src = await gate(kernel, paused, arguments={"path": "src/a.py", "content": ""})
    response = await http.post(
        f"{APPROVALS}/batch",
        json={
            "rule": {
                "tool": "write_file",
                "path_pattern": "docs/**",
                "scope": "project",
                "session_id": str(paused.session_id),
            }
        },
        headers=ann.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rule"]["scope"] == "project"
    assert body["rule"]["session_id"] is None
    assert [item["id"] for item in body["resolved"]] == [str(docs.id)]
    assert body["resolved"][0]["decided_by"] == "batch"
    still = await http.get(f"{APPROVALS}/{src.id}", headers=ann.headers)
    assert still.json()["status"] == "pending"
    later = await gate(kernel, paused, arguments={"path": "docs/b/c.md", "content": ""})
    assert later.decided_by == "rule"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"action": "confirm"},
        {"action": "approve", "ids": []},
        {"action": "confirm", "ids": []},
        {"action": "confirm", "ids": ["not-a-uuid"]},
        {"action": "confirm", "ids": [str(new_id()) for _ in range(101)]},
        {"action": "reject", "tool": "write_file"},
        {"action": "confirm", "tool": "rm_rf"},
        {"ids": [str(new_id())]},
        {"action": "confirm", "ids": [str(new_id())], "tool": "write_file"},
        {"action": "confirm", "tool": "write_file", "reason": "x" * 2001},
        {"action": "confirm", "tool": "write_file", "surprise": True},
    ],
)
async def test_a_malformed_batch_is_refused(
    http: httpx.AsyncClient, ann: Caller, body: dict[str, Any]
) -> None:
    response = await http.post(f"{APPROVALS}/batch", json=body, headers=ann.headers)
    assert_problem(response, 422, "validation_failed")


# -- the sweep ----------------------------------------------------------------------------


async def test_the_sweep_warns_once_then_expires_and_wakes_after_commit(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    paused = await paused_task(http, kernel, ann)
    medium = await gate(kernel, paused, risk=Risk.MEDIUM)  # 300 s
    high = await gate(kernel, paused, risk=Risk.HIGH)  # 600 s
    runtime = runtime_of(kernel)
    woken: list[UUID] = []

    async def sweep(at: timedelta) -> tuple[int, int]:
        before = len(woken)
        async with kernel.db.unit_of_work() as db:
            counts = await sweep_approvals(
                db,
                settings=runtime.settings,
                events=runtime.events,
                wake=woken.append,
                now=medium.created_at + at,
            )
            assert len(woken) == before  # nothing before the commit
        return counts

    assert await sweep(timedelta(seconds=200)) == (0, 0)
    assert await sweep(timedelta(seconds=250)) == (1, 0)  # 50 s left of 300
    assert await sweep(timedelta(seconds=260)) == (0, 0)  # warned once only
    assert woken == []
    assert await sweep(timedelta(seconds=301)) == (0, 1)
    assert woken == [paused.task.id]
    assert await sweep(timedelta(seconds=302)) == (0, 0)
    assert await sweep(timedelta(seconds=550)) == (1, 0)
    assert await sweep(timedelta(seconds=700)) == (0, 1)

    rows = {
        row["id"]: row for row in (await http.get(APPROVALS, headers=ann.headers)).json()["items"]
    }
    for approval in (medium, high):
        row = rows[str(approval.id)]
        assert (row["status"], row["decided_by"], row["reason"]) == (
            "expired",
            "timeout",
            "timed out",
        )
        assert row["warned_at"] is not None
    late = await http.post(f"{APPROVALS}/{medium.id}/confirm", headers=ann.headers)
    assert_problem(late, 409, "agents.approval_not_pending")

    events = await stream_events(kernel, paused)
    kinds = [event for event, _ in events]
    assert kinds == [
        "APPROVAL_REQUIRED",
        "APPROVAL_REQUIRED",
        "APPROVAL_EXPIRING",
        "APPROVAL_RESOLVED",
        "APPROVAL_EXPIRING",
        "APPROVAL_RESOLVED",
    ]
    assert events[2][1] == {
        "approval_id": str(medium.id),
        "task_id": str(paused.task.id),
        "expires_at": medium.expires_at.isoformat(),
        "seconds_left": 50,
    }
    assert events[3][1]["status"] == "expired"


async def test_a_sweep_that_rolls_back_publishes_and_wakes_nothing(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    paused = await paused_task(http, kernel, ann)
    approval = await gate(kernel, paused)
    runtime = runtime_of(kernel)
    woken: list[UUID] = []

    async def failing_job() -> None:
        async with kernel.db.unit_of_work() as db:
            await sweep_approvals(
                db,
                settings=runtime.settings,
                events=runtime.events,
                wake=woken.append,
                now=approval.expires_at + timedelta(seconds=1),
            )
            raise RuntimeError("the job failed after sweeping")

    with pytest.raises(RuntimeError):
        await failing_job()
    assert woken == []
    assert [event for event, _ in await stream_events(kernel, paused)] == ["APPROVAL_REQUIRED"]
    still = await http.get(f"{APPROVALS}/{approval.id}", headers=ann.headers)
    assert still.json()["status"] == "pending"


# -- the runner's calls -------------------------------------------------------------------


async def test_cancelling_a_task_cancels_its_pending_requests(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller, wakes: list[UUID]
) -> None:
    paused = await paused_task(http, kernel, ann)
    other = await make_task(kernel, ann, paused.project_id, session_id=paused.session_id)
    done = await gate(kernel, paused, tool="read_file", arguments={"path": "a"}, risk=Risk.LOW)
    waiting = await gate(kernel, paused)
    untouched = await gate(kernel, other)
    runtime = runtime_of(kernel)
    async with kernel.db.unit_of_work() as db:
        service = ApprovalService(
            db, paused.task.user_id, runtime.settings, runtime.events, runtime.wake
        )
        assert await service.cancel_for_task(paused.task.id, "the user stopped it") == 1
        assert [row.id for row in await service.for_task(paused.task.id)] == [done.id, waiting.id]
    rows = {
        row["id"]: row for row in (await http.get(APPROVALS, headers=ann.headers)).json()["items"]
    }
    assert (rows[str(waiting.id)]["status"], rows[str(waiting.id)]["decided_by"]) == (
        "cancelled",
        "system",
    )
    assert rows[str(done.id)]["status"] == "approved"
    assert rows[str(untouched.id)]["status"] == "pending"
    assert wakes == [paused.task.id]
    events = await stream_events(kernel, paused)
    assert events[-1][1]["status"] == "cancelled"


async def test_a_pending_request_survives_a_restart(
    app_factory: Callable[..., Any],
    settings: Settings,
    http: httpx.AsyncClient,
    kernel: Kernel,
    ann: Caller,
) -> None:
    paused = await paused_task(http, kernel, ann)
    approval = await gate(kernel, paused)
    fresh_app: FastAPI = await app_factory(settings, [agents_module])
    woken: list[UUID] = []
    runtime_of(kernel_of(fresh_app)).wakers.append(woken.append)
    async with client_for(fresh_app) as fresh:
        listed = await fresh.get(APPROVALS, params={"status": "pending"}, headers=ann.headers)
        assert [item["id"] for item in listed.json()["items"]] == [str(approval.id)]
        confirmed = await fresh.post(f"{APPROVALS}/{approval.id}/confirm", headers=ann.headers)
        assert confirmed.json()["status"] == "approved"
    assert woken == [paused.task.id]


# -- history and metrics ------------------------------------------------------------------


async def test_history_pages_newest_first_and_filters_by_status(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    paused = await paused_task(http, kernel, ann)
    made = [await gate(kernel, paused) for _ in range(5)]
    await http.post(f"{APPROVALS}/{made[1].id}/confirm", headers=ann.headers)

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get(APPROVALS, params=params, headers=ann.headers)).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(row.id) for row in reversed(made)]

    pending = await http.get(APPROVALS, params={"status": "pending"}, headers=ann.headers)
    assert len(pending.json()["items"]) == 4
    approved = await http.get(APPROVALS, params={"status": "approved"}, headers=ann.headers)
    assert [item["id"] for item in approved.json()["items"]] == [str(made[1].id)]
    by_task = await http.get(
        APPROVALS, params={"task_id": str(paused.task.id)}, headers=ann.headers
    )
    assert len(by_task.json()["items"]) == 5

    first = (await http.get(APPROVALS, params={"limit": 2}, headers=ann.headers)).json()
    wrong_list = await http.get(
        APPROVALS,
        params={"limit": 2, "status": "pending", "cursor": first["next_cursor"]},
        headers=ann.headers,
    )
    assert_problem(wrong_list, 400, "pagination.invalid_cursor")
    bad_status = await http.get(APPROVALS, params={"status": "maybe"}, headers=ann.headers)
    assert_problem(bad_status, 422, "validation_failed")


async def test_metrics_count_rates_and_response_times(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller
) -> None:
    empty = (await http.get(f"{APPROVALS}/metrics", headers=ann.headers)).json()
    assert empty["total"] == 0
    assert empty["approval_rate"] is None
    assert empty["response_time_median_seconds"] is None

    paused = await paused_task(http, kernel, ann)
    await gate(kernel, paused, tool="read_file", arguments={"path": "a"}, risk=Risk.LOW)
    rows = [await gate(kernel, paused) for _ in range(5)]
    # Answers 10, 20 and 60 seconds after the request; one expired, one still pending.
    async with kernel.db.unit_of_work() as db:
        for row, (status, decided_by, seconds) in zip(
            rows,
            [
                ("approved", "user", 10),
                ("approved", "batch", 20),
                ("rejected", "user", 60),
                ("expired", "timeout", 300),
            ],
            strict=False,
        ):
            stored = await db.get(Approval, row.id)
            assert stored is not None
            stored.status = status
            stored.decided_by = decided_by
            stored.resolved_at = stored.created_at + timedelta(seconds=seconds)

    metrics = (await http.get(f"{APPROVALS}/metrics", headers=ann.headers)).json()
    assert metrics == {
        "total": 6,
        "auto_approved": 1,
        "requested": 5,
        "pending": 1,
        "approved": 2,
        "rejected": 1,
        "expired": 1,
        "cancelled": 0,
        "approval_rate": 0.5,
        "rejection_rate": 0.25,
        "timeout_rate": 0.25,
        "response_time_avg_seconds": 30.0,
        "response_time_median_seconds": 20.0,
    }


# -- access -------------------------------------------------------------------------------


def every_endpoint(approval_id: str, rule_id: str) -> list[tuple[str, str, Any]]:
    rule = {"tool": "read_file", "path_pattern": "*", "scope": "project"}
    return [
        ("GET", APPROVALS, None),
        ("GET", f"{APPROVALS}/{approval_id}", None),
        ("POST", f"{APPROVALS}/{approval_id}/confirm", {}),
        ("POST", f"{APPROVALS}/{approval_id}/reject", {"reason": "no"}),
        ("POST", f"{APPROVALS}/batch", {"action": "confirm", "ids": [approval_id]}),
        ("GET", f"{APPROVALS}/policy", None),
        ("PUT", f"{APPROVALS}/policy", {"mode": "never"}),
        ("GET", f"{APPROVALS}/metrics", None),
        ("GET", f"{APPROVALS}/rules", None),
        ("POST", f"{APPROVALS}/rules", {**rule, "project_id": approval_id}),
        ("DELETE", f"{APPROVALS}/rules/{rule_id}", None),
    ]


async def test_every_endpoint_needs_a_token(http: httpx.AsyncClient) -> None:
    for method, url, body in every_endpoint(str(new_id()), str(new_id())):
        response = await http.request(method, url, json=body)
        assert_problem(response, 401, "unauthorized")


async def test_another_users_requests_and_rules_are_not_found(
    http: httpx.AsyncClient, kernel: Kernel, ann: Caller, bob: Caller
) -> None:
    paused = await paused_task(http, kernel, ann)
    approval = await gate(kernel, paused)
    rule = await http.post(
        f"{APPROVALS}/rules",
        json={
            "tool": "read_file",
            "path_pattern": "*",
            "scope": "session",
            "session_id": str(paused.session_id),
        },
        headers=ann.headers,
    )
    assert rule.status_code == 201
    rule_id = rule.json()["id"]
    bobs = await paused_task(http, kernel, bob)
    bobs_own = await gate(kernel, bobs)

    for path in (f"{APPROVALS}/{approval.id}",):
        assert_problem(await http.get(path, headers=bob.headers), 404, "agents.approval_not_found")
    for action, body in (("confirm", None), ("reject", {"reason": "mine now"})):
        response = await http.post(
            f"{APPROVALS}/{approval.id}/{action}", json=body, headers=bob.headers
        )
        assert_problem(response, 404, "agents.approval_not_found")
    batch = await http.post(
        f"{APPROVALS}/batch",
        json={"action": "confirm", "ids": [str(bobs_own.id), str(approval.id)]},
        headers=bob.headers,
    )
    assert_problem(batch, 404, "agents.approval_not_found")
    # The whole batch was refused: Bob's own request is still pending too.
    assert (await http.get(f"{APPROVALS}/{bobs_own.id}", headers=bob.headers)).json()[
        "status"
    ] == "pending"
    by_session = await http.post(
        f"{APPROVALS}/batch",
        json={"action": "confirm", "session_id": str(paused.session_id)},
        headers=bob.headers,
    )
    assert_problem(by_session, 404, "agents.session_not_found")
    by_project = await http.post(
        f"{APPROVALS}/batch",
        json={"action": "confirm", "project_id": str(paused.project_id)},
        headers=bob.headers,
    )
    assert_problem(by_project, 404, "agents.project_not_found")
    for scope, target in (("session", "session_id"), ("project", "project_id")):
        value = paused.session_id if target == "session_id" else paused.project_id
        body = {"tool": "read_file", "path_pattern": "*", "scope": scope, target: str(value)}
        grabbed = await http.post(f"{APPROVALS}/rules", json=body, headers=bob.headers)
        assert grabbed.status_code == 404
        via_batch = await http.post(f"{APPROVALS}/batch", json={"rule": body}, headers=bob.headers)
        assert via_batch.status_code == 404
    assert_problem(
        await http.delete(f"{APPROVALS}/rules/{rule_id}", headers=bob.headers),
        404,
        "agents.approval_rule_not_found",
    )
    assert_problem(
        await http.get(
            f"{APPROVALS}/rules", params={"session_id": str(paused.session_id)}, headers=bob.headers
        ),
        404,
        "agents.session_not_found",
    )
    assert_problem(
        await http.get(
            f"{APPROVALS}/rules", params={"project_id": str(paused.project_id)}, headers=bob.headers
        ),
        404,
        "agents.project_not_found",
    )

    # Lists, policy and metrics hold only Bob's own.
    listed = (await http.get(APPROVALS, headers=bob.headers)).json()["items"]
    assert [item["id"] for item in listed] == [str(bobs_own.id)]
    assert (await http.get(f"{APPROVALS}/rules", headers=bob.headers)).json()["items"] == []
    assert (await http.get(f"{APPROVALS}/metrics", headers=bob.headers)).json()["total"] == 1
    await set_policy(http, bob, mode="never")
    assert (await http.get(f"{APPROVALS}/policy", headers=ann.headers)).json()["mode"] == "risky"
    # And Ann's request is untouched.
    mine = (await http.get(f"{APPROVALS}/{approval.id}", headers=ann.headers)).json()
    assert mine["status"] == "pending"
