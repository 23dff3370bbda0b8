"""A project's workspace directory and the only way tools reach files in it.

Paths arrive as strings from an LLM. `parse_path` refuses anything that is, or could
normalise into, an escape; the `Workspace` then opens every component relative to the
previous directory's descriptor with `O_NOFOLLOW`, so a symlink anywhere on the way, even
one swapped in after the string was checked, fails the open instead of being followed.
Symlinks are never followed, including ones that point inside the workspace.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from veche.apps.agents.tools.errors import (
    ForbiddenPath,
    InvalidPath,
    NotADirectory,
    NotAFile,
    PathEscape,
    SpecialFile,
    ToolNotFound,
)

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
# Tools never write inside a git directory: `.git/config` and hooks are code execution.
PROTECTED_DIRECTORIES = frozenset({".git"})

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class RelativePath:
    """A validated path inside a workspace: its components, none of them `.` or `..`."""

    parts: tuple[str, ...]

    def __str__(self) -> str:
        return "/".join(self.parts) or "."

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else ""

    def child(self, name: str) -> RelativePath:
        return RelativePath((*self.parts, name))


def _escapes(text: str) -> bool:
    if text.startswith(("/", "~")) or "\\" in text:
        return True
    if len(text) >= 2 and text[1] == ":" and text[0].isascii() and text[0].isalpha():
        return True
    return any(part == ".." for part in text.split("/"))


def parse_path(text: str) -> RelativePath:
    """Validate a workspace-relative path; `""` and `"."` are the workspace itself."""
    if "\x00" in text:
        raise InvalidPath("The path contains a NUL character")
    for char in text:
        if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}:
            raise InvalidPath(
                f"The path contains the control or format character U+{ord(char):04X}"
            )
    normalized = unicodedata.normalize("NFKC", text)
    if normalized != text:
        if _escapes(normalized):
            raise PathEscape("The path normalises to one that leaves the workspace")
        raise InvalidPath("The path is not in Unicode NFKC form")
    if _escapes(text):
        raise PathEscape("Paths are relative to the workspace and may not contain '..'")
    if len(text.encode()) > MAX_PATH_BYTES:
        raise InvalidPath(f"The path is longer than {MAX_PATH_BYTES} bytes")
    parts = tuple(part for part in text.split("/") if part not in {"", "."})
    for part in parts:
        if len(part.encode()) > MAX_NAME_BYTES:
            raise InvalidPath(f"A name in the path is longer than {MAX_NAME_BYTES} bytes")
    return RelativePath(parts)


def _translate(error: OSError, path: RelativePath) -> Exception:
    if error.errno == errno.ELOOP:
        return PathEscape(f"{path} goes through a symbolic link")
    if error.errno == errno.ENOENT:
        return ToolNotFound(f"{path} does not exist")
    if error.errno == errno.ENOTDIR:
        return NotADirectory(f"A parent of {path} is not a directory")
    if error.errno == errno.EISDIR:
        return NotAFile(f"{path} is a directory")
    if error.errno == errno.ENAMETOOLONG:
        return InvalidPath(f"{path} is too long")
    if error.errno in {errno.ENXIO, errno.ENODEV}:
        return SpecialFile(f"{path} is not a regular file")
    return error


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _require_regular(info: os.stat_result, path: RelativePath) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise NotAFile(f"{path} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise SpecialFile(f"{path} is a device, FIFO, socket or other special file")
    # A hard link is another name for a file that may live outside the workspace.
    if info.st_nlink != 1:
        raise PathEscape(f"{path} has {info.st_nlink} hard links")


class Workspace:
    """The directory an agent's tools work in; created on demand, mode 0700."""

    def __init__(self, root: Path | str) -> None:
        requested = Path(root)
        requested.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The root itself is resolved once; from here on nothing is followed.
        self.root = Path(os.path.realpath(requested))
        info = os.stat(self.root, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            raise NotADirectory(f"The workspace root {self.root} is not a directory")
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(self.root, 0o700)
        self._identity = (info.st_dev, info.st_ino)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @contextlib.contextmanager
    def _root_fd(self) -> Iterator[int]:
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != self._identity:
                raise PathEscape("The workspace root was replaced")
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def open_directory(self, path: RelativePath, *, create: bool = False) -> Iterator[int]:
        """A descriptor of the directory at `path`, reached without following any link."""
        with self._root_fd() as root_fd:
            fd = os.dup(root_fd)
            try:
                for index, part in enumerate(path.parts):
                    try:
                        next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    except FileNotFoundError:
                        if not create:
                            raise ToolNotFound(f"{path} does not exist") from None
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(part, 0o700, dir_fd=fd)
                        try:
                            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                        except OSError as error:
                            raise _translate(error, path) from error
                    except OSError as error:
                        prefix = RelativePath(path.parts[: index + 1])
                        if error.errno == errno.ENOTDIR:
                            # O_DIRECTORY reports a symlink as ENOTDIR before O_NOFOLLOW.
                            if _is_symlink(part, fd):
                                raise PathEscape(f"{prefix} is a symbolic link") from error
                            raise NotADirectory(f"{prefix} is not a directory") from error
                        raise _translate(error, prefix) from error
                    os.close(fd)
                    fd = next_fd
                yield fd
            finally:
                os.close(fd)

    def open_for_read(self, path: RelativePath) -> int:
        """An open descriptor of the regular file at `path`; the caller closes it."""
        if not path.parts:
            raise NotAFile("The workspace root is a directory")
        parent = RelativePath(path.parts[:-1])
        with self.open_directory(parent) as dir_fd:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            try:
                fd = os.open(path.name, flags, dir_fd=dir_fd)
            except OSError as error:
                raise _translate(error, path) from error
        try:
            _require_regular(os.fstat(fd), path)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_for_write(self, path: RelativePath) -> tuple[int, bool]:
        """A descriptor of the regular file at `path`, created (0600) with its parents if
        missing; and whether it existed. Never truncates: the caller decides."""
        if not path.parts:
            raise NotAFile("The workspace root is a directory")
        if any(part.casefold() in PROTECTED_DIRECTORIES for part in path.parts):
            raise ForbiddenPath(f"{path} is inside a protected directory (.git)")
        parent = RelativePath(path.parts[:-1])
        with self.open_directory(parent, create=True) as dir_fd:
            # O_NONBLOCK: opening a FIFO for writing must fail, not wait for a reader.
            flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            existed = True
            try:
                fd = os.open(path.name, flags, dir_fd=dir_fd)
            except FileNotFoundError:
                existed = False
                try:
                    fd = os.open(path.name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
                except OSError as error:
                    raise _translate(error, path) from error
            except OSError as error:
                raise _translate(error, path) from error
        try:
            _require_regular(os.fstat(fd), path)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd, existed

    def exists(self, path: RelativePath) -> bool:
        """Whether `path` names an existing entry, without following links."""
        if not path.parts:
            return True
        try:
            with self.open_directory(RelativePath(path.parts[:-1])) as dir_fd:
                os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        except (FileNotFoundError, ToolNotFound, NotADirectory):
            return False
        except OSError:
            return True
        return True
