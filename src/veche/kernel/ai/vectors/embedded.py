"""The embedded vector store: SQLite rows are the truth, an exact numpy mirror answers searches.

Every process that opens the directory keeps its own in-memory mirror of the table (one
contiguous float32 matrix plus integer-coded app/user/scope columns). Each write transaction
takes the next value of a store-wide sequence number and stamps it on the rows it writes (and
on tombstones for the ids it deletes), so a mirror catches up by reading only what changed
since the last sequence number it applied. Before every operation a mirror asks SQLite,
through `PRAGMA data_version`, whether another connection committed; if none did, the check
costs microseconds and nothing is read. Search is exact (brute-force dot products over the
candidates picked by the coded columns), so recall is 1.0 and filters never hide results.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar
from uuid import UUID

import anyio
import numpy as np
import numpy.typing as npt
import orjson

from veche.kernel.ai.vectors.base import JSONScalar, VectorFilter, VectorHit, VectorRecord

FILE_NAME = "vectors.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
EXPORT_BATCH = 256
_FORBIDDEN_KEY_CHARACTERS = frozenset('.[]"')

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
Vector = npt.NDArray[np.float32]
Rows = npt.NDArray[np.intp]


# -- validation shared by every implementation -------------------------------------------------


def normalise_vector(vector: Vector | Sequence[float], dimensions: int) -> Vector:
    """The vector scaled to unit length as float32; `ValueError` for a wrong shape, NaN or zero."""
    try:
        array = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"vector is not a sequence of numbers: {error}") from None
    if array.ndim != 1 or array.shape[0] != dimensions:
        raise ValueError(
            f"vector has shape {array.shape}, this store holds {dimensions}-dimensional vectors"
        )
    if not np.isfinite(array).all():
        raise ValueError("vector has NaN or infinite components")
    norm = float(np.linalg.norm(array))
    if norm == 0.0:
        raise ValueError("a zero vector has no direction to compare")
    return (array / norm).astype(np.float32)


@dataclass(frozen=True, slots=True)
class CheckedRecord:
    """A record that passed validation: unit vector, payload as JSON and as parsed again."""

    id: str
    app: str
    scope: str
    user_id: UUID | None
    payload_json: str
    payload: dict[str, Any]
    vector: Vector


def check_record(record: VectorRecord, dimensions: int) -> CheckedRecord:
    """Validate one record; `ValueError` says what is wrong with it."""
    if not isinstance(record.id, str) or not record.id:
        raise ValueError("a vector record needs a non-empty string id")
    if not isinstance(record.app, str) or not record.app:
        raise ValueError(f"record {record.id!r} needs a non-empty app")
    if not isinstance(record.scope, str):
        raise ValueError(f"record {record.id!r} has a scope that is not a string")
    if record.user_id is not None and not isinstance(record.user_id, UUID):
        raise ValueError(f"record {record.id!r} has a user_id that is not a UUID")
    try:
        payload_json = orjson.dumps(dict(record.payload)).decode()
    except (TypeError, ValueError) as error:
        raise ValueError(f"record {record.id!r} has a payload that is not JSON: {error}") from None
    try:
        vector = normalise_vector(record.vector, dimensions)
    except ValueError as error:
        raise ValueError(f"record {record.id!r}: {error}") from None
    # Parsed back from the JSON so the mirror holds exactly what a restart would load.
    payload: dict[str, Any] = orjson.loads(payload_json)
    return CheckedRecord(
        record.id, record.app, record.scope, record.user_id, payload_json, payload, vector
    )


def check_filter(filter: VectorFilter) -> None:
    """Reject filters that implementations would read differently (`ValueError`)."""
    if filter.app is not None and not isinstance(filter.app, str):
        raise ValueError("filter app must be a string")
    if filter.scope is not None and not isinstance(filter.scope, str):
        raise ValueError("filter scope must be a string")
    if filter.user_id is not None and not isinstance(filter.user_id, UUID):
        raise ValueError("filter user_id must be a UUID")
    if filter.ids is not None and (
        isinstance(filter.ids, str) or not all(isinstance(i, str) for i in filter.ids)
    ):
        raise ValueError("filter ids must be a sequence of strings")
    for key, value in filter.payload.items():
        # Qdrant reads dots and brackets as a path into nested objects; forbid them everywhere
        # so a filter means the same thing in every implementation.
        if not isinstance(key, str) or not key or _FORBIDDEN_KEY_CHARACTERS & set(key):
            raise ValueError(f"payload filter key {key!r} must be a plain top-level key")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(f"payload filter value for {key!r} must be a JSON scalar")
        if isinstance(value, float) and not np.isfinite(value):
            raise ValueError(f"payload filter value for {key!r} must be finite")


def payload_matches(payload: Mapping[str, Any], wanted: Mapping[str, JSONScalar]) -> bool:
    """Equality on top-level keys: strings with strings, numbers with numbers (1 == 1.0),
    booleans only with booleans, `None` with an explicit JSON null."""
    for key, expected in wanted.items():
        if key not in payload:
            return False
        actual = payload[key]
        if expected is None:
            matched = actual is None
        elif isinstance(expected, bool) or isinstance(actual, bool):
            matched = type(actual) is type(expected) and actual == expected
        elif isinstance(expected, str):
            matched = isinstance(actual, str) and actual == expected
        else:
            matched = isinstance(actual, int | float) and actual == expected
        if not matched:
            return False
    return True


def _has_no_conditions(filter: VectorFilter) -> bool:
    return (
        filter.app is None
        and filter.user_id is None
        and filter.scope is None
        and not filter.payload
        and filter.ids is None
    )


# -- the in-memory mirror -------------------------------------------------------------------


class _Codebook(Generic[K]):
    """Small integer codes for the few distinct apps, users and scopes."""

    def __init__(self) -> None:
        self.code_of: dict[K, int] = {}
        self.values: list[K] = []

    def encode(self, value: K) -> int:
        code = self.code_of.get(value)
        if code is None:
            code = self.code_of[value] = len(self.values)
            self.values.append(value)
        return code


class _Mirror:
    """Every live record of the store, laid out for brute-force search.

    Rows freed by deletes keep a zero vector and code -1 until an upsert reuses them.
    """

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.size = 0  # rows handed out, live or free
        self.matrix: Vector = np.zeros((0, dimensions), dtype=np.float32)
        self.app_codes: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self.user_codes: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self.scope_codes: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self.ids: list[str | None] = []
        self.payloads: list[dict[str, Any] | None] = []
        self.row_of: dict[str, int] = {}
        self.free: list[int] = []
        self.apps: _Codebook[str] = _Codebook()
        self.scopes: _Codebook[str] = _Codebook()
        self.users: _Codebook[str | None] = _Codebook()
        self.user_ids: list[UUID | None] = []  # by user code

    def __len__(self) -> int:
        return len(self.row_of)

    def _grow(self, needed: int) -> None:
        capacity = self.matrix.shape[0]
        if needed <= capacity:
            return
        capacity = max(needed, 1024, capacity * 2)
        matrix = np.zeros((capacity, self.dimensions), dtype=np.float32)
        matrix[: self.size] = self.matrix[: self.size]
        self.matrix = matrix
        for name in ("app_codes", "user_codes", "scope_codes"):
            column = np.full(capacity, -1, dtype=np.int32)
            column[: self.size] = getattr(self, name)[: self.size]
            setattr(self, name, column)

    def _user_code(self, user_id: str | None) -> int:
        code = self.users.encode(user_id)
        if code == len(self.user_ids):
            self.user_ids.append(None if user_id is None else UUID(user_id))
        return code

    def put_many(
        self,
        ids: Sequence[str],
        apps: Sequence[str],
        user_ids: Sequence[str | None],
        scopes: Sequence[str],
        payloads: Sequence[dict[str, Any]],
        vectors: Vector,
    ) -> None:
        """Insert or replace records (a later duplicate id wins, as in SQL)."""
        last = {record_id: position for position, record_id in enumerate(ids)}
        if len(last) < len(ids):
            keep = sorted(last.values())
            ids = [ids[i] for i in keep]
            apps = [apps[i] for i in keep]
            user_ids = [user_ids[i] for i in keep]
            scopes = [scopes[i] for i in keep]
            payloads = [payloads[i] for i in keep]
            vectors = vectors[keep]
        rows: list[int] = []
        fresh = sum(1 for i in ids if i not in self.row_of)
        self._grow(self.size + max(0, fresh - len(self.free)))
        for record_id in ids:
            row = self.row_of.get(record_id)
            if row is None:
                if self.free:
                    row = self.free.pop()
                else:
                    row = self.size
                    self.size += 1
                    self.ids.append(None)
                    self.payloads.append(None)
                self.row_of[record_id] = row
                self.ids[row] = record_id
            rows.append(row)
        index = np.asarray(rows, dtype=np.intp)
        self.matrix[index] = vectors
        self.app_codes[index] = [self.apps.encode(a) for a in apps]
        self.scope_codes[index] = [self.scopes.encode(s) for s in scopes]
        self.user_codes[index] = [self._user_code(u) for u in user_ids]
        for row, payload in zip(rows, payloads, strict=True):
            self.payloads[row] = payload

    def remove_many(self, ids: Sequence[str]) -> None:
        for record_id in ids:
            row = self.row_of.pop(record_id, None)
            if row is None:
                continue
            self.matrix[row] = 0.0
            self.app_codes[row] = self.user_codes[row] = self.scope_codes[row] = -1
            self.ids[row] = None
            self.payloads[row] = None
            self.free.append(row)

    def rows_matching(self, filter: VectorFilter) -> Rows:
        """Rows of the live records the filter selects, in row order."""
        empty: Rows = np.zeros(0, dtype=np.intp)
        conditions: list[tuple[npt.NDArray[np.int32], int]] = []
        # Most selective column first: the first condition scans every row, the rest only
        # the survivors.
        wanted: list[tuple[npt.NDArray[np.int32], dict[Any, int], Any]] = []
        if filter.user_id is not None:
            wanted.append((self.user_codes, self.users.code_of, str(filter.user_id)))
        if filter.scope is not None:
            wanted.append((self.scope_codes, self.scopes.code_of, filter.scope))
        if filter.app is not None:
            wanted.append((self.app_codes, self.apps.code_of, filter.app))
        for column, code_of, value in wanted:
            code = code_of.get(value)
            if code is None:
                return empty
            conditions.append((column, code))

        if filter.ids is not None:
            found = {self.row_of[i] for i in filter.ids if i in self.row_of}
            rows: Rows = np.asarray(sorted(found), dtype=np.intp)
        elif conditions:
            column, code = conditions.pop(0)
            rows = np.flatnonzero(column[: self.size] == code)
        else:
            rows = np.flatnonzero(self.app_codes[: self.size] >= 0)
        for column, code in conditions:
            rows = rows[column[rows] == code]
        if filter.payload and rows.size:
            payloads = self.payloads
            kept = [r for r in rows.tolist() if payload_matches(payloads[r] or {}, filter.payload)]
            rows = np.asarray(kept, dtype=np.intp)
        return rows

    def search(
        self, query: Vector, filter: VectorFilter, limit: int, min_score: float | None
    ) -> list[tuple[int, float]]:
        """(row, cosine score) of the best `limit` matches, best first."""
        if not self.row_of:
            return []
        rows: Rows | None
        if _has_no_conditions(filter):
            rows = None
            scores = self.matrix[: self.size] @ query
            if self.free:
                scores[np.asarray(self.free, dtype=np.intp)] = -np.inf
        else:
            rows = self.rows_matching(filter)
            if rows.size == 0:
                return []
            scores = self.matrix[rows] @ query
        if min_score is not None:
            kept = np.flatnonzero(scores >= min_score)
            rows = kept if rows is None else rows[kept]
            scores = scores[kept]
        count = min(limit, scores.shape[0])
        if count == 0:
            return []
        if count < scores.shape[0]:
            best = np.argpartition(-scores, count - 1)[:count]
        else:
            best = np.arange(scores.shape[0])
        best = best[np.argsort(-scores[best], kind="stable")]
        picked = best if rows is None else rows[best]
        return [
            (row, min(1.0, score))
            for row, score in zip(picked.tolist(), scores[best].tolist(), strict=True)
            if score != -np.inf
        ]

    def hit(self, row: int, score: float) -> VectorHit:
        record_id = self.ids[row]
        assert record_id is not None
        return VectorHit(
            id=record_id,
            score=score,
            app=self.apps.values[self.app_codes[row]],
            scope=self.scopes.values[self.scope_codes[row]],
            user_id=self.user_ids[self.user_codes[row]],
            payload=_copy_payload(self.payloads[row]),
        )

    def record(self, row: int) -> VectorRecord:
        record_id = self.ids[row]
        assert record_id is not None
        return VectorRecord(
            id=record_id,
            vector=self.matrix[row].copy(),
            app=self.apps.values[self.app_codes[row]],
            scope=self.scopes.values[self.scope_codes[row]],
            user_id=self.user_ids[self.user_codes[row]],
            payload=_copy_payload(self.payloads[row]),
        )


def _record_id(record: VectorRecord) -> str:
    return record.id


def _copy_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    # Callers get their own copy: mutating a hit must never change the mirror.
    copied: dict[str, Any] = orjson.loads(orjson.dumps(payload or {}))
    return copied


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
        self._mirror = _Mirror(dimensions)
        self._seq = 0  # the last sequence number the mirror applied
        self._data_version = -1

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
        await self._run(lambda connection: self._write_records(connection, checked))

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

        return await self._run(search)

    async def delete(self, filter: VectorFilter) -> int:
        """Remove every matching record; returns how many went."""
        check_filter(filter)
        return await self._run(lambda connection: self._delete_matching(connection, filter))

    async def count(self, filter: VectorFilter) -> int:
        check_filter(filter)

        def count(_connection: sqlite3.Connection) -> int:
            if _has_no_conditions(filter):
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

        ids = await self._run(matching_ids)
        for start in range(0, len(ids), EXPORT_BATCH):
            batch = replace(filter, ids=ids[start : start + EXPORT_BATCH])

            def records(
                _connection: sqlite3.Connection, batch: VectorFilter = batch
            ) -> list[VectorRecord]:
                mirror = self._mirror
                found = [mirror.record(row) for row in mirror.rows_matching(batch).tolist()]
                return sorted(found, key=_record_id)

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
                self._mirror = _Mirror(self.dimensions)

        await anyio.to_thread.run_sync(close)

    # -- running work off the event loop --

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                connection = self._open()
                self._refresh(connection)
                return work(connection)

        return await anyio.to_thread.run_sync(locked)

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
        mirror = _Mirror(self.dimensions)
        cursor = connection.execute(f"SELECT {_ROW_COLUMNS} FROM vector_records")  # noqa: S608
        while batch := cursor.fetchmany(10_000):
            self._put_rows(mirror, batch)
        self._mirror = mirror

    def _put_rows(self, mirror: _Mirror, rows: list[tuple[Any, ...]]) -> None:
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
