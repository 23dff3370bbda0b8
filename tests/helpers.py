"""Small helpers the tests share: accounts, sign-in and problem assertions."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import PASSWORD


async def register(
    client: httpx.AsyncClient,
    email: str = "ann@example.com",
    password: str = PASSWORD,
    display_name: str = "Ann",
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": password, "display_name": display_name},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(
    client: httpx.AsyncClient, email: str = "ann@example.com", password: str = PASSWORD
) -> dict[str, Any]:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def signed_up(
    client: httpx.AsyncClient, email: str = "ann@example.com", display_name: str = "Ann"
) -> dict[str, Any]:
    """Register and sign in; the token pair with the user under `user`."""
    user = await register(client, email=email, display_name=display_name)
    tokens = await login(client, email=email)
    return {**tokens, "user": user}


def bearer(tokens: dict[str, Any] | str) -> dict[str, str]:
    token = tokens if isinstance(tokens, str) else tokens["access_token"]
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"] == f"urn:veche:problem:{code}"
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body
