"""`/me`: profile, own blogs, unread messages and notifications in one call, cached and
renewed by events (a message, a notification, a profile change)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.apps.blog.conftest import PREFIX, Caller, create_blog
from tests.helpers import assert_problem

ME = f"{PREFIX}/me"


async def me(http: httpx.AsyncClient, caller: Caller) -> httpx.Response:
    response = await http.get(ME, headers=caller.headers)
    assert response.status_code == 200, response.text
    return response


async def me_when(
    http: httpx.AsyncClient, caller: Caller, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """`/me` once the condition holds (events renew it asynchronously, within a second)."""
    started = time.monotonic()
    while True:
        body: dict[str, Any] = (await me(http, caller)).json()
        if condition(body) or time.monotonic() - started > 1.0:
            return body
        await asyncio.sleep(0.02)


async def test_everything_in_one_call(http: httpx.AsyncClient, ann: Caller, bob: Caller) -> None:
    await create_blog(http, ann)
    await create_blog(http, ann, slug="harbour")
    await create_blog(http, bob, slug="bobs")
    body = (await me(http, ann)).json()
    assert body["profile"]["id"] == ann.user_id
    assert body["profile"]["suggestions_enabled"] is True
    assert [blog["slug"] for blog in body["blogs"]] == ["harbour", "lighthouse"]
    assert body["unread_messages"] == 0
    assert body["unread_notifications"] == 0
    assert body["notifications"] == []


async def test_cached_and_renewed_by_events(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    await me(http, ann)
    cached = await me(http, ann)
    assert cached.headers["cache-status"] == "veche; hit"

    # A follower: a notification and a count, both renewed by events.
    await http.put(f"{PREFIX}/users/{ann.user_id}/follow", headers=bob.headers)
    body = await me_when(http, ann, lambda body: body["unread_notifications"] == 1)
    assert body["unread_notifications"] == 1
    assert body["notifications"][0]["kind"] == "follower"
    assert body["profile"]["follower_count"] == 1

    # A message from Bob: the messenger's unread count.
    conversation = await http.post(
        f"{PREFIX}/conversations",
        json={"kind": "direct", "member_ids": [ann.user_id]},
        headers=bob.headers,
    )
    assert conversation.status_code == 201, conversation.text
    sent = await http.post(
        f"{PREFIX}/conversations/{conversation.json()['id']}/messages",
        json={"body": "Hello Ann"},
        headers=bob.headers,
    )
    assert sent.status_code == 201, sent.text
    body = await me_when(http, ann, lambda body: body["unread_messages"] == 1)
    assert body["unread_messages"] == 1

    # Marking read renews it at once for the reader.
    await http.post(f"{PREFIX}/notifications/read-all", headers=ann.headers)
    await asyncio.sleep(0.05)
    assert (await me(http, ann)).json()["unread_notifications"] == 0

    # A profile change (the suggestions switch) too.
    response = await http.patch(
        f"{PREFIX}/users/me", json={"suggestions_enabled": False}, headers=ann.headers
    )
    assert response.status_code == 200
    assert response.json()["suggestions_enabled"] is False
    body = await me_when(http, ann, lambda body: not body["profile"]["suggestions_enabled"])
    assert body["profile"]["suggestions_enabled"] is False


async def test_me_refusals(http: httpx.AsyncClient, ann: Caller) -> None:
    assert_problem(await http.get(ME), 401, "unauthorized")
    assert_problem(
        await http.get(ME, headers={"Authorization": "Bearer x.y.z"}), 401, "auth.invalid_token"
    )
    for value in (None, "no", 1):
        assert_problem(
            await http.patch(
                f"{PREFIX}/users/me", json={"suggestions_enabled": value}, headers=ann.headers
            ),
            422,
            "validation_failed",
        )
