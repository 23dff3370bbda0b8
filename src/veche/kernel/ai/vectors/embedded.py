"""The embedded vector store: SQLite rows are the truth, an exact numpy mirror answers searches.

Every process that opens the directory keeps its own in-memory mirror of the table (one
contiguous float32 matrix plus integer-coded app/user/scope columns). Each write transaction
takes the next value of a store-wide sequence number and stamps it on the rows it writes (and
on tombstones for the ids it deletes), so a mirror catches up by reading only what changed
since the last sequence number it applied. Before every operation a mirror asks SQLite,
through `PRAGMA data_version`, whether another connection committed; if none did, the check
costs microseconds and nothing is read. Search is exact (brute-force dot products over the
candidates picked by the coded columns), so recall is 1.0 and filters never hide results.

Small operations run on the calling event loop's thread, as the kernel's SQLite statements
do (`veche.kernel.sqlite_driver`): a thread hop costs more than a one-record write or a
search over a few thousand candidates, and under load the worker waits for the GIL while
the loop runs. An operation goes to a worker thread instead when it may take long: the
store is not open yet, another process committed (the mirror's catch-up reads its rows),
a search has more than `INLINE_SEARCH_ROWS` candidates, a write more than
`INLINE_WRITE_RECORDS` records, another thread holds the store, or SQLite is busy with
another process's write (on the loop the connection never waits; the thread waits up to
`BUSY_TIMEOUT_S`). Write-ahead log checkpoints run in a thread of their own as well.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import anyio
import numpy as np
import orjson

from veche.kernel.ai.vectors.base import VectorFilter, VectorHit, VectorRecord
from veche.kernel.ai.vectors.checks import (
    CheckedRecord,
    Vector,
    check_filter,
    check_record,
    has_no_conditions,
    normalise_vector,
)
from veche.kernel.ai.vectors.mirror import Mirror, record_id
from veche.kernel.sqlite_driver import Checkpointer, is_busy

FILE_NAME = "vectors.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
EXPORT_BATCH = 256
# Past these sizes an operation runs in a worker thread rather than on the event loop:
# scoring 10,000 candidates of 384 dimensions takes about 2 ms (docs/benchmarks.md).
INLINE_SEARCH_ROWS = 10_000
INLINE_WRITE_RECORDS = 64

T = TypeVar("T")


# -- the store ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vector_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vector_records (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    user_id TEXT,
    scope TEXT NOT NULL,
    payload TEXT NOT NULL,
    vector BLOB NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS vector_records_seq ON vector_records (seq);
CREATE TABLE IF NOT EXISTS vector_tombstones (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS vector_tombstones_seq ON vector_tombstones (seq);
"""

_UPSERT = """
INSERT INTO vector_records (id, app, user_id, scope, payload, vector, seq)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    app = excluded.app, user_id = excluded.user_id, scope = excluded.scope,
    payload = excluded.payload, vector = excluded.vector, seq = excluded.seq
"""

_ROW_COLUMNS = "id, app, user_id, scope, payload, vector"


class EmbeddedVectorStore:
    """A durable, multi-process vector store in one SQLite file.

    `path` is that file when it has a suffix (`var/vectors/minilm.db`), otherwise a directory
    that gets `vectors.sqlite3`.

    Processes sharing the directory see each other's committed writes before their next
    operation. Use `await EmbeddedVectorStore.open(path, dimensions)`, or construct it and
    let the first operation open it.
    """

    # Tombstones let other processes' mirrors replay deletes; past this many the oldest go,
    # and a mirror that fell further behind reloads everything.
    tombstones_kept = 20_000

    def __init__(self, path: Path, dimensions: int) -> None:
        if not isinstance(dimensions, int) or dimensions < 1:
            raise ValueError("dimensions must be a positive integer")
        self.path = Path(path)
        self.dimensions = dimensions
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        self._mirror = Mirror(dimensions)
        self._seq = 0  # the last sequence number the mirror applied
        self._data_version = -1
        self._checkpointer = Checkpointer(str(self.file), int(BUSY_TIMEOUT_S * 1000))

    @classmethod
    async def open(cls, path: Path, dimensions: int) -> EmbeddedVectorStore:
        """Open (creating when missing) the store in `path` and load its mirror."""
        store = cls(path, dimensions)
        await store._run(lambda _connection: None)
        return store

    @property
    def file(self) -> Path:
        if self.path.suffix and not self.path.is_dir():
            return self.path
        return self.path / FILE_NAME

    # -- VectorStore --

    async def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace records by id, all in one transaction."""
        if not records:
            return
        checked = [check_record(record, self.dimensions) for record in records]
        await self._run(
            lambda connection: self._write_records(connection, checked),
            inline=len(checked) <= INLINE_WRITE_RECORDS,
        )

    async def search(
        self,
        vector: Vector | Sequence[float],
        *,
        filter: VectorFilter,
        limit: int = 10,
        min_score: float | None = None,
    ) -> list[VectorHit]:
        """The `limit` records nearest to `vector` by cosine similarity, best first."""
        query = normalise_vector(vector, self.dimensions)
        check_filter(filter)
        if limit < 1:
            raise ValueError("limit must be at least 1")

        def search(_connection: sqlite3.Connection) -> list[VectorHit]:
            mirror = self._mirror
            found = mirror.search(query, filter, limit, min_score)
            return [mirror.hit(row, score) for row, score in found]

        def few_candidates() -> bool:
            mirror = self._mirror
            if len(mirror) <= INLINE_SEARCH_ROWS:
                return True
            if has_no_conditions(filter):
                return False
            return int(mirror.rows_matching(filter).size) <= INLINE_SEARCH_ROWS

        return await self._run(search, inline=few_candidates)

    async def delete(self, filter: VectorFilter) -> int:
        """Remove every matching record; returns how many went."""
        check_filter(filter)
        return await self._run(
            lambda connection: self._delete_matching(connection, filter),
            inline=filter.ids is not None and len(filter.ids) <= INLINE_WRITE_RECORDS,
        )

    async def count(self, filter: VectorFilter) -> int:
        check_filter(filter)

        def count(_connection: sqlite3.Connection) -> int:
            if has_no_conditions(filter):
                return len(self._mirror)
            return int(self._mirror.rows_matching(filter).size)

        return await self._run(count)

    async def export(self, filter: VectorFilter) -> AsyncIterator[VectorRecord]:
        """Every matching record (unit vectors, payloads as stored), in id order, in batches;
        records deleted or moved out of the filter while exporting are left out."""
        check_filter(filter)

        def matching_ids(_connection: sqlite3.Connection) -> list[str]:
            mirror = self._mirror
            return sorted(str(mirror.ids[row]) for row in mirror.rows_matching(filter).tolist())

        ids = await self._run(matching_ids, inline=False)
        for start in range(0, len(ids), EXPORT_BATCH):
            batch = replace(filter, ids=ids[start : start + EXPORT_BATCH])

            def records(
                _connection: sqlite3.Connection, batch: VectorFilter = batch
            ) -> list[VectorRecord]:
                mirror = self._mirror
                found = [mirror.record(row) for row in mirror.rows_matching(batch).tolist()]
                return sorted(found, key=record_id)

            for record in await self._run(records):
                yield record

    async def drop_scope(
        self, app: str, *, user_id: UUID | None = None, scope: str | None = None
    ) -> int:
        """Delete a whole scope (an agent's memory, a user's data) in one call."""
        if not isinstance(app, str) or not app:
            raise ValueError("drop_scope needs a non-empty app")
        return await self.delete(VectorFilter(app=app, user_id=user_id, scope=scope))

    async def health(self) -> None:
        """Raise when the SQLite file cannot be read."""

        def probe(connection: sqlite3.Connection) -> None:
            connection.execute("SELECT value FROM vector_meta WHERE key = 'seq'").fetchone()

        await self._run(probe)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                self._closed = True
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None
                self._mirror = Mirror(self.dimensions)

        await anyio.to_thread.run_sync(close)

    # -- running work off the event loop --

    async def _run(
        self,
        work: Callable[[sqlite3.Connection], T],
        *,
        inline: bool | Callable[[], bool] = True,
    ) -> T:
        """`work` under the store's lock, on the loop when `inline` allows it and nothing
        else stands in the way (module docstring), otherwise in a worker thread."""
        if inline and self._lock.acquire(blocking=False):
            try:
                made = self._on_loop(work, inline)
            finally:
                self._lock.release()
            if made is not None:
                return made[0]

        def locked() -> T:
            with self._lock:
                connection = self._open()
                connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                try:
                    self._refresh(connection)
                    return work(connection)
                finally:
                    connection.execute("PRAGMA busy_timeout = 0")
                    self._checkpointer.committed()

        return await anyio.to_thread.run_sync(locked)

    def _on_loop(
        self, work: Callable[[sqlite3.Connection], T], inline: bool | Callable[[], bool]
    ) -> tuple[T] | None:
        """`work`'s result made here, or None when it must go to a thread. Called with the
        lock held; the connection's busy timeout is 0."""
        connection = self._connection
        if connection is None or self._closed:
            return None
        data_version = connection.execute("PRAGMA data_version").fetchone()[0]
        if data_version != self._data_version:  # another process committed: catch up there
            return None
        if callable(inline) and not inline():
            return None
        try:
            result = work(connection)
        except sqlite3.OperationalError as error:
            if is_busy(error):  # another process writes: wait for it in a thread
                return None
            raise
        self._checkpointer.committed()
        return (result,)

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("the vector store is closed")
        if self._connection is not None:
            return self._connection
        file = self.file
        file.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            file, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            _enable_wal(connection)
            # NORMAL in WAL mode: a commit survives a process crash; a power cut may lose the
            # last commits but never corrupts the file.
            connection.execute("PRAGMA synchronous = NORMAL")
            with _transaction(connection, immediate=True):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                defaults = {
                    "dimensions": self.dimensions,
                    "schema_version": SCHEMA_VERSION,
                    "seq": 0,
                    "tombstone_floor": 0,
                }
                connection.executemany(
                    "INSERT OR IGNORE INTO vector_meta (key, value) VALUES (?, ?)",
                    defaults.items(),
                )
                stored = _meta(connection, "dimensions")
            if stored != self.dimensions:
                raise ValueError(
                    f"the vector store in {self.path} holds {stored}-dimensional vectors,"
                    f" not {self.dimensions}"
                )
            # Checkpoints are the checkpointer's, in a thread (a commit on the loop would
            # otherwise copy the log into the file and sync it there).
            connection.execute("PRAGMA wal_autocheckpoint = 0")
            connection.execute("PRAGMA journal_size_limit = 0")
            connection.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self._data_version = -1  # forces the first refresh to load everything
        self._seq = -1
        return connection

    # -- keeping the mirror in step with SQLite --

    def _refresh(self, connection: sqlite3.Connection) -> None:
        """Apply what other connections committed since the mirror last looked."""
        data_version = connection.execute("PRAGMA data_version").fetchone()[0]
        if data_version == self._data_version:
            return
        self._data_version = data_version
        with _transaction(connection, immediate=False):
            self._pull(connection)

    def _pull(self, connection: sqlite3.Connection) -> None:
        """Inside a transaction: bring the mirror up to the committed sequence number."""
        seq = _meta(connection, "seq")
        if seq == self._seq:
            return
        if self._seq < 0 or seq < self._seq or self._seq < _meta(connection, "tombstone_floor"):
            self._load_everything(connection)
        else:
            deleted = connection.execute(
                "SELECT id FROM vector_tombstones WHERE seq > ?", (self._seq,)
            ).fetchall()
            self._mirror.remove_many([record_id for (record_id,) in deleted])
            changed = connection.execute(
                f"SELECT {_ROW_COLUMNS} FROM vector_records WHERE seq > ?",  # noqa: S608
                (self._seq,),
            ).fetchall()
            self._put_rows(self._mirror, changed)
        self._seq = seq

    def _load_everything(self, connection: sqlite3.Connection) -> None:
        mirror = Mirror(self.dimensions)
        cursor = connection.execute(f"SELECT {_ROW_COLUMNS} FROM vector_records")  # noqa: S608
        while batch := cursor.fetchmany(10_000):
            self._put_rows(mirror, batch)
        self._mirror = mirror

    def _put_rows(self, mirror: Mirror, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        ids, apps, user_ids, scopes, payloads, blobs = zip(*rows, strict=True)
        width = self.dimensions * 4
        if any(len(blob) != width for blob in blobs):
            raise ValueError(f"the vector store in {self.path} has vectors of the wrong size")
        vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(rows), -1)
        mirror.put_many(ids, apps, user_ids, scopes, [orjson.loads(p) for p in payloads], vectors)

    # -- writes --

    def _write_records(self, connection: sqlite3.Connection, records: list[CheckedRecord]) -> None:
        with _transaction(connection, immediate=True):
            # The write lock is held: catch up first so the new sequence number follows
            # every commit this mirror has not seen yet.
            self._pull(connection)
            seq = self._seq + 1
            connection.executemany(
                _UPSERT,
                [
                    (
                        r.id,
                        r.app,
                        None if r.user_id is None else str(r.user_id),
                        r.scope,
                        r.payload_json,
                        r.vector.astype("<f4").tobytes(),
                        seq,
                    )
                    for r in records
                ],
            )
            connection.executemany(
                "DELETE FROM vector_tombstones WHERE id = ?", [(r.id,) for r in records]
            )
            connection.execute("UPDATE vector_meta SET value = ? WHERE key = 'seq'", (seq,))
        self._mirror.put_many(
            [r.id for r in records],
            [r.app for r in records],
            [None if r.user_id is None else str(r.user_id) for r in records],
            [r.scope for r in records],
            [r.payload for r in records],
            np.stack([r.vector for r in records]),
        )
        self._seq = seq

    def _delete_matching(self, connection: sqlite3.Connection, filter: VectorFilter) -> int:
        with _transaction(connection, immediate=True):
            self._pull(connection)
            mirror = self._mirror
            ids = [str(mirror.ids[row]) for row in mirror.rows_matching(filter).tolist()]
            if not ids:
                return 0
            seq = self._seq + 1
            connection.executemany("DELETE FROM vector_records WHERE id = ?", [(i,) for i in ids])
            connection.executemany(
                "INSERT INTO vector_tombstones (id, seq) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
                [(i, seq) for i in ids],
            )
            connection.execute("UPDATE vector_meta SET value = ? WHERE key = 'seq'", (seq,))
            self._prune_tombstones(connection)
        mirror.remove_many(ids)
        self._seq = seq
        return len(ids)

    def _prune_tombstones(self, connection: sqlite3.Connection) -> None:
        kept = self.tombstones_kept
        (total,) = connection.execute("SELECT count(*) FROM vector_tombstones").fetchone()
        if total <= 2 * kept:
            return
        (floor,) = connection.execute(
            "SELECT seq FROM vector_tombstones ORDER BY seq DESC LIMIT 1 OFFSET ?", (kept,)
        ).fetchone()
        connection.execute("DELETE FROM vector_tombstones WHERE seq <= ?", (floor,))
        connection.execute(
            "UPDATE vector_meta SET value = ? WHERE key = 'tombstone_floor'", (floor,)
        )


def _meta(connection: sqlite3.Connection, key: str) -> int:
    row = connection.execute("SELECT value FROM vector_meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise ValueError(f"the vector store is missing its {key!r} setting")
    return int(row[0])


def _enable_wal(connection: sqlite3.Connection) -> None:
    # Switching a fresh file to WAL needs a moment alone with it; another process opening the
    # same new store at once makes SQLite answer "locked" without waiting.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def _transaction(connection: sqlite3.Connection, *, immediate: bool) -> Iterator[None]:
    """BEGIN ... COMMIT, rolled back on any error. Writers BEGIN IMMEDIATE so they queue on
    the busy timeout instead of failing when they upgrade a read lock."""
    connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
