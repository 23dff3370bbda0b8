"""Blogs: creation with unique slugs, owner-only changes, authors, follows and counts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.apps.blog.conftest import PREFIX, Caller, create_blog, create_post, events_of, sign_up
from tests.helpers import assert_problem


async def test_create_read_list_update_delete(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    blog = await create_blog(http, ann, description="Notes from the rock")
    assert blog["owner_id"] == ann.user_id
    assert blog["follower_count"] == 0
    await create_blog(http, bob, slug="harbour")
    assert_problem(
        await http.post(
            f"{PREFIX}/blogs", json={"slug": "lighthouse", "title": "Again"}, headers=bob.headers
        ),
        409,
        "blog.blog_slug_taken",
    )
    listed = (await http.get(f"{PREFIX}/blogs")).json()
    assert [item["slug"] for item in listed["items"]] == ["harbour", "lighthouse"]
    owned = (await http.get(f"{PREFIX}/blogs", params={"owner": ann.user_id})).json()
    assert [item["slug"] for item in owned["items"]] == ["lighthouse"]

    assert_problem(
        await http.patch(f"{PREFIX}/blogs/lighthouse", json={"title": "Mine"}, headers=bob.headers),
        403,
        "blog.not_blog_owner",
    )
    response = await http.patch(
        f"{PREFIX}/blogs/lighthouse", json={"title": "The Lamp"}, headers=ann.headers
    )
    assert response.json()["title"] == "The Lamp"
    assert response.json()["description"] == "Notes from the rock"

    post = await create_post(http, ann, state="published")
    assert_problem(
        await http.delete(f"{PREFIX}/blogs/lighthouse", headers=bob.headers),
        403,
        "blog.not_blog_owner",
    )
    assert (await http.delete(f"{PREFIX}/blogs/lighthouse", headers=ann.headers)).status_code == 204
    assert_problem(await http.get(f"{PREFIX}/blogs/lighthouse"), 404, "blog.blog_not_found")
    assert_problem(await http.get(f"{PREFIX}/posts/{post['id']}"), 404, "blog.post_not_found")
    assert [e["post_id"] for e in await events_of(blog_app, "blog.post.deleted")] == [post["id"]]


async def test_follow_unfollow_and_counts(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    carol = await sign_up(http, "carol@example.com", "Carol")
    await create_blog(http, ann)
    for caller in (bob, carol, bob):  # following twice counts once
        response = await http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=caller.headers)
        assert response.status_code == 200
    assert (await http.get(f"{PREFIX}/blogs/lighthouse")).json()["follower_count"] == 2
    for _ in range(2):  # unfollowing twice counts once
        response = await http.delete(f"{PREFIX}/blogs/lighthouse/follow", headers=bob.headers)
        assert response.json() == {"blog": "lighthouse", "following": False, "follower_count": 1}
    assert_problem(await http.put(f"{PREFIX}/blogs/lighthouse/follow"), 401, "unauthorized")
    assert_problem(
        await http.put(f"{PREFIX}/blogs/nowhere/follow", headers=bob.headers),
        404,
        "blog.blog_not_found",
    )


async def test_authors(http: httpx.AsyncClient, ann: Caller, bob: Caller) -> None:
    await create_blog(http, ann)
    path = f"{PREFIX}/blogs/lighthouse/authors"
    assert_problem(
        await http.put(f"{path}/{bob.user_id}", headers=bob.headers), 403, "blog.not_blog_owner"
    )
    assert_problem(
        await http.put(f"{path}/{ann.user_id}", headers=ann.headers), 409, "blog.owner_is_member"
    )
    unknown = "01a247bb-0000-7000-8000-000000000000"
    assert_problem(
        await http.put(f"{path}/{unknown}", headers=ann.headers), 404, "blog.profile_not_found"
    )
    assert (await http.put(f"{path}/{bob.user_id}", headers=ann.headers)).json()["role"] == "author"
    members = (await http.get(path)).json()
    assert [(m["user_id"], m["role"]) for m in members] == [
        (ann.user_id, "owner"),
        (bob.user_id, "author"),
    ]
    await create_post(http, bob, title="By Bob")
    assert (await http.delete(f"{path}/{bob.user_id}", headers=ann.headers)).status_code == 204
    assert_problem(
        await http.delete(f"{path}/{bob.user_id}", headers=ann.headers),
        404,
        "blog.member_not_found",
    )
    assert_problem(
        await http.post(
            f"{PREFIX}/posts", json={"blog": "lighthouse", "title": "x"}, headers=bob.headers
        ),
        403,
        "blog.not_blog_author",
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "No slug"},
        {"slug": "ab", "title": "Too short"},
        {"slug": "Upper", "title": "x"},
        {"slug": "-dash", "title": "x"},
        {"slug": "a" * 65, "title": "x"},
        {"slug": "okay", "title": ""},
        {"slug": "okay", "title": "x", "description": "d" * 2001},
        {"slug": "okay", "title": "x", "owner_id": "someone"},
        {"slug": "okay", "title": ["x"]},
    ],
)
async def test_malformed_blogs(
    http: httpx.AsyncClient, ann: Caller, payload: dict[str, Any]
) -> None:
    assert_problem(
        await http.post(f"{PREFIX}/blogs", json=payload, headers=ann.headers),
        422,
        "validation_failed",
    )


async def test_blog_bad_requests(http: httpx.AsyncClient, ann: Caller) -> None:
    assert_problem(
        await http.post(f"{PREFIX}/blogs", json={"slug": "okay", "title": "x"}), 401, "unauthorized"
    )
    await create_blog(http, ann)
    assert_problem(
        await http.patch(f"{PREFIX}/blogs/lighthouse", json={"title": None}, headers=ann.headers),
        422,
        "validation_failed",
    )
    assert_problem(await http.get(f"{PREFIX}/blogs/UPPER"), 422, "validation_failed")
    assert_problem(
        await http.get(f"{PREFIX}/blogs", params={"owner": "x"}), 422, "validation_failed"
    )


async def test_concurrent_follows_are_all_counted(http: httpx.AsyncClient, ann: Caller) -> None:
    import asyncio

    await create_blog(http, ann)
    readers = [await sign_up(http, f"reader{n}@example.com", f"R{n}") for n in range(8)]
    responses = await asyncio.gather(
        *(http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=r.headers) for r in readers),
        *(http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=r.headers) for r in readers),
    )
    assert {response.status_code for response in responses} == {200}
    assert (await http.get(f"{PREFIX}/blogs/lighthouse")).json()["follower_count"] == 8
