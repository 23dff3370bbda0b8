"""The OpenAI-compatible providers through the real SDK against the fake server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import orjson
import pytest

from tests.fakes.openai_server import ChatReply, EmbeddingsReply, ErrorReply, FakeOpenAI
from veche.kernel.ai.breaker import CircuitBreaker, CircuitOpen
from veche.kernel.ai.embeddings.openai import OpenAIEmbeddingProvider
from veche.kernel.ai.errors import AIError, ProviderRejected, ProviderTimeout, ProviderUnavailable
from veche.kernel.ai.providers.openai import OpenAIChatProvider
from veche.kernel.ai.types import (
    ChatRequest,
    Completion,
    Message,
    StreamEvent,
    TextDelta,
    Tool,
    ToolCall,
)

API_KEY = "sk-test-secret-0123456789"
FAST_RETRY = {"retry-after-ms": "10"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def chat_request(*messages: Message, **overrides: object) -> ChatRequest:
    values: dict[str, object] = {
        "messages": messages or (Message.user("Say hi"),),
        "model": "fake-model",
        "temperature": 0.0,
        "max_tokens": 64,
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return ChatRequest(**values)  # type: ignore[arg-type]


WEATHER = Tool(
    name="get_weather",
    description="The weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
async def make_provider(
    fake_openai: FakeOpenAI,
) -> AsyncIterator[Callable[..., OpenAIChatProvider]]:
    made: list[OpenAIChatProvider] = []

    def make(**options: object) -> OpenAIChatProvider:
        values: dict[str, object] = {
            "base_url": fake_openai.base_url,
            "api_key": API_KEY,
            "max_retries": 3,
            "timeout_seconds": 5.0,
        }
        values.update(options)
        provider = OpenAIChatProvider(**values)  # type: ignore[arg-type]
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def collect(
    provider: OpenAIChatProvider, request: ChatRequest, into: list[StreamEvent] | None = None
) -> list[StreamEvent]:
    events = [] if into is None else into
    async for event in provider.stream(request):
        events.append(event)
    return events


async def test_plain_completion(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_text("Hello there", usage=(12, 3))
    provider = make_provider()

    completion = await provider.complete(
        chat_request(
            Message.system("Be brief"), Message.user("Say hi"), temperature=0.2, max_tokens=20
        )
    )

    assert completion == Completion(
        content="Hello there", model="fake-model", finish_reason="stop", usage=completion.usage
    )
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 3)
    [sent] = fake_openai.requests_to("/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say hi"},
    ]
    assert (sent.body["temperature"], sent.body["max_tokens"]) == (0.2, 20)
    assert "stream" not in sent.body


async def test_missing_usage_counts_zero(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_text("fine", usage=None)
    completion = await make_provider().complete(chat_request())
    assert completion.usage.total_tokens == 0


async def test_cached_prompt_tokens_are_read_from_the_usage(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_text("fine", usage=(40, 2), cached_tokens=32)
    fake_openai.reply_text("fine", usage=(40, 2))
    provider = make_provider()
    cached = await provider.complete(chat_request())
    assert (cached.usage.prompt_tokens, cached.usage.cached_tokens) == (40, 32)
    assert (await provider.complete(chat_request())).usage.cached_tokens == 0


async def test_streaming_text_ends_with_a_completion(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_text("The quick brown fox jumps", usage=(9, 5))

    events = await collect(make_provider(), chat_request())

    *deltas, last = events
    assert len(deltas) > 1
    assert all(isinstance(delta, TextDelta) for delta in deltas)
    assert "".join(delta.text for delta in deltas if isinstance(delta, TextDelta)) == (
        "The quick brown fox jumps"
    )
    assert isinstance(last, Completion)
    assert last.content == "The quick brown fox jumps"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (9, 5)
    [sent] = fake_openai.requests_to("/chat/completions")
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}


async def test_tool_calls_round_trip(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_tool_call("get_weather", {"city": "Paris"})
    provider = make_provider()
    question = Message.user("Weather in Paris?")

    completion = await provider.complete(
        chat_request(question, tools=(WEATHER,), tool_choice="get_weather")
    )

    [call] = completion.tool_calls
    assert (call.name, call.parsed_arguments()) == ("get_weather", {"city": "Paris"})
    assert completion.finish_reason == "tool_calls"
    [sent] = fake_openai.requests_to("/chat/completions")
    assert sent.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert sent.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}

    # The tool's result goes back with the assistant's call, as the protocol wants.
    fake_openai.reply_text("Sunny in Paris")
    follow_up = chat_request(
        question,
        completion.as_message(),
        Message.tool(call.id, '{"sky": "clear"}'),
        tools=(WEATHER,),
        tool_choice="auto",
    )
    assert (await provider.complete(follow_up)).content == "Sunny in Paris"
    sent = fake_openai.requests_to("/chat/completions")[-1]
    assert sent.body["tool_choice"] == "auto"
    assert sent.body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": call.arguments},
            }
        ],
    }
    assert sent.body["messages"][2] == {
        "role": "tool",
        "content": '{"sky": "clear"}',
        "tool_call_id": call.id,
    }


async def test_streamed_tool_call_arguments_are_assembled(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    arguments = {"city": "Reykjavik", "units": "metric", "days": 3}
    fake_openai.reply_tool_call("get_weather", arguments)

    events = await collect(make_provider(), chat_request(tools=(WEATHER,), tool_choice="required"))

    last = events[-1]
    assert isinstance(last, Completion)
    [call] = last.tool_calls
    assert isinstance(call, ToolCall)
    assert call.name == "get_weather"
    assert call.id
    assert call.parsed_arguments() == arguments
    assert last.finish_reason == "tool_calls"
    assert fake_openai.requests_to("/chat/completions")[0].body["tool_choice"] == "required"


async def test_response_schema_is_sent_as_response_format(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    fake_openai.reply_json({"title": "Veche"})

    completion = await make_provider().complete(
        chat_request(response_schema=schema, schema_name="headline")
    )

    assert orjson.loads(completion.content or "") == {"title": "Veche"}
    [sent] = fake_openai.requests_to("/chat/completions")
    assert sent.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "headline", "schema": schema, "strict": False},
    }


async def test_invalid_json_content_is_passed_on_for_repair(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_text('{"title": "unfinished')
    completion = await make_provider().complete(chat_request(response_schema={"type": "object"}))
    assert completion.content == '{"title": "unfinished'


async def test_rate_limit_with_retry_after_is_retried(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_error(429, headers={"Retry-After": "1"})
    fake_openai.reply_text("after the wait")
    started = time.monotonic()

    completion = await make_provider().complete(chat_request())

    assert completion.content == "after the wait"
    assert len(fake_openai.requests_to("/chat/completions")) == 2
    assert time.monotonic() - started >= 0.9


async def test_server_errors_are_retried_until_success(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_error(500, headers=FAST_RETRY, times=3)
    fake_openai.reply_text("finally")
    provider = make_provider()

    assert (await provider.complete(chat_request())).content == "finally"
    assert len(fake_openai.requests_to("/chat/completions")) == 4
    assert provider.health().state == "ok"


async def test_retries_running_out_is_unavailable_with_retry_after(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_error(429, headers={"retry-after-ms": "10", "Retry-After": "7"}, times=2)

    with pytest.raises(ProviderUnavailable) as caught:
        await make_provider(max_retries=1).complete(chat_request())

    assert caught.value.headers == {"Retry-After": "1"}
    assert len(fake_openai.requests_to("/chat/completions")) == 2


async def test_open_breaker_fails_fast_then_half_open_trial_closes_it(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, reset_seconds=30, clock=clock)
    provider = make_provider(max_retries=0, breaker=breaker)
    fake_openai.reply_error(503, times=2)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await provider.complete(chat_request())
    assert provider.health().state == "down"

    with pytest.raises(CircuitOpen) as caught:
        await provider.complete(chat_request())
    with pytest.raises(CircuitOpen):
        await collect(provider, chat_request())
    assert caught.value.headers == {"Retry-After": "30"}
    assert len(fake_openai.requests_to("/chat/completions")) == 2

    clock.now += 30
    assert provider.health().state == "degraded"
    fake_openai.reply_text("back")
    assert (await provider.complete(chat_request())).content == "back"
    assert breaker.state == "closed"
    assert provider.health().state == "ok"


async def test_a_failed_half_open_trial_opens_again(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_seconds=5, clock=clock)
    provider = make_provider(max_retries=0, breaker=breaker)
    fake_openai.reply_error(500, times=2)
    with pytest.raises(ProviderUnavailable):
        await provider.complete(chat_request())
    clock.now += 5

    with pytest.raises(ProviderUnavailable):
        await collect(provider, chat_request())

    assert breaker.state == "open"
    assert len(fake_openai.requests_to("/chat/completions")) == 2


async def test_timeout(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("chat", ChatReply(content="too late", delay=2.0))
    provider = make_provider(max_retries=0)

    with pytest.raises(ProviderTimeout):
        await provider.complete(chat_request(timeout_seconds=0.3))
    assert provider.breaker.consecutive_failures == 1


async def test_bad_request_is_rejected_without_retry_or_breaker(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    provider = make_provider(breaker=breaker)
    fake_openai.reply_error(400)

    with pytest.raises(ProviderRejected) as caught:
        await provider.complete(chat_request())

    assert "400" in str(caught.value.detail)
    assert len(fake_openai.requests_to("/chat/completions")) == 1
    assert breaker.state == "closed"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500])
async def test_error_details_never_leak_the_key_or_url(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI, status: int
) -> None:
    fake_openai.script(
        "chat", ErrorReply(status=status, message=f"bad key {API_KEY}", headers=FAST_RETRY)
    )
    with pytest.raises(AIError) as caught:
        await make_provider(max_retries=0).complete(chat_request())
    text = f"{caught.value.detail} {caught.value.headers} {caught.value.extra} {caught.value}"
    assert API_KEY not in text
    assert fake_openai.base_url not in text
    assert "127.0.0.1" not in text


async def test_unreachable_server_is_unavailable() -> None:
    provider = OpenAIChatProvider(base_url="http://127.0.0.1:9/v1", api_key=API_KEY, max_retries=0)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.complete(chat_request())
        assert "127.0.0.1" not in str(caught.value.detail)
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    "body",
    [b"this is not json", b'{"object": "chat.completion"}', b'{"choices": []}', b"[1, 2]"],
)
async def test_malformed_replies_are_a_clear_error(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI, body: bytes
) -> None:
    fake_openai.reply_raw(body)
    provider = make_provider(max_retries=0)
    with pytest.raises(AIError, match=r"could not be read|not a chat completion"):
        await provider.complete(chat_request())
    assert provider.breaker.consecutive_failures == 1


async def test_a_stream_dropped_midway_is_unavailable(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("chat", ChatReply(content="a long answer that never ends", drop_after=3))
    provider = make_provider(max_retries=0)
    received: list[StreamEvent] = []

    with pytest.raises(ProviderUnavailable, match="broke off"):
        await collect(provider, chat_request(), into=received)

    assert received
    assert all(isinstance(event, TextDelta) for event in received)
    assert provider.breaker.consecutive_failures == 1


async def test_a_stream_failing_before_the_first_chunk_is_retried(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_error(502, headers=FAST_RETRY)
    fake_openai.reply_text("streamed")
    events = await collect(make_provider(), chat_request())
    assert isinstance(events[-1], Completion)
    assert events[-1].content == "streamed"
    assert len(fake_openai.requests_to("/chat/completions")) == 2


def test_problems_without_network() -> None:
    assert OpenAIChatProvider(api_key=API_KEY).problems() == []
    assert "VECHE_LLM_API_KEY is missing" in OpenAIChatProvider().problems()[0]
    assert OpenAIChatProvider(base_url="http://localhost:11434/v1").problems() == []
    assert OpenAIChatProvider(base_url="localhost:11434").problems() == [
        "VECHE_LLM_BASE_URL is not an http(s) URL"
    ]


async def test_local_servers_get_a_placeholder_key(
    make_provider: Callable[..., OpenAIChatProvider], fake_openai: FakeOpenAI
) -> None:
    await make_provider(api_key=None).complete(chat_request())
    [sent] = fake_openai.requests_to("/chat/completions")
    assert sent.headers["authorization"] == "Bearer not-needed"


# Embeddings --------------------------------------------------------------------------


@pytest.fixture
async def embedder(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAIEmbeddingProvider]:
    provider = OpenAIEmbeddingProvider(
        model="fake-embedder", base_url=fake_openai.base_url, api_key=API_KEY, max_retries=1
    )
    yield provider
    await provider.aclose()


async def test_embeddings_are_normalised_and_in_order(
    embedder: OpenAIEmbeddingProvider, fake_openai: FakeOpenAI
) -> None:
    texts = ["first text", "second text", "third text"]
    fake_openai.script("embeddings", EmbeddingsReply(reverse_order=True))

    vectors = await embedder.embed(texts, "passage")

    assert vectors.dtype == np.float32
    assert vectors.shape == (3, fake_openai.embedding_dimensions)
    assert embedder.dimensions == fake_openai.embedding_dimensions
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    for row, text in zip(vectors, texts, strict=True):
        expected = np.asarray(fake_openai.vector_for(text), dtype=np.float32)
        np.testing.assert_allclose(row, expected / np.linalg.norm(expected), rtol=1e-5)
    [sent] = fake_openai.requests_to("/embeddings")
    assert sent.body == {"model": "fake-embedder", "input": texts, "encoding_format": "float"}


async def test_embedding_width_mismatch_is_rejected(fake_openai: FakeOpenAI) -> None:
    provider = OpenAIEmbeddingProvider(model="m", base_url=fake_openai.base_url, dimensions=384)
    try:
        with pytest.raises(ProviderRejected, match="16 dimensions, expected 384"):
            await provider.embed(["text"], "query")
    finally:
        await provider.aclose()


async def test_embeddings_retry_and_map_errors(
    embedder: OpenAIEmbeddingProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_error(500, headers=FAST_RETRY, endpoint="embeddings")
    assert (await embedder.embed(["one"], "query")).shape == (1, 16)
    fake_openai.reply_error(404, endpoint="embeddings")
    with pytest.raises(ProviderRejected):
        await embedder.embed(["one"], "query")
    fake_openai.script("embeddings", EmbeddingsReply(vectors=((1.0, 0.0),)))
    with pytest.raises(AIError, match="1 embeddings for 2 texts"):
        await embedder.embed(["one", "two"], "query")


async def test_no_texts_no_request(
    embedder: OpenAIEmbeddingProvider, fake_openai: FakeOpenAI
) -> None:
    assert (await embedder.embed([], "query")).shape[0] == 0
    assert fake_openai.requests_to("/embeddings") == []


def test_embedding_problems_without_network() -> None:
    assert OpenAIEmbeddingProvider(api_key=API_KEY).problems() == []
    assert OpenAIEmbeddingProvider(api_key=API_KEY).model == "text-embedding-3-small"
    assert OpenAIEmbeddingProvider(base_url="http://localhost:11434/v1").problems() == [
        "VECHE_EMBEDDINGS_MODEL is missing (servers other than OpenAI have no default)"
    ]
