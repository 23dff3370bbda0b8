"""Posts: states and the scheduler, who may see and change what, listings with filters,
sorting and cursors, edit history, and the bad input each endpoint refuses."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.apps.blog.conftest import (
    PREFIX,
    Caller,
    create_blog,
    create_post,
    events_of,
    sign_up,
)
from tests.helpers import assert_problem
from veche.apps.blog.jobs import publish_job, publish_scheduled_posts


def soon(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


async def test_a_scheduled_post_is_published_at_its_time(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    await create_blog(http, ann)
    post = await create_post(http, ann, state="scheduled", publish_at=soon(60))
    assert post["state"] == "scheduled"
    assert post["published_at"] is None
    kernel = blog_app.state.kernel
    assert await publish_scheduled_posts(kernel) == 0  # not yet
    assert_problem(
        await http.get(f"{PREFIX}/posts/{post['id']}", headers=bob.headers),
        404,
        "blog.post_not_found",
    )

    # The job run a minute later (a time, not a sleep: a slow machine cannot make the
    # post's time pass before it is created).
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)
    assert await publish_scheduled_posts(kernel, at=later) == 1
    response = await http.get(f"{PREFIX}/posts/{post['id']}", headers=bob.headers)
    assert response.status_code == 200
    assert response.json()["state"] == "published"
    assert response.json()["publish_at"] is None
    events = await events_of(blog_app, "blog.post.published")
    assert [event["post_id"] for event in events] == [post["id"]]
    assert await publish_scheduled_posts(kernel, at=later) == 0  # published once


async def test_the_running_scheduler_publishes_due_posts(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller
) -> None:
    """Nothing called by hand: the app's own scheduled job (ticking every 5 seconds)."""
    assert publish_job in blog_app.state.modules[0].jobs
    await create_blog(http, ann)
    # Two seconds ahead: time enough to create it on a loaded machine, and the job's
    # first tick (5 s) still finds it due.
    post = await create_post(http, ann, state="scheduled", publish_at=soon(2.0))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    state = "scheduled"
    while state != "published" and loop.time() < deadline:
        await asyncio.sleep(0.25)
        state = (await http.get(f"{PREFIX}/posts/{post['id']}", headers=ann.headers)).json()[
            "state"
        ]
    assert state == "published"


async def test_schedule_rules(http: httpx.AsyncClient, ann: Caller) -> None:
    await create_blog(http, ann)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    for fields, code in [
        ({"state": "scheduled"}, "blog.invalid_schedule"),
        ({"state": "scheduled", "publish_at": past}, "blog.invalid_schedule"),
        ({"state": "draft", "publish_at": soon(60)}, "blog.invalid_schedule"),
        ({"state": "scheduled", "publish_at": "2030-01-01T00:00:00"}, "validation_failed"),
        ({"state": "archived"}, "validation_failed"),
    ]:
        response = await http.post(
            f"{PREFIX}/posts",
            json={"blog": "lighthouse", "title": "T", **fields},
            headers=ann.headers,
        )
        assert_problem(response, 422, code)
    draft = await create_post(http, ann)
    response = await http.post(
        f"{PREFIX}/posts/{draft['id']}/publish",
        json={"publish_at": soon(3600)},
        headers=ann.headers,
    )
    assert response.json()["state"] == "scheduled"
    # Back to draft before its time: the scheduler leaves it alone.
    response = await http.patch(
        f"{PREFIX}/posts/{draft['id']}", json={"state": "draft"}, headers=ann.headers
    )
    assert response.json()["state"] == "draft"
    assert response.json()["publish_at"] is None


async def test_unpublish_and_delete_events(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller
) -> None:
    await create_blog(http, ann)
    post = await create_post(http, ann, state="published")
    response = await http.patch(
        f"{PREFIX}/posts/{post['id']}", json={"state": "draft"}, headers=ann.headers
    )
    assert response.json()["state"] == "draft"
    assert response.json()["published_at"] is None
    assert [e["post_id"] for e in await events_of(blog_app, "blog.post.unpublished")] == [
        post["id"]
    ]
    assert (
        await http.delete(f"{PREFIX}/posts/{post['id']}", headers=ann.headers)
    ).status_code == 204
    deleted = await events_of(blog_app, "blog.post.deleted")
    assert [e["post_id"] for e in deleted] == [post["id"]]
    assert_problem(
        await http.get(f"{PREFIX}/posts/{post['id']}", headers=ann.headers),
        404,
        "blog.post_not_found",
    )


async def test_only_author_or_blog_owner_change_a_post(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    carol = await sign_up(http, "carol@example.com", "Carol")
    await create_blog(http, ann)
    # Bob becomes an author of Ann's blog and writes a post.
    response = await http.put(
        f"{PREFIX}/blogs/lighthouse/authors/{bob.user_id}", headers=ann.headers
    )
    assert response.status_code == 200
    post = await create_post(http, bob, title="Bob's", state="published")
    assert post["author_id"] == bob.user_id

    # Carol, a reader, may neither edit, publish, nor delete it.
    for method, path, payload in [
        ("PATCH", f"/posts/{post['id']}", {"title": "x"}),
        ("POST", f"/posts/{post['id']}/publish", None),
        ("DELETE", f"/posts/{post['id']}", None),
    ]:
        response = await http.request(method, PREFIX + path, json=payload, headers=carol.headers)
        assert_problem(response, 403, "blog.not_post_editor")
    # Nor write in the blog.
    response = await http.post(
        f"{PREFIX}/posts", json={"blog": "lighthouse", "title": "x"}, headers=carol.headers
    )
    assert_problem(response, 403, "blog.not_blog_author")
    # The blog's owner may edit and delete the author's post.
    response = await http.patch(
        f"{PREFIX}/posts/{post['id']}", json={"title": "Edited by owner"}, headers=ann.headers
    )
    assert response.status_code == 200
    history = (await http.get(f"{PREFIX}/posts/{post['id']}/revisions", headers=bob.headers)).json()
    assert [item["editor_id"] for item in history["items"]] == [ann.user_id, bob.user_id]
    assert (
        await http.delete(f"{PREFIX}/posts/{post['id']}", headers=ann.headers)
    ).status_code == 204


async def test_drafts_are_private(http: httpx.AsyncClient, ann: Caller, bob: Caller) -> None:
    await create_blog(http, ann)
    draft = await create_post(http, ann, title="Secret")
    assert_problem(
        await http.patch(f"{PREFIX}/posts/{draft['id']}", json={"title": "x"}, headers=bob.headers),
        404,
        "blog.post_not_found",
    )
    listed = await http.get(f"{PREFIX}/posts", params={"state": "draft"}, headers=bob.headers)
    assert listed.json()["items"] == []
    mine = await http.get(f"{PREFIX}/posts", params={"state": "draft"}, headers=ann.headers)
    assert [item["id"] for item in mine.json()["items"]] == [draft["id"]]
    anonymous = await http.get(f"{PREFIX}/posts", params={"state": "draft"})
    assert_problem(anonymous, 400, "blog.invalid_filter")
    assert_problem(
        await http.post(
            f"{PREFIX}/posts/{draft['id']}/comments", json={"body_html": "hi"}, headers=bob.headers
        ),
        404,
        "blog.post_not_found",
    )


async def _posts(http: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await http.get(f"{PREFIX}/posts", params=params)
    assert response.status_code == 200, response.text
    return [item["title"] for item in response.json()["items"]]


async def test_listing_filters_sorting_and_cursors(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    await create_blog(http, ann)
    await create_blog(http, bob, slug="harbour")
    response = await http.patch(f"{PREFIX}/users/me", json={"username": "bob"}, headers=bob.headers)
    assert response.status_code == 200
    for index in range(5):
        await create_post(
            http,
            ann,
            title=f"A{index}",
            tags=["even" if index % 2 == 0 else "odd"],
            state="published",
        )
    await create_post(http, bob, blog="harbour", title="B0", tags=["even"], state="published")
    await create_post(http, ann, title="Draft")

    assert await _posts(http) == ["B0", "A4", "A3", "A2", "A1", "A0"]
    assert await _posts(http, sort="published_at") == ["A0", "A1", "A2", "A3", "A4", "B0"]
    assert await _posts(http, blog="harbour") == ["B0"]
    assert await _posts(http, tag="even") == ["B0", "A4", "A2", "A0"]
    assert await _posts(http, author="bob") == ["B0"]
    assert await _posts(http, author=ann.user_id, tag="odd") == ["A3", "A1"]

    titles: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "tag": "even"}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get(f"{PREFIX}/posts", params=params)).json()
        titles += [item["title"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert titles == ["B0", "A4", "A2", "A0"]
    first = (await http.get(f"{PREFIX}/posts", params={"limit": 2})).json()
    # A cursor belongs to its filter and sort.
    assert_problem(
        await http.get(f"{PREFIX}/posts", params={"tag": "odd", "cursor": first["next_cursor"]}),
        400,
        "pagination.invalid_cursor",
    )
    assert_problem(
        await http.get(f"{PREFIX}/posts", params={"cursor": "garbage"}),
        400,
        "pagination.invalid_cursor",
    )
    assert_problem(
        await http.get(f"{PREFIX}/posts", params={"sort": "publish_at"}), 400, "blog.invalid_filter"
    )
    assert_problem(
        await http.get(f"{PREFIX}/posts", params={"sort": "title"}), 422, "validation_failed"
    )
    assert_problem(
        await http.get(f"{PREFIX}/posts", params={"blog": "nowhere"}), 404, "blog.blog_not_found"
    )
    assert_problem(
        await http.get(f"{PREFIX}/posts", params={"author": "nobody"}),
        404,
        "blog.profile_not_found",
    )
    assert_problem(
        await http.get(f"{PREFIX}/posts", params={"tag": "Bad Tag"}), 422, "validation_failed"
    )
    assert_problem(
        await http.get(f"{PREFIX}/posts", params={"limit": 1000}), 422, "validation_failed"
    )


async def test_slugs(http: httpx.AsyncClient, ann: Caller) -> None:
    await create_blog(http, ann)
    first = await create_post(http, ann, title="Héllo, Wörld!")
    second = await create_post(http, ann, title="Hello world")
    assert (first["slug"], second["slug"]) == ("hello-world", "hello-world-2")
    taken = await http.post(
        f"{PREFIX}/posts",
        json={"blog": "lighthouse", "title": "x", "slug": "hello-world"},
        headers=ann.headers,
    )
    assert_problem(taken, 409, "blog.post_slug_taken")
    rename = await http.patch(
        f"{PREFIX}/posts/{second['id']}", json={"slug": "hello-world"}, headers=ann.headers
    )
    assert_problem(rename, 409, "blog.post_slug_taken")


@pytest.mark.parametrize(
    "payload",
    [
        {"blog": "lighthouse"},
        {"blog": "lighthouse", "title": ""},
        {"blog": "lighthouse", "title": " leading space"},
        {"blog": "lighthouse", "title": "x" * 301},
        {"blog": "lighthouse", "title": "x", "body_html": "x" * 200_001},
        {"blog": "lighthouse", "title": "x", "tags": ["a"] * 2},
        {"blog": "lighthouse", "title": "x", "tags": [f"t{i}" for i in range(11)]},
        {"blog": "lighthouse", "title": "x", "tags": ["Not A Tag"]},
        {"blog": "lighthouse", "title": "x", "media_ids": ["not-a-uuid"]},
        {"blog": "lighthouse", "title": "x", "slug": "Bad Slug"},
        {"blog": "lighthouse", "title": "x", "author_id": "someone"},
        {"blog": "Bad Blog", "title": "x"},
        {"blog": "lighthouse", "title": "x\u0000"},
    ],
)
async def test_malformed_posts_are_refused(
    http: httpx.AsyncClient, ann: Caller, payload: dict[str, Any]
) -> None:
    await create_blog(http, ann)
    response = await http.post(f"{PREFIX}/posts", json=payload, headers=ann.headers)
    assert_problem(response, 422, "validation_failed")


async def test_bad_requests_on_posts(http: httpx.AsyncClient, ann: Caller) -> None:
    await create_blog(http, ann)
    post = await create_post(http, ann)
    assert_problem(
        await http.post(f"{PREFIX}/posts", json={"blog": "lighthouse", "title": "x"}),
        401,
        "unauthorized",
    )
    assert_problem(
        await http.post(
            f"{PREFIX}/posts",
            content=b"title=x",
            headers={**ann.headers, "content-type": "application/x-www-form-urlencoded"},
        ),
        415,
        "unsupported_media_type",
    )
    assert_problem(
        await http.post(
            f"{PREFIX}/posts",
            content=b"{not json",
            headers={**ann.headers, "content-type": "application/json"},
        ),
        422,
        "validation_failed",
    )
    assert_problem(
        await http.patch(f"{PREFIX}/posts/{post['id']}", json={"title": None}, headers=ann.headers),
        422,
        "validation_failed",
    )
    assert_problem(await http.get(f"{PREFIX}/posts/not-a-uuid"), 422, "validation_failed")
    assert_problem(
        await http.post(
            f"{PREFIX}/posts", json={"blog": "nowhere", "title": "x"}, headers=ann.headers
        ),
        404,
        "blog.blog_not_found",
    )
    forged = await http.get(f"{PREFIX}/posts", headers={"Authorization": "Bearer forged"})
    assert forged.status_code == 401
    big = await http.post(
        f"{PREFIX}/posts",
        content=b'{"blog":"lighthouse","title":"x","body_html":"' + b"x" * 2_000_000 + b'"}',
        headers={**ann.headers, "content-type": "application/json"},
    )
    assert_problem(big, 413, "payload_too_large")


async def test_excerpts_are_escaped_and_fit(http: httpx.AsyncClient, ann: Caller) -> None:
    await create_blog(http, ann)
    post = await create_post(http, ann, excerpt="<" * 500)
    assert post["excerpt"] == "&lt;" * 500
    long_body = "<p>" + "word " * 200 + "</p>"
    derived = await create_post(http, ann, title="Long", body_html=long_body)
    assert len(derived["excerpt"]) <= 280
    assert derived["excerpt"].endswith("…")
