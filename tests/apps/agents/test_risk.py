"""The risk table the approval flow relies on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from veche.apps.agents.tools import Risk, Workspace, approval_timeout, assess_risk


@pytest.mark.parametrize(
    ("tool", "params", "risk"),
    [
        ("read_file", {"path": "src/app.py"}, Risk.LOW),
        ("read_file", {"path": ".env"}, Risk.MEDIUM),
        ("read_file", {"path": "keys/server.pem"}, Risk.MEDIUM),
        ("list_directory", {"path": ".", "recursive": True}, Risk.LOW),
        ("write_file", {"path": "notes.md", "content": "x"}, Risk.MEDIUM),
        ("write_file", {"path": "notes.md", "content": "x", "mode": "append"}, Risk.MEDIUM),
        ("write_file", {"path": ".bashrc", "content": "x"}, Risk.HIGH),
        ("write_file", {"path": "pyproject.toml", "content": "x"}, Risk.HIGH),
        ("write_file", {"path": "tests/conftest.py", "content": "x"}, Risk.HIGH),
        ("write_file", {"path": ".github/workflows/ci.yml", "content": "x"}, Risk.HIGH),
        ("execute_command", {"program": "ls"}, Risk.HIGH),
        ("execute_command", {"program": "git", "args": ["push"]}, Risk.HIGH),
        ("execute_command", {"program": "python3", "args": ["main.py"]}, Risk.HIGH),
        ("delete_file", {"path": "x"}, Risk.UNKNOWN),
        ("read_file", {"path": 3}, Risk.UNKNOWN),
        ("read_file", {"path": "a", "sneaky": True}, Risk.UNKNOWN),
        ("execute_command", {"program": "ls", "timeout": 10_000}, Risk.UNKNOWN),
    ],
)
def test_risk_table(tool: str, params: dict[str, Any], risk: Risk) -> None:
    assert assess_risk(tool, params) is risk


def test_overwriting_an_existing_file_is_high(workspace: Workspace) -> None:
    (workspace.root / "main.py").write_text("print(1)\n")
    overwrite = {"path": "main.py", "content": "x"}
    assert assess_risk("write_file", overwrite, workspace=workspace) is Risk.HIGH
    assert (
        assess_risk("write_file", {**overwrite, "mode": "append"}, workspace=workspace)
        is Risk.MEDIUM
    )
    assert (
        assess_risk("write_file", {"path": "new.py", "content": "x"}, workspace=workspace)
        is Risk.MEDIUM
    )


def test_unknown_ranks_highest_and_counts_as_high() -> None:
    assert Risk.LOW < Risk.MEDIUM < Risk.HIGH < Risk.UNKNOWN
    assert Risk.UNKNOWN.effective is Risk.HIGH
    assert max([Risk.LOW, Risk.HIGH, Risk.MEDIUM]) is Risk.HIGH


def test_approval_timeouts_follow_the_plan() -> None:
    assert approval_timeout(Risk.LOW) is None
    assert approval_timeout(Risk.MEDIUM) == timedelta(minutes=5)
    assert approval_timeout(Risk.HIGH) == timedelta(minutes=10)
    assert approval_timeout(Risk.UNKNOWN) == timedelta(minutes=10)
