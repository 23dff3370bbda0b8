"""The embedder every caller uses: batches, an LRU cache and metrics over one provider.

Concurrent callers share provider calls. The first text to miss the cache goes to the
provider at once; texts of the same kind asked for while that call is in flight wait and
go together in the next call (at most `batch_size` texts a call). The steps of a plan
that start together then cost one embedding call, not one each. A caller that is
cancelled stops waiting; the call it joined still serves the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter, Histogram

from veche.kernel.ai.embeddings.base import EmbeddingKind, EmbeddingProvider, Vectors
from veche.kernel.ai.errors import AIError, ProviderRejected

TEXTS = Counter(
    "veche_ai_embedding_texts_total",
    "Texts asked of the embedder, by model; cache=hit when no provider call was needed "
    "(cached, or a duplicate within the same call)",
    ["model", "cache"],
)
SECONDS = Histogram(
    "veche_ai_embedding_seconds",
    "Time of one provider call (one batch), by model",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# (model, kind, sha256 of the text): the text itself is not kept in memory twice.
CacheKey = tuple[str, str, bytes]


@dataclass(slots=True)
class _Request:
    """One caller's texts waiting for the provider, and where their rows go."""

    texts: list[str]
    rows: asyncio.Future[Vectors]


class Embedder:
    """Embeds texts through `provider`, `batch_size` per call, remembering `cache_size`
    vectors (least recently used go first; 0 keeps none)."""

    def __init__(
        self, provider: EmbeddingProvider, *, batch_size: int = 32, cache_size: int = 10_000
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        self.provider = provider
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[CacheKey, Vectors] = OrderedDict()
        # By kind: the requests waiting for a provider call, and the task making the calls.
        self._waiting: dict[EmbeddingKind, deque[_Request]] = {}
        self._senders: dict[EmbeddingKind, asyncio.Task[None]] = {}

    @property
    def model(self) -> str:
        return self.provider.model

    @property
    def dimensions(self) -> int:
        return self.provider.dimensions

    @property
    def relevance_floor(self) -> float | None:
        return self.provider.relevance_floor

    async def embed_query(self, text: str) -> Vectors:
        """The vector, shape (dimensions,), of a search query."""
        vectors = await self.embed([text], "query")
        vector: Vectors = vectors[0]
        return vector

    async def embed_passages(self, texts: Sequence[str]) -> Vectors:
        """One row per document, shape (len(texts), dimensions)."""
        return await self.embed(texts, "passage")

    async def embed(self, texts: Sequence[str], kind: EmbeddingKind) -> Vectors:
        """One L2-normalised row per text, in order. Only texts neither cached nor repeated
        earlier in `texts` reach the provider; over-long texts are truncated by it."""
        _check(texts, kind)
        model = self.provider.model
        result = np.empty((len(texts), self.provider.dimensions), dtype=np.float32)
        missing = self._fill_from_cache(texts, kind, result)
        hits = len(texts) - len(missing)
        if hits:
            TEXTS.labels(model=model, cache="hit").inc(hits)
        if missing:
            TEXTS.labels(model=model, cache="miss").inc(len(missing))

        if missing:
            vectors = await self._provided([text for text, _ in missing.values()], kind)
            for (key, (_, positions)), vector in zip(missing.items(), vectors, strict=True):
                result[positions] = vector
                self._remember(key, vector)
        return result

    async def _provided(self, texts: list[str], kind: EmbeddingKind) -> Vectors:
        """The provider's rows for `texts`, in calls shared with concurrent callers."""
        loop = asyncio.get_running_loop()
        request = _Request(texts, loop.create_future())
        self._waiting.setdefault(kind, deque()).append(request)
        if kind not in self._senders:
            self._senders[kind] = loop.create_task(
                self._send(kind), name=f"embedder:{self.provider.model}:{kind}"
            )
        return await request.rows

    async def _send(self, kind: EmbeddingKind) -> None:
        """Make provider calls while requests of `kind` wait, each call taking the
        waiting requests in order up to `batch_size` texts (a larger request alone, in
        several calls)."""
        waiting = self._waiting[kind]
        taken: list[_Request] = []
        try:
            while waiting:
                taken = [waiting.popleft()]
                count = len(taken[0].texts)
                while waiting and count + len(waiting[0].texts) <= self.batch_size:
                    count += len(waiting[0].texts)
                    taken.append(waiting.popleft())
                taken = [request for request in taken if not request.rows.done()]
                if taken:
                    await self._serve(taken, kind)
        except BaseException:
            # Cancelled (the loop is closing): nobody may wait on a call that is not made.
            for request in [*taken, *waiting]:
                request.rows.cancel()
            waiting.clear()
            raise
        finally:
            del self._senders[kind]

    async def _serve(self, requests: list[_Request], kind: EmbeddingKind) -> None:
        try:
            vectors = await self._call(
                [text for request in requests for text in request.texts], kind
            )
        except ProviderRejected as error:
            if len(requests) == 1:
                _fail(requests[0], error)
                return
            # The provider refused something in the call: each caller's texts again on
            # their own, so one caller's input cannot fail another's.
            for request in requests:
                await self._serve([request], kind)
            return
        except Exception as error:  # unavailable, timed out: the same for every caller
            for request in requests:
                _fail(request, error)
            return
        start = 0
        for request in requests:
            end = start + len(request.texts)
            if not request.rows.done():
                request.rows.set_result(vectors[start:end])
            start = end

    async def _call(self, texts: list[str], kind: EmbeddingKind) -> Vectors:
        """The provider's rows for `texts`, `batch_size` a call."""
        model = self.provider.model
        rows: list[Vectors] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            began = time.perf_counter()
            vectors = await self.provider.embed(batch, kind)
            SECONDS.labels(model=model).observe(time.perf_counter() - began)
            if vectors.shape != (len(batch), self.provider.dimensions):
                raise AIError(
                    f"the embedding model returned shape {vectors.shape} for "
                    f"{len(batch)} texts of {self.provider.dimensions} dimensions"
                )
            rows.append(vectors)
        return rows[0] if len(rows) == 1 else np.vstack(rows)

    def _fill_from_cache(
        self, texts: Sequence[str], kind: EmbeddingKind, result: Vectors
    ) -> dict[CacheKey, tuple[str, list[int]]]:
        """Copies cached vectors into `result`; returns each other text, once, with every
        position it fills."""
        missing: dict[CacheKey, tuple[str, list[int]]] = {}
        for position, text in enumerate(texts):
            digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
            key: CacheKey = (self.provider.model, kind, digest)
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                result[position] = cached
            elif key in missing:
                missing[key][1].append(position)
            else:
                missing[key] = (text, [position])
        return missing

    def _remember(self, key: CacheKey, vector: Vectors) -> None:
        if self.cache_size == 0:
            return
        # A copy the caller cannot change through the array it was handed.
        stored = np.array(vector, dtype=np.float32)
        stored.flags.writeable = False
        self._cache[key] = stored
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        self._cache.clear()

    async def aclose(self) -> None:
        await self.provider.aclose()


def _fail(request: _Request, error: Exception) -> None:
    if not request.rows.done():
        request.rows.set_exception(error)


def _check(texts: Sequence[str], kind: EmbeddingKind) -> None:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of str, not one str")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{position}] is {type(text).__name__}, not str")
    if kind not in ("query", "passage"):
        raise ValueError(f"kind must be 'query' or 'passage', not {kind!r}")
