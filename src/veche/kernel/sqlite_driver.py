"""SQLite statements on the event loop's own thread.

aiosqlite runs every call of a connection (cursor, execute, fetch, close, commit) in a
thread of its own and hands the result back to the event loop. On a local file a
statement takes 10-100 µs; each hand-off costs more than that in CPU, and it lets the
loop run other work in the middle of a transaction, so a writer keeps SQLite's one write
lock while the loop is busy elsewhere. Here the calls run directly on the loop's thread,
through aiosqlite's own connection (SQLAlchemy's `sqlite+aiosqlite` dialect drives it as
before); aiosqlite's thread still opens and closes the connection.

One thing must not happen on the loop: waiting. A statement that meets another
process's write lock (`SQLITE_BUSY`; this process's own writers take turns before they
reach SQLite, see `db._SQLiteWriters`) fails at once, because these connections have no
busy timeout, and is then run again in aiosqlite's thread with the configured timeout,
as SQLite's busy handler would have waited. A call taking longer than
`SLOW_CALL_SECONDS` on the loop is logged (`sqlite_call_slow`): it held up every other
request of the process, and such a workload belongs on PostgreSQL.

Nor does the write-ahead log's checkpoint run on the loop. SQLite makes one inside the
commit that grows the log past 1,000 pages, copying them into the database file and
syncing it; these connections turn that off and `Checkpointer` makes it in a worker
thread instead.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import aiosqlite
import structlog

SLOW_CALL_SECONDS = 0.05
CHECKPOINT_BYTES = 4096 * 1000  # SQLite's own checkpoint point: 1,000 pages of 4 KiB
# Calls that can be made again after SQLITE_BUSY: the statement did not run (a cursor's
# execute starts it afresh; a failed COMMIT leaves the transaction open).
_RETRIED = frozenset({"execute", "executemany", "executescript", "commit"})


def is_busy(error: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY and its extended codes that a busy handler waits out. BUSY_SNAPSHOT
    (a read transaction that cannot become a write one) does not pass by waiting."""
    code = getattr(error, "sqlite_errorcode", None)
    return (
        code is not None
        and code & 0xFF == sqlite3.SQLITE_BUSY
        and code != getattr(sqlite3, "SQLITE_BUSY_SNAPSHOT", 517)
    )


class Checkpointer:
    """The write-ahead log checkpoints of one database file, made off the event loop.

    The loop's connections have SQLite's own checkpoints off (`wal_autocheckpoint=0`) and
    the log cut back once it has been copied (`journal_size_limit=0`: the next write after
    a complete checkpoint starts it anew), so the log's size is about what is still to
    copy. After a commit that leaves it at `threshold` or more (SQLite's own default, 1,000
    pages of 4 KiB), a PASSIVE checkpoint runs on a connection of its own in a thread of
    its own (not the loop's shared executor, whose workers other work may hold), one at a
    time; like SQLite's, it copies what no reader still needs and never waits for writers.
    """

    def __init__(self, database: str, busy_timeout_ms: int, threshold: int = CHECKPOINT_BYTES):
        self.database = database
        self.busy_timeout_ms = busy_timeout_ms
        self.threshold = threshold
        self._wal = f"{database}-wal"
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        try:
            size = os.stat(self._wal).st_size
        except OSError:  # no log (yet), or not a file
            return
        if size >= self.threshold:
            self._thread = threading.Thread(
                target=self._checkpoint, name="sqlite-checkpoint", daemon=True
            )
            self._thread.start()

    def _checkpoint(self) -> None:
        try:
            connection = sqlite3.connect(self.database, timeout=self.busy_timeout_ms / 1000)
            try:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                connection.close()
        except sqlite3.Error as error:
            structlog.get_logger("veche.db").warning("sqlite_checkpoint_failed", error=repr(error))


class LoopConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the calling event loop's thread."""

    def __init__(
        self,
        connector: Callable[[], sqlite3.Connection],
        busy_timeout_ms: int,
        checkpointer: Checkpointer,
    ) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpointer = checkpointer

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = await self._call(fn, *args, **kwargs)
        if getattr(fn, "__name__", "") == "commit":
            self.checkpointer.committed()
        return result

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as error:
            if not is_busy(error) or getattr(fn, "__name__", "") not in _RETRIED:
                raise
        finally:
            took = time.perf_counter() - began
            if took > SLOW_CALL_SECONDS:
                # Looked up here, rarely: it follows the logging configuration of the day.
                structlog.get_logger("veche.db").warning(
                    "sqlite_call_slow",
                    call=getattr(fn, "__name__", "call"),
                    statement=_head(args),
                    ms=round(took * 1000, 1),
                )
        # Another process holds the write lock: wait for it off the loop, in aiosqlite's
        # thread (its `_execute` carries no annotations).
        return await super()._execute(self._patiently, fn, args, kwargs)  # type: ignore[no-untyped-call]

    def _patiently(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        """`fn` with the busy timeout in force (in aiosqlite's thread)."""
        connection = self._conn
        connection.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        try:
            return fn(*args, **kwargs)
        finally:
            connection.execute("PRAGMA busy_timeout=0")


def _head(args: tuple[Any, ...]) -> str | None:
    """The statement's first words, for the log (never its parameters)."""
    if args and isinstance(args[0], str):
        return " ".join(args[0].split())[:80]
    return None


def loop_connector(busy_timeout_ms: int) -> Callable[..., LoopConnection]:
    """What SQLAlchemy's aiosqlite dialect calls (as `async_creator_fn`) with the
    arguments it made from the URL, instead of `aiosqlite.connect`. The connection opens
    without a busy timeout (waiting is `LoopConnection`'s to do, off the loop) and without
    SQLite's own checkpoints (`Checkpointer`'s, one per file)."""
    checkpointers: dict[str, Checkpointer] = {}

    def connect(database: str, **options: Any) -> LoopConnection:
        options["timeout"] = 0

        def opened() -> sqlite3.Connection:
            connection: sqlite3.Connection = sqlite3.connect(database, **options)
            connection.execute("PRAGMA wal_autocheckpoint=0")
            connection.execute("PRAGMA journal_size_limit=0")
            return connection

        checkpointer = checkpointers.setdefault(database, Checkpointer(database, busy_timeout_ms))
        return LoopConnection(opened, busy_timeout_ms, checkpointer)

    return connect
