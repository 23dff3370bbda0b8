"""Brute-force protection: failures are limited per (account, ip), per ip and per account
from strangers, and an attacker can never lock the owner out from their own address."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import PASSWORD, client_for
from tests.helpers import assert_problem, register
from veche.settings import Settings

PROXY = "10.0.0.1"


async def attempt(client: httpx.AsyncClient, ip: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login",
        json={"email": "ann@example.com", "password": password},
        headers={"x-forwarded-for": ip},
    )


async def protected_client(
    settings_factory: Callable[..., Settings], app_factory: Callable[..., Any], **auth: str
) -> httpx.AsyncClient:
    settings = settings_factory(
        trusted_proxies=[f"{PROXY}/32"],
        auth={
            "login_failures_per_account_ip": "3/15minutes",
            "login_failures_per_ip": "6/15minutes",
            "login_failures_per_account": "4/hour",
            **auth,
        },
    )
    return client_for(await app_factory(settings), client_ip=PROXY)


async def test_repeated_failures_from_one_address_are_throttled(
    settings_factory: Callable[..., Settings], app_factory: Callable[..., Any]
) -> None:
    async with await protected_client(settings_factory, app_factory) as client:
        await register(client)
        for _ in range(3):
            assert_problem(
                await attempt(client, "203.0.113.5", "wrong!"), 401, "auth.invalid_credentials"
            )
        # Even the right password is refused now from that address...
        throttled = await attempt(client, "203.0.113.5", PASSWORD)
        body = assert_problem(throttled, 429, "auth.login_throttled")
        assert int(throttled.headers["retry-after"]) >= 1
        assert "try again in" in body["detail"]
        # ...but not from the owner's other address.
        assert (await attempt(client, "198.51.100.7", PASSWORD)).status_code == 200


async def test_one_address_spraying_many_accounts_is_throttled(
    settings_factory: Callable[..., Settings], app_factory: Callable[..., Any]
) -> None:
    async with await protected_client(settings_factory, app_factory) as client:
        for index in range(6):
            response = await client.post(
                "/api/v1/auth/login",
                json={"email": f"user{index}@example.com", "password": "guess-1234"},
                headers={"x-forwarded-for": "203.0.113.9"},
            )
            assert_problem(response, 401, "auth.invalid_credentials")
        response = await client.post(
            "/api/v1/auth/login",
            json={"email": "someone@example.com", "password": "guess-1234"},
            headers={"x-forwarded-for": "203.0.113.9"},
        )
        assert_problem(response, 429, "auth.login_throttled")


async def test_a_distributed_attack_cannot_lock_the_owner_out(
    settings_factory: Callable[..., Settings], app_factory: Callable[..., Any]
) -> None:
    async with await protected_client(settings_factory, app_factory) as client:
        await register(client)
        # The owner has signed in from home before.
        assert (await attempt(client, "198.51.100.7", PASSWORD)).status_code == 200
        # Attackers from many addresses exhaust the account's budget for strangers.
        for index in range(4):
            response = await attempt(client, f"203.0.113.{10 + index}", "wrong!")
            assert_problem(response, 401, "auth.invalid_credentials")
        stranger = await attempt(client, "203.0.113.99", PASSWORD)
        assert_problem(stranger, 429, "auth.login_throttled")
        # The owner, from the address they used before, still gets in.
        assert (await attempt(client, "198.51.100.7", PASSWORD)).status_code == 200


async def test_a_successful_login_clears_the_pair_counter(
    settings_factory: Callable[..., Settings], app_factory: Callable[..., Any]
) -> None:
    async with await protected_client(settings_factory, app_factory) as client:
        await register(client)
        for _ in range(2):
            await attempt(client, "198.51.100.7", "typo!")
        assert (await attempt(client, "198.51.100.7", PASSWORD)).status_code == 200
        for _ in range(2):
            assert_problem(
                await attempt(client, "198.51.100.7", "typo!"), 401, "auth.invalid_credentials"
            )
        assert (await attempt(client, "198.51.100.7", PASSWORD)).status_code == 200


async def test_auth_endpoints_are_rate_limited_by_default(
    settings_factory: Callable[..., Settings], app_factory: Callable[..., Any]
) -> None:
    app = await app_factory(settings_factory(rate_limits={"auth": "2/minute"}))
    async with client_for(app) as client:
        body = {"email": "x@example.com", "password": "whatever-123"}
        first = await client.post("/api/v1/auth/login", json=body)
        assert first.headers["x-ratelimit-limit"] == "2"
        assert first.headers["x-ratelimit-remaining"] == "1"
        await client.post("/api/v1/auth/login", json=body)
        limited = await client.post("/api/v1/auth/register", json=body)
        assert_problem(limited, 429, "rate_limited")
        assert "retry-after" in limited.headers
