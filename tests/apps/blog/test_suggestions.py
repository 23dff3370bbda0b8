"""AI suggestions through events, against the fake OpenAI-compatible server: publishing a
post leads to a stored suggestion for a reader who liked a similar post and a push on their
`user:<id>` channel; never to the author, a reader who blocked them, read it already or
turned suggestions off; dismissing; and publishing that succeeds while the model is down,
the consumer retrying and then dead-lettering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.apps.blog.conftest import BLOG_LIMITS, PREFIX, Caller, create_blog, create_post, sign_up
from tests.conftest import client_for
from tests.fakes.openai_server import EmbeddingsReply, FakeOpenAI
from tests.helpers import assert_problem
from veche.apps.blog import module as blog_module
from veche.kernel.ai.vectors import VectorFilter
from veche.kernel.events import DeadLetter
from veche.kernel.realtime import Position
from veche.settings import Settings

SUGGESTIONS = f"{PREFIX}/suggestions"
REASON = "You'll like this post because you liked a post about lighthouses."
DIMENSIONS = 16
LIGHT = tuple([1.0] + [0.0] * (DIMENSIONS - 1))
NEAR_LIGHT = tuple([0.95, 0.2] + [0.0] * (DIMENSIONS - 2))
FAR = tuple([0.0] * (DIMENSIONS - 1) + [1.0])


@pytest.fixture
def ai_settings(settings_factory: Callable[..., Settings], fake_openai: FakeOpenAI) -> Settings:
    return settings_factory(
        rate_limits=BLOG_LIMITS,
        llm_provider="openai",
        llm_base_url=fake_openai.base_url,
        llm_model="fake-model",
        embeddings_provider="openai",
        embeddings_base_url=fake_openai.base_url,
        embeddings_model="fake-embedder",
        ai={"embedding_dimensions": DIMENSIONS, "max_retries": 0, "timeout_seconds": 5},
        events={"max_attempts": 3, "retry_base_seconds": 0.05, "retry_max_seconds": 0.1},
        blog={"suggestion_min_score": 0.5},
    )


@pytest.fixture
async def ai_app(app_factory: Callable[..., Any], ai_settings: Settings) -> FastAPI:
    app: FastAPI = await app_factory(ai_settings, [blog_module])
    # Vectors live in a file of their own, not in the emptied tables.
    store = await app.state.kernel.ai.vectors()
    await store.delete(VectorFilter(app="blog"))
    return app


@pytest.fixture
async def http(ai_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(ai_app) as client:
        yield client


def embeddings(fake_openai: FakeOpenAI, *vectors: tuple[float, ...]) -> None:
    """What the next embedding calls answer, one post each, in publishing order."""
    fake_openai.script("embeddings", *[EmbeddingsReply(vectors=(vector,)) for vector in vectors])


async def suggestions_of(
    http: httpx.AsyncClient, caller: Caller, *, at_least: int = 1, wait: float = 5.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + wait
    while True:
        response = await http.get(SUGGESTIONS, headers=caller.headers)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        if len(items) >= at_least or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.05)


async def pushed(app: FastAPI, user_id: str, event: str) -> list[dict[str, Any]]:
    backend = app.state.kernel.realtime.backend
    channel = f"user:{user_id}"
    top = await backend.read(channel, None)
    history = await backend.read(channel, Position(top.epoch, 0))
    return [message.data for message in history.messages if message.event == event]


async def processed(app: FastAPI, fake_openai: FakeOpenAI, embedding_calls: int) -> None:
    """Wait until the recommender has embedded that many posts."""
    deadline = time.monotonic() + 5
    while len(fake_openai.requests_to("/embeddings")) < embedding_calls:
        assert time.monotonic() < deadline, "the recommender did not run"
        await asyncio.sleep(0.02)


async def test_publishing_suggests_the_post_to_a_reader_and_pushes_it(
    http: httpx.AsyncClient, ai_app: FastAPI, fake_openai: FakeOpenAI, ann: Caller, bob: Caller
) -> None:
    embeddings(fake_openai, LIGHT, NEAR_LIGHT)
    fake_openai.reply_text(REASON)
    await create_blog(http, ann)
    first = await create_post(http, ann, title="Keeping the lamp", state="published")
    await processed(ai_app, fake_openai, 1)
    assert (await http.put(f"{PREFIX}/posts/{first['id']}/like", headers=bob.headers)).is_success

    second = await create_post(http, ann, title="Fresnel lenses", state="published")
    [suggestion] = await suggestions_of(http, bob)
    assert suggestion["post"]["id"] == second["id"]
    assert suggestion["reason"] == REASON
    assert suggestion["blog_slug"] == "lighthouse"
    assert suggestion["score"] > 0.5
    # The model was asked once, with the posts' titles as data in the user message.
    [asked] = fake_openai.requests_to("/chat/completions")
    system, user = asked.body["messages"]
    assert system["role"] == "system"
    assert "Fresnel" not in system["content"]
    assert "Fresnel lenses" in user["content"]
    assert "Keeping the lamp" in user["content"]
    assert "liked" in user["content"]

    # Pushed on Bob's channel, as a suggestion and as a notification.
    [frame] = await pushed(ai_app, bob.user_id, "blog.suggestion")
    assert (frame["id"], frame["post_id"], frame["reason"]) == (
        suggestion["id"],
        second["id"],
        REASON,
    )
    deadline = time.monotonic() + 2
    while not await pushed(ai_app, bob.user_id, "blog.notification"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    # Mixed into Bob's feed (he follows nobody), marked as such.
    items = (await http.get(f"{PREFIX}/feed", headers=bob.headers)).json()["items"]
    assert [(item["id"], item["suggested"]) for item in items] == [(second["id"], True)]
    assert items[0]["suggestion"]["reason"] == REASON
    # Never to the author.
    assert await suggestions_of(http, ann, wait=0) == []
    assert await pushed(ai_app, ann.user_id, "blog.suggestion") == []


async def test_never_to_those_who_blocked_read_opted_out_or_follow(
    http: httpx.AsyncClient, ai_app: FastAPI, fake_openai: FakeOpenAI, ann: Caller, bob: Caller
) -> None:
    carol = await sign_up(http, "carol@example.com", "Carol")  # blocked Ann
    dave = await sign_up(http, "dave@example.com", "Dave")  # turned suggestions off
    erin = await sign_up(http, "erin@example.com", "Erin")  # follows Ann
    frank = await sign_up(http, "frank@example.com", "Frank")  # liked an unrelated post
    embeddings(fake_openai, LIGHT, FAR, NEAR_LIGHT)
    fake_openai.reply_text(REASON)
    await create_blog(http, ann)
    similar = await create_post(http, ann, title="Keeping the lamp", state="published")
    unrelated = await create_post(http, ann, title="Tax forms", state="published")
    await processed(ai_app, fake_openai, 2)
    for caller in (bob, carol, dave, erin):
        await http.put(f"{PREFIX}/posts/{similar['id']}/like", headers=caller.headers)
    await http.put(f"{PREFIX}/posts/{unrelated['id']}/like", headers=frank.headers)
    blocked = await http.put(f"{PREFIX}/users/{ann.user_id}/block", headers=carol.headers)
    assert blocked.is_success, blocked.text
    off = await http.patch(
        f"{PREFIX}/users/me", json={"suggestions_enabled": False}, headers=dave.headers
    )
    assert off.status_code == 200
    await http.put(f"{PREFIX}/users/{ann.user_id}/follow", headers=erin.headers)

    new = await create_post(http, ann, title="Fresnel lenses", state="published")
    [for_bob] = await suggestions_of(http, bob)
    assert for_bob["post"]["id"] == new["id"]
    for caller in (carol, dave, erin, frank):
        assert await suggestions_of(http, caller, wait=0) == []
    # Dave turned them on again: still nothing was made for him while they were off.
    await http.patch(f"{PREFIX}/users/me", json={"suggestions_enabled": True}, headers=dave.headers)
    assert await suggestions_of(http, dave, wait=0) == []


async def test_dismissing_and_turning_off(
    http: httpx.AsyncClient, ai_app: FastAPI, fake_openai: FakeOpenAI, ann: Caller, bob: Caller
) -> None:
    carol = await sign_up(http, "carol@example.com", "Carol")
    embeddings(fake_openai, LIGHT, NEAR_LIGHT)
    fake_openai.reply_text(REASON)
    await create_blog(http, ann)
    first = await create_post(http, ann, title="Keeping the lamp", state="published")
    await processed(ai_app, fake_openai, 1)
    for caller in (bob, carol):
        await http.put(f"{PREFIX}/posts/{first['id']}/like", headers=caller.headers)
    await create_post(http, ann, title="Fresnel lenses", state="published")
    [bobs] = await suggestions_of(http, bob)
    [carols] = await suggestions_of(http, carol)

    # Someone else's suggestion is exactly a missing one.
    assert_problem(
        await http.delete(f"{SUGGESTIONS}/{carols['id']}", headers=bob.headers),
        404,
        "blog.suggestion_not_found",
    )
    assert_problem(
        await http.delete(f"{SUGGESTIONS}/{uuid4()}", headers=bob.headers),
        404,
        "blog.suggestion_not_found",
    )
    for _ in range(2):  # dismissing again is fine
        response = await http.delete(f"{SUGGESTIONS}/{bobs['id']}", headers=bob.headers)
        assert response.status_code == 204
    assert await suggestions_of(http, bob, wait=0) == []
    feed = (await http.get(f"{PREFIX}/feed", headers=bob.headers)).json()["items"]
    assert feed == []
    assert [item["id"] for item in await suggestions_of(http, carol)] == [carols["id"]]

    # Turned off: none shown, in the list or the feed.
    await http.patch(
        f"{PREFIX}/users/me", json={"suggestions_enabled": False}, headers=carol.headers
    )
    assert await suggestions_of(http, carol, wait=0) == []
    deadline = time.monotonic() + 1
    while (await http.get(f"{PREFIX}/feed", headers=carol.headers)).json()["items"]:
        assert time.monotonic() < deadline, "the feed still shows suggestions"
        await asyncio.sleep(0.02)


async def test_publishing_succeeds_while_the_model_is_down(
    http: httpx.AsyncClient, ai_app: FastAPI, fake_openai: FakeOpenAI, ann: Caller, bob: Caller
) -> None:
    embeddings(fake_openai, LIGHT, NEAR_LIGHT, NEAR_LIGHT, NEAR_LIGHT, NEAR_LIGHT)
    await create_blog(http, ann)
    first = await create_post(http, ann, title="Keeping the lamp", state="published")
    await processed(ai_app, fake_openai, 1)
    await http.put(f"{PREFIX}/posts/{first['id']}/like", headers=bob.headers)
    fake_openai.reply_error(503, times=20)

    started = time.monotonic()
    second = await create_post(http, ann, title="Fresnel lenses", state="published")
    assert time.monotonic() - started < 2
    assert second["state"] == "published"
    assert (await http.get(f"{PREFIX}/posts/{second['id']}")).json()["state"] == "published"

    kernel = ai_app.state.kernel
    deadline = time.monotonic() + 10
    letter: DeadLetter | None = None
    while letter is None:
        assert time.monotonic() < deadline, "the recommender never dead-lettered the event"
        await asyncio.sleep(0.05)
        async with kernel.db.unit_of_work() as session:
            letter = await session.scalar(
                select(DeadLetter).where(DeadLetter.consumer == "blog-recommender")
            )
    assert letter.attempts == 3
    assert letter.event_type == "blog.post.published"
    assert letter.event["data"]["post_id"] == second["id"]
    # Each attempt asked the model again; none stored anything.
    assert len(fake_openai.requests_to("/chat/completions")) >= 3
    assert await suggestions_of(http, bob, wait=0) == []
    # The other consumers were not held back: the post is in its followers' feeds as usual.
    await http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=bob.headers)
    await asyncio.sleep(0.1)
    titles = [
        i["title"] for i in (await http.get(f"{PREFIX}/feed", headers=bob.headers)).json()["items"]
    ]
    assert titles == ["Fresnel lenses", "Keeping the lamp"]


async def test_suggestion_refusals(http: httpx.AsyncClient, ann: Caller) -> None:
    assert_problem(await http.get(SUGGESTIONS), 401, "unauthorized")
    assert_problem(await http.delete(f"{SUGGESTIONS}/{uuid4()}"), 401, "unauthorized")
    assert_problem(
        await http.delete(f"{SUGGESTIONS}/not-an-id", headers=ann.headers), 422, "validation_failed"
    )
    assert_problem(
        await http.get(SUGGESTIONS, params={"limit": 1000}, headers=ann.headers),
        422,
        "validation_failed",
    )
    assert_problem(
        await http.get(SUGGESTIONS, params={"cursor": "zzz"}, headers=ann.headers),
        400,
        "pagination.invalid_cursor",
    )
