"""The tools' typed failures: each has a stable `tool.*` code and an HTTP status, so the
approval and chat layers can turn any of them into an RFC 9457 problem unchanged."""

from __future__ import annotations

from typing import ClassVar

from veche.apps.agents.tools.schemas import CommandResult
from veche.kernel.errors import ProblemError


class ToolError(ProblemError):
    """Base of every expected tool failure."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "tool.error"
    title: ClassVar[str] = "The tool call failed"


class InvalidArguments(ToolError):
    status = 422
    code = "tool.invalid_arguments"
    title = "The tool's arguments are not valid"


class UnknownTool(ToolError):
    status = 404
    code = "tool.unknown_tool"
    title = "No tool has this name"


class InvalidPath(ToolError):
    """A malformed path: NUL, control or bidi characters, over-long names."""

    status = 422
    code = "tool.invalid_path"
    title = "The path is not valid"


class PathEscape(ToolError):
    """A path that is, or could become, outside the workspace."""

    status = 403
    code = "tool.path_escape"
    title = "The path leaves the workspace"


class ForbiddenPath(ToolError):
    """A path inside the workspace that tools may not write (e.g. `.git/`)."""

    status = 403
    code = "tool.forbidden_path"
    title = "This path may not be written"


class SpecialFile(ToolError):
    """Devices, FIFOs and sockets are never opened."""

    status = 403
    code = "tool.special_file"
    title = "Not a regular file"


class NotAFile(ToolError):
    status = 422
    code = "tool.not_a_file"
    title = "The path is a directory"


class NotADirectory(ToolError):
    status = 422
    code = "tool.not_a_directory"
    title = "The path is not a directory"


class ToolNotFound(ToolError):
    status = 404
    code = "tool.not_found"
    title = "No such file, directory or program"


class TooLarge(ToolError):
    status = 413
    code = "tool.too_large"
    title = "The file is too large"


class BinaryExtension(ToolError):
    status = 403
    code = "tool.binary_extension"
    title = "Executable or binary files may not be written"


class BinaryContent(ToolError):
    status = 415
    code = "tool.binary_content"
    title = "The file is not UTF-8 text"


class ForbiddenProgram(ToolError):
    status = 403
    code = "tool.forbidden_program"
    title = "This program may not be run"


class ForbiddenArgument(ToolError):
    status = 403
    code = "tool.forbidden_argument"
    title = "This argument may not be passed"


class ToolTimeout(ToolError):
    """The command ran out of time and was killed; `result` holds what it printed."""

    status = 408
    code = "tool.timeout"
    title = "The command timed out"

    def __init__(self, detail: str | None = None, *, result: CommandResult | None = None) -> None:
        extra = {"result": result.model_dump()} if result is not None else None
        super().__init__(detail, extra=extra)
        self.result = result


class SandboxUnavailable(ToolError):
    status = 503
    code = "tool.sandbox_unavailable"
    title = "The command sandbox is not available"
