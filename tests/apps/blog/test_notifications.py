"""Notifications written by the `blog-notifier` consumer from events, listed newest first
with an unread filter, marked read one by one or all at once; another user's is a 404."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import uuid4

import httpx
from fastapi import FastAPI

from tests.apps.blog.conftest import PREFIX, Caller, create_blog, create_post, sign_up
from tests.helpers import assert_problem
from veche.kernel.realtime import Position

NOTIFICATIONS = f"{PREFIX}/notifications"


async def notifications(
    http: httpx.AsyncClient, caller: Caller, count: int, **params: Any
) -> list[dict[str, Any]]:
    """The caller's notifications once there are `count` of them (the consumer is quick
    but asynchronous)."""
    deadline = time.monotonic() + 5
    while True:
        response = await http.get(NOTIFICATIONS, params=params, headers=caller.headers)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        if len(items) >= count or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.05)


async def pushed(app: FastAPI, user_id: str, event: str) -> list[dict[str, Any]]:
    """What was published on the user's realtime channel with this event name."""
    backend = app.state.kernel.realtime.backend
    channel = f"user:{user_id}"
    top = await backend.read(channel, None)
    history = await backend.read(channel, Position(top.epoch, 0))
    return [message.data for message in history.messages if message.event == event]


async def test_comments_likes_and_follows_notify(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    await create_blog(http, ann)
    post = await create_post(http, ann, title="First light", state="published")
    await http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=bob.headers)
    await http.put(f"{PREFIX}/users/{ann.user_id}/follow", headers=bob.headers)
    for _ in range(2):  # like, unlike, like again: one notification while it is unread
        await http.put(f"{PREFIX}/posts/{post['id']}/like", headers=bob.headers)
        await http.delete(f"{PREFIX}/posts/{post['id']}/like", headers=bob.headers)
    await http.put(f"{PREFIX}/posts/{post['id']}/like", headers=bob.headers)
    await http.post(
        f"{PREFIX}/posts/{post['id']}/comments",
        json={"body_html": "<p>Lovely</p>"},
        headers=bob.headers,
    )
    # Your own actions on your own things notify nobody.
    await http.put(f"{PREFIX}/posts/{post['id']}/like", headers=ann.headers)
    await http.post(
        f"{PREFIX}/posts/{post['id']}/comments",
        json={"body_html": "<p>Me</p>"},
        headers=ann.headers,
    )

    items = await notifications(http, ann, 4)
    assert [item["kind"] for item in items] == ["comment", "like", "follower", "blog_follower"]
    assert {item["actor_id"] for item in items} == {bob.user_id}
    assert items[0]["post_id"] == post["id"]
    assert items[0]["data"]["post_title"] == "First light"
    assert items[3]["data"] == {"blog_slug": "lighthouse"}
    assert not any(item["read"] for item in items)
    assert await notifications(http, bob, 0) == []
    frames = await pushed(blog_app, ann.user_id, "blog.notification")
    assert sorted(frame["kind"] for frame in frames) == sorted(item["kind"] for item in items)


async def test_pages_unread_filter_and_marking_read(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    carol = await sign_up(http, "carol@example.com", "Carol")
    dave = await sign_up(http, "dave@example.com", "Dave")
    for caller in (bob, carol, dave):
        await http.put(f"{PREFIX}/users/{ann.user_id}/follow", headers=caller.headers)
    items = await notifications(http, ann, 3)
    assert [item["actor_id"] for item in items] == [dave.user_id, carol.user_id, bob.user_id]

    first = (await http.get(NOTIFICATIONS, params={"limit": 2}, headers=ann.headers)).json()
    assert len(first["items"]) == 2
    rest = await http.get(
        NOTIFICATIONS, params={"limit": 2, "cursor": first["next_cursor"]}, headers=ann.headers
    )
    assert [item["actor_id"] for item in rest.json()["items"]] == [bob.user_id]

    newest = items[0]["id"]
    marked = await http.post(f"{NOTIFICATIONS}/{newest}/read", headers=ann.headers)
    assert marked.status_code == 200
    assert marked.json()["read"] is True
    again = await http.post(f"{NOTIFICATIONS}/{newest}/read", headers=ann.headers)
    assert again.json()["read_at"] == marked.json()["read_at"]
    unread = await http.get(NOTIFICATIONS, params={"unread": "true"}, headers=ann.headers)
    assert [item["actor_id"] for item in unread.json()["items"]] == [carol.user_id, bob.user_id]
    read = await http.get(NOTIFICATIONS, params={"unread": "false"}, headers=ann.headers)
    assert [item["id"] for item in read.json()["items"]] == [newest]

    all_read = await http.post(f"{NOTIFICATIONS}/read-all", headers=ann.headers)
    assert all_read.json() == {"marked": 2}
    assert (await http.post(f"{NOTIFICATIONS}/read-all", headers=ann.headers)).json() == {
        "marked": 0
    }
    unread = await http.get(NOTIFICATIONS, params={"unread": "true"}, headers=ann.headers)
    assert unread.json()["items"] == []


async def test_another_users_notification_is_not_found(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    await http.put(f"{PREFIX}/users/{ann.user_id}/follow", headers=bob.headers)
    [item] = await notifications(http, ann, 1)
    assert_problem(
        await http.post(f"{NOTIFICATIONS}/{item['id']}/read", headers=bob.headers),
        404,
        "blog.notification_not_found",
    )
    assert_problem(
        await http.post(f"{NOTIFICATIONS}/{uuid4()}/read", headers=ann.headers),
        404,
        "blog.notification_not_found",
    )
    # Bob's mark-all never touches Ann's.
    assert (await http.post(f"{NOTIFICATIONS}/read-all", headers=bob.headers)).json() == {
        "marked": 0
    }
    assert (await notifications(http, ann, 1))[0]["read"] is False


async def test_notification_refusals(http: httpx.AsyncClient, ann: Caller) -> None:
    assert_problem(await http.get(NOTIFICATIONS), 401, "unauthorized")
    assert_problem(await http.post(f"{NOTIFICATIONS}/read-all"), 401, "unauthorized")
    assert_problem(await http.post(f"{NOTIFICATIONS}/{uuid4()}/read"), 401, "unauthorized")
    assert_problem(
        await http.post(f"{NOTIFICATIONS}/nope/read", headers=ann.headers),
        422,
        "validation_failed",
    )
    assert_problem(
        await http.get(NOTIFICATIONS, params={"unread": "maybe"}, headers=ann.headers),
        422,
        "validation_failed",
    )
    assert_problem(
        await http.get(NOTIFICATIONS, params={"cursor": "bad"}, headers=ann.headers),
        400,
        "pagination.invalid_cursor",
    )
    assert_problem(
        await http.post(
            f"{NOTIFICATIONS}/read-all",
            content=b"x" * (2 * 1024 * 1024),
            headers={**ann.headers, "Content-Type": "application/json"},
        ),
        413,
        "payload_too_large",
    )
