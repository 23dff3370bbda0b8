"""Project workspace directories: `<data dir>/agents/workspaces/<user id>/<project id>`,
private to the server's account (0700), made when first needed and removed with the
project. Rows keep only the part under the workspaces root."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.kernel.db import on_outcome

PRIVATE = 0o700
# Where deleted workspaces wait for their transaction's outcome (same filesystem: a rename).
TRASH = ".trash"
# A directory left in the trash this long belongs to no transaction still open: its
# process died between the commit and the deletion.
TRASH_GRACE_SECONDS = 3600


class WorkspaceRoot:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "agents" / "workspaces"

    @staticmethod
    def relation(user_id: UUID, project_id: UUID) -> str:
        return f"{user_id}/{project_id}"

    def path(self, relation: str) -> Path:
        path = self.root / relation
        # Relations are made from two UUIDs; anything else in a row is refused, not used.
        if path.parent.parent != self.root or ".." in Path(relation).parts:
            raise ValueError(f"not a workspace relation: {relation!r}")
        return path

    async def ensure(self, relation: str) -> Path:
        """The workspace directory, made (with its parents, all 0700) if missing."""
        return await asyncio.to_thread(self._ensure, self.path(relation))

    async def discard(self, session: AsyncSession, relation: str) -> None:
        """Take the workspace away with the transaction: moved aside now (one rename), deleted
        once the transaction commits, put back if it rolls back, so a failed delete never
        loses the files of a project that still exists."""
        path = self.path(relation)
        aside = self.root / TRASH / uuid.uuid4().hex
        if not await asyncio.to_thread(self._move_aside, path, aside):
            return
        loop = asyncio.get_running_loop()

        def delete_aside() -> None:
            loop.run_in_executor(None, self._remove, aside)

        def put_back() -> None:
            os.rename(aside, path)

        on_outcome(session, committed=delete_aside, rolled_back=put_back)

    async def sweep_trash(self, older_than: float = TRASH_GRACE_SECONDS) -> int:
        """Delete what deletions left in the trash (a process that died after its commit);
        how many directories went. Age is the directory's status-change time, which the
        rename into the trash set."""
        return await asyncio.to_thread(self._sweep_trash, older_than)

    def _sweep_trash(self, older_than: float) -> int:
        trash = self.root / TRASH
        try:
            entries = list(os.scandir(trash))
        except FileNotFoundError:
            return 0
        cutoff = time.time() - older_than
        swept = 0
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_ctime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            if entry.is_dir(follow_symlinks=False):
                self._remove(Path(entry.path))
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            swept += 1
        return swept

    @staticmethod
    def _move_aside(path: Path, aside: Path) -> bool:
        aside.parent.mkdir(mode=PRIVATE, parents=True, exist_ok=True)
        try:
            os.rename(path, aside)
        except FileNotFoundError:  # never made or already gone: nothing to keep
            return False
        return True

    def _ensure(self, path: Path) -> Path:
        for directory in (self.root.parent, self.root, path.parent, path):
            directory.mkdir(mode=PRIVATE, parents=True, exist_ok=True)
        # mkdir's mode passes through the umask; a workspace is private whatever it is.
        for directory in (self.root, path.parent, path):
            os.chmod(directory, PRIVATE)
        return path

    @staticmethod
    def _remove(path: Path) -> None:
        # rmtree never follows symlinks, so a link an agent left behind removes only itself.
        with contextlib.suppress(FileNotFoundError):  # never made or already gone: done
            shutil.rmtree(path)
