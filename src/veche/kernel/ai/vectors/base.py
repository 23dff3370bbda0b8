"""The vector memory contract: records scoped by app, user and scope, searched by similarity.

Multi-tenancy is by the three scope fields, which every implementation indexes; payload
filters narrow further by equality on top-level payload keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import numpy as np
import numpy.typing as npt

JSONScalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """One stored vector. `id` is the caller's key, unique within the store."""

    id: str
    vector: npt.NDArray[np.float32] | Sequence[float]
    app: str
    scope: str = ""
    user_id: UUID | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VectorFilter:
    """Which records an operation touches. Unset fields match everything.

    `payload` matches records whose top-level payload key equals the given scalar (all keys
    must match). A filter with nothing set matches the whole store.
    """

    app: str | None = None
    user_id: UUID | None = None
    scope: str | None = None
    payload: Mapping[str, JSONScalar] = field(default_factory=dict)
    ids: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class VectorHit:
    id: str
    score: float  # cosine similarity, higher is closer
    app: str
    scope: str
    user_id: UUID | None
    payload: Mapping[str, Any]


class VectorStore(Protocol):
    """Upsert, search with filters, delete by filter, count, export and drop a scope."""

    dimensions: int

    async def upsert(self, records: Sequence[VectorRecord]) -> None: ...

    async def search(
        self,
        vector: npt.NDArray[np.float32] | Sequence[float],
        *,
        filter: VectorFilter,
        limit: int = 10,
        min_score: float | None = None,
    ) -> list[VectorHit]: ...

    async def delete(self, filter: VectorFilter) -> int:
        """Remove every matching record; returns how many went."""
        ...

    async def count(self, filter: VectorFilter) -> int: ...

    def export(self, filter: VectorFilter) -> AsyncIterator[VectorRecord]: ...

    async def drop_scope(
        self, app: str, *, user_id: UUID | None = None, scope: str | None = None
    ) -> int:
        """Delete a whole scope (an agent's memory, a user's data) in one call."""
        ...

    async def health(self) -> None:
        """Raise when the store cannot serve (for `/ready`)."""
        ...

    async def aclose(self) -> None: ...
