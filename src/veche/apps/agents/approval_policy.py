"""What decides an approval without a person: the user's policy by risk, and standing rules
that match a call's workspace path. Pure functions; `approvals.py` applies them."""

from __future__ import annotations

from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any

from veche.apps.agents.models import ApprovalRule
from veche.apps.agents.tools.risk import Risk
from veche.settings import AgentsSettings

MAX_PATTERN = 200
# Rules cover calls whose target is a workspace path. A command is not a path, and a rule
# for a program name (`git`) would let through everything that program can do.
RULE_TOOLS = ("read_file", "write_file", "list_directory")


# -- rules --------------------------------------------------------------------------------


def normalize_pattern(pattern: str) -> str:
    """A rule's path pattern in canonical form; ValueError says why one is refused.

    Globs as `fnmatch` reads them (`*` also crosses `/`, `?`, `[abc]`), relative to the
    workspace root: no absolute paths, `~`, backslashes, `..` or control characters.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError("must not be empty")
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"must be at most {MAX_PATTERN} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in pattern):
        raise ValueError("must not contain control characters")
    if pattern.startswith(("/", "~")):
        raise ValueError("must be relative to the workspace (no leading '/' or '~')")
    if "\\" in pattern:
        raise ValueError("must use '/' as separator, not '\\'")
    parts = _parts(pattern)
    if ".." in parts:
        raise ValueError("must not contain '..'")
    return "/".join(parts) or "."


def _parts(path: str) -> list[str]:
    """The components of a `/`-separated relative path, without empty and `.` ones."""
    return [part for part in path.split("/") if part not in {"", "."}]


def call_path(tool: str, arguments: dict[str, Any]) -> str | None:
    """The workspace path a call targets, normalized like patterns; None if it has none or
    one no rule should match (absolute, `..`): such a call fails in the tool anyway."""
    if tool not in RULE_TOOLS:
        return None
    path = arguments.get("path", "." if tool == "list_directory" else None)
    if not isinstance(path, str) or not path or path.startswith(("/", "~")) or "\\" in path:
        return None
    if any(ord(char) < 0x20 for char in path):
        return None
    parts = _parts(path)
    if ".." in parts:
        return None
    return "/".join(parts) or "."


def rule_covers(rule: ApprovalRule, tool: str, arguments: dict[str, Any]) -> bool:
    if rule.tool != tool:
        return False
    path = call_path(tool, arguments)
    return path is not None and fnmatchcase(path, rule.path_pattern)


# -- policy -------------------------------------------------------------------------------


def needs_confirmation(mode: str, threshold: str, auto_approve_low: bool, risk: Risk) -> bool:
    """Whether a call at `risk` waits for the user under this policy.

    UNKNOWN counts as HIGH. `auto_approve_low` lets LOW calls run at once in every mode;
    otherwise `always` asks for everything, `risky` for what is at or above `threshold`,
    `never` for nothing.
    """
    effective = risk.effective
    if effective is Risk.LOW and auto_approve_low:
        return False
    if mode == "never":
        return False
    if mode == "always":
        return True
    return effective >= Risk[threshold]


def timeout_for(risk: Risk, settings: AgentsSettings) -> timedelta:
    """How long a pending request waits: HIGH (and UNKNOWN) the long window, the rest the
    MEDIUM one (LOW waits only under a policy that confirms it)."""
    if risk.effective is Risk.HIGH:
        return timedelta(seconds=settings.approval_timeout_high_seconds)
    return timedelta(seconds=settings.approval_timeout_medium_seconds)
