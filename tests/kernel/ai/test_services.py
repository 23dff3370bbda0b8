"""`AIServices`: misconfiguration found before any call (by `veche check` and at startup),
and vector memory per embedding model under the data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.conftest import make_settings
from veche.checks import run_checks
from veche.kernel.ai.models import AIUsage
from veche.kernel.ai.services import AIServices
from veche.kernel.ai.types import TokenUsage
from veche.kernel.ai.usage import CallRecord
from veche.kernel.ai.vectors import VectorFilter, VectorRecord
from veche.kernel.db import Database
from veche.kernel.runtime import Kernel
from veche.settings import Settings

LLM_URL = "http://llm.example.test:8080/v1"
EMBEDDINGS_URL = "http://embeddings.example.test:8080/v1"
NEEDS_ENDPOINT = (
    "the openai provider needs VECHE_LLM_BASE_URL (a compatible server) or "
    "VECHE_LLM_API_KEY (api.openai.com)"
)


@pytest.fixture
async def problems_of(
    settings_factory: Callable[..., Settings],
) -> AsyncIterator[Callable[..., list[str]]]:
    built: list[tuple[AIServices, Database]] = []

    def problems(**overrides: Any) -> list[str]:
        settings = settings_factory(**overrides)
        db = Database.from_settings(settings)
        services = AIServices(settings, db)
        built.append((services, db))
        return services.problems()

    yield problems
    for services, db in built:
        await services.aclose()
        await db.dispose()


def openai(**overrides: Any) -> dict[str, Any]:
    return {"llm_provider": "openai", "llm_base_url": LLM_URL, "llm_model": "gpt-test", **overrides}


def test_a_good_configuration_has_no_problems(problems_of: Callable[..., list[str]]) -> None:
    assert problems_of() == []
    assert problems_of(**openai()) == []
    assert problems_of(**openai(llm_base_url=None, llm_api_key="sk-live-key")) == []
    assert problems_of(ai={"profiles": {"cloud": openai_profile()}}) == []
    assert (
        problems_of(
            embeddings_provider="openai",
            embeddings_base_url=EMBEDDINGS_URL,
            embeddings_model="nomic-embed",
            ai={"embedding_dimensions": 768},
        )
        == []
    )


def openai_profile(**overrides: Any) -> dict[str, Any]:
    return {"provider": "openai", "base_url": LLM_URL, "model": "gpt-test", **overrides}


def test_openai_without_a_model(problems_of: Callable[..., list[str]]) -> None:
    assert problems_of(**openai(llm_model=None)) == [
        "VECHE_LLM_*: the openai provider needs a model (VECHE_LLM_MODEL)"
    ]


def test_openai_without_a_base_url_or_key(problems_of: Callable[..., list[str]]) -> None:
    assert problems_of(**openai(llm_base_url=None)) == [f"VECHE_LLM_*: {NEEDS_ENDPOINT}"]


def test_openai_with_a_base_url_that_is_not_http(problems_of: Callable[..., list[str]]) -> None:
    assert problems_of(**openai(llm_base_url="ftp://llm.example.test/v1")) == [
        "VECHE_LLM_BASE_URL is not an http(s) URL"
    ]


def test_a_profile_switching_to_openai_needs_its_own_endpoint(
    problems_of: Callable[..., list[str]],
) -> None:
    problems = problems_of(ai={"profiles": {"cloud": {"provider": "openai", "model": "gpt-4o"}}})

    assert problems == [f"profile 'cloud': {NEEDS_ENDPOINT}"]


def test_a_profile_with_an_invalid_purpose_name(problems_of: Callable[..., list[str]]) -> None:
    problems = problems_of(ai={"profiles": {"Bad Name": {"temperature": 0.1}}})

    assert problems == ["VECHE_AI__PROFILES: 'Bad Name' is not a purpose name"]


def test_the_local_provider_runs_only_its_own_model(
    problems_of: Callable[..., list[str]],
) -> None:
    assert problems_of(llm_model="gpt-4o") == [
        "VECHE_LLM_*: the local provider only runs 'smollm2-135m-instruct', not 'gpt-4o'"
    ]
    assert problems_of(ai={"profiles": {"fast": {"model": "tinyllama"}}}) == [
        "profile 'fast': the local provider only runs 'smollm2-135m-instruct', not 'tinyllama'"
    ]


def test_openai_embeddings_without_model_or_dimensions(
    problems_of: Callable[..., list[str]],
) -> None:
    problems = problems_of(embeddings_provider="openai", embeddings_base_url=EMBEDDINGS_URL)

    assert "the openai embeddings provider needs VECHE_EMBEDDINGS_MODEL" in problems
    assert (
        "the openai embeddings provider needs VECHE_AI__EMBEDDING_DIMENSIONS "
        "(vector memory is created with a fixed dimension)"
    ) in problems
    without_dimensions = problems_of(
        embeddings_provider="openai",
        embeddings_base_url=EMBEDDINGS_URL,
        embeddings_model="nomic-embed",
    )
    assert without_dimensions == [
        "the openai embeddings provider needs VECHE_AI__EMBEDDING_DIMENSIONS "
        "(vector memory is created with a fixed dimension)"
    ]


async def test_veche_check_reports_ai_problems(
    clean: None, settings_factory: Callable[..., Settings]
) -> None:
    assert await run_checks(settings_factory(**openai())) == []
    assert await run_checks(settings_factory(**openai(llm_model=None))) == [
        "ai: VECHE_LLM_*: the openai provider needs a model (VECHE_LLM_MODEL)"
    ]
    assert await run_checks(settings_factory(llm_model="gpt-4o")) == [
        "ai: VECHE_LLM_*: the local provider only runs 'smollm2-135m-instruct', not 'gpt-4o'"
    ]


async def test_startup_refuses_a_misconfigured_ai_setup(
    app_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(
        **openai(llm_base_url=None), ai={"profiles": {"Bad Name": {"temperature": 0.1}}}
    )

    with pytest.raises(RuntimeError, match="AI services are misconfigured") as refused:
        await app_factory(settings)

    assert "VECHE_AI__PROFILES: 'Bad Name' is not a purpose name" in str(refused.value)
    assert NEEDS_ENDPOINT in str(refused.value)


async def test_vector_memory_per_embedding_model(
    app_factory: Callable[..., Any], migrated: str, tmp_path: Path
) -> None:
    app: FastAPI = await app_factory(make_settings(tmp_path, migrated))
    kernel: Kernel = app.state.kernel

    assert kernel.ai.vector_path == tmp_path / "vectors" / "multilingual-e5-small.db"
    assert kernel.ai.collection == "veche_multilingual_e5_small"
    store = await kernel.ai.vectors()
    assert store is await kernel.ai.vectors()
    assert store.dimensions == 384
    records = [
        VectorRecord(
            id=f"doc-{axis}", vector=[1.0 if i == axis else 0.0 for i in range(384)], app="notes"
        )
        for axis in range(3)
    ]
    await store.upsert(records)
    hits = await store.search(
        [0.1, 0.9, 0.2] + [0.0] * 381, filter=VectorFilter(app="notes"), limit=2
    )
    assert [hit.id for hit in hits] == ["doc-1", "doc-2"]
    assert hits[0].score == pytest.approx(0.9 / (0.1**2 + 0.9**2 + 0.2**2) ** 0.5, rel=1e-5)
    assert await store.count(VectorFilter(app="other")) == 0
    assert kernel.ai.vector_path.is_file()


async def test_other_embedding_models_get_their_own_store(
    app_factory: Callable[..., Any], migrated: str, tmp_path: Path
) -> None:
    minilm = await app_factory(
        make_settings(tmp_path, migrated, embeddings_model="all-minilm-l6-v2")
    )
    remote = await app_factory(
        make_settings(
            tmp_path,
            migrated,
            embeddings_provider="openai",
            embeddings_base_url=EMBEDDINGS_URL,
            embeddings_model="Text-Embedding-3/Small",
            ai={"embedding_dimensions": 16},
        )
    )
    minilm_ai = minilm.state.kernel.ai
    remote_ai = remote.state.kernel.ai

    assert minilm_ai.vector_path == tmp_path / "vectors" / "all-minilm-l6-v2.db"
    assert remote_ai.vector_path == tmp_path / "vectors" / "text-embedding-3-small.db"
    assert remote_ai.collection == "veche_text_embedding_3_small"
    store = await remote_ai.vectors()
    assert store.dimensions == 16
    await store.upsert([VectorRecord(id="a", vector=[1.0] + [0.0] * 15, app="notes")])
    [hit] = await store.search([1.0] + [0.0] * 15, filter=VectorFilter(app="notes"))
    assert (hit.id, hit.app) == ("a", "notes")
    assert not minilm_ai.vector_path.exists()


def test_a_purpose_with_its_own_server_never_gets_the_default_key() -> None:
    from pydantic import SecretStr

    from veche.kernel.ai.profiles import resolve
    from veche.settings import AISettings, LLMProfile, Settings

    settings = Settings(
        llm_provider="openai",
        llm_model="gpt-test",
        llm_api_key=SecretStr("sk-default-key"),
        ai=AISettings(
            profiles={
                "elsewhere": LLMProfile(base_url="http://other.example.test/v1"),
                "same": LLMProfile(temperature=0.0),
            }
        ),
    )
    assert resolve(settings, "elsewhere").api_key is None
    assert resolve(settings, "elsewhere").base_url == "http://other.example.test/v1"
    inherited = resolve(settings, "same").api_key
    assert inherited is not None
    assert inherited.get_secret_value() == "sk-default-key"


async def test_closing_stores_the_usage_rows_still_queued(
    settings_factory: Callable[..., Settings], clean: None
) -> None:
    settings = settings_factory()
    db = Database.from_settings(settings)
    services = AIServices(settings, db)
    try:
        for n in range(3):
            services.ledger.record_soon(
                CallRecord(
                    app="blog",
                    purpose="default",
                    kind="chat",
                    provider="openai",
                    model="gpt-test",
                    user_id=None,
                    usage=TokenUsage(prompt_tokens=n + 1, completion_tokens=1),
                    latency_seconds=0.01,
                )
            )
        await services.aclose()  # before any of them was written
        async with db.unit_of_work() as session:
            stored = list(await session.scalars(select(AIUsage.prompt_tokens)))
    finally:
        await db.dispose()
    assert sorted(stored) == [1, 2, 3]
