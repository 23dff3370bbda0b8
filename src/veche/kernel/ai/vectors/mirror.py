"""The in-memory mirror of an embedded store: one float32 matrix with integer-coded app,
user and scope columns, searched exactly."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Generic, TypeVar
from uuid import UUID

import numpy as np
import numpy.typing as npt
import orjson

from veche.kernel.ai.vectors.base import VectorFilter, VectorHit, VectorRecord
from veche.kernel.ai.vectors.checks import Vector, has_no_conditions, payload_matches

K = TypeVar("K", bound=Hashable)
Rows = npt.NDArray[np.intp]

# A filter matching at least 1/SCORE_ALL_FRACTION of the rows scores them all in place.
SCORE_ALL_FRACTION = 8


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


class Mirror:
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
        if has_no_conditions(filter):
            rows = None
            scores = self.matrix[: self.size] @ query
            if self.free:
                scores[np.asarray(self.free, dtype=np.intp)] = -np.inf
        else:
            rows = self.rows_matching(filter)
            if rows.size == 0:
                return []
            if rows.size * SCORE_ALL_FRACTION >= self.size:
                # Most rows match: scoring the whole matrix in place and picking the scores
                # is cheaper than copying the matching rows out first.
                scores = (self.matrix[: self.size] @ query)[rows]
            else:
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


def record_id(record: VectorRecord) -> str:
    return record.id


def _copy_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    # Callers get their own copy: mutating a hit must never change the mirror.
    copied: dict[str, Any] = orjson.loads(orjson.dumps(payload or {}))
    return copied
