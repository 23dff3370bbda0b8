"""Embeddings over any OpenAI-compatible API, with the chat provider's retries and breaker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from veche.kernel.ai.breaker import CircuitBreaker
from veche.kernel.ai.embeddings.base import EmbeddingKind, Vectors
from veche.kernel.ai.errors import AIError, ProviderRejected
from veche.kernel.ai.providers.base import ProviderHealth
from veche.kernel.ai.providers.openai import (
    OpenAIEndpoint,
    breaker_health,
    connection_problems,
    guarded,
    is_openai_host,
)
from veche.settings import AISettings

DEFAULT_OPENAI_MODEL = "text-embedding-3-small"


class OpenAIEmbeddingProvider(OpenAIEndpoint):
    """`client.embeddings.create` turned into L2-normalised float32 rows, in input order.

    `dimensions` is 0 until the first reply when the constructor was not told it; from
    then on a reply of another width is refused.
    """

    name = "openai"
    # Scores differ by model (and by server behind the same protocol): not assumed.
    relevance_floor: float | None = None

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        dimensions: int | None = None,
        settings: AISettings | None = None,
        max_retries: int | None = None,
        timeout_seconds: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            settings=settings,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            breaker=breaker,
        )
        default_model = DEFAULT_OPENAI_MODEL if is_openai_host(base_url) else ""
        self.model = model or default_model
        self.dimensions = dimensions or 0

    def problems(self) -> list[str]:
        return connection_problems(
            env_prefix="VECHE_EMBEDDINGS",
            base_url=self.base_url,
            has_api_key=self._has_key,
            model=self.model,
        )

    async def embed(self, texts: Sequence[str], kind: EmbeddingKind) -> Vectors:
        """One row per text; `kind` does not matter to these models."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)

        async def call() -> Vectors:
            reply = await self._client.embeddings.create(
                model=self.model, input=list(texts), encoding_format="float"
            )
            return _vectors(reply, len(texts))

        vectors = await guarded(self._breaker, self.name, self.model, call)
        width = vectors.shape[1]
        if self.dimensions and width != self.dimensions:
            raise ProviderRejected(
                f"The embedding model answered {width} dimensions, expected {self.dimensions}"
            )
        self.dimensions = width
        return vectors

    def health(self) -> ProviderHealth:
        return breaker_health(self.name, self._breaker)


def _vectors(reply: Any, count: int) -> Vectors:
    try:
        rows = sorted(reply.data, key=lambda item: item.index)
        matrix = np.asarray([row.embedding for row in rows], dtype=np.float32)
    except (AttributeError, TypeError, ValueError) as exc:
        raise AIError("The AI provider sent a reply that is not a list of embeddings") from exc
    if matrix.ndim != 2 or matrix.shape[0] != count or matrix.shape[1] == 0:
        raise AIError(f"The AI provider sent {matrix.shape[0]} embeddings for {count} texts")
    if not np.isfinite(matrix).all():
        raise AIError("The AI provider sent embeddings that are not finite numbers")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: Vectors = (matrix / norms).astype(np.float32)
    return normalised
