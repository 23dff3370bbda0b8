"""Profiles: public reads by id or username, owner-only changes, usernames, avatars, and
the configurable rate limit on the kernel's sign-up and sign-in."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from tests.apps.blog.conftest import (
    BLOG_LIMITS,
    PREFIX,
    Caller,
    events_of,
    files,
    image_bytes,
    stored_blobs,
)
from tests.conftest import PASSWORD, client_for
from tests.helpers import assert_problem
from veche.apps.blog import module as blog_module
from veche.settings import Settings


async def test_read_and_update(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    fresh = (await http.get(f"{PREFIX}/users/{ann.user_id}")).json()
    assert fresh == {
        "id": ann.user_id,
        "username": None,
        "display_name": "Ann",
        "bio": "",
        "links": [],
        "avatar": None,
        "created_at": fresh["created_at"],
        "follower_count": 0,
        "following_count": 0,
        "suggestions_enabled": None,  # only in your own profile
    }
    response = await http.patch(
        f"{PREFIX}/users/me",
        json={"display_name": "Ann Keeper", "username": "annk", "bio": "Hi <b>there</b>"},
        headers=ann.headers,
    )
    assert response.status_code == 200
    assert response.json()["display_name"] == "Ann Keeper"
    # The display name is the kernel account's.
    me = await http.get("/api/v1/me", headers=ann.headers)
    assert me.json()["display_name"] == "Ann Keeper"
    assert (await http.get(f"{PREFIX}/users/annk")).json()["bio"] == "Hi <b>there</b>"
    events = await events_of(blog_app, "blog.profile.updated")
    assert events == [
        {"user_id": ann.user_id, "username": "annk", "fields": ["bio", "display_name", "username"]}
    ]
    assert_problem(
        await http.patch(f"{PREFIX}/users/me", json={"username": "ANNK"}, headers=bob.headers),
        409,
        "blog.username_taken",
    )
    for reserved in ("admin", "Support", "root"):
        assert_problem(
            await http.patch(
                f"{PREFIX}/users/me", json={"username": reserved}, headers=bob.headers
            ),
            409,
            "blog.username_reserved",
        )
    # Keeping one's own username is no conflict.
    same = await http.patch(f"{PREFIX}/users/me", json={"username": "AnnK"}, headers=ann.headers)
    assert same.status_code == 200
    assert_problem(await http.get(f"{PREFIX}/users/nobody"), 404, "blog.profile_not_found")
    assert_problem(
        await http.get(f"{PREFIX}/users/01a247bb-0000-7000-8000-000000000000"),
        404,
        "blog.profile_not_found",
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"username": "ab"},
        {"username": "has space"},
        {"username": "_under"},
        {"username": "x" * 33},
        {"username": None},
        {"display_name": ""},
        {"bio": "b" * 2001},
        {"links": [{"label": "x", "url": "javascript:alert(1)"}]},
        {"links": [{"label": "x", "url": "ftp://files"}]},
        {"links": [{"label": "x", "url": "https://ok"}] * 11},
        {"links": [{"label": "x"}]},
        {"email": "new@example.com"},
        {"bio": "nul\u0000"},
    ],
)
async def test_malformed_profile_changes(
    http: httpx.AsyncClient, ann: Caller, payload: dict[str, Any]
) -> None:
    response = await http.patch(f"{PREFIX}/users/me", json=payload, headers=ann.headers)
    assert_problem(response, 422, "validation_failed")


async def test_profile_changes_need_the_owner(http: httpx.AsyncClient) -> None:
    assert_problem(await http.patch(f"{PREFIX}/users/me", json={"bio": "x"}), 401, "unauthorized")
    assert_problem(await http.get(f"{PREFIX}/users/me"), 401, "unauthorized")
    assert_problem(
        await http.put(f"{PREFIX}/users/me/avatar", files=files(image_bytes())), 401, "unauthorized"
    )


async def test_avatar_square_crops_and_replacement(
    http: httpx.AsyncClient, blog_app: FastAPI, blog_settings: Settings, ann: Caller
) -> None:
    response = await http.put(
        f"{PREFIX}/users/me/avatar",
        files=files(image_bytes("PNG", (900, 500))),
        headers=ann.headers,
    )
    assert response.status_code == 200, response.text
    avatar = response.json()["avatar"]
    assert avatar["kind"] == "avatar"
    sizes = {name: (v["width"], v["height"]) for name, v in avatar["variants"].items()}
    assert sizes == {"s256": (256, 256), "s128": (128, 128), "s64": (64, 64)}
    data = (await http.get(avatar["variants"]["s64"]["url"])).content
    with Image.open(io.BytesIO(data)) as decoded:
        assert (decoded.format, decoded.size) == ("WEBP", (64, 64))
    public = (await http.get(f"{PREFIX}/users/{ann.user_id}")).json()
    assert public["avatar"]["id"] == avatar["id"]
    first_blobs = stored_blobs(blog_settings)
    assert len(first_blobs) == 3

    # A new avatar replaces the old one, whose files go.
    response = await http.put(
        f"{PREFIX}/users/me/avatar",
        files=files(image_bytes("JPEG", (300, 300))),
        headers=ann.headers,
    )
    assert response.status_code == 200
    await blog_app.state.kernel.apps["blog"].drain()
    second_blobs = stored_blobs(blog_settings)
    assert len(second_blobs) == 3
    assert not set(first_blobs) & set(second_blobs)
    assert_problem(await http.get(f"{PREFIX}/media/{avatar['id']}"), 404, "blog.media_not_found")

    # A refused avatar changes nothing.
    refused = await http.put(
        f"{PREFIX}/users/me/avatar", files=files(b"GIF89a not really"), headers=ann.headers
    )
    assert refused.status_code in {415, 422}
    assert stored_blobs(blog_settings) == second_blobs

    assert (await http.delete(f"{PREFIX}/users/me/avatar", headers=ann.headers)).status_code == 204
    await blog_app.state.kernel.apps["blog"].drain()
    assert (await http.get(f"{PREFIX}/users/me", headers=ann.headers)).json()["avatar"] is None
    assert stored_blobs(blog_settings) == []
    assert len(await events_of(blog_app, "blog.profile.updated")) == 3


async def test_auth_rate_limit_is_configurable(
    app_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    """Quark's plan limits its auth endpoints per IP (100/hour); the kernel's `auth`
    policy is that limit, set here to 3/hour to see it bite."""
    settings = settings_factory(rate_limits={**BLOG_LIMITS, "auth": "3/hour"})
    app = await app_factory(settings, [blog_module])
    async with client_for(app, client_ip="203.0.113.7") as http:
        for index in range(3):
            response = await http.post(
                "/api/v1/auth/register",
                json={"email": f"u{index}@example.com", "password": PASSWORD, "display_name": "U"},
            )
            assert response.status_code == 201, response.text
        refused = await http.post(
            "/api/v1/auth/login", json={"email": "u0@example.com", "password": PASSWORD}
        )
        assert_problem(refused, 429, "rate_limited")
        assert refused.headers["x-ratelimit-limit"] == "3"
        assert int(refused.headers["retry-after"]) > 0
    async with client_for(app, client_ip="203.0.113.8") as other:
        response = await other.post(
            "/api/v1/auth/login", json={"email": "u0@example.com", "password": PASSWORD}
        )
        assert response.status_code == 200
