"""The embedder's batching, cache and metrics, over a deterministic stand-in for a model."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import REGISTRY

from veche.kernel.ai.embeddings.base import EmbeddingKind, EmbeddingProvider, Vectors
from veche.kernel.ai.embeddings.embedder import Embedder
from veche.kernel.ai.errors import AIError, ProviderRejected, ProviderUnavailable

_models = itertools.count()


class HashProvider:
    """Vectors derived from sha256(kind, text): stable, distinct, and free to compute."""

    def __init__(self, dimensions: int = 8) -> None:
        self.name = "test"
        # A model name of its own per instance keeps every test's metrics apart.
        self.model = f"hash-{next(_models)}"
        self.dimensions = dimensions
        self.calls: list[tuple[list[str], EmbeddingKind]] = []
        self.closed = False

    def problems(self) -> list[str]:
        return []

    async def embed(self, texts: Sequence[str], kind: EmbeddingKind) -> Vectors:
        self.calls.append((list(texts), kind))
        return np.vstack([vector(text, kind, self.dimensions) for text in texts]).reshape(
            len(texts), self.dimensions
        )

    async def aclose(self) -> None:
        self.closed = True

    @property
    def sent(self) -> list[str]:
        return [text for texts, _ in self.calls for text in texts]


def vector(text: str, kind: str, dimensions: int = 8) -> Vectors:
    digest = hashlib.sha256(f"{kind}\0{text}".encode()).digest()
    raw = np.frombuffer(digest, dtype=np.uint8)[:dimensions].astype(np.float32) - 127.5
    normalised: Vectors = (raw / np.linalg.norm(raw)).astype(np.float32)
    return normalised


def counted(model: str, cache: str) -> float:
    found = REGISTRY.get_sample_value(
        "veche_ai_embedding_texts_total", {"model": model, "cache": cache}
    )
    return found or 0.0


def test_the_stand_in_is_an_embedding_provider() -> None:
    provider: EmbeddingProvider = HashProvider()
    assert provider.dimensions == 8


async def test_rows_follow_the_input_order() -> None:
    embedder = Embedder(HashProvider())
    texts = ["c", "a", "b"]
    vectors = await embedder.embed_passages(texts)
    assert vectors.shape == (3, 8)
    assert vectors.dtype == np.float32
    for row, text in zip(vectors, texts, strict=True):
        np.testing.assert_array_equal(row, vector(text, "passage"))
    np.testing.assert_array_equal(await embedder.embed_query("a"), vector("a", "query"))


async def test_texts_are_sent_in_batches_of_batch_size() -> None:
    provider = HashProvider()
    embedder = Embedder(provider, batch_size=3)
    texts = [f"text {number}" for number in range(8)]
    vectors = await embedder.embed(texts, "passage")
    assert [len(batch) for batch, _ in provider.calls] == [3, 3, 2]
    assert provider.sent == texts
    np.testing.assert_array_equal(vectors[7], vector("text 7", "passage"))


async def test_cached_texts_skip_the_provider() -> None:
    provider = HashProvider()
    embedder = Embedder(provider)
    await embedder.embed(["a", "b"], "passage")
    vectors = await embedder.embed(["b", "c", "a"], "passage")
    assert provider.calls[1] == (["c"], "passage")
    np.testing.assert_array_equal(vectors[0], vector("b", "passage"))
    np.testing.assert_array_equal(vectors[1], vector("c", "passage"))
    np.testing.assert_array_equal(vectors[2], vector("a", "passage"))


async def test_the_cache_tells_queries_from_passages() -> None:
    provider = HashProvider()
    embedder = Embedder(provider)
    await embedder.embed(["same"], "passage")
    query = await embedder.embed_query("same")
    assert provider.calls[1] == (["same"], "query")
    np.testing.assert_array_equal(query, vector("same", "query"))


async def test_the_cache_tells_models_apart() -> None:
    provider = HashProvider()
    embedder = Embedder(provider)
    await embedder.embed(["x"], "passage")
    provider.model = "hash-other"
    await embedder.embed(["x"], "passage")
    assert len(provider.calls) == 2


async def test_duplicates_in_one_call_are_embedded_once() -> None:
    provider = HashProvider()
    embedder = Embedder(provider, cache_size=0)
    vectors = await embedder.embed(["a", "b", "a", "a", "b"], "passage")
    assert provider.calls == [(["a", "b"], "passage")]
    for row, text in zip(vectors, ["a", "b", "a", "a", "b"], strict=True):
        np.testing.assert_array_equal(row, vector(text, "passage"))


async def test_the_least_recently_used_vector_is_evicted_at_cache_size() -> None:
    provider = HashProvider()
    embedder = Embedder(provider, cache_size=2)
    await embedder.embed(["a", "b"], "passage")
    await embedder.embed(["a"], "passage")  # a is now the most recently used
    await embedder.embed(["c"], "passage")  # evicts b
    provider.calls.clear()
    await embedder.embed(["a", "b", "c"], "passage")
    assert provider.sent == ["b"]


async def test_cache_size_zero_turns_the_cache_off() -> None:
    provider = HashProvider()
    embedder = Embedder(provider, cache_size=0)
    await embedder.embed(["a"], "passage")
    await embedder.embed(["a"], "passage")
    assert provider.sent == ["a", "a"]


async def test_callers_cannot_change_cached_vectors() -> None:
    embedder = Embedder(HashProvider())
    first = await embedder.embed(["a"], "passage")
    first[0] = 0.0
    again = await embedder.embed(["a"], "passage")
    np.testing.assert_array_equal(again[0], vector("a", "passage"))


async def test_empty_input_gives_an_empty_matrix_without_a_call() -> None:
    provider = HashProvider(dimensions=5)
    embedder = Embedder(provider)
    vectors = await embedder.embed_passages([])
    assert vectors.shape == (0, 5)
    assert provider.calls == []


async def test_an_empty_string_is_embedded_as_is() -> None:
    provider = HashProvider()
    vectors = await Embedder(provider).embed_passages([""])
    assert provider.sent == [""]
    np.testing.assert_array_equal(vectors[0], vector("", "passage"))


@pytest.mark.parametrize("texts", [["ok", 3], [None], [b"bytes"]])
async def test_non_str_texts_raise_type_error(texts: list[object]) -> None:
    provider = HashProvider()
    with pytest.raises(TypeError, match="not str"):
        await Embedder(provider).embed(texts, "passage")  # type: ignore[arg-type]
    assert provider.calls == []


async def test_one_str_instead_of_a_list_raises_type_error() -> None:
    with pytest.raises(TypeError, match="not one str"):
        await Embedder(HashProvider()).embed_passages("abc")


async def test_an_unknown_kind_raises_value_error() -> None:
    with pytest.raises(ValueError, match="kind"):
        await Embedder(HashProvider()).embed(["a"], "document")  # type: ignore[arg-type]


async def test_a_wrong_shape_from_the_provider_is_an_ai_error() -> None:
    class ShortProvider(HashProvider):
        async def embed(self, texts: Sequence[str], kind: EmbeddingKind) -> Vectors:
            return (await super().embed(texts, kind))[:-1]

    with pytest.raises(AIError, match="shape"):
        await Embedder(ShortProvider()).embed_passages(["a", "b"])


async def test_hits_and_misses_are_counted() -> None:
    provider = HashProvider()
    embedder = Embedder(provider, batch_size=2)
    await embedder.embed(["a", "b", "a"], "passage")  # a and b miss, the second a hits
    await embedder.embed(["a", "b", "c"], "passage")  # a and b hit, c misses
    assert counted(provider.model, "miss") == 3
    assert counted(provider.model, "hit") == 3
    batches = REGISTRY.get_sample_value(
        "veche_ai_embedding_seconds_count", {"model": provider.model}
    )
    assert batches == 2  # [a, b], then [c]


def test_exposes_the_provider_model_and_dimensions() -> None:
    provider = HashProvider(dimensions=16)
    embedder = Embedder(provider)
    assert (embedder.model, embedder.dimensions) == (provider.model, 16)


@pytest.mark.parametrize(("batch_size", "cache_size"), [(0, 10), (1, -1)])
def test_rejects_impossible_sizes(batch_size: int, cache_size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        Embedder(HashProvider(), batch_size=batch_size, cache_size=cache_size)


async def test_aclose_closes_the_provider() -> None:
    provider = HashProvider()
    await Embedder(provider).aclose()
    assert provider.closed


# -- concurrent callers --------------------------------------------------------------------


class HeldProvider(HashProvider):
    """Holds its first call until `release` is set; refuses texts containing "refused",
    and answers `unavailable` while that is set."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.unavailable = False

    async def embed(self, texts: Sequence[str], kind: EmbeddingKind) -> Vectors:
        first = not self.calls
        self.calls.append((list(texts), kind))
        if first:
            self.started.set()
            await self.release.wait()
        if self.unavailable:
            raise ProviderUnavailable("the embedding service is down")
        if any("refused" in text for text in texts):
            raise ProviderRejected("the provider refused the input")
        return np.vstack([vector(text, kind, self.dimensions) for text in texts])


async def _while_the_first_call_is_held(
    provider: HeldProvider, embedder: Embedder, *asks: Sequence[str]
) -> list[asyncio.Task[Vectors]]:
    """Start a first call, held; then ask for each of `asks` concurrently (each a task)."""
    first = asyncio.create_task(embedder.embed(["first"], "passage"))
    await provider.started.wait()
    tasks = [asyncio.create_task(embedder.embed(list(texts), "passage")) for texts in asks]
    await asyncio.sleep(0)  # every task has asked
    provider.release.set()
    await first
    return tasks


async def test_texts_asked_during_a_call_share_the_next_call() -> None:
    provider = HeldProvider()
    embedder = Embedder(provider)
    tasks = await _while_the_first_call_is_held(provider, embedder, ["b"], ["c", "d"], ["e"])
    results = await asyncio.gather(*tasks)
    assert [texts for texts, _ in provider.calls] == [["first"], ["b", "c", "d", "e"]]
    for result, texts in zip(results, [["b"], ["c", "d"], ["e"]], strict=True):
        assert result.shape == (len(texts), 8)
        for row, text in zip(result, texts, strict=True):
            np.testing.assert_array_equal(row, vector(text, "passage"))


async def test_a_shared_call_takes_at_most_batch_size_texts() -> None:
    provider = HeldProvider()
    embedder = Embedder(provider, batch_size=3)
    tasks = await _while_the_first_call_is_held(
        provider, embedder, ["b1", "b2"], ["c1", "c2"], ["d"], ["e1", "e2", "e3", "e4"]
    )
    await asyncio.gather(*tasks)
    assert [texts for texts, _ in provider.calls] == [
        ["first"],
        ["b1", "b2"],
        ["c1", "c2", "d"],
        ["e1", "e2", "e3"],  # a request larger than a batch goes alone, in two calls
        ["e4"],
    ]


async def test_queries_and_passages_do_not_share_a_call() -> None:
    provider = HeldProvider()
    embedder = Embedder(provider)
    first = asyncio.create_task(embedder.embed(["first"], "passage"))
    await provider.started.wait()
    query = asyncio.create_task(embedder.embed_query("q"))
    passage = asyncio.create_task(embedder.embed_passages(["p"]))
    await asyncio.sleep(0)
    provider.release.set()
    await asyncio.gather(first, query, passage)
    assert sorted(provider.calls[1:]) == [(["p"], "passage"), (["q"], "query")]
    np.testing.assert_array_equal(query.result(), vector("q", "query"))


async def test_a_refused_text_fails_only_its_own_caller() -> None:
    provider = HeldProvider()
    embedder = Embedder(provider)
    refused, fine = await _while_the_first_call_is_held(
        provider, embedder, ["refused text"], ["fine text"]
    )
    with pytest.raises(ProviderRejected):
        await refused
    np.testing.assert_array_equal((await fine)[0], vector("fine text", "passage"))
    # The shared call was refused; each caller's texts went again alone.
    assert [texts for texts, _ in provider.calls][1:] == [
        ["refused text", "fine text"],
        ["refused text"],
        ["fine text"],
    ]


async def test_an_unavailable_provider_fails_every_caller_of_the_call_once() -> None:
    provider = HeldProvider()
    embedder = Embedder(provider)
    first = asyncio.create_task(embedder.embed(["first"], "passage"))
    await provider.started.wait()
    provider.unavailable = True
    waiting = [asyncio.create_task(embedder.embed([text], "passage")) for text in ("b", "c")]
    await asyncio.sleep(0)
    provider.release.set()
    for task in [first, *waiting]:
        with pytest.raises(ProviderUnavailable):
            await task
    assert [texts for texts, _ in provider.calls] == [["first"], ["b", "c"]]  # no retries
    provider.unavailable = False
    np.testing.assert_array_equal(
        (await embedder.embed(["b"], "passage"))[0], vector("b", "passage")
    )


async def test_a_cancelled_caller_stops_waiting_and_the_others_are_served() -> None:
    provider = HeldProvider()
    embedder = Embedder(provider)
    first = asyncio.create_task(embedder.embed(["first"], "passage"))
    await provider.started.wait()
    gone = asyncio.create_task(embedder.embed(["gone"], "passage"))
    kept = asyncio.create_task(embedder.embed(["kept"], "passage"))
    await asyncio.sleep(0)
    gone.cancel()
    provider.release.set()
    await first
    np.testing.assert_array_equal((await kept)[0], vector("kept", "passage"))
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert provider.sent == ["first", "kept"]  # the cancelled caller's text was not sent
