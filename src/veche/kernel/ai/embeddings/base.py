"""What every embedding provider offers the `Embedder`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

# Retrieval models embed questions and documents differently (e5's "query: "/"passage: ").
EmbeddingKind = Literal["query", "passage"]
Vectors = npt.NDArray[np.float32]


class EmbeddingProvider(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str
    model: str
    dimensions: int
    # The cosine similarity under which a query and a passage are as good as unrelated for
    # this model (measured), or None where not known; retrieval may leave such hits out.
    relevance_floor: float | None

    def problems(self) -> list[str]:
        """Configuration problems found without calling anything (for `veche check`)."""
        ...

    async def embed(self, texts: Sequence[str], kind: EmbeddingKind) -> Vectors:
        """One row per text, in order; shape (len(texts), dimensions)."""
        ...

    async def aclose(self) -> None: ...
