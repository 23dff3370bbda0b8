"""`Toolbox`: the single entry point that runs a named tool with validated parameters in
one workspace and returns its typed result."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import stat
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, TypeVar

import anyio.to_thread
import structlog
from pydantic import BaseModel, ValidationError

from veche.apps.agents.tools.errors import (
    BinaryContent,
    BinaryExtension,
    ForbiddenProgram,
    InvalidArguments,
    SandboxUnavailable,
    TooLarge,
    ToolNotFound,
    ToolTimeout,
    UnknownTool,
)
from veche.apps.agents.tools.policy import (
    DEFAULT_ALLOWED_PROGRAMS,
    DENIED_PROGRAMS,
    check_arguments,
    check_restricted_arguments,
    forbidden_extension,
)
from veche.apps.agents.tools.sandbox import (
    SANDBOX_PATH,
    SANDBOX_WORKSPACE,
    ResourceLimits,
    bwrap_arguments,
    detect_isolation_mode,
    find_bwrap,
    restricted_git_environment,
    run_bounded,
    sandbox_environment,
)
from veche.apps.agents.tools.schemas import (
    MAX_FILE_BYTES,
    MAX_LIST_ENTRIES,
    CommandResult,
    DirectoryEntry,
    EntryType,
    ExecuteCommandParams,
    IsolationMode,
    ListDirectoryParams,
    ListDirectoryResult,
    ReadFileParams,
    ReadFileResult,
    ToolParams,
    ToolResult,
    ToolSpec,
    WriteFileParams,
    WriteFileResult,
)
from veche.apps.agents.tools.workspace import RelativePath, Workspace, parse_path

log = structlog.get_logger("veche.agents.tools")

_P = TypeVar("_P", bound=BaseModel)
_SNIFF_BYTES = 8192
_MAX_LIST_DEPTH = 64

TOOL_DESCRIPTIONS: dict[str, tuple[str, type[ToolParams]]] = {
    "read_file": (
        "Read a UTF-8 text file from the workspace (at most 100 MB; binary files are refused).",
        ReadFileParams,
    ),
    "write_file": (
        "Write or append UTF-8 text to a file in the workspace, creating parent "
        "directories. Executable and binary extensions are refused.",
        WriteFileParams,
    ),
    "list_directory": (
        "List a workspace directory, optionally recursively and filtered by a glob.",
        ListDirectoryParams,
    ),
    "execute_command": (
        "Run an allowed program with literal arguments (no shell) in the workspace, with "
        "a timeout of at most 300 seconds; stdout and stderr are capped at 1 MB each.",
        ExecuteCommandParams,
    ),
}


def tool_specs() -> list[ToolSpec]:
    """Every tool's name, description and JSON-schema parameters, for an LLM."""
    return [
        ToolSpec(name=name, description=description, parameters=model.model_json_schema())
        for name, (description, model) in TOOL_DESCRIPTIONS.items()
    ]


def _validate(model: type[_P], params: Mapping[str, Any] | BaseModel) -> _P:
    if isinstance(params, model):
        return params
    raw = params.model_dump() if isinstance(params, BaseModel) else params
    try:
        return model.model_validate(dict(raw))
    except (ValidationError, TypeError, ValueError) as error:
        raise InvalidArguments(str(error).splitlines()[0][:500]) from error


class Toolbox:
    """Runs the agent tools in one workspace.

    `allowed_programs` replaces the default allow-list; the deny-list always wins.
    `isolation` forces a mode: `RESTRICTED` to run without bubblewrap, `BWRAP` to require
    it (SandboxUnavailable if it cannot run); None detects once per process.
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        allowed_programs: Iterable[str] | None = None,
        isolation: IsolationMode | None = None,
        limits: ResourceLimits | None = None,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.workspace = workspace
        allowed = frozenset(allowed_programs or DEFAULT_ALLOWED_PROGRAMS)
        self.allowed_programs = allowed - DENIED_PROGRAMS
        self.limits = limits or ResourceLimits()
        self.max_file_bytes = max_file_bytes
        self._bwrap = find_bwrap()
        self._prlimit = _which("prlimit")
        if self._prlimit is None:
            log.warning("agents_tools_no_prlimit", detail="commands run without rlimits")
        if isolation is IsolationMode.BWRAP and (
            self._bwrap is None or detect_isolation_mode(self._bwrap) is not IsolationMode.BWRAP
        ):
            raise SandboxUnavailable("bubblewrap is not installed or fails its self-test")
        self._isolation = isolation or detect_isolation_mode(self._bwrap)

    @property
    def isolation_mode(self) -> IsolationMode:
        return self._isolation

    @property
    def limits_enforced(self) -> bool:
        """Whether commands get rlimits (util-linux `prlimit` is installed)."""
        return self._prlimit is not None

    @staticmethod
    def specs() -> list[ToolSpec]:
        return tool_specs()

    async def run(self, tool_name: str, params: Mapping[str, Any] | BaseModel) -> ToolResult:
        """Validate `params` for `tool_name` and run it; every failure is a ToolError."""
        if tool_name == "read_file":
            return await self.read_file(_validate(ReadFileParams, params))
        if tool_name == "write_file":
            return await self.write_file(_validate(WriteFileParams, params))
        if tool_name == "list_directory":
            return await self.list_directory(_validate(ListDirectoryParams, params))
        if tool_name == "execute_command":
            return await self.execute_command(_validate(ExecuteCommandParams, params))
        raise UnknownTool(f"No tool is named {tool_name!r}")

    # read_file

    async def read_file(self, params: ReadFileParams) -> ReadFileResult:
        path = parse_path(params.path)
        return await anyio.to_thread.run_sync(self._read_file, path)

    def _read_file(self, path: RelativePath) -> ReadFileResult:
        fd = self.workspace.open_for_read(path)
        try:
            size = os.fstat(fd).st_size
            if size > self.max_file_bytes:
                raise TooLarge(f"{path} is {size} bytes; the limit is {self.max_file_bytes}")
            data = bytearray()
            while chunk := os.read(fd, 1024 * 1024):
                data += chunk
                if len(data) > self.max_file_bytes:
                    raise TooLarge(f"{path} grew beyond {self.max_file_bytes} bytes")
        finally:
            os.close(fd)
        if b"\x00" in data[:_SNIFF_BYTES]:
            raise BinaryContent(f"{path} looks binary (it contains NUL bytes)")
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BinaryContent(f"{path} is not valid UTF-8") from error
        return ReadFileResult(path=str(path), content=content, size=len(data))

    # write_file

    async def write_file(self, params: WriteFileParams) -> WriteFileResult:
        path = parse_path(params.path)
        suffix = forbidden_extension(path.name)
        if suffix is not None:
            raise BinaryExtension(f"Files ending in {suffix} may not be written")
        if "\x00" in params.content:
            raise BinaryContent("The content contains NUL characters")
        data = params.content.encode("utf-8", errors="strict")
        if len(data) > self.max_file_bytes:
            raise TooLarge(f"The content is {len(data)} bytes; the limit is {self.max_file_bytes}")
        return await anyio.to_thread.run_sync(self._write_file, path, data, params.mode)

    def _write_file(self, path: RelativePath, data: bytes, mode: str) -> WriteFileResult:
        fd, existed = self.workspace.open_for_write(path)
        try:
            info = os.fstat(fd)
            if mode == "append":
                if info.st_size + len(data) > self.max_file_bytes:
                    raise TooLarge(f"{path} would exceed {self.max_file_bytes} bytes")
                os.lseek(fd, 0, os.SEEK_END)
            else:
                os.ftruncate(fd, 0)
            # Whatever the mode of an existing file, never leave it executable.
            if stat.S_IMODE(info.st_mode) & 0o7111:
                os.fchmod(fd, stat.S_IMODE(info.st_mode) & ~0o7111)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        return WriteFileResult(
            path=str(path), bytes_written=len(data), size=size, created=not existed
        )

    # list_directory

    async def list_directory(self, params: ListDirectoryParams) -> ListDirectoryResult:
        path = parse_path(params.path)
        pattern = params.pattern
        if pattern is not None and "\x00" in pattern:
            raise InvalidArguments("The pattern contains a NUL character")
        return await anyio.to_thread.run_sync(self._list, path, params.recursive, pattern)

    def _list(
        self, path: RelativePath, recursive: bool, pattern: str | None
    ) -> ListDirectoryResult:
        entries: list[DirectoryEntry] = []
        truncated = False

        def matches(name: str, below: str) -> bool:
            if pattern is None:
                return True
            return fnmatch.fnmatchcase(below if "/" in pattern else name, pattern)

        def walk(fd: int, relative: RelativePath, below: tuple[str, ...], depth: int) -> None:
            nonlocal truncated
            with os.scandir(fd) as iterator:
                items = sorted(iterator, key=lambda item: item.name)
            for item in items:
                if len(entries) >= MAX_LIST_ENTRIES:
                    truncated = True
                    return
                info = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    kind = EntryType.DIRECTORY
                elif stat.S_ISREG(info.st_mode):
                    kind = EntryType.FILE
                elif stat.S_ISLNK(info.st_mode):
                    kind = EntryType.SYMLINK
                else:
                    kind = EntryType.OTHER
                child_below = (*below, item.name)
                if matches(item.name, "/".join(child_below)):
                    size = info.st_size if kind is EntryType.FILE else None
                    entries.append(
                        DirectoryEntry(path=str(relative.child(item.name)), type=kind, size=size)
                    )
                if recursive and kind is EntryType.DIRECTORY and depth < _MAX_LIST_DEPTH:
                    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                    try:
                        child_fd = os.open(item.name, flags, dir_fd=fd)
                    except OSError:
                        continue  # replaced or removed while listing
                    try:
                        walk(child_fd, relative.child(item.name), child_below, depth + 1)
                    finally:
                        os.close(child_fd)
                    if truncated:
                        return

        with self.workspace.open_directory(path) as fd:
            walk(fd, path, (), 0)
        return ListDirectoryResult(path=str(path), entries=entries, truncated=truncated)

    # execute_command

    def _resolve_program(self, program: str) -> str:
        if "/" in program or "\\" in program or program.startswith("."):
            raise ForbiddenProgram("Name the program; paths are not allowed")
        if program in DENIED_PROGRAMS:
            raise ForbiddenProgram(f"{program} is never allowed")
        if program not in self.allowed_programs:
            raise ForbiddenProgram(f"{program} is not in the allow-list")
        executable = _which(program)
        if executable is None:
            raise ToolNotFound(f"{program} is not installed")
        # Catch an allowed name that is a link to a denied one (e.g. a shell).
        real_name = os.path.basename(os.path.realpath(executable))
        if real_name in DENIED_PROGRAMS or real_name.rstrip("0123456789.") in DENIED_PROGRAMS:
            raise ForbiddenProgram(f"{program} is {real_name}, which is never allowed")
        return executable

    async def execute_command(self, params: ExecuteCommandParams) -> CommandResult:
        executable = self._resolve_program(params.program)
        check_arguments(params.program, params.args)
        restricted = self._isolation is IsolationMode.RESTRICTED
        if restricted:
            check_restricted_arguments(params.program, params.args)
        cwd = parse_path(params.cwd)
        limits = self.limits
        prefix: list[str] = []
        if self._prlimit is not None:
            prefix = [self._prlimit, *limits.prlimit_arguments(params.timeout + 1), "--"]
        async with _open_directory(self.workspace, cwd) as cwd_fd:
            if restricted:
                environment = sandbox_environment(str(self.workspace.root))
                environment.update(restricted_git_environment())
                argv = [*prefix, executable, *params.args]
                # The checked directory itself, through its descriptor: no path race.
                host_cwd = f"/proc/{os.getpid()}/fd/{cwd_fd}"
            else:
                assert self._bwrap is not None
                environment = sandbox_environment(SANDBOX_WORKSPACE)
                inner_cwd = SANDBOX_WORKSPACE + ("/" + str(cwd) if cwd.parts else "")
                argv = [
                    *prefix,
                    *bwrap_arguments(self._bwrap, self.workspace.root, inner_cwd),
                    executable,
                    *params.args,
                ]
                host_cwd = str(self.workspace.root)
            outcome = await run_bounded(
                argv,
                environment=environment,
                cwd=host_cwd,
                time_limit=params.timeout,
                max_output_bytes=limits.max_output_bytes,
            )
        result = CommandResult(
            program=params.program,
            args=list(params.args),
            exit_code=outcome.exit_code,
            stdout=outcome.stdout.data.decode("utf-8", errors="replace"),
            stderr=outcome.stderr.data.decode("utf-8", errors="replace"),
            stdout_truncated=outcome.stdout.truncated,
            stderr_truncated=outcome.stderr.truncated,
            duration_seconds=round(outcome.duration_seconds, 3),
            timed_out=outcome.timed_out,
            isolation=self._isolation,
        )
        if outcome.timed_out:
            raise ToolTimeout(
                f"{params.program} ran longer than {params.timeout} s and was killed",
                result=result,
            )
        return result


def _which(program: str) -> str | None:
    return shutil.which(program, path=SANDBOX_PATH)


@contextlib.asynccontextmanager
async def _open_directory(workspace: Workspace, path: RelativePath) -> AsyncIterator[int]:
    """A descriptor of a workspace directory, held while the command starts."""

    def opener() -> int:
        with workspace.open_directory(path) as fd:
            return os.dup(fd)

    fd = await anyio.to_thread.run_sync(opener)
    try:
        yield fd
    finally:
        os.close(fd)


__all__ = ["TOOL_DESCRIPTIONS", "Toolbox", "tool_specs"]
