from __future__ import annotations

import httpx

from tests.helpers import bearer, signed_up


async def test_register_login_me(client: httpx.AsyncClient) -> None:
    tokens = await signed_up(client)
    response = await client.get("/api/v1/me", headers=bearer(tokens))
    assert response.status_code == 200
    assert response.json()["email"] == "ann@example.com"
