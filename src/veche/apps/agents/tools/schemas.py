"""The tools' parameter and result models, and the declarative spec an LLM is shown."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_OUTPUT_BYTES = 1024 * 1024
MAX_TIMEOUT_SECONDS = 300
DEFAULT_TIMEOUT_SECONDS = 60
MAX_ARGUMENTS = 256
MAX_LIST_ENTRIES = 10_000


class ToolParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class ReadFileParams(ToolParams):
    path: str = Field(description="File path relative to the workspace root", max_length=8192)


class WriteFileParams(ToolParams):
    path: str = Field(description="File path relative to the workspace root", max_length=8192)
    content: str = Field(description="UTF-8 text to write")
    mode: Literal["overwrite", "append"] = Field(
        default="overwrite", description="Replace the file or append to it"
    )


class ListDirectoryParams(ToolParams):
    path: str = Field(
        default=".", description="Directory relative to the workspace root", max_length=8192
    )
    recursive: bool = Field(default=False, description="Descend into subdirectories")
    pattern: str | None = Field(
        default=None,
        max_length=256,
        description="Glob matched against each entry's name, or its path below `path` "
        "when the pattern contains '/'",
    )


class ExecuteCommandParams(ToolParams):
    program: str = Field(
        description="Program name from the allow-list (no path, no shell)", max_length=64
    )
    args: list[str] = Field(
        default_factory=list,
        max_length=MAX_ARGUMENTS,
        description="Arguments, passed literally; no shell expands them",
    )
    timeout: int = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        description="Seconds before the command and all its children are killed",
    )
    cwd: str = Field(
        default=".",
        description="Working directory relative to the workspace root",
        max_length=8192,
    )


class ReadFileResult(BaseModel):
    path: str
    content: str
    size: int


class WriteFileResult(BaseModel):
    path: str
    bytes_written: int
    size: int
    created: bool


class EntryType(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"


class DirectoryEntry(BaseModel):
    path: str = Field(description="Path relative to the workspace root")
    type: EntryType
    size: int | None = None


class ListDirectoryResult(BaseModel):
    path: str
    entries: list[DirectoryEntry]
    truncated: bool = False


class IsolationMode(StrEnum):
    BWRAP = "bwrap"
    RESTRICTED = "restricted"


class CommandResult(BaseModel):
    program: str
    args: list[str]
    exit_code: int | None = Field(description="Negative: killed by that signal")
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_seconds: float
    timed_out: bool = False
    isolation: IsolationMode


ToolResult = ReadFileResult | WriteFileResult | ListDirectoryResult | CommandResult


class ToolSpec(BaseModel):
    """What an LLM is told about a tool: the shape of a function-calling declaration."""

    name: str
    description: str
    parameters: dict[str, Any]
