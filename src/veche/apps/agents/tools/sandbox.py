"""Running one command: isolation detection, the bubblewrap and prlimit wrappers, and the
bounded capture of its output.

Resource limits are set by util-linux's `prlimit` binary, which sets them on itself and
then execs the next program, so they are in force before any untrusted code runs and no
Python runs between fork and exec (a `preexec_fn` is unsafe with threads). The chain is
`prlimit … -- bwrap … -- program args` in bubblewrap mode, `prlimit … -- program args` in
restricted mode. Every command starts in its own session; on timeout the whole process
group is killed, and in bubblewrap mode the PID namespace dies with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from veche.apps.agents.tools.policy import GIT_FORCED_CONFIG
from veche.apps.agents.tools.schemas import MAX_FILE_BYTES, MAX_OUTPUT_BYTES, IsolationMode

log = structlog.get_logger("veche.agents.tools")

SANDBOX_PATH = "/usr/bin:/bin"
SANDBOX_WORKSPACE = "/workspace"
_READ_CHUNK = 64 * 1024
_KILL_GRACE_SECONDS = 2.0
# Minimal /etc inside the sandbox: the dynamic loader's files and the time zone.
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
)
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """Per-command rlimits. `processes` is RLIMIT_NPROC, which the kernel counts per real
    user and does not enforce for root; see docs/agents-tools.md."""

    address_space_bytes: int = 2 * 1024 * 1024 * 1024
    file_size_bytes: int = MAX_FILE_BYTES
    open_files: int = 256
    processes: int = 512
    max_output_bytes: int = MAX_OUTPUT_BYTES

    def prlimit_arguments(self, cpu_seconds: int) -> list[str]:
        def pair(value: int) -> str:
            return f"{value}:{value}"

        return [
            f"--cpu={pair(cpu_seconds)}",
            f"--as={pair(self.address_space_bytes)}",
            f"--fsize={pair(self.file_size_bytes)}",
            f"--nofile={pair(self.open_files)}",
            f"--nproc={pair(self.processes)}",
            f"--core={pair(0)}",
        ]


def sandbox_environment(home: str) -> dict[str, str]:
    """The whole environment a command sees: nothing inherited from the service."""
    environment = {
        "PATH": SANDBOX_PATH,
        "HOME": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp",  # noqa: S108 - private tmpfs in bubblewrap mode
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": str(len(GIT_FORCED_CONFIG)),
    }
    for index, (key, value) in enumerate(GIT_FORCED_CONFIG):
        environment[f"GIT_CONFIG_KEY_{index}"] = key
        environment[f"GIT_CONFIG_VALUE_{index}"] = value
    return environment


def restricted_git_environment() -> dict[str, str]:
    """Extra git configuration in restricted mode: no transport at all, since there the
    network and every host path are reachable."""
    index = len(GIT_FORCED_CONFIG)
    return {
        "GIT_CONFIG_COUNT": str(index + 1),
        f"GIT_CONFIG_KEY_{index}": "protocol.allow",
        f"GIT_CONFIG_VALUE_{index}": "never",
    }


def bwrap_arguments(bwrap: str, workspace: Path | None, cwd: str) -> list[str]:
    """bubblewrap's command line: read-only system, the workspace read-write at
    /workspace, fresh /proc, /dev and /tmp, every namespace unshared (so no network)."""
    arguments = [
        bwrap,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for directory in _SYSTEM_DIRS:
        if os.path.islink(directory):
            arguments += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            arguments += ["--ro-bind", directory, directory]
    for path in _ETC_FILES:
        if os.path.exists(path):
            arguments += ["--ro-bind", path, path]
    arguments += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108
    if workspace is not None:
        arguments += ["--bind", str(workspace), SANDBOX_WORKSPACE]
    # The sandbox's own root (where /etc and the mount points live) becomes read-only too.
    arguments += ["--remount-ro", "/", "--chdir", cwd, "--"]
    return arguments


@functools.cache
def _probe(bwrap: str | None) -> IsolationMode:
    if bwrap is None:
        log.warning("agents_tools_isolation", mode="restricted", reason="bwrap not found")
        return IsolationMode.RESTRICTED
    true = shutil.which("true", path=SANDBOX_PATH) or "/usr/bin/true"
    command = [*bwrap_arguments(bwrap, None, "/"), true]
    try:
        completed = subprocess.run(  # noqa: S603 - fixed argv, no shell
            command,
            env=sandbox_environment("/"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("agents_tools_isolation", mode="restricted", reason=str(error))
        return IsolationMode.RESTRICTED
    if completed.returncode != 0:
        reason = completed.stderr.decode(errors="replace").strip()[:500]
        log.warning("agents_tools_isolation", mode="restricted", reason=reason)
        return IsolationMode.RESTRICTED
    log.info("agents_tools_isolation", mode="bwrap", bwrap=bwrap)
    return IsolationMode.BWRAP


def find_bwrap() -> str | None:
    return shutil.which("bwrap", path=SANDBOX_PATH)


def detect_isolation_mode(bwrap: str | None = None) -> IsolationMode:
    """The isolation commands get on this host: `bwrap` when bubblewrap is installed and
    passes a self-test (it runs `true` in a full sandbox once per process), else
    `restricted`. Blocking, cached; call it at startup or through a thread."""
    return _probe(bwrap or find_bwrap())


@dataclass(slots=True)
class CapturedOutput:
    data: bytearray
    truncated: bool = False


async def _drain(stream: asyncio.StreamReader | None, cap: int, sink: CapturedOutput) -> None:
    """Keep at most `cap` bytes; read and discard the rest so the writer never blocks."""
    if stream is None:
        return
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            return
        room = cap - len(sink.data)
        if room > 0:
            sink.data += chunk[:room]
        if len(chunk) > room:
            sink.truncated = True


def _kill_group(process_group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process_group, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    exit_code: int | None
    stdout: CapturedOutput
    stderr: CapturedOutput
    duration_seconds: float
    timed_out: bool


async def run_bounded(
    argv: Sequence[str],
    *,
    environment: dict[str, str],
    cwd: str,
    time_limit: float,
    max_output_bytes: int,
) -> ProcessOutcome:
    """Run `argv` (no shell) in a new session with bounded output capture; kill its
    process group at the deadline and whatever is left of it when it exits."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
    )
    stdout = CapturedOutput(bytearray())
    stderr = CapturedOutput(bytearray())
    readers = [
        asyncio.create_task(_drain(process.stdout, max_output_bytes, stdout)),
        asyncio.create_task(_drain(process.stderr, max_output_bytes, stderr)),
    ]
    waiter = asyncio.create_task(process.wait())
    timed_out = False
    try:
        _, pending = await asyncio.wait([waiter, *readers], timeout=time_limit)
        if pending:
            timed_out = not waiter.done()
            _kill_group(process.pid)
            # A child that left the group may still hold the pipes; give up on it.
            await asyncio.wait(pending, timeout=_KILL_GRACE_SECONDS)
    finally:
        _kill_group(process.pid)
        for task in (*readers, waiter):
            if not task.done():
                task.cancel()
        await asyncio.gather(*readers, waiter, return_exceptions=True)
    return ProcessOutcome(
        exit_code=process.returncode,
        stdout=stdout,
        stderr=stderr,
        duration_seconds=time.monotonic() - started,
        timed_out=timed_out,
    )
