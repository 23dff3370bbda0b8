"""The confinement corpus: every path that leaves the workspace, or could, is refused
with the right code, for every file tool."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from veche.apps.agents.tools import (
    InvalidPath,
    PathEscape,
    Toolbox,
    ToolError,
    Workspace,
    parse_path,
)

ESCAPES = [
    "../x",
    "a/../../x",
    "a/b/../../../x",
    "..",
    "/etc/passwd",
    "//etc/passwd",
    "~/x",
    "..\\x",
    "a\\..\\..\\x",
    "C:\\Windows\\x",
    "c:x",
    "\uff0e\uff0e\uff0fx",  # fullwidth ../x
    "\uff0e\uff0e/x",
    "a\uff0f\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fx",
    "\u2024\u2024/x",  # one-dot leaders: NFKC turns each into '.'
]

INVALID = [
    "a\x00b",
    "x\x00/../../etc/passwd",
    "a" * 4096,
    "a/" * 2100 + "x",
    "\u202etxt.exe",  # right-to-left override
    "safe\u200d.txt",  # zero-width joiner
    "line\nbreak",
    "\ufb01le.txt",  # the 'fi' ligature: not NFKC
]


def _calls(path: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("read_file", {"path": path}),
        ("write_file", {"path": path, "content": "pwned"}),
        ("write_file", {"path": path, "content": "pwned", "mode": "append"}),
        ("list_directory", {"path": path}),
        ("execute_command", {"program": "ls", "cwd": path}),
    ]


@pytest.mark.parametrize("path", ESCAPES)
async def test_escaping_paths_are_refused_by_every_tool(
    restricted: Toolbox, path: str, tmp_path: Path
) -> None:
    for tool, params in _calls(path):
        with pytest.raises(PathEscape) as caught:
            await restricted.run(tool, params)
        assert caught.value.code == "tool.path_escape"
        assert caught.value.status == 403
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("path", INVALID)
async def test_malformed_paths_are_refused_by_every_tool(restricted: Toolbox, path: str) -> None:
    for tool, params in _calls(path):
        with pytest.raises(InvalidPath) as caught:
            await restricted.run(tool, params)
        assert caught.value.code == "tool.invalid_path"


async def test_percent_encoding_is_a_literal_name_inside_the_workspace(
    restricted: Toolbox, workspace: Workspace, tmp_path: Path
) -> None:
    await restricted.run("write_file", {"path": "%2e%2e/x", "content": "literal"})
    assert (workspace.root / "%2e%2e" / "x").read_text() == "literal"
    assert not (tmp_path / "x").exists()


def test_parse_path_drops_dot_components() -> None:
    assert parse_path("./a//b/./c").parts == ("a", "b", "c")
    assert parse_path("").parts == ()
    assert str(parse_path(".")) == "."


async def test_symlink_to_a_directory_outside_is_never_followed(
    restricted: Toolbox, workspace: Workspace, outside: Path
) -> None:
    os.symlink(outside, workspace.root / "link")
    os.symlink("/etc", workspace.root / "etc")
    for tool, params in [
        ("read_file", {"path": "link/secret.txt"}),
        ("read_file", {"path": "etc/passwd"}),
        ("write_file", {"path": "link/new.txt", "content": "x"}),
        ("write_file", {"path": "link/deeper/new.txt", "content": "x"}),
        ("list_directory", {"path": "link"}),
        ("list_directory", {"path": "etc"}),
        ("execute_command", {"program": "ls", "cwd": "link"}),
    ]:
        with pytest.raises(PathEscape):
            await restricted.run(tool, params)
    assert sorted(os.listdir(outside)) == ["secret.txt"]


async def test_symlinked_file_and_chain_are_refused(
    restricted: Toolbox, workspace: Workspace, outside: Path
) -> None:
    os.symlink(outside / "secret.txt", workspace.root / "direct")
    os.symlink("direct", workspace.root / "hop1")
    os.symlink("hop1", workspace.root / "hop2")
    os.symlink("/etc/passwd", workspace.root / "passwd")
    for name in ["direct", "hop1", "hop2", "passwd"]:
        with pytest.raises(PathEscape):
            await restricted.run("read_file", {"path": name})
        with pytest.raises(PathEscape):
            await restricted.run("write_file", {"path": name, "content": "overwritten"})
    assert (outside / "secret.txt").read_text() == "top secret\n"


async def test_symlink_inside_the_workspace_is_also_refused(
    restricted: Toolbox, workspace: Workspace
) -> None:
    (workspace.root / "real").mkdir()
    (workspace.root / "real" / "f.txt").write_text("inside")
    os.symlink("real", workspace.root / "alias")
    with pytest.raises(PathEscape):
        await restricted.run("read_file", {"path": "alias/f.txt"})


async def test_listing_reports_symlinks_without_following_them(
    restricted: Toolbox, workspace: Workspace, outside: Path
) -> None:
    os.symlink(outside, workspace.root / "link")
    listing = await restricted.run("list_directory", {"path": ".", "recursive": True})
    assert [(entry.path, entry.type) for entry in listing.entries] == [("link", "symlink")]  # type: ignore[union-attr]


async def test_symlink_swapped_in_during_reads_never_leaks(
    restricted: Toolbox, workspace: Workspace, outside: Path
) -> None:
    """A racer flips `d` between a real directory and a link to `outside` while reads
    of `d/secret.txt` run: each read sees the inside file or fails, never the secret."""
    target = workspace.root / "d"
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            target.mkdir()
            (target / "secret.txt").write_text("inside\n")
            (target / "secret.txt").unlink()
            target.rmdir()
            target.symlink_to(outside)
            target.unlink()

    racer = threading.Thread(target=flip)
    racer.start()
    outcomes: set[str] = set()
    try:
        for _ in range(300):
            try:
                result = await restricted.run("read_file", {"path": "d/secret.txt"})
            except ToolError as error:
                outcomes.add(error.code)
            else:
                # Empty: caught between the racer's create and write.
                assert result.content in {"", "inside\n"}  # type: ignore[union-attr]
                outcomes.add("read")
    finally:
        stop.set()
        racer.join()
    assert outcomes <= {"read", "tool.not_found", "tool.path_escape", "tool.not_a_directory"}


async def test_special_files_are_refused(
    restricted: Toolbox, workspace: Workspace, tmp_path: Path
) -> None:
    os.mkfifo(workspace.root / "fifo")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(workspace.root / "sock"))
    try:
        for name in ["fifo", "sock"]:
            with pytest.raises(ToolError) as caught:
                await restricted.run("read_file", {"path": name})
            assert caught.value.code == "tool.special_file"
            with pytest.raises(ToolError) as caught:
                await restricted.run("write_file", {"path": name, "content": "x"})
            assert caught.value.code == "tool.special_file"
    finally:
        server.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
async def test_device_nodes_are_refused(restricted: Toolbox, workspace: Workspace) -> None:
    os.mknod(workspace.root / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    for tool, params in [
        ("read_file", {"path": "null"}),
        ("write_file", {"path": "null", "content": "x"}),
    ]:
        with pytest.raises(ToolError) as caught:
            await restricted.run(tool, params)
        assert caught.value.code == "tool.special_file"


async def test_hard_link_to_an_outside_file_is_refused(
    restricted: Toolbox, workspace: Workspace, outside: Path
) -> None:
    os.link(outside / "secret.txt", workspace.root / "alias.txt")
    with pytest.raises(PathEscape):
        await restricted.run("read_file", {"path": "alias.txt"})
    with pytest.raises(PathEscape):
        await restricted.run("write_file", {"path": "alias.txt", "content": "x"})
    assert (outside / "secret.txt").read_text() == "top secret\n"


async def test_git_directory_is_not_writable(restricted: Toolbox) -> None:
    for path in [".git/config", "sub/.git/hooks/pre-commit.txt", ".GIT/config"]:
        with pytest.raises(ToolError) as caught:
            await restricted.run("write_file", {"path": path, "content": "[core]"})
        assert caught.value.code == "tool.forbidden_path"


def test_workspace_is_created_private(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "new" / "space")
    assert workspace.root.is_dir()
    assert stat.S_IMODE(workspace.root.stat().st_mode) == 0o700
