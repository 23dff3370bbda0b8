"""How risky a tool call is, for the approval flow: `assess_risk` and the per-level
approval timeouts. The table is in docs/agents-tools.md."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from datetime import timedelta
from enum import IntEnum
from typing import Any

from pydantic import ValidationError

from veche.apps.agents.tools.errors import ToolError
from veche.apps.agents.tools.schemas import (
    ExecuteCommandParams,
    ListDirectoryParams,
    ReadFileParams,
    WriteFileParams,
)
from veche.apps.agents.tools.workspace import Workspace, parse_path


class Risk(IntEnum):
    """Ordered: a larger value needs more care. UNKNOWN ranks above HIGH and callers
    treat it at least as HIGH."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    UNKNOWN = 4

    @property
    def effective(self) -> Risk:
        return Risk.HIGH if self is Risk.UNKNOWN else self


APPROVAL_TIMEOUTS: dict[Risk, timedelta | None] = {
    Risk.LOW: None,
    Risk.MEDIUM: timedelta(minutes=5),
    Risk.HIGH: timedelta(minutes=10),
    Risk.UNKNOWN: timedelta(minutes=10),
}


def approval_timeout(risk: Risk) -> timedelta | None:
    """How long an approval request of this risk waits; None: auto-approved."""
    return APPROVAL_TIMEOUTS[risk]


# Names whose contents steer tools, builds or secrets: reading them is MEDIUM, writing HIGH.
SENSITIVE_NAMES = frozenset(
    {
        "makefile",
        "dockerfile",
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "conftest.py",
        "tox.ini",
        "noxfile.py",
        "package.json",
        "requirements.txt",
        "id_rsa",
        "id_ed25519",
        "credentials",
        "secrets.json",
    }
)
SENSITIVE_SUFFIXES = (
    ".toml",
    ".ini",
    ".cfg",
    ".conf",
    ".env",
    ".pem",
    ".key",
    ".p12",
    ".pfx",
    ".yaml",
    ".yml",
)


def _is_sensitive(path: str) -> bool:
    parts = [part for part in path.split("/") if part not in {"", "."}]
    if any(part.startswith(".") for part in parts):
        return True
    name = posixpath.basename(path).casefold()
    return name in SENSITIVE_NAMES or name.endswith(SENSITIVE_SUFFIXES)


def _read_risk(path: str) -> Risk:
    return Risk.MEDIUM if _is_sensitive(path) else Risk.LOW


def _write_risk(params: WriteFileParams, workspace: Workspace | None) -> Risk:
    if _is_sensitive(params.path):
        return Risk.HIGH
    if params.mode == "overwrite" and workspace is not None:
        try:
            if workspace.exists(parse_path(params.path)):
                return Risk.HIGH
        except ToolError:
            return Risk.UNKNOWN
    return Risk.MEDIUM


def assess_risk(
    tool_name: str, params: Mapping[str, Any], *, workspace: Workspace | None = None
) -> Risk:
    """The risk of calling `tool_name` with `params`.

    LOW: read_file, list_directory. MEDIUM: write_file; reading a dotfile, config or key.
    HIGH: execute_command always; write_file that overwrites an existing file (known only
    when `workspace` is given; it does one stat) or touches a dotfile or config. UNKNOWN:
    an unknown tool or parameters that do not validate. Pure except that one stat.
    """
    try:
        if tool_name == "read_file":
            return _read_risk(ReadFileParams.model_validate(dict(params)).path)
        if tool_name == "list_directory":
            ListDirectoryParams.model_validate(dict(params))
            return Risk.LOW
        if tool_name == "write_file":
            return _write_risk(WriteFileParams.model_validate(dict(params)), workspace)
        if tool_name == "execute_command":
            ExecuteCommandParams.model_validate(dict(params))
            return Risk.HIGH
    except (ValidationError, TypeError, ValueError):
        return Risk.UNKNOWN
    return Risk.UNKNOWN


__all__ = ["APPROVAL_TIMEOUTS", "Risk", "approval_timeout", "assess_risk"]
