"""SQLite statements on the event loop's thread (`veche.kernel.sqlite_driver`): where they
run, how a write waits for another process's lock, and what is logged when one is slow.
Each test has a SQLite file of its own, also when the suite runs on PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection
from structlog.testing import capture_logs

from veche.kernel.db import Database
from veche.kernel.errors import overload
from veche.kernel.sqlite_driver import (
    CHECKPOINT_BYTES,
    SLOW_CALL_SECONDS,
    LoopConnection,
    is_busy,
)
from veche.settings import Settings


@pytest.fixture
async def db(settings: Settings, tmp_path: Path) -> AsyncIterator[Database]:
    quick = settings.model_copy(update={"sqlite_busy_timeout_ms": 1500})
    database = Database(quick, f"sqlite+aiosqlite:///{tmp_path / 'loop.db'}")
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("CREATE TABLE t (name TEXT NOT NULL)")
    yield database
    await database.dispose()


async def driver(connection: AsyncConnection) -> LoopConnection:
    raw = await connection.get_raw_connection()
    loop_connection = raw.driver_connection
    assert isinstance(loop_connection, LoopConnection)
    return loop_connection


def other_process_lock(path: Path) -> sqlite3.Connection:
    """A connection outside this process's engine holding SQLite's write lock, as another
    process on the same file would."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (name) VALUES ('other')")
    return other


async def ticking(ticks: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        ticks.append(time.perf_counter())
        await asyncio.sleep(0.01)


async def test_statements_run_on_the_event_loops_thread(db: Database) -> None:
    async with db.engine.connect() as connection:
        loop_connection = await driver(connection)
        await loop_connection.create_function("thread_id", 0, threading.get_ident)
        ran_on = await connection.scalar(text("SELECT thread_id()"))
        busy_timeout = await connection.scalar(text("PRAGMA busy_timeout"))

    assert ran_on == threading.get_ident()
    # The connection itself never waits in SQLite's busy handler; the driver keeps the
    # configured timeout for the thread it waits in.
    assert busy_timeout == 0
    assert loop_connection.busy_timeout_ms == 1500


async def test_a_write_meeting_another_processs_lock_waits_off_the_loop(
    db: Database, tmp_path: Path
) -> None:
    other = other_process_lock(tmp_path / "loop.db")
    ticks: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(ticking(ticks, stop))
    try:
        async with db.engine.connect() as connection:
            write = asyncio.create_task(
                connection.execute(text("INSERT INTO t (name) VALUES ('ours')"))
            )
            await asyncio.sleep(0.3)
            assert not write.done()  # waiting for the other process's lock
            waited_ticks = len(ticks)
            other.commit()
            await write
            await connection.commit()
            busy_timeout = await connection.scalar(text("PRAGMA busy_timeout"))
            names = (await connection.execute(text("SELECT name FROM t ORDER BY rowid"))).all()
    finally:
        stop.set()
        await ticker
        other.close()

    assert [row.name for row in names] == ["other", "ours"]
    # The loop kept running while the write waited (a tick every 10 ms for 0.3 s).
    assert waited_ticks >= 10
    assert busy_timeout == 0  # back to no timeout once the wait is over


async def test_a_lock_held_past_the_busy_timeout_is_an_overload_and_writes_nothing(
    db: Database, tmp_path: Path
) -> None:
    other = other_process_lock(tmp_path / "loop.db")
    try:
        began = time.perf_counter()
        with pytest.raises(OperationalError) as locked:
            async with db.unit_of_work() as session:
                await session.execute(text("INSERT INTO t (name) VALUES ('ours')"))
        waited = time.perf_counter() - began
        other.rollback()
    finally:
        other.close()

    assert overload(locked.value) is not None
    assert waited >= 1.0  # the configured 1.5 s, not an immediate failure
    async with db.unit_of_work() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 0


async def test_a_slow_call_on_the_loop_is_logged_without_its_parameters(db: Database) -> None:
    def pause(_value: str) -> int:
        time.sleep(SLOW_CALL_SECONDS + 0.02)
        return 1

    async with db.engine.connect() as connection:
        await (await driver(connection)).create_function("pause", 1, pause)
        with capture_logs() as logs:
            assert await connection.scalar(text("SELECT pause(:secret)"), {"secret": "hunter2"})
            assert await connection.scalar(text("SELECT 1")) == 1

    slow = [entry for entry in logs if entry["event"] == "sqlite_call_slow"]
    assert len(slow) == 1
    assert slow[0]["statement"] == "SELECT pause(?)"
    assert slow[0]["ms"] >= SLOW_CALL_SECONDS * 1000
    assert "hunter2" not in repr(logs)


@pytest.mark.parametrize(
    ("code", "waits"),
    [
        (sqlite3.SQLITE_BUSY, True),
        (261, True),  # SQLITE_BUSY_RECOVERY
        (517, False),  # SQLITE_BUSY_SNAPSHOT: a stale read transaction, waiting cannot help
        (sqlite3.SQLITE_LOCKED, False),
        (None, False),
    ],
)
def test_only_busy_errors_a_busy_handler_would_wait_out_are_retried(
    code: int | None, waits: bool
) -> None:
    error = sqlite3.OperationalError("database is locked")
    if code is not None:
        error.sqlite_errorcode = code
    assert is_busy(error) is waits


# -- single reads outside a unit of work (`Database.read_one`) ------------------------------


async def test_a_single_read_runs_on_the_event_loops_thread(db: Database) -> None:
    reads_engine = db._reads.engine
    event.listen(
        reads_engine,
        "connect",
        lambda connection, _record: connection.create_function("thread_id", 0, threading.get_ident),
    )
    row = await db.read_one(select(func.thread_id()))

    assert row is not None
    assert row[0] == threading.get_ident()


async def test_a_single_read_of_a_locked_file_is_an_overload_at_once(
    db: Database, tmp_path: Path
) -> None:
    """In WAL mode a read meets a lock only when another process holds the file
    exclusively (or recovers it). The read does not wait on the loop: it is an overload,
    which the API answers with a 503 to retry."""
    await db.engine.dispose()  # an exclusive lock needs every other connection closed
    await db._reads.dispose()
    other = sqlite3.connect(tmp_path / "loop.db", isolation_level=None)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    try:
        began = time.perf_counter()
        with pytest.raises(OperationalError) as locked:
            await db.read_one(text("SELECT count(*) FROM t"))
        refused_after = time.perf_counter() - began
        other.execute("COMMIT")
    finally:
        other.close()  # closing ends the exclusive hold

    assert overload(locked.value) is not None
    assert refused_after < 1.0  # not the configured 1.5 s
    row = await db.read_one(text("SELECT count(*) FROM t"))
    assert row is not None
    assert row[0] == 0


# -- checkpoints --------------------------------------------------------------------------


async def test_the_logs_checkpoints_are_made_off_the_loop_once_it_is_large(
    db: Database, tmp_path: Path
) -> None:
    """SQLite's own checkpoint (inside a commit, with a sync of the file) is off on the
    loop's connections; past CHECKPOINT_BYTES a checkpoint made in a worker thread copies
    the log into the database file, and the next write starts the log anew."""
    database, wal = tmp_path / "loop.db", tmp_path / "loop.db-wal"
    blob = "x" * 400_000
    async with db.engine.connect() as connection:
        assert await connection.scalar(text("PRAGMA wal_autocheckpoint")) == 0
        assert await connection.scalar(text("PRAGMA journal_size_limit")) == 0
        for _ in range(5):  # about 2 MB: under the threshold, nothing is copied
            await connection.execute(text("INSERT INTO t (name) VALUES (:blob)"), {"blob": blob})
            await connection.commit()
        await asyncio.sleep(0.2)
        assert database.stat().st_size < 1_000_000
        for _ in range(6):  # past 4 MB of log
            await connection.execute(text("INSERT INTO t (name) VALUES (:blob)"), {"blob": blob})
            await connection.commit()

        async def copied() -> bool:
            # The log passed 4 MB, in pages some of which it held twice: most of it is in.
            return database.stat().st_size > CHECKPOINT_BYTES * 3 // 4

        for _ in range(200):
            if await copied():
                break
            await asyncio.sleep(0.05)
        assert await copied()
        # Once a checkpoint has copied everything, the next write starts the log anew (a
        # checkpoint that began before the last insert left that one for the next).
        small = 0
        while small < 200:
            await connection.execute(text("INSERT INTO t (name) VALUES ('small')"))
            await connection.commit()
            small += 1
            if wal.stat().st_size < 100_000:
                break
            await asyncio.sleep(0.05)
        count = await connection.scalar(text("SELECT count(*) FROM t"))

    assert wal.stat().st_size < 100_000
    assert count == 11 + small
