"""Comments: on published posts only, sanitized, counted; edited by their author, deleted
by their author or the post's author."""

from __future__ import annotations

import httpx
import pytest

from tests.apps.blog.conftest import PREFIX, Caller, create_blog, create_post, sign_up
from tests.helpers import assert_problem


async def test_comment_lifecycle(http: httpx.AsyncClient, ann: Caller, bob: Caller) -> None:
    carol = await sign_up(http, "carol@example.com", "Carol")
    await create_blog(http, ann)
    post = await create_post(http, ann, state="published")
    path = f"{PREFIX}/posts/{post['id']}/comments"
    first = (await http.post(path, json={"body_html": "<p>First!</p>"}, headers=bob.headers)).json()
    second = (await http.post(path, json={"body_html": "Second"}, headers=carol.headers)).json()
    listed = (await http.get(path)).json()
    assert [item["id"] for item in listed["items"]] == [first["id"], second["id"]]
    assert (await http.get(f"{PREFIX}/posts/{post['id']}")).json()["comment_count"] == 2

    # Only its author edits a comment.
    assert_problem(
        await http.patch(
            f"{PREFIX}/comments/{first['id']}", json={"body_html": "x"}, headers=ann.headers
        ),
        403,
        "blog.not_comment_author",
    )
    edited = await http.patch(
        f"{PREFIX}/comments/{first['id']}",
        json={"body_html": "<em>Edited</em>"},
        headers=bob.headers,
    )
    assert edited.json()["body_html"] == "<em>Edited</em>"
    assert edited.json()["edited"] is True

    # Carol may not delete Bob's comment; the post's author may; Carol deletes her own.
    assert_problem(
        await http.delete(f"{PREFIX}/comments/{first['id']}", headers=carol.headers),
        403,
        "blog.not_comment_author",
    )
    assert (
        await http.delete(f"{PREFIX}/comments/{first['id']}", headers=ann.headers)
    ).status_code == 204
    assert (
        await http.delete(f"{PREFIX}/comments/{second['id']}", headers=carol.headers)
    ).status_code == 204
    assert (await http.get(f"{PREFIX}/posts/{post['id']}")).json()["comment_count"] == 0
    assert_problem(
        await http.delete(f"{PREFIX}/comments/{second['id']}", headers=carol.headers),
        404,
        "blog.comment_not_found",
    )


async def test_comment_bad_input(http: httpx.AsyncClient, ann: Caller, bob: Caller) -> None:
    await create_blog(http, ann)
    post = await create_post(http, ann, state="published")
    path = f"{PREFIX}/posts/{post['id']}/comments"
    assert_problem(await http.post(path, json={"body_html": "hi"}), 401, "unauthorized")
    assert_problem(
        await http.post(path, json={"body_html": "<script>alert(1)</script>"}, headers=bob.headers),
        422,
        "blog.empty_content",
    )
    for payload in (
        {},
        {"body_html": ""},
        {"body_html": "x" * 10_001},
        {"body_html": "x", "post_id": "y"},
    ):
        assert_problem(
            await http.post(path, json=payload, headers=bob.headers), 422, "validation_failed"
        )
    assert_problem(
        await http.post(
            f"{PREFIX}/posts/01a247bb-0000-7000-8000-000000000000/comments",
            json={"body_html": "x"},
            headers=bob.headers,
        ),
        404,
        "blog.post_not_found",
    )
    assert_problem(
        await http.patch(
            f"{PREFIX}/comments/not-a-uuid", json={"body_html": "x"}, headers=bob.headers
        ),
        422,
        "validation_failed",
    )


@pytest.mark.parametrize("cursor", ["x", "A" * 2000])
async def test_comment_listing_cursor_is_checked(
    http: httpx.AsyncClient, ann: Caller, cursor: str
) -> None:
    await create_blog(http, ann)
    post = await create_post(http, ann, state="published")
    response = await http.get(f"{PREFIX}/posts/{post['id']}/comments", params={"cursor": cursor})
    assert response.status_code in {400, 422}
    assert response.headers["content-type"].startswith("application/problem+json")
