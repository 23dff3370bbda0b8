"""Admin endpoints: only admins get in; role changes and disabling are audited and bite at
once; the last admin cannot be removed."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import PASSWORD
from tests.helpers import assert_problem, bearer, login, signed_up
from veche.kernel.identity import IdentityService
from veche.kernel.runtime import Kernel


async def make_admin(kernel: Kernel, client: httpx.AsyncClient) -> dict[str, Any]:
    async with kernel.db.unit_of_work() as session:
        await IdentityService(session, kernel).register(
            email="root@example.com", password=PASSWORD, display_name="Root", role="admin"
        )
    return await login(client, email="root@example.com")


async def test_admin_endpoints_refuse_anonymous_and_ordinary_users(
    client: httpx.AsyncClient,
) -> None:
    ann = await signed_up(client)
    for method, path in [
        ("GET", "/api/v1/admin/audit"),
        ("GET", "/api/v1/admin/users"),
        ("PATCH", f"/api/v1/admin/users/{ann['user']['id']}"),
    ]:
        anonymous = await client.request(method, path, json={"role": "admin"})
        assert_problem(anonymous, 401, "unauthorized")
        ordinary = await client.request(method, path, json={"role": "admin"}, headers=bearer(ann))
        assert_problem(ordinary, 403, "auth.permission_denied")
    me = await client.get("/api/v1/me", headers=bearer(ann))
    assert me.json()["role"] == "user"


async def test_audit_trail_records_the_security_events(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    admin = await make_admin(kernel, client)
    ann = await signed_up(client)
    await client.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": "no!"})
    response = await client.get(
        "/api/v1/admin/audit", params={"sort": "occurred_at"}, headers=bearer(admin)
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    actions = [item["action"] for item in items]
    assert actions == [
        "auth.registered",
        "auth.login",
        "auth.registered",
        "auth.login",
        "auth.login_failed",
    ]
    failed = items[-1]
    assert failed["target_id"] == ann["user"]["id"]
    assert failed["data"] == {"reason": "bad_credentials", "email_known": True}
    assert failed["ip"] == "127.0.0.1"
    assert failed["request_id"]
    assert "no!" not in response.text

    by_actor = await client.get(
        "/api/v1/admin/audit",
        params={"actor_id": ann["user"]["id"]},
        headers=bearer(admin),
    )
    assert {item["action"] for item in by_actor.json()["items"]} == {
        "auth.registered",
        "auth.login",
    }
    by_action = await client.get(
        "/api/v1/admin/audit", params={"action": "auth.login_failed"}, headers=bearer(admin)
    )
    assert len(by_action.json()["items"]) == 1
    since = failed["occurred_at"]
    recent = await client.get("/api/v1/admin/audit", params={"since": since}, headers=bearer(admin))
    assert [item["action"] for item in recent.json()["items"]] == ["auth.login_failed"]
    bad = await client.get(
        "/api/v1/admin/audit", params={"since": "yesterday"}, headers=bearer(admin)
    )
    assert_problem(bad, 422, "validation_failed")
    bad_sort = await client.get(
        "/api/v1/admin/audit", params={"sort": "password_hash"}, headers=bearer(admin)
    )
    assert_problem(bad_sort, 422, "validation_failed")


async def test_role_change_is_audited_and_takes_effect(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    admin = await make_admin(kernel, client)
    ann = await signed_up(client)
    response = await client.patch(
        f"/api/v1/admin/users/{ann['user']['id']}", json={"role": "admin"}, headers=bearer(admin)
    )
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"
    # Ann's existing token now carries admin rights: roles are read per request.
    users = await client.get("/api/v1/admin/users", headers=bearer(ann))
    assert users.status_code == 200
    audit = await client.get(
        "/api/v1/admin/audit", params={"action": "user.role_changed"}, headers=bearer(admin)
    )
    (entry,) = audit.json()["items"]
    assert entry["data"] == {"from": "user", "to": "admin"}
    assert entry["actor_id"] != entry["target_id"]

    invalid = await client.patch(
        f"/api/v1/admin/users/{ann['user']['id']}", json={"role": "root"}, headers=bearer(admin)
    )
    assert_problem(invalid, 422, "validation_failed")
    missing = await client.patch(
        "/api/v1/admin/users/01a20000-0000-7000-8000-000000000000",
        json={"role": "user"},
        headers=bearer(admin),
    )
    assert_problem(missing, 404, "user.not_found")


async def test_disabling_an_account_cuts_it_off_at_once(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    admin = await make_admin(kernel, client)
    ann = await signed_up(client)
    response = await client.patch(
        f"/api/v1/admin/users/{ann['user']['id']}",
        json={"is_active": False},
        headers=bearer(admin),
    )
    assert response.status_code == 200
    assert_problem(await client.get("/api/v1/me", headers=bearer(ann)), 401, "auth.invalid_token")
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": ann["refresh_token"]}
    )
    assert_problem(refresh, 401, "auth.invalid_refresh_token")
    relogin = await client.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
    )
    assert_problem(relogin, 403, "auth.account_disabled")


async def test_the_last_admin_cannot_be_demoted_or_disabled(
    client: httpx.AsyncClient, kernel: Kernel, app: FastAPI
) -> None:
    admin = await make_admin(kernel, client)
    me = (await client.get("/api/v1/me", headers=bearer(admin))).json()
    for change in ({"role": "user"}, {"is_active": False}):
        response = await client.patch(
            f"/api/v1/admin/users/{me['id']}", json=change, headers=bearer(admin)
        )
        assert_problem(response, 409, "user.last_admin")
    assert (await client.get("/api/v1/me", headers=bearer(admin))).json()["role"] == "admin"
