"""The in-process embedding models, run for real, and the measurement that picks the default.

`bilingual_retrieval.yaml` holds 38 queries (16 Russian, 16 English, 6 German), each with one
relevant passage among a shared pool of 73. Both models are scored on it (recall@1 and MRR
per language; the figures are printed); the default must stay above the floors below, set a
little under what it measured, so a regression fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from veche.kernel.ai.embeddings import local
from veche.kernel.ai.embeddings.base import EmbeddingProvider
from veche.kernel.ai.embeddings.embedder import Embedder
from veche.kernel.ai.embeddings.local import (
    DEFAULT_LOCAL_EMBEDDING_MODEL,
    E5_MODEL,
    LOCAL_EMBEDDING_MODELS,
    MINILM_MODEL,
    E5EmbeddingProvider,
    MiniLMEmbeddingProvider,
    local_embedding_provider,
)
from veche.kernel.ai.errors import ModelNotInstalled

DATA = Path(__file__).parent / "data" / "bilingual_retrieval.yaml"

# multilingual-e5-small measured (recall@1 / MRR): ru 0.875 / 0.927 (2 misses of 16), en
# 0.938 / 0.953 (1 miss), de 0.833 / 0.917; all-MiniLM-L6-v2: ru 0.062 / 0.143, en 0.938 /
# 0.969, de 0.000 / 0.356. The floors allow one more miss per language, not two.
FLOORS = {"ru": {"recall_at_1": 0.81, "mrr": 0.88}, "en": {"recall_at_1": 0.87, "mrr": 0.90}}


@dataclass(frozen=True, slots=True)
class Scores:
    queries: int
    recall_at_1: float
    mrr: float


def load_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    return data


def load_set() -> tuple[list[str], list[str], list[dict[str, str]]]:
    data = load_data()
    ids = [passage["id"] for passage in data["passages"]]
    texts = [passage["text"] for passage in data["passages"]]
    return ids, texts, data["queries"]


async def retrieval_scores(provider: EmbeddingProvider) -> dict[str, Scores]:
    """Recall@1 and MRR per query language, ranking the whole pool by cosine."""
    ids, texts, queries = load_set()
    embedder = Embedder(provider, cache_size=0)
    passages = await embedder.embed_passages(texts)
    asked = await embedder.embed([query["text"] for query in queries], "query")
    similarities = asked @ passages.T
    ranks: dict[str, list[int]] = {}
    for row, query in enumerate(queries):
        relevant = similarities[row, ids.index(query["relevant"])]
        rank = 1 + int((similarities[row] > relevant).sum())
        ranks.setdefault(query["lang"], []).append(rank)
    return {
        lang: Scores(
            queries=len(found),
            recall_at_1=round(float(np.mean([rank == 1 for rank in found])), 3),
            mrr=round(float(np.mean([1 / rank for rank in found])), 3),
        )
        for lang, found in ranks.items()
    }


@pytest.fixture(scope="module")
async def providers() -> AsyncIterator[dict[str, EmbeddingProvider]]:
    built = {name: local_embedding_provider(name) for name in LOCAL_EMBEDDING_MODELS}
    missing = [problem for provider in built.values() for problem in provider.problems()]
    if missing:
        pytest.skip("; ".join(missing))
    yield built
    for provider in built.values():
        await provider.aclose()


@pytest.fixture(scope="module")
async def scores(providers: dict[str, EmbeddingProvider]) -> dict[str, dict[str, Scores]]:
    return {name: await retrieval_scores(provider) for name, provider in providers.items()}


# -- the registry and the install check, without loading a model ---------------------------


def test_registry_maps_names_and_defaults_to_e5() -> None:
    assert DEFAULT_LOCAL_EMBEDDING_MODEL == E5_MODEL
    assert isinstance(local_embedding_provider(None), E5EmbeddingProvider)
    assert isinstance(local_embedding_provider("all-MiniLM-L6-v2"), MiniLMEmbeddingProvider)
    assert isinstance(
        local_embedding_provider("intfloat/multilingual-e5-small"), E5EmbeddingProvider
    )
    provider = local_embedding_provider(MINILM_MODEL, threads=2)
    assert (provider.name, provider.model, provider.dimensions) == ("local", MINILM_MODEL, 384)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"known: all-minilm-l6-v2, multilingual-e5-small"):
        local_embedding_provider("bge-m3")


@pytest.mark.parametrize("model", LOCAL_EMBEDDING_MODELS)
async def test_missing_package_is_reported_with_an_install_hint(
    model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "_package_dir", lambda name: None)
    provider = local_embedding_provider(model)
    problems = provider.problems()
    assert problems
    assert all("pip install" in problem for problem in problems)
    with pytest.raises(ModelNotInstalled, match="pip install"):
        await provider.embed(["hello"], "query")
    await provider.aclose()


def test_installed_models_have_no_problems() -> None:
    for model in LOCAL_EMBEDDING_MODELS:
        assert local_embedding_provider(model).problems() == []


# -- the models themselves ------------------------------------------------------------------


@pytest.mark.local_model
async def test_figures_for_both_models(
    scores: dict[str, dict[str, Scores]], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["", "| model | language | queries | recall@1 | MRR |", "|---|---|---|---|---|"]
    for model, by_language in scores.items():
        for lang, found in sorted(by_language.items()):
            lines.append(
                f"| {model} | {lang} | {found.queries} | {found.recall_at_1:.3f} "
                f"| {found.mrr:.3f} |"
            )
    with capsys.disabled():
        print("\n".join(lines))
    assert set(scores) == set(LOCAL_EMBEDDING_MODELS)


@pytest.mark.local_model
@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_default_reaches_its_floor(scores: dict[str, dict[str, Scores]], lang: str) -> None:
    found = scores[DEFAULT_LOCAL_EMBEDDING_MODEL][lang]
    assert found.recall_at_1 >= FLOORS[lang]["recall_at_1"], found
    assert found.mrr >= FLOORS[lang]["mrr"], found


@pytest.mark.local_model
async def test_default_ranks_russian_better_than_the_alternative(
    scores: dict[str, dict[str, Scores]],
) -> None:
    assert scores[E5_MODEL]["ru"].mrr > scores[MINILM_MODEL]["ru"].mrr


@pytest.mark.local_model
@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_default_ranks_related_above_unrelated(
    providers: dict[str, EmbeddingProvider], lang: str
) -> None:
    provider = providers[DEFAULT_LOCAL_EMBEDDING_MODEL]
    for query, related, unrelated in load_data()["related"][lang]:
        asked = (await provider.embed([query], "query"))[0]
        candidates = await provider.embed([related, unrelated], "passage")
        similarity = candidates @ asked
        assert similarity[0] > similarity[1], (query, similarity)


@pytest.mark.local_model
@pytest.mark.parametrize("model", LOCAL_EMBEDDING_MODELS)
async def test_shapes_norms_and_determinism(
    providers: dict[str, EmbeddingProvider], model: str
) -> None:
    provider = providers[model]
    texts = [*load_set()[1][:2], "", "hello world", "x" * 50_000]
    first = await provider.embed(texts, "passage")
    assert first.shape == (len(texts), 384)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    again = await provider.embed(texts, "passage")
    np.testing.assert_array_equal(first, again)
    assert (await provider.embed([], "query")).shape == (0, 384)


@pytest.mark.local_model
@pytest.mark.parametrize("model", LOCAL_EMBEDDING_MODELS)
async def test_a_batch_equals_one_text_at_a_time(
    providers: dict[str, EmbeddingProvider], model: str
) -> None:
    provider = providers[model]
    _, texts, _ = load_set()
    texts = texts[::6]  # different lengths, all three languages, so padding is exercised
    together = await provider.embed(texts, "query")
    alone = np.vstack([await provider.embed([text], "query") for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.local_model
async def test_e5_embeds_queries_and_passages_differently(
    providers: dict[str, EmbeddingProvider],
) -> None:
    e5, minilm = providers[E5_MODEL], providers[MINILM_MODEL]
    text = [load_data()["related"]["ru"][0][0]]
    query, passage = await e5.embed(text, "query"), await e5.embed(text, "passage")
    assert not np.allclose(query, passage, atol=1e-3)
    assert float((query @ passage.T)[0, 0]) > 0.8  # same text: different, still close
    np.testing.assert_array_equal(
        await minilm.embed(text, "query"), await minilm.embed(text, "passage")
    )


@pytest.mark.local_model
@pytest.mark.parametrize("model", LOCAL_EMBEDDING_MODELS)
async def test_long_texts_are_truncated_not_rejected(
    providers: dict[str, EmbeddingProvider], model: str
) -> None:
    provider = providers[model]
    sentence = load_data()["related"]["ru"][2][1] + " "
    long_text = sentence * 400  # ~10,000 tokens for either tokenizer
    vectors = await provider.embed([long_text], "passage")
    assert vectors.shape == (1, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors), 1.0, atol=1e-5)
    # What reached the model: the start of the text, as much as the limit allows.
    if isinstance(provider, E5EmbeddingProvider):
        engine = provider._engine
        assert engine is not None
        kept = provider._truncated(engine, long_text, is_query=False)
        assert 450 < engine.token_count(kept, False) <= 512
    else:
        assert isinstance(provider, MiniLMEmbeddingProvider)
        assert provider._tokenizer is not None
        assert len(provider._tokenizer.encode(long_text).ids) == 256


@pytest.mark.local_model
@pytest.mark.parametrize("model", LOCAL_EMBEDDING_MODELS)
async def test_the_relevance_floor_keeps_the_answer_and_drops_most_of_the_rest(
    providers: dict[str, EmbeddingProvider], model: str
) -> None:
    """English queries (both models retrieve well there): the passage that answers a query
    scores above the model's floor nearly always, the others mostly below it."""
    provider = providers[model]
    assert provider.relevance_floor is not None
    ids, texts, queries = load_set()
    english = [query for query in queries if query["lang"] == "en"]
    embedder = Embedder(provider, cache_size=0)
    passages = await embedder.embed_passages(texts)
    asked = await embedder.embed([query["text"] for query in english], "query")
    similarities = asked @ passages.T
    relevant = np.array([ids.index(query["relevant"]) for query in english])
    answers = similarities[np.arange(len(english)), relevant]
    others = similarities[np.arange(len(ids)) != relevant[:, None]]
    assert (answers >= provider.relevance_floor).mean() >= 0.8, answers
    assert (others < provider.relevance_floor).mean() >= 0.9, np.sort(others)[-10:]
