"""Likes and user follows: idempotent PUT/DELETE, counts kept on the post and the
profiles, events once per real change, and every refusal as a problem."""

from __future__ import annotations

from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI

from tests.apps.blog.conftest import (
    PREFIX,
    Caller,
    count_rows,
    create_blog,
    create_post,
    events_of,
    sign_up,
)
from tests.helpers import assert_problem
from veche.apps.blog.models import Like


async def test_like_and_unlike_are_idempotent_and_counted(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    carol = await sign_up(http, "carol@example.com", "Carol")
    await create_blog(http, ann)
    post = await create_post(http, ann, state="published")
    path = f"{PREFIX}/posts/{post['id']}/like"

    for caller in (bob, carol, bob):  # liking twice counts once
        response = await http.put(path, headers=caller.headers)
        assert response.status_code == 200, response.text
    assert response.json() == {"post_id": post["id"], "liked": True, "like_count": 2}
    assert (await http.get(f"{PREFIX}/posts/{post['id']}")).json()["like_count"] == 2
    for _ in range(2):  # taking it back twice counts once
        response = await http.delete(path, headers=bob.headers)
        assert response.json() == {"post_id": post["id"], "liked": False, "like_count": 1}

    liked = await events_of(blog_app, "blog.post.liked")
    assert [(event["user_id"], event["like_count"]) for event in liked] == [
        (bob.user_id, 1),
        (carol.user_id, 2),
    ]
    assert liked[0]["post_author_id"] == ann.user_id
    assert [e["user_id"] for e in await events_of(blog_app, "blog.post.unliked")] == [bob.user_id]


async def test_likes_need_a_visible_published_post(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    await create_blog(http, ann)
    draft = await create_post(http, ann, title="Secret")
    # Someone else's draft is exactly a missing post.
    for method in ("PUT", "DELETE"):
        assert_problem(
            await http.request(method, f"{PREFIX}/posts/{draft['id']}/like", headers=bob.headers),
            404,
            "blog.post_not_found",
        )
    assert_problem(
        await http.put(f"{PREFIX}/posts/{uuid4()}/like", headers=bob.headers),
        404,
        "blog.post_not_found",
    )
    # Your own draft is visible, but not likeable yet.
    assert_problem(
        await http.put(f"{PREFIX}/posts/{draft['id']}/like", headers=ann.headers),
        409,
        "blog.post_not_published",
    )
    assert_problem(await http.put(f"{PREFIX}/posts/{draft['id']}/like"), 401, "unauthorized")
    assert_problem(
        await http.put(f"{PREFIX}/posts/{draft['id']}/like", headers={"Authorization": "Bearer x"}),
        401,
        "auth.invalid_token",
    )
    assert_problem(
        await http.put(f"{PREFIX}/posts/not-a-uuid/like", headers=bob.headers),
        422,
        "validation_failed",
    )


async def test_an_oversized_body_is_refused(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    await create_blog(http, ann)
    post = await create_post(http, ann, state="published")
    response = await http.put(
        f"{PREFIX}/posts/{post['id']}/like",
        content=b"x" * (2 * 1024 * 1024),
        headers={**bob.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "payload_too_large")
    assert await count_rows(blog_app, Like) == 0


async def test_follow_users_with_counts_on_profiles(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    carol = await sign_up(http, "carol@example.com", "Carol")
    path = f"{PREFIX}/users/{ann.user_id}/follow"
    for caller in (bob, carol, bob):
        response = await http.put(path, headers=caller.headers)
        assert response.status_code == 200, response.text
    assert response.json() == {"user_id": ann.user_id, "following": True, "follower_count": 2}
    profile = (await http.get(f"{PREFIX}/users/{ann.user_id}")).json()
    assert (profile["follower_count"], profile["following_count"]) == (2, 0)
    bob_profile = (await http.get(f"{PREFIX}/users/{bob.user_id}")).json()
    assert (bob_profile["follower_count"], bob_profile["following_count"]) == (0, 1)

    for _ in range(2):
        response = await http.delete(path, headers=bob.headers)
        assert response.json() == {"user_id": ann.user_id, "following": False, "follower_count": 1}
    assert (await http.get(f"{PREFIX}/users/{bob.user_id}")).json()["following_count"] == 0

    followed = await events_of(blog_app, "blog.user.followed")
    assert [(e["follower_id"], e["followee_id"]) for e in followed] == [
        (bob.user_id, ann.user_id),
        (carol.user_id, ann.user_id),
    ]
    assert len(await events_of(blog_app, "blog.user.unfollowed")) == 1


async def test_follow_refusals(http: httpx.AsyncClient, ann: Caller) -> None:
    assert_problem(
        await http.put(f"{PREFIX}/users/{ann.user_id}/follow", headers=ann.headers),
        422,
        "blog.cannot_follow_self",
    )
    assert_problem(
        await http.put(f"{PREFIX}/users/{uuid4()}/follow", headers=ann.headers),
        404,
        "blog.profile_not_found",
    )
    assert_problem(await http.put(f"{PREFIX}/users/{ann.user_id}/follow"), 401, "unauthorized")
    assert_problem(
        await http.delete(f"{PREFIX}/users/annk/follow", headers=ann.headers),
        422,
        "validation_failed",
    )


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_blog_follows_emit_events_once(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller, method: str
) -> None:
    await create_blog(http, ann)
    await http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=bob.headers)
    for _ in range(2):
        await http.request(method, f"{PREFIX}/blogs/lighthouse/follow", headers=bob.headers)
    followed = await events_of(blog_app, "blog.blog.followed")
    unfollowed = await events_of(blog_app, "blog.blog.unfollowed")
    assert len(followed) == 1
    assert followed[0]["owner_id"] == ann.user_id
    assert len(unfollowed) == (1 if method == "DELETE" else 0)
