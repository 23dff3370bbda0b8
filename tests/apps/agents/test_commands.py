"""execute_command in both isolation modes: literal arguments, allow- and deny-lists,
refused argument forms, bounded output, timeouts, runaway processes, and (bubblewrap
only) no network and no writes outside the workspace."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.apps.agents.conftest import BWRAP_AVAILABLE
from veche.apps.agents.tools import (
    MAX_OUTPUT_BYTES,
    CommandResult,
    IsolationMode,
    ResourceLimits,
    Toolbox,
    ToolError,
    ToolTimeout,
    Workspace,
    detect_isolation_mode,
)


async def run(toolbox: Toolbox, program: str, *args: str, **extra: Any) -> CommandResult:
    result = await toolbox.run("execute_command", {"program": program, "args": list(args), **extra})
    assert isinstance(result, CommandResult)
    return result


def script(workspace: Workspace, name: str, source: str) -> str:
    (workspace.root / name).write_text(source)
    return name


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def host_has(path: Path) -> bool:
    return path.exists()


async def wait_until_gone(marker: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := processes_with(marker)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return left


async def test_happy_path_reports_exit_code_output_and_duration(toolbox: Toolbox) -> None:
    result = await run(toolbox, "echo", "hello", "world")
    assert result.exit_code == 0
    assert result.stdout == "hello world\n"
    assert result.stderr == ""
    assert not result.stdout_truncated
    assert not result.stderr_truncated
    assert not result.timed_out
    assert result.duration_seconds >= 0
    assert result.isolation is toolbox.isolation_mode


async def test_failing_command_reports_its_exit_code_and_stderr(toolbox: Toolbox) -> None:
    result = await run(toolbox, "ls", "no-such-file")
    assert result.exit_code != 0
    assert "no-such-file" in result.stderr


async def test_cwd_is_a_workspace_directory(toolbox: Toolbox, workspace: Workspace) -> None:
    (workspace.root / "sub").mkdir()
    (workspace.root / "sub" / "inner.txt").write_text("x")
    result = await run(toolbox, "ls", cwd="sub")
    assert result.stdout == "inner.txt\n"


@pytest.mark.parametrize(
    "payload",
    ["a; rm -rf /", "x && touch pwned", "$(touch pwned)", "`touch pwned`", "| tee pwned", "*"],
)
async def test_shell_metacharacters_are_inert(
    toolbox: Toolbox, workspace: Workspace, payload: str
) -> None:
    result = await run(toolbox, "echo", payload)
    assert result.stdout == payload + "\n"
    assert not (workspace.root / "pwned").exists()


async def test_environment_is_scrubbed(toolbox: Toolbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECHE_SECRET_KEY", "do-not-leak")
    source = "import os\nfor key in sorted(os.environ): print(key, os.environ[key])\n"
    script(toolbox.workspace, "env.py", source)
    result = await run(toolbox, "python3", "env.py")
    assert "do-not-leak" not in result.stdout
    variables = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert variables["PATH"] == "/usr/bin:/bin"
    assert variables["LANG"] == "C.UTF-8"
    expected_home = (
        "/workspace"
        if toolbox.isolation_mode is IsolationMode.BWRAP
        else str(toolbox.workspace.root)
    )
    assert variables["HOME"] == expected_home


@pytest.mark.parametrize(
    ("program", "args"),
    [
        ("sudo", ["ls"]),
        ("su", []),
        ("curl", ["http://example.com"]),
        ("wget", ["http://example.com"]),
        ("rm", ["-rf", "/"]),
        ("bash", ["-c", "id"]),
        ("sh", ["-c", "id"]),
        ("dd", ["if=/dev/zero"]),
        ("chmod", ["+x", "a"]),
        ("nc", ["-l", "4444"]),
        ("env", ["sh"]),
        ("xargs", ["sh"]),
        ("kill", ["-9", "1"]),
        ("/bin/ls", []),
        ("../../usr/bin/ls", []),
        ("make", []),
    ],
)
async def test_forbidden_programs(toolbox: Toolbox, program: str, args: list[str]) -> None:
    with pytest.raises(ToolError) as caught:
        await run(toolbox, program, *args)
    assert caught.value.code == "tool.forbidden_program"
    assert caught.value.status == 403


async def test_deny_list_beats_a_custom_allow_list(workspace: Workspace) -> None:
    toolbox = Toolbox(
        workspace, allowed_programs={"bash", "echo"}, isolation=IsolationMode.RESTRICTED
    )
    assert toolbox.allowed_programs == frozenset({"echo"})
    with pytest.raises(ToolError) as caught:
        await run(toolbox, "bash", "-c", "id")
    assert caught.value.code == "tool.forbidden_program"
    with pytest.raises(ToolError) as caught:
        await run(toolbox, "ls")
    assert caught.value.code == "tool.forbidden_program"


@pytest.mark.parametrize(
    ("program", "args"),
    [
        ("find", [".", "-exec", "id", ";"]),
        ("find", [".", "-execdir", "id", ";"]),
        ("find", [".", "-ok", "id", ";"]),
        ("find", [".", "-delete"]),
        ("find", [".", "-fprint", "out"]),
        ("git", ["-c", "core.pager=id", "log"]),
        ("git", ["-ccore.pager=id", "log"]),
        ("git", ["--exec-path=/tmp", "status"]),
        ("git", ["-C", "/", "status"]),
        ("git", ["--git-dir=/etc", "status"]),
        ("git", ["config", "core.fsmonitor", "id"]),
        ("git", ["fetch", "--upload-pack=id", "origin"]),
        ("git", ["clone", "-u", "id", "repo"]),
        ("git", ["push", "--receive-pack=id"]),
        ("git", ["rebase", "--exec", "id"]),
        ("git", ["difftool"]),
        ("git", ["my-alias"]),
        ("sort", ["--compress-program=id", "a"]),
    ],
)
async def test_forbidden_arguments_in_every_mode(
    toolbox: Toolbox, program: str, args: list[str]
) -> None:
    with pytest.raises(ToolError) as caught:
        await run(toolbox, program, *args)
    assert caught.value.code == "tool.forbidden_argument"


@pytest.mark.parametrize(
    ("program", "args"),
    [
        ("python3", ["-c", "print(1)"]),
        ("python3", ["-Ic", "print(1)"]),
        ("python3", ["-cprint(1)"]),
        ("python3", ["-"]),
        ("python3", ["-m", "http.server"]),
        ("python3", ["-mhttp.server"]),
        ("python3", ["-W", "ignore", "-c", "print(1)"]),
        ("cat", ["/etc/passwd"]),
        ("cat", ["../outside/secret.txt"]),
        ("cat", ["a/../../x"]),
        ("grep", ["-r", "secret", "/home"]),
        ("grep", ["--file=/etc/shadow", "x"]),
        ("ls", ["~root"]),
        ("git", ["clone", "file:///etc", "x"]),
        ("git", ["clone", "/etc", "x"]),
    ],
)
async def test_restricted_mode_refuses_code_and_outside_paths(
    restricted: Toolbox, program: str, args: list[str]
) -> None:
    with pytest.raises(ToolError) as caught:
        await run(restricted, program, *args)
    assert caught.value.code == "tool.forbidden_argument"


async def test_restricted_mode_allows_ordinary_python(restricted: Toolbox) -> None:
    script(restricted.workspace, "hello.py", "import sys\nprint('hi', sys.argv[1:])\n")
    result = await run(restricted, "python3", "-B", "hello.py", "-c", "x")
    assert result.stdout == "hi ['-c', 'x']\n"


async def test_bwrap_allows_inline_python_and_hides_the_host(sandboxed: Toolbox) -> None:
    result = await run(sandboxed, "python3", "-c", "print(40 + 2)")
    assert result.stdout == "42\n"
    hidden = await run(sandboxed, "cat", "/etc/passwd")
    assert hidden.exit_code != 0
    root = await run(sandboxed, "ls", "/")
    assert set(root.stdout.split()) <= {
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "sbin",
        "tmp",
        "usr",
        "workspace",
    }


async def test_output_beyond_1_mb_is_truncated(toolbox: Toolbox) -> None:
    source = (
        "import sys\n"
        "chunk = 'x' * 65536\n"
        "for _ in range(48):\n"
        "    sys.stdout.write(chunk); sys.stderr.write(chunk)\n"
        "print('done', file=sys.stderr)\n"
    )
    script(toolbox.workspace, "loud.py", source)
    result = await run(toolbox, "python3", "loud.py", timeout=60)
    assert result.exit_code == 0
    assert result.stdout_truncated
    assert result.stderr_truncated
    assert len(result.stdout.encode()) == MAX_OUTPUT_BYTES
    assert len(result.stderr.encode()) == MAX_OUTPUT_BYTES


async def test_endless_output_is_capped_until_the_timeout(toolbox: Toolbox) -> None:
    script(
        toolbox.workspace,
        "flood.py",
        "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n",
    )
    started = time.monotonic()
    with pytest.raises(ToolTimeout) as caught:
        await run(toolbox, "python3", "flood.py", timeout=2)
    assert time.monotonic() - started < 2 + 5
    partial = caught.value.result
    assert isinstance(partial, CommandResult)
    assert partial.stdout_truncated
    assert len(partial.stdout) == MAX_OUTPUT_BYTES


@pytest.mark.parametrize("body", ["while True:\n    pass\n", "import time\ntime.sleep(120)\n"])
async def test_runaway_process_is_killed_at_the_timeout(toolbox: Toolbox, body: str) -> None:
    script(toolbox.workspace, "runaway.py", body)
    started = time.monotonic()
    with pytest.raises(ToolTimeout) as caught:
        await run(toolbox, "python3", "runaway.py", timeout=1)
    assert time.monotonic() - started < 1 + 5
    assert caught.value.code == "tool.timeout"
    assert caught.value.status == 408
    assert caught.value.extra["result"]["timed_out"] is True


async def test_forked_children_die_with_the_command(toolbox: Toolbox) -> None:
    """A bounded fork storm: 100 sleeping children; all are gone after the timeout."""
    marker = f"storm-{uuid.uuid4().hex}"
    source = (
        "import os, sys, time\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(120); os._exit(0)\n"
        "    except OSError:\n"
        "        break\n"
        "time.sleep(120)\n"
    )
    script(toolbox.workspace, "storm.py", source)
    with pytest.raises(ToolTimeout):
        await run(toolbox, "python3", "storm.py", marker, timeout=2)
    assert await wait_until_gone(marker) == []


async def test_a_daemonised_child_dies_with_the_sandbox(sandboxed: Toolbox) -> None:
    """setsid() leaves the process group; in bubblewrap the PID namespace still ends."""
    marker = f"daemon-{uuid.uuid4().hex}"
    source = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    os.close(1); os.close(2)\n"
        "    time.sleep(120); os._exit(0)\n"
        "print('parent exits')\n"
    )
    script(sandboxed.workspace, "daemon.py", source)
    result = await run(sandboxed, "python3", "daemon.py", marker, timeout=10)
    assert result.stdout == "parent exits\n"
    assert await wait_until_gone(marker) == []


@pytest.mark.parametrize("mode", [IsolationMode.BWRAP, IsolationMode.RESTRICTED])
async def test_resource_limits_apply_to_commands(workspace: Workspace, mode: IsolationMode) -> None:
    if mode is IsolationMode.BWRAP and not BWRAP_AVAILABLE:
        pytest.skip("bubblewrap is not installed or cannot create namespaces here")
    limits = ResourceLimits(file_size_bytes=4096, open_files=32)
    toolbox = Toolbox(workspace, isolation=mode, limits=limits)
    script(workspace, "fill.py", "open('fill.txt', 'w').write('z' * 100_000)\n")
    result = await run(toolbox, "python3", "fill.py")
    assert result.exit_code != 0
    assert (workspace.root / "fill.txt").stat().st_size <= 4096
    source = "import resource\nprint(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    script(workspace, "limits.py", source)
    assert (await run(toolbox, "python3", "limits.py")).stdout == "32 32\n"


async def test_private_tmp_is_writable_in_bwrap(sandboxed: Toolbox) -> None:
    source = "import tempfile\nwith tempfile.NamedTemporaryFile() as f:\n    print('ok')\n"
    script(sandboxed.workspace, "tmp.py", source)
    assert (await run(sandboxed, "python3", "tmp.py")).stdout == "ok\n"


async def test_network_is_unreachable_in_bwrap(sandboxed: Toolbox) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    source = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
        "except OSError as error:\n"
        "    print('refused', type(error).__name__); sys.exit(3)\n"
        "print('connected')\n"
    )
    script(sandboxed.workspace, "net.py", source)
    try:
        result = await run(sandboxed, "python3", "net.py")
    finally:
        listener.close()
    assert result.exit_code == 3
    assert result.stdout.startswith("refused")


async def test_writes_outside_the_workspace_do_not_reach_the_host(sandboxed: Toolbox) -> None:
    target = Path(f"/tmp/outside-{uuid.uuid4().hex}")  # noqa: S108
    source = (
        "import sys\n"
        "results = []\n"
        f"for path in [{str(target)!r}, '/usr/pwned-{uuid.uuid4().hex}', '/etc/pwned']:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        results.append('wrote')\n"
        "    except OSError:\n"
        "        results.append('denied')\n"
        "print(*results)\n"
    )
    script(sandboxed.workspace, "escape.py", source)
    result = await run(sandboxed, "python3", "escape.py")
    # /tmp is a private tmpfs: the write succeeds there and vanishes with the sandbox.
    assert result.stdout.split()[1:] == ["denied", "denied"]
    assert not host_has(target)
    assert not host_has(Path("/etc/pwned"))


async def test_git_works_without_config_or_hooks(toolbox: Toolbox, workspace: Workspace) -> None:
    assert (await run(toolbox, "git", "init", "-q")).exit_code == 0
    await toolbox.run("write_file", {"path": "readme.md", "content": "hello\n"})
    assert (await run(toolbox, "git", "add", "readme.md")).exit_code == 0
    commit = await run(toolbox, "git", "commit", "-q", "-m", "first")
    assert commit.exit_code == 0, commit.stderr
    log = await run(toolbox, "git", "log", "--format=%an %s")
    assert log.stdout == "Veche agent first\n"


def test_isolation_mode_is_reported(restricted: Toolbox) -> None:
    assert restricted.isolation_mode is IsolationMode.RESTRICTED
    assert IsolationMode(str(restricted.isolation_mode)) is IsolationMode.RESTRICTED


def test_a_bwrap_that_fails_its_self_test_means_restricted(tmp_path: Path) -> None:
    broken = tmp_path / "bwrap"
    broken.write_text("not an executable")
    assert detect_isolation_mode(str(broken)) is IsolationMode.RESTRICTED
    assert detect_isolation_mode(str(tmp_path / "missing")) is IsolationMode.RESTRICTED


async def test_restricted_mode_passes_ordinary_patterns(
    restricted: Toolbox, workspace: Workspace
) -> None:
    (workspace.root / "a.txt").write_text("a.b\naxb\n")
    result = await run(restricted, "grep", "-n", "a\\.b", "a.txt")
    assert result.stdout == "1:a.b\n"
