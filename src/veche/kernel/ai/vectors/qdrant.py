"""Vector memory in a Qdrant collection, for corpora that outgrow brute-force search.

One collection holds every app's records; the scope fields live in the point payload with
keyword indexes (`user_id` marked as the tenant key) and every query filters on them. Qdrant
point ids must be integers or UUIDs, so a record's string id maps to a UUID5 and travels in
the payload too. The caller's payload sits under `payload`, so its keys never collide with
ours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID, uuid5

import anyio
import numpy as np
from qdrant_client import AsyncQdrantClient, models

from veche.kernel.ai.vectors.base import VectorFilter, VectorHit, VectorRecord
from veche.kernel.ai.vectors.checks import (
    CheckedRecord,
    Vector,
    check_filter,
    check_record,
    normalise_vector,
)

# Fixed forever: changing it would orphan every stored point.
POINT_NAMESPACE = UUID("6f0d1c52-35a4-4c3e-9a55-4f1f3e0c7a21")
BATCH = 256
INDEXED_FIELDS = ("app", "user_id", "scope", "record_id")


def point_id(record_id: str) -> str:
    """The Qdrant point id of a record id."""
    return str(uuid5(POINT_NAMESPACE, record_id))


class QdrantVectorStore:
    """A `VectorStore` over one Qdrant collection (cosine distance), created when missing."""

    def __init__(self, client: AsyncQdrantClient, collection: str, dimensions: int) -> None:
        if not isinstance(dimensions, int) or dimensions < 1:
            raise ValueError("dimensions must be a positive integer")
        if not collection:
            raise ValueError("a Qdrant collection name is required")
        self.client = client
        self.collection = collection
        self.dimensions = dimensions
        self._ready = False
        self._ready_lock = anyio.Lock()

    @classmethod
    async def from_url(
        cls, url: str, api_key: str | None, collection: str, dimensions: int
    ) -> QdrantVectorStore:
        """Connect to a Qdrant server and make sure the collection and its indexes exist."""
        client = AsyncQdrantClient(url=url, api_key=api_key)
        store = cls(client, collection, dimensions)
        try:
            await store.ensure_collection()
        except BaseException:
            await client.close()
            raise
        return store

    async def ensure_collection(self) -> None:
        """Create the collection and payload indexes if missing; `ValueError` when an existing
        collection was made for other vectors."""
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            client, name = self.client, self.collection
            if not await client.collection_exists(name):
                try:
                    await client.create_collection(
                        name,
                        vectors_config=models.VectorParams(
                            size=self.dimensions, distance=models.Distance.COSINE
                        ),
                    )
                except Exception:
                    # Another process may have created it first; only then is this fine.
                    if not await client.collection_exists(name):
                        raise
            info = await client.get_collection(name)
            vectors = info.config.params.vectors
            if not isinstance(vectors, models.VectorParams):
                raise ValueError(f"Qdrant collection {name!r} uses named vectors")
            if vectors.size != self.dimensions:
                raise ValueError(
                    f"Qdrant collection {name!r} holds {vectors.size}-dimensional vectors,"
                    f" not {self.dimensions}"
                )
            if vectors.distance != models.Distance.COSINE:
                raise ValueError(f"Qdrant collection {name!r} does not use cosine distance")
            existing = info.payload_schema or {}
            for field in INDEXED_FIELDS:
                if field in existing:
                    continue
                schema = models.KeywordIndexParams(
                    type=models.KeywordIndexType.KEYWORD, is_tenant=field == "user_id"
                )
                await client.create_payload_index(name, field, field_schema=schema)
            self._ready = True

    # -- VectorStore --

    async def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace records by id (a later duplicate in the batch wins)."""
        if not records:
            return
        checked = {item.id: item for item in (check_record(r, self.dimensions) for r in records)}
        await self.ensure_collection()
        points = [_point(item) for item in checked.values()]
        for start in range(0, len(points), BATCH):
            await self.client.upsert(self.collection, points[start : start + BATCH], wait=True)

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
        if _selects_nothing(filter):
            return []
        await self.ensure_collection()
        response = await self.client.query_points(
            self.collection,
            query=query.tolist(),
            query_filter=qdrant_filter(filter),
            limit=limit,
            score_threshold=min_score,
            with_payload=True,
        )
        return [_hit(point.payload or {}, point.score) for point in response.points]

    async def delete(self, filter: VectorFilter) -> int:
        """Remove every matching record; returns how many matched just before."""
        check_filter(filter)
        if _selects_nothing(filter):
            return 0
        await self.ensure_collection()
        selector = qdrant_filter(filter) or models.Filter()
        matched = (await self.client.count(self.collection, count_filter=selector)).count
        if matched:
            await self.client.delete(
                self.collection, points_selector=models.FilterSelector(filter=selector), wait=True
            )
        return matched

    async def count(self, filter: VectorFilter) -> int:
        check_filter(filter)
        if _selects_nothing(filter):
            return 0
        await self.ensure_collection()
        result = await self.client.count(
            self.collection, count_filter=qdrant_filter(filter), exact=True
        )
        return result.count

    async def export(self, filter: VectorFilter) -> AsyncIterator[VectorRecord]:
        """Every matching record with its unit vector and payload, page by page."""
        check_filter(filter)
        if _selects_nothing(filter):
            return
        await self.ensure_collection()
        selector = qdrant_filter(filter)
        offset: Any = None
        while True:
            points, offset = await self.client.scroll(
                self.collection,
                scroll_filter=selector,
                limit=BATCH,
                offset=offset,
                with_payload=True,
                with_vectors=True,
            )
            for point in points:
                yield _record(point.payload or {}, point.vector)
            if offset is None:
                return

    async def drop_scope(
        self, app: str, *, user_id: UUID | None = None, scope: str | None = None
    ) -> int:
        """Delete a whole scope (an agent's memory, a user's data) in one call."""
        if not isinstance(app, str) or not app:
            raise ValueError("drop_scope needs a non-empty app")
        return await self.delete(VectorFilter(app=app, user_id=user_id, scope=scope))

    async def health(self) -> None:
        """Raise when Qdrant does not answer or the collection is gone."""
        if not await self.client.collection_exists(self.collection):
            raise RuntimeError(f"Qdrant collection {self.collection!r} does not exist")

    async def aclose(self) -> None:
        await self.client.close()


def qdrant_filter(filter: VectorFilter) -> models.Filter | None:
    """Our filter as a Qdrant filter (every condition must hold); `None` matches all."""
    must: list[models.Condition] = []
    for field, value in (
        ("app", filter.app),
        ("user_id", None if filter.user_id is None else str(filter.user_id)),
        ("scope", filter.scope),
    ):
        if value is not None:
            must.append(models.FieldCondition(key=field, match=models.MatchValue(value=value)))
    if filter.ids is not None:
        must.append(models.HasIdCondition(has_id=[point_id(i) for i in filter.ids]))
    for key, expected in filter.payload.items():
        path = f"payload.{key}"
        if expected is None:
            must.append(models.IsNullCondition(is_null=models.PayloadField(key=path)))
        elif isinstance(expected, float):
            # Qdrant matches floats by range only.
            must.append(
                models.FieldCondition(key=path, range=models.Range(gte=expected, lte=expected))
            )
        else:
            must.append(models.FieldCondition(key=path, match=models.MatchValue(value=expected)))
    return models.Filter(must=must) if must else None


def _selects_nothing(filter: VectorFilter) -> bool:
    return filter.ids is not None and len(filter.ids) == 0


def _point(record: CheckedRecord) -> models.PointStruct:
    return models.PointStruct(
        id=point_id(record.id),
        vector=record.vector.tolist(),
        payload={
            "record_id": record.id,
            "app": record.app,
            "user_id": None if record.user_id is None else str(record.user_id),
            "scope": record.scope,
            "payload": record.payload,
        },
    )


def _user_id(payload: dict[str, Any]) -> UUID | None:
    value = payload.get("user_id")
    return None if value is None else UUID(value)


def _hit(payload: dict[str, Any], score: float) -> VectorHit:
    return VectorHit(
        id=payload["record_id"],
        score=float(score),
        app=payload["app"],
        scope=payload.get("scope", ""),
        user_id=_user_id(payload),
        payload=payload.get("payload") or {},
    )


def _record(payload: dict[str, Any], vector: Any) -> VectorRecord:
    if not isinstance(vector, list):
        raise ValueError("the Qdrant collection returned a vector this store did not write")
    return VectorRecord(
        id=payload["record_id"],
        vector=np.asarray(vector, dtype=np.float32),
        app=payload["app"],
        scope=payload.get("scope", ""),
        user_id=_user_id(payload),
        payload=payload.get("payload") or {},
    )
