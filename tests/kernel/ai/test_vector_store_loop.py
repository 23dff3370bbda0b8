"""Where the embedded vector store does its work: small operations on the event loop's
thread, the rest (catching up with another process, large searches and writes, a file
another process is writing) in a worker thread, with checkpoints off the loop."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest

from veche.kernel.ai.vectors import embedded
from veche.kernel.ai.vectors.base import VectorFilter, VectorRecord
from veche.kernel.ai.vectors.embedded import EmbeddedVectorStore

DIMENSIONS = 8
USER = UUID("00000000-0000-7000-8000-000000000001")
MINE = VectorFilter(app="test", user_id=USER, scope="s")


def record(index: int, dimensions: int = DIMENSIONS) -> VectorRecord:
    vector = np.random.default_rng(index).standard_normal(dimensions)
    return VectorRecord(
        id=f"r{index}",
        vector=vector.tolist(),
        app="test",
        scope="s",
        user_id=USER,
        payload={"n": index},
    )


class StatementThreads:
    """The threads the store's SQLite statements ran on (a trace callback). The check for
    other processes' commits (`PRAGMA data_version`) is made on the loop before an
    operation is sent to a thread, so it is left out."""

    def __init__(self, store: EmbeddedVectorStore) -> None:
        connection = store._connection
        assert connection is not None, "open the store first"
        self.seen: list[int] = []

        def traced(sql: str) -> None:
            if sql != "PRAGMA data_version":
                self.seen.append(threading.get_ident())

        connection.set_trace_callback(traced)

    def take(self) -> set[int]:
        seen, self.seen = set(self.seen), []
        return seen

    def all_off_the_loop(self) -> bool:
        """Some statements ran since the last look, none on this (the loop's) thread."""
        seen = self.take()
        return bool(seen) and threading.get_ident() not in seen


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedVectorStore]:
    opened = await EmbeddedVectorStore.open(tmp_path / "vectors", DIMENSIONS)
    yield opened
    await opened.aclose()


async def test_small_operations_run_on_the_loop_thread(store: EmbeddedVectorStore) -> None:
    threads = StatementThreads(store)
    loop_thread = threading.get_ident()
    await store.upsert([record(1), record(2)])
    assert threads.take() == {loop_thread}
    hits = await store.search(record(1).vector, filter=MINE, limit=1)
    assert [hit.id for hit in hits] == ["r1"]
    assert threads.take() == set()  # a search reads the mirror only
    assert await store.delete(VectorFilter(app="test", user_id=USER, ids=["r2"])) == 1
    assert await store.count(MINE) == 1
    assert threads.take() == {loop_thread}


async def test_large_writes_and_searches_go_to_a_worker_thread(
    store: EmbeddedVectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = StatementThreads(store)
    many = [record(index) for index in range(embedded.INLINE_WRITE_RECORDS + 1)]
    await store.upsert(many)
    assert threads.all_off_the_loop()
    monkeypatch.setattr(embedded, "INLINE_SEARCH_ROWS", 10)
    hits = await store.search(many[5].vector, filter=MINE, limit=1)
    assert [hit.id for hit in hits] == ["r5"]
    assert threads.all_off_the_loop()  # the busy timeout set and reset around the search
    # Deleting by filter (not by a few ids) may touch any number of rows.
    assert await store.delete(MINE) == len(many)
    assert threads.all_off_the_loop()


async def test_another_processs_commit_is_caught_up_in_a_worker_thread(
    store: EmbeddedVectorStore, tmp_path: Path
) -> None:
    await store.upsert([record(1)])
    other = await EmbeddedVectorStore.open(tmp_path / "vectors", DIMENSIONS)
    try:
        await other.upsert([record(2)])
        threads = StatementThreads(store)
        hits = await store.search(record(2).vector, filter=MINE, limit=1)
        assert [hit.id for hit in hits] == ["r2"]
        assert threads.all_off_the_loop()  # the catch-up's reads
        # Caught up: the next write is made on the loop again.
        await store.upsert([record(3)])
        assert threads.take() == {threading.get_ident()}
    finally:
        await other.aclose()


async def test_a_write_meeting_another_writer_waits_off_the_loop(
    store: EmbeddedVectorStore,
) -> None:
    await store.upsert([record(1)])
    blocker = sqlite3.connect(store.file, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    asyncio.get_running_loop().call_later(0.3, blocker.rollback)
    try:
        started = time.monotonic()
        await store.upsert([record(2)])
        waited = time.monotonic() - started
    finally:
        ticker.cancel()
        blocker.close()
    assert waited >= 0.25  # it waited for the other writer...
    assert ticks >= 10  # ...and the loop kept running meanwhile
    assert await store.count(MINE) == 2


async def test_the_log_is_checkpointed_in_a_thread(store: EmbeddedVectorStore) -> None:
    connection = store._connection
    assert connection is not None
    assert connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    store._checkpointer.threshold = 64 * 1024
    wal = Path(f"{store.file}-wal")
    for start in range(0, 400, 40):  # about 200 KB of log
        await store.upsert([record(index) for index in range(start, start + 40)])
    deadline = time.monotonic() + 5
    restarted = False
    while time.monotonic() < deadline and not restarted:
        await asyncio.sleep(0.05)
        await store.upsert([record(1000)])  # a write after a full checkpoint restarts the log
        restarted = os.stat(wal).st_size < 64 * 1024
    assert restarted
    assert await store.count(MINE) == 401
