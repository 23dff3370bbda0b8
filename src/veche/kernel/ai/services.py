"""The AI services of one process: the LLM gateway, the embedder and vector memory.

Built once with the kernel from the settings. Nothing heavy happens here: the local model
loads on its first call, the vector store opens on first use. `problems()` finds every
misconfiguration without calling a provider, so `veche check` and startup can refuse it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from veche.kernel.ai.embeddings.base import EmbeddingProvider
from veche.kernel.ai.embeddings.embedder import Embedder
from veche.kernel.ai.gateway import LLMGateway
from veche.kernel.ai.profiles import ResolvedProfile
from veche.kernel.ai.providers.base import ChatProvider
from veche.kernel.ai.usage import UsageLedger
from veche.kernel.ai.vectors.base import VectorStore
from veche.kernel.db import Database
from veche.settings import Settings


def chat_provider(settings: Settings, profile: ResolvedProfile) -> ChatProvider:
    """The provider client a profile talks to."""
    if profile.provider == "openai":
        from veche.kernel.ai.providers.openai import OpenAIChatProvider

        return OpenAIChatProvider(
            base_url=profile.base_url,
            api_key=profile.api_key.get_secret_value() if profile.api_key else None,
            settings=settings.ai,
        )
    from veche.kernel.ai.providers.local import LocalChatProvider

    return LocalChatProvider(settings.ai)


def embedding_provider(settings: Settings) -> EmbeddingProvider:
    if settings.embeddings_provider == "openai":
        from veche.kernel.ai.embeddings.openai import OpenAIEmbeddingProvider

        return OpenAIEmbeddingProvider(
            base_url=settings.embeddings_base_url,
            api_key=(
                settings.embeddings_api_key.get_secret_value()
                if settings.embeddings_api_key
                else None
            ),
            model=settings.embeddings_model or "",
            dimensions=settings.ai.embedding_dimensions,
            settings=settings.ai,
        )
    from veche.kernel.ai.embeddings.local import local_embedding_provider

    return local_embedding_provider(settings.embeddings_model, threads=settings.ai.local_threads)


def _slug(model: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:64] or "model"


class AIServices:
    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        self.ledger = UsageLedger(settings.ai, db)
        self.llm = LLMGateway(settings, self.ledger, lambda p: chat_provider(settings, p))
        self._embedding_provider = embedding_provider(settings)
        self.embedder = Embedder(
            self._embedding_provider,
            batch_size=settings.ai.embedding_batch_size,
            cache_size=settings.ai.embedding_cache_size,
        )
        self._vectors: VectorStore | None = None
        self._vectors_lock = asyncio.Lock()

    @property
    def embeddings_provider(self) -> str:
        return self._embedding_provider.name

    @property
    def embeddings_model(self) -> str:
        return self._embedding_provider.model

    @property
    def embedding_dimensions(self) -> int | None:
        return self._embedding_provider.dimensions or None

    @property
    def vector_store_kind(self) -> str:
        return "qdrant" if self._settings.qdrant_url else "embedded"

    @property
    def vector_path(self) -> Path:
        """Vectors of different embedding models never mix: one store file per model."""
        return self._settings.data_dir / "vectors" / f"{_slug(self.embeddings_model)}.db"

    @property
    def collection(self) -> str:
        return f"veche_{_slug(self.embeddings_model).replace('-', '_')}"

    def problems(self) -> list[str]:
        problems = self.llm.problems()
        problems.extend(self._embedding_provider.problems())
        if self._settings.embeddings_provider == "openai":
            if not self._settings.embeddings_model:
                problems.append("the openai embeddings provider needs VECHE_EMBEDDINGS_MODEL")
            if not self._settings.ai.embedding_dimensions:
                problems.append(
                    "the openai embeddings provider needs VECHE_AI__EMBEDDING_DIMENSIONS "
                    "(vector memory is created with a fixed dimension)"
                )
        return problems

    async def vectors(self) -> VectorStore:
        """The vector store for the configured embedding model, opened on first use."""
        if self._vectors is not None:
            return self._vectors
        async with self._vectors_lock:
            if self._vectors is None:
                self._vectors = await self._open_vectors()
            return self._vectors

    async def vectors_health(self) -> None:
        """Raise unless vector memory can serve (for `/ready` with a Qdrant server)."""
        await (await self.vectors()).health()

    async def _open_vectors(self) -> VectorStore:
        dimensions = self.embedding_dimensions
        if dimensions is None:
            raise RuntimeError("the embedding dimension is unknown; set it in the settings")
        if self._settings.qdrant_url:
            from veche.kernel.ai.vectors.qdrant import QdrantVectorStore

            key = self._settings.qdrant_api_key
            return await QdrantVectorStore.from_url(
                self._settings.qdrant_url,
                api_key=key.get_secret_value() if key else None,
                collection=self.collection,
                dimensions=dimensions,
            )
        from veche.kernel.ai.vectors.embedded import EmbeddedVectorStore

        return await EmbeddedVectorStore.open(self.vector_path, dimensions)

    async def aclose(self) -> None:
        await self.ledger.flush()
        await self.llm.aclose()
        await self._embedding_provider.aclose()
        if self._vectors is not None:
            await self._vectors.aclose()
            self._vectors = None
