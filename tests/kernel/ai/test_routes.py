"""`/api/v1/ai/*` over HTTP: who sees whose usage, the filters and pagination, the summary
with the caller's budget, and the model profiles (never a key or an endpoint)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import PASSWORD, client_for
from tests.helpers import assert_problem, bearer, login, signed_up
from veche.kernel.ai.models import AIUsage, AIUsageDay
from veche.kernel.ai.types import TokenUsage
from veche.kernel.ai.usage import CallRecord, day_start
from veche.kernel.identity import IdentityService
from veche.kernel.runtime import Kernel
from veche.settings import Settings

NOON = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
PROFILE_KEY = "sk-profile-secret-5f3c9a"
PROFILE_URL = "http://llm-private.internal.example:9911/v1"
DEFAULT_URL = "http://default-llm.internal.example:8080/v1"
DEFAULT_KEY = "sk-default-secret-77aa1"


async def make_admin(kernel: Kernel, client: httpx.AsyncClient) -> dict[str, Any]:
    async with kernel.db.unit_of_work() as session:
        await IdentityService(session, kernel).register(
            email="root@example.com", password=PASSWORD, display_name="Root", role="admin"
        )
    return await login(client, email="root@example.com")


async def create_usage(kernel: Kernel, user: dict[str, Any] | None, **overrides: Any) -> AIUsage:
    values: dict[str, Any] = {
        "user_id": uuid.UUID(user["user"]["id"]) if user else None,
        "app": "blog",
        "purpose": "default",
        "kind": "chat",
        "provider": "openai",
        "model": "gpt-test",
        "prompt": None,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_ms": 120,
        "outcome": "ok",
        "cost": 0.0,
    }
    values.update(overrides)
    row = AIUsage(**values)
    async with kernel.db.unit_of_work() as session:
        session.add(row)
        if row.user_id is not None:  # and its day's total, as a ledger stores a call
            day = (row.created_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
            tokens = row.prompt_tokens + row.completion_tokens
            session.add(
                AIUsageDay(
                    user_id=row.user_id, day=day, ledger_id=uuid.uuid4(), tokens=tokens, batch=1
                )
            )
    return row


async def usage(client: httpx.AsyncClient, tokens: dict[str, Any], **params: Any) -> httpx.Response:
    return await client.get("/api/v1/ai/usage", params=params, headers=bearer(tokens))


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_usage_needs_a_token(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/ai/usage", "/api/v1/ai/usage/summary", "/api/v1/ai/models"):
        assert_problem(await client.get(path), 401, "unauthorized")
        bad = await client.get(path, headers=bearer("not-a-token"))
        assert bad.status_code == 401


async def test_a_user_sees_only_their_own_usage(client: httpx.AsyncClient, kernel: Kernel) -> None:
    ann = await signed_up(client)
    bob = await signed_up(client, email="bob@example.com", display_name="Bob")
    await kernel.ai.ledger.record(
        CallRecord(
            app="notes",
            purpose="summary",
            kind="structured",
            provider="openai",
            model="gpt-test",
            user_id=uuid.UUID(ann["user"]["id"]),
            usage=TokenUsage(prompt_tokens=30, completion_tokens=12),
            latency_seconds=0.25,
            outcome="ai_invalid_output",
            prompt="summarize@v3",
        )
    )
    bobs = await create_usage(kernel, bob)
    await create_usage(kernel, None)  # a system call: nobody's

    response = await usage(client, ann)

    [item] = response.json()["items"]
    assert item["user_id"] == ann["user"]["id"]
    assert {key: item[key] for key in ("app", "purpose", "kind", "prompt", "outcome")} == {
        "app": "notes",
        "purpose": "summary",
        "kind": "structured",
        "prompt": "summarize@v3",
        "outcome": "ai_invalid_output",
    }
    assert (item["prompt_tokens"], item["completion_tokens"], item["latency_ms"]) == (30, 12, 250)
    assert response.json()["next_cursor"] is None
    assert ids(await usage(client, bob)) == [str(bobs.id)]
    assert ids(await usage(client, bob, user_id=bob["user"]["id"])) == [str(bobs.id)]


async def test_only_admins_read_other_peoples_usage(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    ann = await signed_up(client)
    bob = await signed_up(client, email="bob@example.com", display_name="Bob")
    admin = await make_admin(kernel, client)
    anns = await create_usage(kernel, ann, created_at=NOON)
    bobs = await create_usage(kernel, bob, created_at=NOON + dt.timedelta(minutes=1))
    systems = await create_usage(kernel, None, created_at=NOON + dt.timedelta(minutes=2))

    refused = await usage(client, ann, user_id=bob["user"]["id"])

    body = assert_problem(refused, 403, "forbidden")
    assert bob["user"]["id"] not in body.get("detail", "")
    everyone = await usage(client, admin)
    assert ids(everyone) == [str(systems.id), str(bobs.id), str(anns.id)]
    assert ids(await usage(client, admin, user_id=bob["user"]["id"])) == [str(bobs.id)]
    assert ids(await usage(client, admin, user_id=str(uuid.uuid4()))) == []


async def test_filters_by_app_purpose_and_time(client: httpx.AsyncClient, kernel: Kernel) -> None:
    ann = await signed_up(client)
    early = await create_usage(kernel, ann, created_at=NOON - dt.timedelta(hours=2))
    before = await create_usage(kernel, ann, app="crm", created_at=NOON - dt.timedelta(hours=1))
    at_noon = await create_usage(kernel, ann, purpose="summary", created_at=NOON)
    late = await create_usage(kernel, ann, created_at=NOON + dt.timedelta(hours=1))

    assert ids(await usage(client, ann, app="crm")) == [str(before.id)]
    assert ids(await usage(client, ann, purpose="summary")) == [str(at_noon.id)]
    assert ids(await usage(client, ann, app="blog", purpose="default")) == [
        str(late.id),
        str(early.id),
    ]
    window = {
        "since": (NOON - dt.timedelta(hours=1)).isoformat(),
        "until": (NOON + dt.timedelta(hours=1)).isoformat(),
    }
    assert ids(await usage(client, ann, **window)) == [str(at_noon.id), str(before.id)]
    # The same instant written with another offset.
    assert ids(await usage(client, ann, since="2025-03-01T14:00:00+02:00")) == [
        str(late.id),
        str(at_noon.id),
    ]
    assert ids(await usage(client, ann, until="2025-03-01T10:00:00.000001Z")) == [str(early.id)]


async def test_bad_filters_are_refused(client: httpx.AsyncClient) -> None:
    ann = await signed_up(client)

    same = NOON.isoformat()
    assert_problem(await usage(client, ann, since=same, until=same), 400, "bad_request")
    backwards = {"since": NOON.isoformat(), "until": (NOON - dt.timedelta(days=1)).isoformat()}
    assert_problem(await usage(client, ann, **backwards), 400, "bad_request")
    for since in ("0", "1740830400", "yesterday", "2025-03-01T12:00:00", "2025-03-01"):
        response = await usage(client, ann, since=since)
        body = assert_problem(response, 422, "validation_failed")
        assert body["errors"][0]["loc"] == ["query", "since"], since
    assert_problem(await usage(client, ann, app="Blog!"), 422, "validation_failed")
    assert_problem(await usage(client, ann, purpose="A B"), 422, "validation_failed")
    assert_problem(await usage(client, ann, user_id="someone"), 422, "validation_failed")
    summary = await client.get(
        "/api/v1/ai/usage/summary",
        params={"since": same, "until": same},
        headers=bearer(ann),
    )
    assert_problem(summary, 400, "bad_request")


async def test_cursor_pagination(client: httpx.AsyncClient, kernel: Kernel) -> None:
    ann = await signed_up(client)
    bob = await signed_up(client, email="bob@example.com", display_name="Bob")
    rows = [
        await create_usage(kernel, ann, created_at=NOON + dt.timedelta(minutes=index))
        for index in range(7)
    ]
    # Two rows at the same instant: the id breaks the tie, so neither is lost or repeated.
    rows.append(await create_usage(kernel, ann, created_at=NOON + dt.timedelta(minutes=3)))
    await create_usage(kernel, bob, created_at=NOON)

    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await usage(client, ann, **params)
        seen += ids(response)
        pages += 1
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert len(seen) == len(set(seen)) == 8
    assert set(seen) == {str(row.id) for row in rows}
    assert seen[0] == str(rows[6].id)
    assert seen[-1] == str(rows[0].id)

    first = await usage(client, ann, limit=3)
    cursor = first.json()["next_cursor"]
    assert cursor
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    assert_problem(await usage(client, ann, cursor=tampered), 400, "pagination.invalid_cursor")
    assert_problem(await usage(client, ann, cursor="%%%"), 400, "pagination.invalid_cursor")
    # A cursor is bound to its filters and to its caller.
    assert_problem(
        await usage(client, ann, cursor=cursor, app="blog"), 400, "pagination.invalid_cursor"
    )
    assert_problem(await usage(client, bob, cursor=cursor), 400, "pagination.invalid_cursor")


async def test_summary_totals_and_budget(
    app_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    app: FastAPI = await app_factory(settings_factory(ai={"daily_token_budget": 1000}))
    kernel: Kernel = app.state.kernel
    async with client_for(app) as client:
        ann = await signed_up(client)
        bob = await signed_up(client, email="bob@example.com", display_name="Bob")
        admin = await make_admin(kernel, client)
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
        for prompt, completion, cost in ((100, 20, 0.5), (50, 10, 0.25)):
            await create_usage(
                kernel, ann, prompt_tokens=prompt, completion_tokens=completion, cost=cost
            )
        await create_usage(kernel, ann, app="crm", model="gpt-big", cost=1.5)
        await create_usage(kernel, ann, prompt_tokens=900, created_at=long_ago)
        await create_usage(kernel, bob, prompt_tokens=70, completion_tokens=0)

        response = await client.get("/api/v1/ai/usage/summary", headers=bearer(ann))
        everyone = await client.get("/api/v1/ai/usage/summary", headers=bearer(admin))
        since = (long_ago - dt.timedelta(seconds=1)).isoformat()
        all_time = await client.get(
            "/api/v1/ai/usage/summary", params={"since": since}, headers=bearer(ann)
        )

    assert response.status_code == 200, response.text
    body = response.json()
    today = day_start(dt.datetime.now(dt.UTC))
    assert dt.datetime.fromisoformat(body["since"]) == today
    assert body["until"] is None
    assert body["totals"] == [
        {
            "app": "blog",
            "model": "gpt-test",
            "calls": 2,
            "prompt_tokens": 150,
            "completion_tokens": 30,
            "cost": 0.75,
        },
        {
            "app": "crm",
            "model": "gpt-big",
            "calls": 1,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost": 1.5,
        },
    ]
    budget = body["budget"]
    assert (budget["daily_tokens"], budget["used_today"], budget["remaining"]) == (
        1000,
        195,
        805,
    )
    assert dt.datetime.fromisoformat(budget["resets_at"]) == today + dt.timedelta(days=1)

    admin_body = everyone.json()
    assert [(t["app"], t["calls"], t["prompt_tokens"]) for t in admin_body["totals"]] == [
        ("blog", 3, 220),
        ("crm", 1, 10),
    ]
    # The budget in the summary is always the caller's own.
    assert admin_body["budget"]["used_today"] == 0
    assert [(t["app"], t["calls"]) for t in all_time.json()["totals"]] == [
        ("blog", 3),
        ("crm", 1),
    ]


async def test_summary_without_a_budget(client: httpx.AsyncClient) -> None:
    ann = await signed_up(client)

    response = await client.get("/api/v1/ai/usage/summary", headers=bearer(ann))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["totals"] == []
    assert body["budget"]["used_today"] == 0
    assert body["budget"]["remaining"] == body["budget"]["daily_tokens"] == 200_000


async def test_models_lists_profiles_without_secrets(
    app_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(
        llm_provider="openai",
        llm_base_url=DEFAULT_URL,
        llm_api_key=DEFAULT_KEY,
        llm_model="gpt-test",
        ai={
            "temperature": 0.4,
            "max_tokens": 256,
            "profiles": {
                "summary": {"model": "gpt-mini", "temperature": 0.0, "max_tokens": 64},
                "private": {
                    "model": "llama-3",
                    "base_url": PROFILE_URL,
                    "api_key": PROFILE_KEY,
                    "timeout_seconds": 5,
                },
            },
        },
    )
    app: FastAPI = await app_factory(settings)
    async with client_for(app) as client:
        anonymous = await client.get("/api/v1/ai/models")
        ann = await signed_up(client)
        response = await client.get("/api/v1/ai/models", headers=bearer(ann))

    assert_problem(anonymous, 401, "unauthorized")
    assert response.status_code == 200, response.text
    for secret in (PROFILE_KEY, PROFILE_URL, DEFAULT_KEY, DEFAULT_URL, "internal.example"):
        assert secret not in response.text
    body = response.json()
    assert body["profiles"] == [
        {
            "purpose": "default",
            "provider": "openai",
            "model": "gpt-test",
            "temperature": 0.4,
            "max_tokens": 256,
            "timeout_seconds": 60.0,
            "health": {"state": "ok", "detail": ""},
        },
        {
            "purpose": "private",
            "provider": "openai",
            "model": "llama-3",
            "temperature": 0.4,
            "max_tokens": 256,
            "timeout_seconds": 5.0,
            "health": {"state": "ok", "detail": ""},
        },
        {
            "purpose": "summary",
            "provider": "openai",
            "model": "gpt-mini",
            "temperature": 0.0,
            "max_tokens": 64,
            "timeout_seconds": 60.0,
            "health": {"state": "ok", "detail": ""},
        },
    ]
    assert body["embeddings"] == {
        "provider": "local",
        "model": "multilingual-e5-small",
        "dimensions": 384,
        "vector_store": "embedded",
    }


async def test_models_with_the_local_default(client: httpx.AsyncClient) -> None:
    ann = await signed_up(client)

    response = await client.get("/api/v1/ai/models", headers=bearer(ann))

    assert response.status_code == 200, response.text
    [profile] = response.json()["profiles"]
    assert (profile["purpose"], profile["provider"], profile["model"]) == (
        "default",
        "local",
        "smollm2-135m-instruct",
    )
    # Nothing loads until the first call.
    assert profile["health"]["state"] in {"unloaded", "down"}
