"""The identity API end to end: register, login, me, refresh rotation, reuse detection,
sessions, logout and profile changes, with the bad input each one must refuse."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.conftest import PASSWORD
from tests.helpers import assert_problem, bearer, login, register, signed_up
from veche.kernel.audit import AuditEvent
from veche.kernel.identity.models import AuthSession, User

NEW_PASSWORD = "seven purple otters sing loudly"


async def count(app: FastAPI, model: Any) -> int:
    async with app.state.kernel.db.unit_of_work() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def actions(app: FastAPI) -> list[str]:
    async with app.state.kernel.db.unit_of_work() as session:
        rows = await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id))
        return list(rows.all())


# -- register --------------------------------------------------------------------------


async def test_register_normalizes_email_and_hides_the_hash(client: httpx.AsyncClient) -> None:
    body = await register(client, email="  Ann.Lee@Example.COM ", display_name="  Ann Lee ")
    assert body["email"] == "ann.lee@example.com"
    assert body["display_name"] == "Ann Lee"
    assert body["role"] == "user"
    assert "password" not in str(body)
    assert "password_hash" not in body


async def test_register_duplicate_email_is_409_in_any_spelling(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register(client, email="ann@example.com")
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": "ANN@example.com", "password": PASSWORD, "display_name": "Other"},
    )
    assert_problem(response, 409, "auth.email_taken")
    assert await count(app, User) == 1


async def test_register_weak_passwords_get_clear_reasons(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    cases = {
        "short": "must be at least 8 characters",
        "password123": "too easy to guess",
        "x" * 129: "must be at most 128 characters",
        "Ann@Example.com-2026": "must not contain your email address",
    }
    for password, reason in cases.items():
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": "ann@example.com", "password": password, "display_name": "Ann"},
        )
        body = assert_problem(response, 422, "auth.weak_password")
        assert reason in body["detail"], (password, body["detail"])
        assert body["errors"][0]["loc"] == ["body", "password"]
    assert await count(app, User) == 0


async def test_long_passwords_are_accepted_and_never_truncated(
    client: httpx.AsyncClient,
) -> None:
    long_password = "pale moon river " * 8  # 128 characters, past bcrypt's 72 bytes
    await register(client, password=long_password)
    await login(client, password=long_password)
    almost = long_password[:-1] + "X"
    response = await client.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": almost}
    )
    assert_problem(response, 401, "auth.invalid_credentials")


async def test_register_rejects_malformed_bodies_and_stores_nothing(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    bad_bodies: list[Any] = [
        {"email": "not-an-email", "password": PASSWORD, "display_name": "Ann"},
        {"email": "ann@example.com", "password": PASSWORD},
        {"email": "ann@example.com", "password": PASSWORD, "display_name": ""},
        {"email": "ann@example.com", "password": PASSWORD, "display_name": "x" * 101},
        {"email": "ann@example.com", "password": PASSWORD, "display_name": "bad\x00name"},
        {"email": "ann@example.com", "password": PASSWORD, "display_name": "A", "role": "admin"},
        {"email": ["ann@example.com"], "password": PASSWORD, "display_name": "Ann"},
        {"email": "a" * 400 + "@example.com", "password": PASSWORD, "display_name": "Ann"},
        [],
        "just a string",
    ]
    for body in bad_bodies:
        response = await client.post("/api/v1/auth/register", json=body)
        problem = assert_problem(response, 422, "validation_failed")
        assert problem["errors"], body
    response = await client.post(
        "/api/v1/auth/register",
        content=b'{"email": "ann@example.com", ',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 422, "validation_failed")
    assert await count(app, User) == 0
    assert await actions(app) == []


async def test_register_refuses_a_non_json_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        content=b"email=ann@example.com&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "unsupported_media_type")


# -- login -----------------------------------------------------------------------------


async def test_login_returns_a_token_pair(client: httpx.AsyncClient, app: FastAPI) -> None:
    await register(client)
    tokens = await login(client, email="ANN@example.com")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 15 * 60
    assert tokens["refresh_expires_in"] > 0
    assert tokens["access_token"].count(".") == 2
    assert tokens["refresh_token"].count(".") == 0
    assert await actions(app) == ["auth.registered", "auth.login"]


async def test_wrong_password_and_unknown_email_look_the_same(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register(client)
    wrong_password = await client.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": "not the one!"}
    )
    unknown_email = await client.post(
        "/api/v1/auth/login", json={"email": "bob@example.com", "password": "not the one!"}
    )
    first = assert_problem(wrong_password, 401, "auth.invalid_credentials")
    second = assert_problem(unknown_email, 401, "auth.invalid_credentials")
    for body in (first, second):
        body.pop("request_id")
    assert first == second
    assert wrong_password.headers["www-authenticate"] == "Bearer"
    # Both failures are audited even though the requests failed.
    assert (await actions(app)).count("auth.login_failed") == 2


async def test_me_needs_a_valid_access_token(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/me"), 401, "unauthorized")
    response = await client.get("/api/v1/me", headers={"Authorization": "Basic YTpi"})
    assert_problem(response, 401, "unauthorized")
    response = await client.get("/api/v1/me", headers=bearer("not-a-jwt"))
    assert_problem(response, 401, "auth.invalid_token")


async def test_me_returns_only_the_callers_account(client: httpx.AsyncClient) -> None:
    ann = await signed_up(client, email="ann@example.com")
    bob = await signed_up(client, email="bob@example.com", display_name="Bob")
    me_ann = (await client.get("/api/v1/me", headers=bearer(ann))).json()
    me_bob = (await client.get("/api/v1/me", headers=bearer(bob))).json()
    assert me_ann["email"] == "ann@example.com"
    assert me_bob["email"] == "bob@example.com"


# -- refresh ---------------------------------------------------------------------------


async def test_refresh_rotates_and_reuse_revokes_the_family(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    first = await signed_up(client)
    response = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["session_id"] == first["session_id"]
    assert (await client.get("/api/v1/me", headers=bearer(second))).status_code == 200

    # The old refresh token was used: presenting it again is a replay.
    replay = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert_problem(replay, 401, "auth.refresh_token_reused")
    # The whole family is gone: the newest refresh token and its access token too.
    latest = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert_problem(latest, 401, "auth.invalid_refresh_token")
    me = await client.get("/api/v1/me", headers=bearer(second))
    assert_problem(me, 401, "auth.invalid_token")
    assert "auth.refresh_token_reused" in await actions(app)


async def test_concurrent_refreshes_with_one_token_let_at_most_one_through(
    client: httpx.AsyncClient,
) -> None:
    tokens = await signed_up(client)
    body = {"refresh_token": tokens["refresh_token"]}
    responses = await asyncio.gather(
        *(client.post("/api/v1/auth/refresh", json=body) for _ in range(5))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(200) <= 1, statuses
    assert set(statuses) <= {200, 401}
    for response in responses:
        if response.status_code == 401:
            assert response.json()["code"] in {
                "auth.refresh_token_reused",
                "auth.invalid_refresh_token",
            }


async def test_refresh_rejects_unknown_and_malformed_tokens(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": "made-up"})
    assert_problem(response, 401, "auth.invalid_refresh_token")
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 300})
    assert_problem(response, 422, "validation_failed")
    response = await client.post("/api/v1/auth/refresh", json={})
    assert_problem(response, 422, "validation_failed")


async def test_an_access_token_is_not_a_refresh_token(client: httpx.AsyncClient) -> None:
    tokens = await signed_up(client)
    response = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"][:256]}
    )
    assert_problem(response, 401, "auth.invalid_refresh_token")


async def test_a_refresh_token_is_not_an_access_token(client: httpx.AsyncClient) -> None:
    tokens = await signed_up(client)
    response = await client.get("/api/v1/me", headers=bearer(tokens["refresh_token"]))
    assert_problem(response, 401, "auth.invalid_token")


# -- sessions and logout ---------------------------------------------------------------


async def test_sessions_list_marks_the_current_one(client: httpx.AsyncClient) -> None:
    await register(client)
    laptop = await client.post(
        "/api/v1/auth/login",
        json={"email": "ann@example.com", "password": PASSWORD, "device_name": "Laptop"},
        headers={"user-agent": "Firefox"},
    )
    phone = await login(client)
    response = await client.get("/api/v1/auth/sessions", headers=bearer(phone))
    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 2
    current = [item for item in items if item["current"]]
    assert [item["id"] for item in current] == [phone["session_id"]]
    devices = {item["id"]: item["device"] for item in items}
    assert devices[laptop.json()["session_id"]] == "Laptop"
    assert all(item["ip"] == "127.0.0.1" for item in items)


async def test_revoking_a_session_cuts_its_tokens_at_once(client: httpx.AsyncClient) -> None:
    await register(client)
    laptop, phone = await login(client), await login(client)
    response = await client.delete(
        f"/api/v1/auth/sessions/{laptop['session_id']}", headers=bearer(phone)
    )
    assert response.status_code == 204
    assert_problem(
        await client.get("/api/v1/me", headers=bearer(laptop)), 401, "auth.invalid_token"
    )
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]}
    )
    assert_problem(refresh, 401, "auth.invalid_refresh_token")
    assert (await client.get("/api/v1/me", headers=bearer(phone))).status_code == 200


async def test_another_users_session_is_not_found(client: httpx.AsyncClient) -> None:
    ann = await signed_up(client, email="ann@example.com")
    bob = await signed_up(client, email="bob@example.com", display_name="Bob")
    response = await client.delete(
        f"/api/v1/auth/sessions/{ann['session_id']}", headers=bearer(bob)
    )
    assert_problem(response, 404, "auth.session_not_found")
    assert (await client.get("/api/v1/me", headers=bearer(ann))).status_code == 200
    response = await client.delete("/api/v1/auth/sessions/not-a-uuid", headers=bearer(bob))
    assert_problem(response, 422, "validation_failed")
    response = await client.delete(f"/api/v1/auth/sessions/{ann['session_id']}")
    assert_problem(response, 401, "unauthorized")


async def test_logout_ends_only_this_session(client: httpx.AsyncClient) -> None:
    await register(client)
    laptop, phone = await login(client), await login(client)
    response = await client.post("/api/v1/auth/logout", headers=bearer(laptop))
    assert response.status_code == 204
    assert_problem(
        await client.get("/api/v1/me", headers=bearer(laptop)), 401, "auth.invalid_token"
    )
    assert (await client.get("/api/v1/me", headers=bearer(phone))).status_code == 200
    assert_problem(await client.post("/api/v1/auth/logout"), 401, "unauthorized")


async def test_logout_everywhere_cuts_every_session(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register(client)
    laptop, phone = await login(client), await login(client)
    response = await client.post("/api/v1/auth/logout-all", headers=bearer(phone))
    assert response.status_code == 200
    assert response.json() == {"revoked": 2}
    for tokens in (laptop, phone):
        me = await client.get("/api/v1/me", headers=bearer(tokens))
        assert_problem(me, 401, "auth.invalid_token")
        refresh = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert_problem(refresh, 401, "auth.invalid_refresh_token")
    # Signing in again right away works: the cut-off is not rounded to the second.
    fresh = await login(client)
    assert (await client.get("/api/v1/me", headers=bearer(fresh))).status_code == 200
    async with app.state.kernel.db.unit_of_work() as session:
        revoked = await session.scalars(select(AuthSession.revoked_reason))
        assert sorted(filter(None, revoked.all())) == ["logout_everywhere"] * 2


# -- profile ---------------------------------------------------------------------------


async def test_update_display_name_and_locale(client: httpx.AsyncClient) -> None:
    tokens = await signed_up(client)
    response = await client.patch(
        "/api/v1/me", json={"display_name": "Ann B.", "locale": "pt-BR"}, headers=bearer(tokens)
    )
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == "Ann B."
    assert response.json()["locale"] == "pt-BR"
    for body in (
        {"locale": "english please"},
        {"display_name": ""},
        {"email": "new@example.com"},
        {"role": "admin"},
        {"new_password": NEW_PASSWORD},
    ):
        bad = await client.patch("/api/v1/me", json=body, headers=bearer(tokens))
        assert_problem(bad, 422, "validation_failed")
    unchanged = (await client.get("/api/v1/me", headers=bearer(tokens))).json()
    assert unchanged["display_name"] == "Ann B."
    assert unchanged["role"] == "user"


async def test_password_change_needs_the_old_password_and_signs_out_others(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register(client)
    laptop, phone = await login(client), await login(client)
    wrong = await client.patch(
        "/api/v1/me",
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=bearer(phone),
    )
    assert_problem(wrong, 403, "auth.wrong_password")
    weak = await client.patch(
        "/api/v1/me",
        json={"current_password": PASSWORD, "new_password": "password"},
        headers=bearer(phone),
    )
    assert_problem(weak, 422, "auth.weak_password")
    # Nothing changed so far: both sessions still work.
    assert (await client.get("/api/v1/me", headers=bearer(laptop))).status_code == 200

    changed = await client.patch(
        "/api/v1/me",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(phone),
    )
    assert changed.status_code == 200, changed.text
    assert (await client.get("/api/v1/me", headers=bearer(phone))).status_code == 200
    assert_problem(
        await client.get("/api/v1/me", headers=bearer(laptop)), 401, "auth.invalid_token"
    )
    old = await client.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
    )
    assert_problem(old, 401, "auth.invalid_credentials")
    await login(client, password=NEW_PASSWORD)
    assert "auth.password_changed" in await actions(app)


async def test_update_me_needs_authentication(client: httpx.AsyncClient) -> None:
    response = await client.patch("/api/v1/me", json={"display_name": "X"})
    assert_problem(response, 401, "unauthorized")


async def test_nul_characters_are_refused_before_they_reach_the_database(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register(client)
    response = await client.post(
        "/api/v1/auth/login",
        json={"email": "ann@example.com", "password": PASSWORD, "device_name": "pho\u0000ne"},
    )
    body = assert_problem(response, 422, "validation_failed")
    assert body["errors"] == [
        {"loc": ["body"], "msg": "must not contain NUL characters", "type": "nul_character"}
    ]
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": "bob@example.com", "password": PASSWORD, "display_name": {"a\u0000": 1}},
    )
    assert_problem(response, 422, "validation_failed")
    assert await count(app, AuthSession) == 0
    assert await count(app, User) == 1
    # A backslash followed by "u0000" is ordinary text, not a NUL.
    tokens = await login(client)
    response = await client.patch(
        "/api/v1/me", json={"display_name": "C:\\u0000"}, headers=bearer(tokens)
    )
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == "C:\\u0000"
