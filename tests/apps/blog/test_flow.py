"""The whole story over HTTP: an account, a profile, a blog, a draft with an image,
publication, a second reader who reads, comments and follows, the author's edit, and a
stranger's edit refused."""

from __future__ import annotations

import io

import httpx
from fastapi import FastAPI
from PIL import Image

from tests.apps.blog.conftest import (
    PREFIX,
    Caller,
    events_of,
    files,
    jpeg_with_exif,
    sign_up,
)
from tests.helpers import assert_problem


async def test_register_profile_blog_post_read_comment_follow_edit(
    http: httpx.AsyncClient, blog_app: FastAPI
) -> None:
    # Register through the kernel, then shape the blog profile.
    ann = await sign_up(http, "ann@example.com", "Ann")
    response = await http.patch(
        f"{PREFIX}/users/me",
        json={
            "username": "Ann_Writes",
            "bio": "Keeper of the light",
            "links": [{"label": "site", "url": "https://ann.example.com"}],
        },
        headers=ann.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["username"] == "ann_writes"

    response = await http.post(
        f"{PREFIX}/blogs",
        json={"slug": "lighthouse", "title": "The Lighthouse", "description": "Notes"},
        headers=ann.headers,
    )
    assert response.status_code == 201, response.text

    # A draft with an image.
    response = await http.post(
        f"{PREFIX}/media",
        files=files(jpeg_with_exif((1200, 900)), "holiday.jpg", "image/jpeg"),
        headers=ann.headers,
    )
    assert response.status_code == 201, response.text
    media = response.json()
    response = await http.post(
        f"{PREFIX}/posts",
        json={
            "blog": "lighthouse",
            "title": "First light",
            "body_html": "<p>The lamp <b>works</b>.</p><script>steal()</script>",
            "tags": ["lamps", "night"],
            "media_ids": [media["id"]],
        },
        headers=ann.headers,
    )
    assert response.status_code == 201, response.text
    draft = response.json()
    assert draft["state"] == "draft"
    assert draft["body_html"] == "<p>The lamp <b>works</b>.</p>"
    assert [item["id"] for item in draft["media"]] == [media["id"]]

    # Nobody else sees the draft.
    bob = await sign_up(http, "bob@example.com", "Bob")
    assert_problem(
        await http.get(f"{PREFIX}/posts/{draft['id']}", headers=bob.headers),
        404,
        "blog.post_not_found",
    )
    assert_problem(await http.get(f"{PREFIX}/posts/{draft['id']}"), 404, "blog.post_not_found")

    response = await http.post(f"{PREFIX}/posts/{draft['id']}/publish", headers=ann.headers)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "published"
    published = await events_of(blog_app, "blog.post.published")
    assert [event["post_id"] for event in published] == [draft["id"]]

    # The second user reads it, with its image as WebP, comments and follows.
    response = await http.get(f"{PREFIX}/posts/{draft['id']}", headers=bob.headers)
    assert response.status_code == 200, response.text
    post = response.json()
    assert post["title"] == "First light"
    image = await http.get(post["media"][0]["variants"]["large"]["url"])
    assert image.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(image.content)) as decoded:
        assert decoded.format == "WEBP"
        assert not decoded.getexif()
    assert b"LeakyCam" not in image.content

    response = await http.post(
        f"{PREFIX}/posts/{draft['id']}/comments",
        json={"body_html": "<p>Lovely <img src=x onerror=alert(1)></p>"},
        headers=bob.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["body_html"] == "<p>Lovely </p>"
    response = await http.put(f"{PREFIX}/blogs/lighthouse/follow", headers=bob.headers)
    assert response.json() == {"blog": "lighthouse", "following": True, "follower_count": 1}
    blog = (await http.get(f"{PREFIX}/blogs/lighthouse")).json()
    assert blog["follower_count"] == 1
    assert (await http.get(f"{PREFIX}/posts/{draft['id']}")).json()["comment_count"] == 1
    assert len(await events_of(blog_app, "blog.comment.created")) == 1

    # The author edits; the reader may not.
    response = await http.patch(
        f"{PREFIX}/posts/{draft['id']}",
        json={"body_html": "<p>The lamp works, and the fog horn too.</p>"},
        headers=ann.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["revision"] == 2
    updated = await events_of(blog_app, "blog.post.updated")
    assert [(event["post_id"], event["revision"]) for event in updated] == [(draft["id"], 2)]

    refused = await http.patch(
        f"{PREFIX}/posts/{draft['id']}", json={"title": "Mine now"}, headers=bob.headers
    )
    assert_problem(refused, 403, "blog.not_post_editor")
    assert (await http.get(f"{PREFIX}/posts/{draft['id']}")).json()["title"] == "First light"

    history = await http.get(f"{PREFIX}/posts/{draft['id']}/revisions", headers=ann.headers)
    assert [item["number"] for item in history.json()["items"]] == [2, 1]
    assert history.json()["items"][1]["body_html"] == "<p>The lamp <b>works</b>.</p>"
    assert_problem(
        await http.get(f"{PREFIX}/posts/{draft['id']}/revisions", headers=bob.headers),
        403,
        "blog.not_post_editor",
    )

    # The profile is public by username and id.
    by_name = await http.get(f"{PREFIX}/users/ANN_WRITES")
    assert by_name.status_code == 200
    assert by_name.json()["id"] == ann.user_id
    assert (await http.get(f"{PREFIX}/users/{ann.user_id}")).json()["username"] == "ann_writes"


async def test_unknown_routes_and_methods_are_problems(
    http: httpx.AsyncClient, ann: Caller
) -> None:
    assert_problem(await http.get(f"{PREFIX}/nothing-here"), 404, "not_found")
    assert_problem(
        await http.put(f"{PREFIX}/posts", headers=ann.headers), 405, "method_not_allowed"
    )
