"""The account flow against a real server socket: register -> login -> me -> refresh ->
reuse detection, as a client on the network sees it."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import PASSWORD
from tests.example_app import module as example_module
from tests.live import serve
from veche.kernel import build_app
from veche.settings import Settings


async def test_register_login_me_refresh_and_reuse_detection(
    settings_factory: Callable[..., Settings], clean: None
) -> None:
    app = build_app(settings_factory(), [example_module])
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            registered = await client.post(
                "/api/v1/auth/register",
                json={"email": "Eve@Example.com", "password": PASSWORD, "display_name": "Eve"},
            )
            assert registered.status_code == 201
            assert registered.json()["email"] == "eve@example.com"

            login = await client.post(
                "/api/v1/auth/login", json={"email": "eve@example.com", "password": PASSWORD}
            )
            assert login.status_code == 200
            first = login.json()
            me = await client.get(
                "/api/v1/me", headers={"Authorization": f"Bearer {first['access_token']}"}
            )
            assert me.status_code == 200
            assert me.json()["id"] == registered.json()["id"]
            assert me.headers["x-request-id"]
            assert int(me.headers["x-ratelimit-remaining"]) >= 0

            rotated = await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
            )
            assert rotated.status_code == 200
            second = rotated.json()
            me = await client.get(
                "/api/v1/me", headers={"Authorization": f"Bearer {second['access_token']}"}
            )
            assert me.status_code == 200

            replay = await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
            )
            assert replay.status_code == 401
            assert replay.headers["content-type"] == "application/problem+json"
            assert replay.json()["code"] == "auth.refresh_token_reused"
            me = await client.get(
                "/api/v1/me", headers={"Authorization": f"Bearer {second['access_token']}"}
            )
            assert me.status_code == 401
            assert me.json()["code"] == "auth.invalid_token"
