"""The tool security corpus through the whole chat flow: the model itself asks for path
traversal, symlink escapes, command injection, forbidden programs, oversized output and a
runaway process, with every approval switched off (policy `never`), so nothing but the
tools' own checks stands in the way. Each call must come back to the model as the tool's
refusal (or a cut-off result), the run must go on to the model's answer, and nothing may
change outside the project's workspace."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.apps.agents.chat_support import PREFIX, User, chat_settings, create, wait_for_task
from tests.conftest import client_for
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import signed_up
from veche.apps.agents import module as agents_module
from veche.settings import Settings

TOOLS = ["read_file", "write_file", "list_directory", "execute_command"]


@pytest.fixture
async def http(
    app_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    fake_openai: FakeOpenAI,
) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = await app_factory(chat_settings(settings_factory, fake_openai), [agents_module])
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def ann(http: httpx.AsyncClient) -> User:
    return User(await signed_up(http, "ann@example.com", "Ann"))


def _outside(settings: Settings) -> Path:
    return settings.data_dir / "outside-secret.txt"


def _outside_files(settings: Settings) -> list[str]:
    """What lies in the data directory outside the workspaces and the server's own files."""
    own = {"agents", "vectors", "blobs"}
    return sorted(
        path.name
        for path in settings.data_dir.iterdir()
        if path.name not in own and not path.name.startswith("test.db")
    )


CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("traversal-read", "read_file", {"path": "../../../../etc/passwd"}, "tool.path_escape"),
    ("absolute-read", "read_file", {"path": "/etc/shadow"}, "tool.path_escape"),
    (
        "traversal-write",
        "write_file",
        {"path": "../../pwned.txt", "content": "x"},
        "tool.path_escape",
    ),
    ("traversal-list", "list_directory", {"path": "../.."}, "tool.path_escape"),
    ("nul-path", "read_file", {"path": "notes\u0000.txt"}, "tool.invalid_path"),
    (
        "git-write",
        "write_file",
        {"path": ".git/hooks/pre-commit", "content": "x"},
        "tool.forbidden_path",
    ),
    (
        "shell-injection",
        "execute_command",
        {"program": "sh", "args": ["-c", "cat /etc/passwd"]},
        "tool.forbidden_program",
    ),
    (
        "network",
        "execute_command",
        {"program": "curl", "args": ["http://example.com"]},
        "tool.forbidden_program",
    ),
    ("sudo", "execute_command", {"program": "sudo", "args": ["id"]}, "tool.forbidden_program"),
    (
        "path-program",
        "execute_command",
        {"program": "../../usr/bin/id", "args": []},
        "tool.forbidden_program",
    ),
    (
        "cwd-escape",
        "execute_command",
        {"program": "ls", "args": [], "cwd": "../.."},
        "tool.path_escape",
    ),
]


async def _agent_run(
    http: httpx.AsyncClient, ann: User, fake: FakeOpenAI, tool: str, arguments: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Approvals off, one agent with every tool, one message whose model asks for `tool`
    with `arguments` and then answers; (project, finished task, the tool result the model
    was shown, as text)."""
    policy = await http.put(
        f"{PREFIX}/approvals/policy", json={"mode": "never"}, headers=ann.headers
    )
    assert policy.status_code == 200, policy.text
    project = await create(http, ann, "/projects", {"name": "Vault"})
    agent = await create(http, ann, "/agents", {"name": "tinkerer", "tools": TOOLS})
    chat = await create(http, ann, f"/projects/{project['id']}/sessions", {})
    fake.reply_tool_call(tool, arguments)
    fake.reply_text("I could not do that.")
    response = await http.post(
        f"{PREFIX}/projects/{project['id']}/sessions/{chat['id']}/messages",
        json={"content": "please", "target_agent": agent["id"]},
        headers=ann.headers,
    )
    assert response.status_code == 202, response.text
    task = await wait_for_task(
        http, ann.headers, project["id"], chat["id"], response.json()["task"]["id"]
    )
    answered = fake.requests_to("/chat/completions")[-1].body
    [shown] = [message for message in answered["messages"] if message["role"] == "tool"]
    content: str = shown["content"]
    return project, task, content


@pytest.mark.parametrize(
    ("tool", "arguments", "code"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_every_attack_the_model_asks_for_is_refused_by_the_tool(
    http: httpx.AsyncClient,
    ann: User,
    fake_openai: FakeOpenAI,
    settings: Settings,
    tool: str,
    arguments: dict[str, Any],
    code: str,
) -> None:
    secret = _outside(settings)
    secret.write_text("top secret\n")
    before = _outside_files(settings)
    _, task, content = await _agent_run(http, ann, fake_openai, tool, arguments)
    shown = json.loads(content)
    assert shown["error"] == code, shown
    assert task["status"] == "completed"  # the model was told and answered
    assert "top secret" not in json.dumps(shown)
    assert secret.read_text() == "top secret\n"
    assert _outside_files(settings) == before
    assert not (settings.data_dir.parent / "pwned.txt").exists()


async def test_a_symlink_in_the_workspace_never_leads_the_model_outside(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI, settings: Settings
) -> None:
    secret = _outside(settings)
    secret.write_text("top secret\n")
    await http.put(f"{PREFIX}/approvals/policy", json={"mode": "never"}, headers=ann.headers)
    project = await create(http, ann, "/projects", {"name": "Linked"})
    workspace = settings.data_dir / "agents" / "workspaces" / ann.id / project["id"]
    (workspace / "escape").symlink_to(settings.data_dir)
    agent = await create(http, ann, "/agents", {"name": "reader", "tools": TOOLS})
    chat = await create(http, ann, f"/projects/{project['id']}/sessions", {})
    fake_openai.reply_tool_call("read_file", {"path": "escape/outside-secret.txt"})
    fake_openai.reply_text("Nothing to read.")
    response = await http.post(
        f"{PREFIX}/projects/{project['id']}/sessions/{chat['id']}/messages",
        json={"content": "read it", "target_agent": agent["id"]},
        headers=ann.headers,
    )
    task = await wait_for_task(
        http, ann.headers, project["id"], chat["id"], response.json()["task"]["id"]
    )
    assert task["status"] == "completed"
    answered = fake_openai.requests_to("/chat/completions")[-1].body
    [shown] = [message for message in answered["messages"] if message["role"] == "tool"]
    result = json.loads(shown["content"])
    assert result["error"] == "tool.path_escape", result
    assert "top secret" not in shown["content"]


async def test_oversized_output_reaches_the_model_cut_short(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    _, task, content = await _agent_run(
        http,
        ann,
        fake_openai,
        "execute_command",
        {"program": "python3", "args": ["-c", "print('x' * 5_000_000)"]},
    )
    assert task["status"] == "completed"
    # What the model sees is capped far below the 5 MB the command printed.
    assert len(content) < 33_000
    assert content.endswith("more characters cut]")


async def test_a_runaway_command_is_stopped_and_the_run_goes_on(
    http: httpx.AsyncClient, ann: User, fake_openai: FakeOpenAI
) -> None:
    _, task, content = await _agent_run(
        http,
        ann,
        fake_openai,
        "execute_command",
        {"program": "python3", "args": ["-c", "while True: pass"], "timeout": 1},
    )
    assert task["status"] == "completed"
    assert json.loads(content)["error"] == "tool.timeout", content
