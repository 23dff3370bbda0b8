"""Rate limits: headers, 429 problems, keys by user or client address, trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import client_for
from tests.helpers import assert_problem, bearer, login, register, signed_up
from veche.kernel.http import parse_networks, resolve_client_ip
from veche.settings import Settings

ME = "/api/v1/me"
LOGIN = "/api/v1/auth/login"

AppFactory = Callable[..., Any]
SettingsFactory = Callable[..., Settings]


def limit_headers(response: httpx.Response) -> tuple[int, int, int]:
    return (
        int(response.headers["x-ratelimit-limit"]),
        int(response.headers["x-ratelimit-remaining"]),
        int(response.headers["x-ratelimit-reset"]),
    )


async def limited_app(
    app_factory: AppFactory, settings_factory: SettingsFactory, **overrides: Any
) -> FastAPI:
    limits = {"default": "3/minute", **overrides.pop("rate_limits", {})}
    app: FastAPI = await app_factory(settings_factory(rate_limits=limits, **overrides))
    return app


# -- resolve_client_ip ------------------------------------------------------------------

PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8"])


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert resolve_client_ip("203.0.113.5", ["198.51.100.1"], []) == "203.0.113.5"


def test_an_untrusted_peer_cannot_forward_for_anyone() -> None:
    assert resolve_client_ip("203.0.113.5", ["198.51.100.1"], PROXIES) == "203.0.113.5"
    assert resolve_client_ip("11.0.0.1", ["10.0.0.2"], PROXIES) == "11.0.0.1"


def test_a_trusted_proxy_names_the_client() -> None:
    assert resolve_client_ip("10.0.0.1", ["198.51.100.7"], PROXIES) == "198.51.100.7"
    assert resolve_client_ip("fd00::1", ["2001:db8::7"], PROXIES) == "2001:db8::7"


def test_the_nearest_untrusted_hop_from_the_right_wins() -> None:
    # The client can write anything on the left; only what our proxies appended counts.
    chain = ["1.1.1.1, 198.51.100.7, 10.0.0.3, 10.0.0.2"]
    assert resolve_client_ip("10.0.0.1", chain, PROXIES) == "198.51.100.7"
    # Several headers are one list, in order.
    split = ["1.1.1.1", "198.51.100.7 , 10.0.0.3"]
    assert resolve_client_ip("10.0.0.1", split, PROXIES) == "198.51.100.7"


def test_a_chain_of_only_trusted_hops_names_the_first() -> None:
    assert resolve_client_ip("10.0.0.1", ["10.0.0.9, 10.0.0.3"], PROXIES) == "10.0.0.9"


def test_a_trusted_proxy_without_forwarding_is_the_client() -> None:
    assert resolve_client_ip("10.0.0.1", [], PROXIES) == "10.0.0.1"
    assert resolve_client_ip("10.0.0.1", [" , "], PROXIES) == "10.0.0.1"


@pytest.mark.parametrize(
    "chain",
    [
        "198.51.100.7, garbage",
        "unknown",
        "198.51.100.7:4711",
        "198.51.100.7, <script>",
        "1.1.1.1, 999.1.1.1, 10.0.0.3",
    ],
)
def test_a_garbage_hop_falls_back_to_the_peer(chain: str) -> None:
    assert resolve_client_ip("10.0.0.1", [chain], PROXIES) == "10.0.0.1"


def test_garbage_left_of_the_client_is_never_reached() -> None:
    assert resolve_client_ip("10.0.0.1", ["garbage, 198.51.100.7"], PROXIES) == "198.51.100.7"


def test_no_peer_is_no_client() -> None:
    assert resolve_client_ip(None, ["198.51.100.7"], PROXIES) is None


def test_parse_networks_accepts_hosts_and_networks() -> None:
    assert parse_networks(["127.0.0.1", "10.1.2.3/8"]) == [
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    ]


# -- headers and refusals ---------------------------------------------------------------


async def test_limited_responses_carry_the_headers(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(app_factory, settings_factory)
    async with client_for(app) as client:
        tokens = await signed_up(client)
        remaining = []
        for _ in range(3):
            response = await client.get(ME, headers=bearer(tokens))
            assert response.status_code == 200
            limit, left, reset = limit_headers(response)
            assert limit == 3
            assert 0 < reset <= 60
            remaining.append(left)
            assert "retry-after" not in response.headers
        assert remaining == [2, 1, 0]


async def test_unlimited_routes_have_no_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/example/ping")
    assert response.status_code == 200
    assert "x-ratelimit-limit" not in response.headers


async def test_over_the_limit_is_a_429_problem_with_retry_after(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(app_factory, settings_factory)
    async with client_for(app) as client:
        tokens = await signed_up(client)
        for _ in range(3):
            assert (await client.get(ME, headers=bearer(tokens))).status_code == 200
        for _ in range(2):
            refused = await client.get(ME, headers=bearer(tokens))
            body = assert_problem(refused, 429, "rate_limited")
            assert "'default'" in body["detail"]
            retry_after = int(refused.headers["retry-after"])
            assert 1 <= retry_after <= 60
            limit, remaining, reset = limit_headers(refused)
            assert (limit, remaining) == (3, 0)
            assert retry_after == max(reset, 1)


async def test_errors_count_against_the_budget_and_carry_headers(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(app_factory, settings_factory)
    async with client_for(app) as client:
        for expected_remaining in (2, 1, 0):
            anonymous = await client.get(ME)
            assert_problem(anonymous, 401, "unauthorized")
            assert limit_headers(anonymous)[1] == expected_remaining
        assert_problem(await client.get(ME), 429, "rate_limited")


async def test_the_tightest_of_several_limits_decides(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(
        app_factory, settings_factory, rate_limits={"default": "5/minute;2/hour"}
    )
    async with client_for(app) as client:
        first = await client.get(ME)
        assert limit_headers(first)[:2] == (2, 1)
        await client.get(ME)
        refused = await client.get(ME)
        assert_problem(refused, 429, "rate_limited")
        limit, remaining, reset = limit_headers(refused)
        assert (limit, remaining) == (2, 0)
        # A sliding window frees a request once the previous window's weight has decayed,
        # which may be any time within the hour (even seconds, near an hour boundary).
        assert 0 < reset <= 3600
        assert int(refused.headers["retry-after"]) == max(reset, 1)


async def test_policies_have_separate_budgets(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(app_factory, settings_factory, rate_limits={"auth": "2/minute"})
    async with client_for(app) as client:
        await register(client)
        tokens = await login(client)
        assert_problem(
            await client.post(LOGIN, json={"email": "ann@example.com", "password": "x"}),
            429,
            "rate_limited",
        )
        # The auth budget is spent; the default one is untouched.
        me = await client.get(ME, headers=bearer(tokens))
        assert me.status_code == 200
        assert limit_headers(me)[:2] == (3, 2)


# -- keys -------------------------------------------------------------------------------


async def test_each_signed_in_user_has_a_budget(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(app_factory, settings_factory)
    async with client_for(app) as client:
        ann = await signed_up(client, email="ann@example.com")
        bob = await signed_up(client, email="bob@example.com", display_name="Bob")
        for _ in range(3):
            assert (await client.get(ME, headers=bearer(ann))).status_code == 200
        assert_problem(await client.get(ME, headers=bearer(ann)), 429, "rate_limited")
        # Same address, another user: a fresh budget.
        for expected_remaining in (2, 1, 0):
            response = await client.get(ME, headers=bearer(bob))
            assert response.status_code == 200
            assert limit_headers(response)[1] == expected_remaining
        assert_problem(await client.get(ME, headers=bearer(bob)), 429, "rate_limited")
        # Anonymous callers from that address were never charged.
        assert limit_headers(await client.get(ME))[1] == 2


async def test_an_invalid_token_is_limited_by_address(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(app_factory, settings_factory)
    async with client_for(app) as client:
        await client.get(ME)
        await client.get(ME, headers=bearer("not-a-token"))
        await client.get(ME, headers=bearer("also.not.a-token"))
        assert_problem(await client.get(ME, headers=bearer("x")), 429, "rate_limited")


async def test_anonymous_callers_are_limited_by_address(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(app_factory, settings_factory)
    async with (
        client_for(app, client_ip="192.0.2.1") as first,
        client_for(app, client_ip="192.0.2.2") as second,
    ):
        for _ in range(3):
            await first.get(ME)
        assert_problem(await first.get(ME), 429, "rate_limited")
        response = await second.get(ME)
        assert_problem(response, 401, "unauthorized")
        assert limit_headers(response)[1] == 2


async def test_a_trusted_proxy_forwards_separate_clients(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(app_factory, settings_factory, trusted_proxies=["127.0.0.1/32"])
    async with client_for(app, client_ip="127.0.0.1") as proxy:
        one = {"x-forwarded-for": "198.51.100.1"}
        two = {"x-forwarded-for": "198.51.100.2"}
        spoofed_one = {"x-forwarded-for": "6.6.6.6, 198.51.100.1"}
        for headers in (one, one, spoofed_one):
            await proxy.get(ME, headers=headers)
        assert_problem(await proxy.get(ME, headers=one), 429, "rate_limited")
        response = await proxy.get(ME, headers=two)
        assert_problem(response, 401, "unauthorized")
        assert limit_headers(response)[1] == 2
        # The proxy's own requests are keyed by the proxy.
        assert limit_headers(await proxy.get(ME))[1] == 2


async def test_an_untrusted_peer_cannot_spoof_a_new_budget(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(app_factory, settings_factory)
    async with client_for(app, client_ip="192.0.2.9") as client:
        for index in range(3):
            await client.get(ME, headers={"x-forwarded-for": f"198.51.100.{index}"})
        refused = await client.get(ME, headers={"x-forwarded-for": "198.51.100.200"})
        assert_problem(refused, 429, "rate_limited")


async def test_a_proxy_outside_the_trusted_list_is_not_believed(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    app = await limited_app(app_factory, settings_factory, trusted_proxies=["10.0.0.0/8"])
    async with client_for(app, client_ip="192.0.2.9") as client:
        for index in range(3):
            await client.get(ME, headers={"x-forwarded-for": f"198.51.100.{index}"})
        refused = await client.get(ME, headers={"x-forwarded-for": "198.51.100.200"})
        assert_problem(refused, 429, "rate_limited")
