"""read_file, write_file and list_directory: happy paths and their limits."""

from __future__ import annotations

import os
import stat

import pytest

from veche.apps.agents.tools import (
    MAX_FILE_BYTES,
    ListDirectoryResult,
    ReadFileResult,
    Toolbox,
    ToolError,
    Workspace,
    WriteFileResult,
    tool_specs,
)


async def test_write_then_read_round_trips_utf8(restricted: Toolbox, workspace: Workspace) -> None:
    written = await restricted.run(
        "write_file", {"path": "notes/привет.md", "content": "héllo ✓\n"}
    )
    assert isinstance(written, WriteFileResult)
    assert written.created
    assert written.bytes_written == len("héllo ✓\n".encode())
    read = await restricted.run("read_file", {"path": "notes/привет.md"})
    assert isinstance(read, ReadFileResult)
    assert read.content == "héllo ✓\n"
    assert read.path == "notes/привет.md"
    info = (workspace.root / "notes" / "привет.md").stat()
    assert stat.S_IMODE(info.st_mode) == 0o600


async def test_overwrite_replaces_and_append_extends(restricted: Toolbox) -> None:
    await restricted.run("write_file", {"path": "log.txt", "content": "first line that is long\n"})
    replaced = await restricted.run("write_file", {"path": "log.txt", "content": "one\n"})
    assert isinstance(replaced, WriteFileResult)
    assert not replaced.created
    assert replaced.size == 4
    appended = await restricted.run(
        "write_file", {"path": "log.txt", "content": "two\n", "mode": "append"}
    )
    assert isinstance(appended, WriteFileResult)
    assert appended.size == 8
    read = await restricted.run("read_file", {"path": "log.txt"})
    assert isinstance(read, ReadFileResult)
    assert read.content == "one\ntwo\n"


async def test_write_never_leaves_the_executable_bit(
    restricted: Toolbox, workspace: Workspace
) -> None:
    script = workspace.root / "run.py"
    script.write_text("print(1)\n")
    os.chmod(script, 0o755)  # noqa: S103 - the point of the test
    await restricted.run("write_file", {"path": "run.py", "content": "print(2)\n"})
    assert stat.S_IMODE(script.stat().st_mode) & 0o111 == 0


@pytest.mark.parametrize(
    "name",
    [
        "tool.exe",
        "lib.so",
        "libx.so.1.2",
        "lib.dylib",
        "run.sh",
        "RUN.SH",
        "a.bat",
        "a.cmd",
        "a.ps1",
        "fw.bin",
        "a.elf",
        "a.com",
        "setup.msi",
        "app.apk",
        "app.jar",
        "mod.pyc",
        "x.exe.",
        "x.exe ",
        "dir/deep/payload.DLL",
    ],
)
async def test_binary_and_executable_extensions_are_refused(
    restricted: Toolbox, workspace: Workspace, name: str
) -> None:
    with pytest.raises(ToolError) as caught:
        await restricted.run("write_file", {"path": name, "content": "MZ"})
    assert caught.value.code == "tool.binary_extension"
    assert os.listdir(workspace.root) == []


async def test_similar_but_harmless_names_are_written(restricted: Toolbox) -> None:
    for name in ["notes.sh.txt", "example.com.md", "binary.py", "so", "readme"]:
        result = await restricted.run("write_file", {"path": name, "content": "ok"})
        assert isinstance(result, WriteFileResult)


async def test_writing_more_than_100_mb_is_refused(
    restricted: Toolbox, workspace: Workspace
) -> None:
    with pytest.raises(ToolError) as caught:
        await restricted.run(
            "write_file", {"path": "big.txt", "content": "a" * (MAX_FILE_BYTES + 1)}
        )
    assert caught.value.code == "tool.too_large"
    assert caught.value.status == 413
    assert not (workspace.root / "big.txt").exists()


async def test_append_past_the_cap_is_refused(workspace: Workspace) -> None:
    toolbox = Toolbox(workspace, max_file_bytes=10)
    await toolbox.run("write_file", {"path": "a.txt", "content": "123456"})
    with pytest.raises(ToolError) as caught:
        await toolbox.run("write_file", {"path": "a.txt", "content": "12345", "mode": "append"})
    assert caught.value.code == "tool.too_large"
    assert (workspace.root / "a.txt").read_text() == "123456"


async def test_reading_more_than_100_mb_is_refused(
    restricted: Toolbox, workspace: Workspace
) -> None:
    (workspace.root / "huge.txt").touch()
    os.truncate(workspace.root / "huge.txt", MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ToolError) as caught:
        await restricted.run("read_file", {"path": "huge.txt"})
    assert caught.value.code == "tool.too_large"


async def test_binary_content_is_refused_on_read(restricted: Toolbox, workspace: Workspace) -> None:
    (workspace.root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (workspace.root / "latin1.txt").write_bytes("café".encode("latin-1"))
    for name in ["image.png", "latin1.txt"]:
        with pytest.raises(ToolError) as caught:
            await restricted.run("read_file", {"path": name})
        assert caught.value.code == "tool.binary_content"


async def test_nul_in_content_is_refused_on_write(restricted: Toolbox) -> None:
    with pytest.raises(ToolError) as caught:
        await restricted.run("write_file", {"path": "a.txt", "content": "a\x00b"})
    assert caught.value.code == "tool.binary_content"


async def test_missing_and_directory_targets(restricted: Toolbox, workspace: Workspace) -> None:
    (workspace.root / "dir").mkdir()
    (workspace.root / "file.txt").write_text("x")
    cases = [
        ("read_file", {"path": "nope.txt"}, "tool.not_found"),
        ("read_file", {"path": "dir"}, "tool.not_a_file"),
        ("read_file", {"path": "."}, "tool.not_a_file"),
        ("write_file", {"path": "dir", "content": "x"}, "tool.not_a_file"),
        ("list_directory", {"path": "nope"}, "tool.not_found"),
        ("list_directory", {"path": "file.txt"}, "tool.not_a_directory"),
        ("write_file", {"path": "file.txt/x.txt", "content": "x"}, "tool.not_a_directory"),
    ]
    for tool, params, code in cases:
        with pytest.raises(ToolError) as caught:
            await restricted.run(tool, params)
        assert caught.value.code == code, (tool, params)


async def test_list_directory_flat_recursive_and_glob(
    restricted: Toolbox, workspace: Workspace
) -> None:
    for path in ["a.py", "b.txt", "src/c.py", "src/pkg/d.py", "src/pkg/e.md"]:
        await restricted.run("write_file", {"path": path, "content": "x"})
    flat = await restricted.run("list_directory", {"path": "."})
    assert isinstance(flat, ListDirectoryResult)
    assert [entry.path for entry in flat.entries] == ["a.py", "b.txt", "src"]
    assert [entry.type for entry in flat.entries] == ["file", "file", "directory"]
    deep = await restricted.run(
        "list_directory", {"path": ".", "recursive": True, "pattern": "*.py"}
    )
    assert isinstance(deep, ListDirectoryResult)
    assert [entry.path for entry in deep.entries] == ["a.py", "src/c.py", "src/pkg/d.py"]
    below = await restricted.run(
        "list_directory", {"path": "src", "recursive": True, "pattern": "pkg/*"}
    )
    assert isinstance(below, ListDirectoryResult)
    assert [entry.path for entry in below.entries] == ["src/pkg/d.py", "src/pkg/e.md"]
    assert not below.truncated


@pytest.mark.parametrize(
    ("tool", "params"),
    [
        ("read_file", {}),
        ("read_file", {"path": "a", "extra": 1}),
        ("read_file", {"path": 5}),
        ("write_file", {"path": "a.txt", "content": "x", "mode": "truncate"}),
        ("list_directory", {"recursive": "maybe"}),
        ("execute_command", {"program": "ls", "timeout": 301}),
        ("execute_command", {"program": "ls", "timeout": 0}),
        ("execute_command", {"program": "ls", "args": "-la"}),
        ("execute_command", {"program": "ls", "shell": True}),
    ],
)
async def test_invalid_parameters_are_refused(
    restricted: Toolbox, tool: str, params: dict[str, object]
) -> None:
    with pytest.raises(ToolError) as caught:
        await restricted.run(tool, params)
    assert caught.value.code == "tool.invalid_arguments"
    assert caught.value.status == 422


async def test_unknown_tool(restricted: Toolbox) -> None:
    with pytest.raises(ToolError) as caught:
        await restricted.run("delete_everything", {})
    assert caught.value.code == "tool.unknown_tool"


def test_specs_describe_every_tool_with_a_closed_schema() -> None:
    specs = {spec.name: spec for spec in tool_specs()}
    assert set(specs) == {"read_file", "write_file", "list_directory", "execute_command"}
    for spec in specs.values():
        assert spec.description
        assert spec.parameters["type"] == "object"
        assert spec.parameters["additionalProperties"] is False
    execute = specs["execute_command"].parameters["properties"]
    assert execute["timeout"]["maximum"] == 300
    assert specs["write_file"].parameters["properties"]["mode"]["enum"] == ["overwrite", "append"]
