"""Access tokens: only our own, unexpired, correctly typed HS256 tokens get through."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import TEST_SECRET, client_for
from tests.helpers import assert_problem, bearer, login, signed_up
from veche.kernel.identity.tokens import AccessTokens, InvalidToken, derive_key, key_id
from veche.settings import AuthSettings, Settings

KEY = derive_key(TEST_SECRET, "jwt-access")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged(claims: dict[str, Any], *, key: bytes = KEY, **header: Any) -> str:
    headers = {"kid": key_id(KEY), "typ": "at+jwt", **header}
    algorithm = headers.pop("alg", "HS256")
    if algorithm != "HS256":
        key = key * 2  # long enough for HS512, so only the algorithm is wrong
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def claims_of(token: str) -> dict[str, Any]:
    result: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return result


async def test_a_genuine_token_works_and_carries_the_standard_claims(
    client: httpx.AsyncClient,
) -> None:
    tokens = await signed_up(client)
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header == {"alg": "HS256", "kid": key_id(KEY), "typ": "at+jwt"}
    claims = claims_of(tokens["access_token"])
    assert claims["iss"] == "veche"
    assert claims["aud"] == "veche"
    assert claims["sub"] == tokens["user"]["id"]
    assert claims["sid"] == tokens["session_id"]
    assert claims["exp"] - claims["nbf"] == 15 * 60
    response = await client.get("/api/v1/me", headers=bearer(forged(claims)))
    assert response.status_code == 200  # the forging helper itself signs correctly


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c, h: h.update(alg="HS512"), "algorithm"),
        (lambda c, h: h.update(kid="0123456789abcdef"), "unknown signing key"),
        (lambda c, h: h.update(typ="JWT"), "not an access token"),
        (lambda c, h: c.update(aud="someone-else"), "rejected"),
        (lambda c, h: c.update(iss="https://evil.example"), "rejected"),
        (lambda c, h: c.pop("sid"), "rejected"),
        (lambda c, h: c.update(nbf=int(time.time()) + 3600), "rejected"),
        (lambda c, h: c.update(sub="not-a-uuid"), "malformed"),
    ],
)
async def test_tampered_tokens_are_refused(
    client: httpx.AsyncClient,
    mutate: Callable[[dict[str, Any], dict[str, Any]], None],
    reason: str,
) -> None:
    tokens = await signed_up(client)
    claims, header = claims_of(tokens["access_token"]), {}
    mutate(claims, header)
    response = await client.get("/api/v1/me", headers=bearer(forged(claims, **header)))
    body = assert_problem(response, 401, "auth.invalid_token")
    assert reason in body["detail"]


async def test_alg_none_is_refused(client: httpx.AsyncClient) -> None:
    tokens = await signed_up(client)
    header = {"alg": "none", "typ": "at+jwt", "kid": key_id(KEY)}
    token = f"{_b64(header)}.{_b64(claims_of(tokens['access_token']))}."
    response = await client.get("/api/v1/me", headers=bearer(token))
    assert_problem(response, 401, "auth.invalid_token")


async def test_a_token_signed_with_a_foreign_key_is_refused(client: httpx.AsyncClient) -> None:
    tokens = await signed_up(client)
    foreign = forged(claims_of(tokens["access_token"]), key=b"k" * 32)
    response = await client.get("/api/v1/me", headers=bearer(foreign))
    assert_problem(response, 401, "auth.invalid_token")


async def test_an_expired_token_says_so(client: httpx.AsyncClient) -> None:
    tokens = await signed_up(client)
    claims = claims_of(tokens["access_token"])
    claims.update(exp=int(time.time()) - 120, nbf=int(time.time()) - 1000)
    response = await client.get("/api/v1/me", headers=bearer(forged(claims)))
    assert_problem(response, 401, "auth.token_expired")


async def test_keys_rotate_without_logging_anyone_out(
    settings_factory: Callable[..., Settings], app_factory: Callable[..., Any]
) -> None:
    old_app = await app_factory(settings_factory())
    async with client_for(old_app) as old_client:
        tokens = await signed_up(old_client)
    new_secret = "a-brand-new-secret-key-for-rotation-0123456789"
    rotated = await app_factory(
        settings_factory(secret_key=new_secret, previous_secret_keys=[TEST_SECRET])
    )
    async with client_for(rotated) as client:
        response = await client.get("/api/v1/me", headers=bearer(tokens))
        assert response.status_code == 200, response.text
        fresh = await login(client)
        new_kid = jwt.get_unverified_header(fresh["access_token"])["kid"]
        assert new_kid == key_id(derive_key(new_secret, "jwt-access"))
    retired = await app_factory(settings_factory(secret_key=new_secret))
    async with client_for(retired) as client:
        response = await client.get("/api/v1/me", headers=bearer(tokens))
        assert_problem(response, 401, "auth.invalid_token")
        assert (await client.get("/api/v1/me", headers=bearer(fresh))).status_code == 200


def test_verify_rejects_garbage_without_raising_anything_else() -> None:
    tokens = AccessTokens([TEST_SECRET], AuthSettings())
    for garbage in ["", "a.b", "a.b.c", "ey.ey.ey", "\u00e9" * 10, "." * 5]:
        with pytest.raises(InvalidToken):
            tokens.verify(garbage)
