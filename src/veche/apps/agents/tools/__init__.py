"""The tools an agent runs inside its project's workspace: read, write and list files,
execute allowed programs.

This package owns confinement (no path leaves the workspace, no link is followed),
command policy (allow- and deny-lists, refused argument forms), isolation (bubblewrap
when available, a restricted fallback otherwise), resource limits, risk assessment for
approvals, and the typed `tool.*` errors. `Toolbox.run` is the single entry point; it is
framework-free so agents, approvals and chat can call it directly.
"""

from __future__ import annotations

from veche.apps.agents.tools.errors import (
    BinaryContent,
    BinaryExtension,
    ForbiddenArgument,
    ForbiddenPath,
    ForbiddenProgram,
    InvalidArguments,
    InvalidPath,
    NotADirectory,
    NotAFile,
    PathEscape,
    SandboxUnavailable,
    SpecialFile,
    TooLarge,
    ToolError,
    ToolNotFound,
    ToolTimeout,
    UnknownTool,
)
from veche.apps.agents.tools.policy import (
    DEFAULT_ALLOWED_PROGRAMS,
    DENIED_PROGRAMS,
    FORBIDDEN_EXTENSIONS,
)
from veche.apps.agents.tools.risk import APPROVAL_TIMEOUTS, Risk, approval_timeout, assess_risk
from veche.apps.agents.tools.sandbox import ResourceLimits, detect_isolation_mode
from veche.apps.agents.tools.schemas import (
    MAX_FILE_BYTES,
    MAX_OUTPUT_BYTES,
    MAX_TIMEOUT_SECONDS,
    CommandResult,
    DirectoryEntry,
    EntryType,
    ExecuteCommandParams,
    IsolationMode,
    ListDirectoryParams,
    ListDirectoryResult,
    ReadFileParams,
    ReadFileResult,
    ToolResult,
    ToolSpec,
    WriteFileParams,
    WriteFileResult,
)
from veche.apps.agents.tools.toolbox import Toolbox, tool_specs
from veche.apps.agents.tools.workspace import RelativePath, Workspace, parse_path

__all__ = [
    "APPROVAL_TIMEOUTS",
    "DEFAULT_ALLOWED_PROGRAMS",
    "DENIED_PROGRAMS",
    "FORBIDDEN_EXTENSIONS",
    "MAX_FILE_BYTES",
    "MAX_OUTPUT_BYTES",
    "MAX_TIMEOUT_SECONDS",
    "BinaryContent",
    "BinaryExtension",
    "CommandResult",
    "DirectoryEntry",
    "EntryType",
    "ExecuteCommandParams",
    "ForbiddenArgument",
    "ForbiddenPath",
    "ForbiddenProgram",
    "InvalidArguments",
    "InvalidPath",
    "IsolationMode",
    "ListDirectoryParams",
    "ListDirectoryResult",
    "NotADirectory",
    "NotAFile",
    "PathEscape",
    "ReadFileParams",
    "ReadFileResult",
    "RelativePath",
    "ResourceLimits",
    "Risk",
    "SandboxUnavailable",
    "SpecialFile",
    "TooLarge",
    "ToolError",
    "ToolNotFound",
    "ToolResult",
    "ToolSpec",
    "ToolTimeout",
    "Toolbox",
    "UnknownTool",
    "Workspace",
    "WriteFileParams",
    "WriteFileResult",
    "approval_timeout",
    "assess_risk",
    "detect_isolation_mode",
    "parse_path",
    "tool_specs",
]
