"""Health, readiness, Prometheus metrics and the JSON access log (without secrets)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PASSWORD, client_for
from tests.helpers import assert_problem, bearer, login, register, signed_up
from veche.kernel.observability.logging import REDACTED, redact_secrets
from veche.settings import Settings

AppFactory = Callable[..., Any]
SettingsFactory = Callable[..., Settings]


# -- health and readiness ---------------------------------------------------------------


async def test_health_says_alive(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_ready_lists_every_check(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    names = [check["name"] for check in body["checks"]]
    expected = {"database", "example.self"} | ({"redis"} if settings.redis_url else set())
    if settings.events_url:  # NATS; the embedded SQL log is the database's check
        expected.add("events")
    assert set(names) == expected
    assert all(check["ok"] and check["error"] is None for check in body["checks"])


async def test_ready_names_an_unreachable_backend(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    # Nothing listens on port 1.
    settings = settings_factory(redis_url="redis://127.0.0.1:1/0")
    app: FastAPI = await app_factory(settings)
    async with client_for(app) as client:
        response = await client.get("/ready")
        body = assert_problem(response, 503, "not_ready")
        assert body["detail"] == "Unreachable: redis"
        checks = {check["name"]: check for check in body["checks"]}
        events = {"events"} if settings.events_url else set()
        assert set(checks) == {"database", "redis", "example.self"} | events
        assert checks["redis"]["ok"] is False
        assert checks["redis"]["error"]
        assert checks["database"]["ok"] is True
        assert checks["example.self"]["ok"] is True
        # The failure's kind only: no address or credentials from the exception message.
        assert "127.0.0.1" not in response.text
        # Liveness does not depend on the backends.
        assert (await client.get("/health")).status_code == 200


async def test_ready_names_an_unreachable_events_backend(
    app_factory: AppFactory, settings_factory: SettingsFactory
) -> None:
    # Nothing listens on port 1.
    app: FastAPI = await app_factory(
        settings_factory(redis_url=None, events_url="nats://127.0.0.1:1")
    )
    async with client_for(app) as client:
        response = await client.get("/ready")
        body = assert_problem(response, 503, "not_ready")
        assert body["detail"] == "Unreachable: events"
        checks = {check["name"]: check for check in body["checks"]}
        assert set(checks) == {"database", "events", "example.self"}
        assert checks["events"]["ok"] is False
        assert checks["events"]["error"]
        assert checks["database"]["ok"] is True
        assert "127.0.0.1" not in response.text


# -- metrics ----------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def request_count(text: str, method: str, route: str, status: int) -> float:
    labels = frozenset({"method": method, "route": route, "status": str(status)}.items())
    return samples(text).get(("veche_http_requests_total", labels), 0.0)


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    route = "/api/v1/auth/sessions/{session_id}"
    before = (await client.get("/metrics")).text
    tokens = await signed_up(client)
    session_ids = [str(uuid4()) for _ in range(3)]
    for session_id in session_ids:
        response = await client.delete(
            f"/api/v1/auth/sessions/{session_id}", headers=bearer(tokens)
        )
        assert_problem(response, 404, "auth.session_not_found")
    await client.get("/api/v1/example/ping")
    await client.get("/api/v1/no-such-place-3f9a")

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        request_count(text, "DELETE", route, 404) - request_count(before, "DELETE", route, 404) == 3
    )
    assert f'route="{route}"' in text
    # Routes of an app module carry the prefix the module is mounted under.
    ping = "/api/v1/example/ping"
    assert request_count(text, "GET", ping, 200) - request_count(before, "GET", ping, 200) == 1
    assert request_count(text, "GET", "<unmatched>", 404) >= 1
    # Raw paths never become labels.
    for session_id in session_ids:
        assert session_id not in text
    assert "no-such-place-3f9a" not in text
    assert "veche_http_request_duration_seconds_bucket" in text


async def test_metrics_expose_in_flight_and_pool_gauges(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    found = samples(text)
    in_flight = found[("veche_http_requests_in_flight", frozenset())]
    assert in_flight >= 1  # the /metrics request itself is in flight
    pool_states = {
        dict(labels)["state"] for name, labels in found if name == "veche_db_pool_connections"
    }
    assert {"size", "checkedout", "checkedin", "overflow"} <= pool_states


# -- the access log ---------------------------------------------------------------------


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """stdout, where an app built during the test sends its logs; afterwards the log
    handler is pointed back at the real stdout, before capsys closes its buffer."""
    yield capsys
    root = logging.getLogger()
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler:  # ours, not pytest's capture handlers
            handler.stream = sys.__stdout__  # not setStream: it flushes the closed buffer
    root.setLevel(logging.WARNING)


def log_lines(output: str) -> list[dict[str, Any]]:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines
    parsed = []
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert isinstance(record, dict), line
        assert {"level", "ts", "event"} <= set(record), record
        parsed.append(record)
    return parsed


async def test_access_log_is_json_with_the_request_context(
    captured: pytest.CaptureFixture[str],
    app_factory: AppFactory,
    settings_factory: SettingsFactory,
) -> None:
    app: FastAPI = await app_factory(settings_factory(log_level="info"))
    async with client_for(app) as client:
        captured.readouterr()
        tokens = await signed_up(client)
        me = await client.get("/api/v1/me", headers=bearer(tokens))
        missing = await client.get("/api/v1/missing", headers={"x-request-id": "trace-42"})
    records = log_lines(captured.readouterr().out)
    access = [record for record in records if record["event"] == "request"]
    assert len(access) == 4  # register, login, me, missing
    for record in access:
        assert {"method", "path", "status", "duration_ms", "request_id", "user_id"} <= set(record)
        assert record["level"] in ("info", "warning")
        assert isinstance(record["duration_ms"], int | float)
        assert record["ts"].endswith("Z")
    by_path = {record["path"]: record for record in access}
    assert by_path["/api/v1/me"]["user_id"] == tokens["user"]["id"]
    assert by_path["/api/v1/me"]["request_id"] == me.headers["x-request-id"]
    assert by_path["/api/v1/me"]["status"] == 200
    assert by_path["/api/v1/me"]["level"] == "info"
    assert by_path["/api/v1/auth/login"]["user_id"] is None
    assert by_path["/api/v1/missing"]["request_id"] == missing.headers["x-request-id"]
    assert by_path["/api/v1/missing"]["request_id"] == "trace-42"
    assert by_path["/api/v1/missing"]["status"] == 404
    assert by_path["/api/v1/missing"]["level"] == "warning"


async def test_logs_never_carry_passwords_or_tokens(
    captured: pytest.CaptureFixture[str],
    app_factory: AppFactory,
    settings_factory: SettingsFactory,
) -> None:
    app: FastAPI = await app_factory(settings_factory(log_level="info"))
    async with client_for(app) as client:
        captured.readouterr()
        await register(client, email="ann@example.com")
        tokens = await login(client, email="ann@example.com")
        await client.get("/api/v1/me", headers=bearer(tokens))
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200
        await client.post(
            "/api/v1/auth/login", json={"email": "ann@example.com", "password": "wrong " + PASSWORD}
        )
        await client.get(
            "/api/v1/example/ping", params={"token": tokens["access_token"], "password": PASSWORD}
        )
        await client.post("/api/v1/auth/register", content=PASSWORD.encode())
    output = captured.readouterr().out
    log_lines(output)
    for secret in (
        PASSWORD,
        tokens["access_token"],
        tokens["refresh_token"],
        refreshed.json()["access_token"],
        refreshed.json()["refresh_token"],
    ):
        assert secret not in output


# -- redaction --------------------------------------------------------------------------


def test_redact_secrets_by_key_at_any_depth() -> None:
    event = {
        "event": "token_refreshed",
        "password": PASSWORD,
        "new_password": PASSWORD,
        "Authorization": "Bearer abc",
        "refresh_token": "r",
        "api_key": "k",
        "X-Api-Key": "k",
        "client_secret": "s",
        "cookie": "c",
        "credentials": {"user": "u"},
        "request": {"headers": {"authorization": "Bearer abc", "accept": "*/*"}},
        "sessions": [{"refresh_token": "r", "id": 1}, "plain"],
        "user_id": "u-1",
        "status": 200,
    }
    result = redact_secrets(None, "info", dict(event))
    assert result["event"] == "token_refreshed"  # the message itself is kept
    for key in (
        "password",
        "new_password",
        "Authorization",
        "refresh_token",
        "api_key",
        "X-Api-Key",
        "client_secret",
        "cookie",
        "credentials",
    ):
        assert result[key] == REDACTED, key
    assert result["request"] == {"headers": {"authorization": REDACTED, "accept": "*/*"}}
    assert result["sessions"] == [{"refresh_token": REDACTED, "id": 1}, "plain"]
    assert result["user_id"] == "u-1"
    assert result["status"] == 200


def test_redact_secrets_keeps_ordinary_fields() -> None:
    event = {"event": "request", "method": "GET", "path": "/x", "duration_ms": 1.5}
    assert redact_secrets(None, "info", dict(event)) == event
