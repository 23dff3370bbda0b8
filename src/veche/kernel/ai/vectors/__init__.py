"""Vector memory: records scoped by app, user and scope, searched by cosine similarity.

`VectorStore` is the contract; `EmbeddedVectorStore` (SQLite + an exact in-memory numpy
mirror, shared safely by the processes of one machine) is the default, `QdrantVectorStore`
the server-backed choice for large or shared corpora. The Qdrant module is imported on
first use so the embedded default does not load the Qdrant client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from veche.kernel.ai.vectors.base import VectorFilter, VectorHit, VectorRecord, VectorStore
from veche.kernel.ai.vectors.embedded import EmbeddedVectorStore

if TYPE_CHECKING:
    from veche.kernel.ai.vectors.qdrant import QdrantVectorStore

__all__ = [
    "EmbeddedVectorStore",
    "QdrantVectorStore",
    "VectorFilter",
    "VectorHit",
    "VectorRecord",
    "VectorStore",
]


def __getattr__(name: str) -> Any:
    if name == "QdrantVectorStore":
        from veche.kernel.ai.vectors.qdrant import QdrantVectorStore

        return QdrantVectorStore
    raise AttributeError(name)
