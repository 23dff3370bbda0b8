"""The feed: posts of followed blogs and authors, newest first in keyset pages, with media,
counts and the reader's own state; the cached first page renewed by events within a
second; a bounded number of statements per page; reads remembered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from tests.apps.blog.conftest import (
    PREFIX,
    Caller,
    count_rows,
    create_blog,
    create_post,
    sign_up,
    upload,
)
from tests.helpers import assert_problem
from veche.apps.blog.models import Read

FEED = f"{PREFIX}/feed"


async def feed(http: httpx.AsyncClient, caller: Caller, **params: Any) -> httpx.Response:
    response = await http.get(FEED, params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    return response


def titles(response: httpx.Response) -> list[str]:
    return [item["title"] for item in response.json()["items"]]


async def test_posts_of_followed_blogs_and_authors_newest_first(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    carol = await sign_up(http, "carol@example.com", "Carol")
    await create_blog(http, ann)
    await create_blog(http, carol, slug="harbour")
    await create_blog(http, carol, slug="garden")
    image = await upload(http, ann)
    await create_post(http, ann, title="Lamp one", state="published", media_ids=[image["id"]])
    await create_post(http, carol, blog="harbour", title="Harbour one", state="published")
    await create_post(http, carol, blog="garden", title="Garden one", state="published")
    await create_post(http, ann, title="Lamp draft")  # drafts never appear
    assert titles(await feed(http, bob)) == []

    await http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=bob.headers)
    await http.put(f"{PREFIX}/users/{carol.user_id}/follow", headers=bob.headers)
    await create_post(http, ann, title="Lamp two", state="published")
    page = await feed(http, bob)
    assert titles(page) == ["Lamp two", "Garden one", "Harbour one", "Lamp one"]
    lamp_one = page.json()["items"][3]
    assert lamp_one["blog_slug"] == "lighthouse"
    assert [media["id"] for media in lamp_one["media"]] == [image["id"]]
    assert lamp_one["suggested"] is False
    assert lamp_one["suggestion"] is None
    assert "body_html" not in lamp_one

    # Keyset pages, bound to the reader.
    first = await feed(http, bob, limit=3)
    assert titles(first) == ["Lamp two", "Garden one", "Harbour one"]
    cursor = first.json()["next_cursor"]
    second = await feed(http, bob, limit=3, cursor=cursor)
    assert titles(second) == ["Lamp one"]
    assert second.json()["next_cursor"] is None
    assert second.headers["cache-status"] == "veche; fwd=bypass"
    assert_problem(
        await http.get(FEED, params={"limit": 3, "cursor": cursor}, headers=carol.headers),
        400,
        "pagination.invalid_cursor",
    )


async def test_counts_and_the_readers_own_state(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    carol = await sign_up(http, "carol@example.com", "Carol")
    await create_blog(http, ann)
    liked = await create_post(http, ann, title="Liked", state="published")
    commented = await create_post(http, ann, title="Commented", state="published")
    for caller in (bob, carol):
        await http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=caller.headers)
    await http.put(f"{PREFIX}/posts/{liked['id']}/like", headers=bob.headers)
    await http.put(f"{PREFIX}/posts/{liked['id']}/like", headers=carol.headers)
    response = await http.post(
        f"{PREFIX}/posts/{commented['id']}/comments",
        json={"body_html": "<p>Nice</p>"},
        headers=bob.headers,
    )
    assert response.status_code == 201

    by_title = {item["title"]: item for item in (await feed(http, bob)).json()["items"]}
    assert (by_title["Liked"]["like_count"], by_title["Liked"]["liked"]) == (2, True)
    assert by_title["Liked"]["commented"] is False
    assert (by_title["Commented"]["comment_count"], by_title["Commented"]["commented"]) == (1, True)
    assert by_title["Commented"]["liked"] is False
    carols = {item["title"]: item for item in (await feed(http, carol)).json()["items"]}
    assert (carols["Liked"]["liked"], carols["Commented"]["commented"]) == (True, False)


async def test_a_followers_cached_feed_shows_a_new_post_within_a_second(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    await create_blog(http, ann)
    await create_post(http, ann, title="Old news", state="published")
    await http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=bob.headers)
    # The follow renews Bob's cache after its commit (and its event, again, soon after).
    await asyncio.sleep(0.2)
    assert (await feed(http, bob)).headers["cache-status"] == "veche; fwd=miss"
    cached = await feed(http, bob)
    assert cached.headers["cache-status"] == "veche; hit"
    assert titles(cached) == ["Old news"]

    await create_post(http, ann, title="Breaking", state="published")
    published = time.monotonic()
    seen: list[str] = []
    while time.monotonic() - published < 1.0:
        seen = titles(await feed(http, bob))
        if "Breaking" in seen:
            break
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - published
    assert seen == ["Breaking", "Old news"], f"not in the feed after {elapsed:.2f}s"
    assert elapsed < 1.0
    # ...and it is cached again afterwards.
    assert (await feed(http, bob)).headers["cache-status"] == "veche; hit"


async def test_unpublishing_leaves_the_cached_feed(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    await create_blog(http, ann)
    post = await create_post(http, ann, title="Brief", state="published")
    await http.put(f"{PREFIX}/users/{ann.user_id}/follow", headers=bob.headers)
    await asyncio.sleep(0.2)
    assert titles(await feed(http, bob)) == ["Brief"]
    response = await http.patch(
        f"{PREFIX}/posts/{post['id']}", json={"state": "draft"}, headers=ann.headers
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 1.0
    while True:
        left = titles(await feed(http, bob))
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert left == []


@contextmanager
def counted_statements(app: FastAPI) -> Iterator[list[str]]:
    engine = app.state.kernel.db.engine.sync_engine
    statements: list[str] = []
    # The request runs in this task (httpx's ASGI transport); the relay, consumers and
    # jobs run in their own.
    request_task = asyncio.current_task()

    def count(*args: Any) -> None:
        if asyncio.current_task() is request_task:
            statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_a_page_costs_the_same_statements_whatever_its_length(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    await create_blog(http, ann)
    image = await upload(http, ann)
    await http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=bob.headers)
    await create_post(http, ann, title="One", state="published", media_ids=[image["id"]])
    await asyncio.sleep(0.2)  # the consumers are done with the events so far
    with counted_statements(blog_app) as short:
        assert len((await feed(http, bob, limit=20)).json()["items"]) == 1
    for number in range(12):
        await create_post(
            http, ann, title=f"Post {number}", state="published", media_ids=[image["id"]]
        )
    newest = (await feed(http, bob)).json()["items"][0]
    await http.put(f"{PREFIX}/posts/{newest['id']}/like", headers=bob.headers)
    await asyncio.sleep(0.2)
    with counted_statements(blog_app) as long:
        page = await feed(http, bob, limit=20)
    assert len(page.json()["items"]) == 13
    assert page.headers["cache-status"] == "veche; fwd=miss"
    assert 5 <= len(long) == len(short) <= 10, long


async def test_signed_in_readers_are_remembered_once(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    await create_blog(http, ann)
    post = await create_post(http, ann, state="published")
    draft = await create_post(http, ann, title="Draft")
    for _ in range(3):
        assert (await http.get(f"{PREFIX}/posts/{post['id']}", headers=bob.headers)).is_success
    await http.get(f"{PREFIX}/posts/{post['id']}")  # anonymous: nothing to remember
    await http.get(f"{PREFIX}/posts/{post['id']}", headers=ann.headers)  # the author
    await http.get(f"{PREFIX}/posts/{draft['id']}", headers=ann.headers)
    assert await count_rows(blog_app, Read) == 1


async def test_feed_refusals(http: httpx.AsyncClient, bob: Caller) -> None:
    assert_problem(await http.get(FEED), 401, "unauthorized")
    assert_problem(
        await http.get(FEED, headers={"Authorization": "Bearer nonsense"}),
        401,
        "auth.invalid_token",
    )
    assert_problem(
        await http.get(FEED, params={"limit": 101}, headers=bob.headers), 422, "validation_failed"
    )
    assert_problem(
        await http.get(FEED, params={"limit": 0}, headers=bob.headers), 422, "validation_failed"
    )
    assert_problem(
        await http.get(FEED, params={"cursor": "garbage"}, headers=bob.headers),
        400,
        "pagination.invalid_cursor",
    )
    assert_problem(
        await http.get(FEED, params={"cursor": "x" * 2000}, headers=bob.headers),
        422,
        "validation_failed",
    )
