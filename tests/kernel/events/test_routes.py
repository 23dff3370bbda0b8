"""`/api/v1/admin/events/*`: lag, dead letters and replays through HTTP, admins only."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import TEST_EVENTS_URL, client_for
from tests.events_app import FAILING_NOTES
from tests.helpers import assert_problem, bearer, signed_up
from tests.kernel.events.conftest import eventually, handled_count
from tests.kernel.events.test_delivery import AUDITED, emit_entry
from tests.kernel.test_admin import make_admin
from veche.kernel import Kernel
from veche.kernel.db import new_id

BASE = "/api/v1/admin/events"
StartApp = Callable[..., Awaitable[FastAPI]]


async def admin_client(app: FastAPI) -> tuple[httpx.AsyncClient, dict[str, str]]:
    client = client_for(app)
    admin = await make_admin(app.state.kernel, client)
    return client, bearer(admin)


async def consumers(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(f"{BASE}/consumers", headers=headers)
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()}


async def test_consumers_are_listed_with_their_lag(ledger_app: StartApp) -> None:
    api = await ledger_app(role="api")
    kernel: Kernel = api.state.kernel
    client, admin = await admin_client(api)
    async with contextlib.aclosing(client):
        for amount in (1, 2):
            await emit_entry(kernel, amount)
        while await kernel.events.relay_once():  # publish with no consumer running
            pass

        listed = await consumers(client, admin)
        assert listed["ledger-auditor"] == {
            "name": "ledger-auditor",
            "event_types": ["ledger.entry.recorded"],
            "lag": 2,
            "dead_letters": 0,
        }
        assert listed["ledger-journal"]["lag"] == 2
        if TEST_EVENTS_URL:
            backend: Any = kernel.events.backend
            js = await backend.jetstream()
            info = await js.stream_info(backend.stream_name("ledger"))
            assert info.state.messages == 2

        await ledger_app(role="worker")

        async def caught_up() -> bool:
            listed = await consumers(client, admin)
            return listed["ledger-auditor"]["lag"] == 0 and listed["ledger-journal"]["lag"] == 0

        await eventually(caught_up)


async def test_a_dead_letter_is_inspected_and_replayed(ledger_app: StartApp) -> None:
    app = await ledger_app()
    kernel: Kernel = app.state.kernel
    client, admin = await admin_client(app)
    FAILING_NOTES.add("poison-2")
    try:
        poison = await emit_entry(kernel, 7, note="poison-2")

        async def dead_lettered() -> bool:
            response = await client.get(f"{BASE}/dead-letters", headers=admin)
            return bool(response.json()["items"])

        await eventually(dead_lettered)
        page = (await client.get(f"{BASE}/dead-letters", headers=admin)).json()
        [letter] = page["items"]
        assert page["next_cursor"] is None
        assert letter["consumer"] == "ledger-auditor"
        assert letter["event_id"] == str(poison.id)
        assert letter["attempts"] == 3
        assert letter["error_type"] == "AuditorRefused"
        detail = await client.get(f"{BASE}/dead-letters/{letter['id']}", headers=admin)
        assert detail.status_code == 200
        assert detail.json()["event"]["data"] == {"amount": 7, "note": "poison-2"}
        assert (await consumers(client, admin))["ledger-auditor"]["dead_letters"] == 1

        still_failing = await client.post(
            f"{BASE}/dead-letters/{letter['id']}/replay", headers=admin
        )
        assert still_failing.json() == {"replayed": [], "failed": [letter["id"]]}
        detail = await client.get(f"{BASE}/dead-letters/{letter['id']}", headers=admin)
        assert detail.json()["attempts"] == 4
    finally:
        FAILING_NOTES.discard("poison-2")

    replayed = await client.post(f"{BASE}/dead-letters/{letter['id']}/replay", headers=admin)
    assert replayed.status_code == 200
    assert replayed.json() == {"replayed": [letter["id"]], "failed": []}
    assert await handled_count(kernel, AUDITED, poison.id) == 1
    gone = await client.get(f"{BASE}/dead-letters/{letter['id']}", headers=admin)
    assert_problem(gone, 404, "events.dead_letter_not_found")
    await client.aclose()


async def test_all_dead_letters_of_a_consumer_are_replayed(ledger_app: StartApp) -> None:
    app = await ledger_app()
    kernel: Kernel = app.state.kernel
    client, admin = await admin_client(app)
    FAILING_NOTES.add("poison-3")
    try:
        poisoned = [await emit_entry(kernel, amount, note="poison-3") for amount in (1, 2)]

        async def both_dead_lettered() -> bool:
            response = await client.get(
                f"{BASE}/dead-letters", params={"consumer": "ledger-auditor"}, headers=admin
            )
            return len(response.json()["items"]) == 2

        await eventually(both_dead_lettered)
    finally:
        FAILING_NOTES.discard("poison-3")

    first = await client.get(f"{BASE}/dead-letters", params={"limit": 1}, headers=admin)
    assert first.json()["next_cursor"]
    response = await client.post(
        f"{BASE}/dead-letters/replay", json={"consumer": "ledger-auditor"}, headers=admin
    )
    assert response.status_code == 200
    assert len(response.json()["replayed"]) == 2
    for event in poisoned:
        assert await handled_count(kernel, AUDITED, event.id) == 1
    empty = await client.get(f"{BASE}/dead-letters", headers=admin)
    assert empty.json()["items"] == []
    await client.aclose()


async def test_a_consumer_is_replayed_from_a_time(ledger_app: StartApp) -> None:
    app = await ledger_app()
    kernel: Kernel = app.state.kernel
    client, admin = await admin_client(app)
    before = await emit_entry(kernel, 1)

    async def before_delivered() -> bool:
        return await handled_count(kernel, AUDITED, before.id) == 1

    await eventually(before_delivered)
    since = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=5)
    while dt.datetime.now(dt.UTC) <= since:
        await eventually(before_delivered)  # let the clock pass `since`
    after = await emit_entry(kernel, 2)

    async def after_delivered() -> bool:
        return await handled_count(kernel, AUDITED, after.id) == 1

    await eventually(after_delivered)
    response = await client.post(
        f"{BASE}/consumers/ledger-auditor/replay",
        json={"since": since.isoformat()},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    assert response.json()["consumer"] == "ledger-auditor"

    async def after_delivered_again() -> bool:
        return await handled_count(kernel, AUDITED, after.id) == 2

    await eventually(after_delivered_again)
    assert await handled_count(kernel, AUDITED, before.id) == 1
    await client.aclose()


async def test_admin_event_endpoints_refuse_bad_callers_and_bad_input(
    ledger_app: StartApp,
) -> None:
    app = await ledger_app(role="api")
    client, admin = await admin_client(app)
    async with contextlib.aclosing(client):
        ann = await signed_up(client)
        known = str(new_id())
        endpoints = [
            ("GET", f"{BASE}/consumers", None),
            ("GET", f"{BASE}/dead-letters", None),
            ("GET", f"{BASE}/dead-letters/{known}", None),
            ("POST", f"{BASE}/dead-letters/{known}/replay", None),
            ("POST", f"{BASE}/dead-letters/replay", {}),
            ("POST", f"{BASE}/consumers/ledger-auditor/replay", {"since": "2026-01-01T00:00:00Z"}),
        ]
        for method, path, body in endpoints:
            anonymous = await client.request(method, path, json=body)
            assert_problem(anonymous, 401, "unauthorized")
            ordinary = await client.request(method, path, json=body, headers=bearer(ann))
            assert_problem(ordinary, 403, "auth.permission_denied")

        for path in (f"{BASE}/dead-letters/not-a-uuid", f"{BASE}/dead-letters/{known[:-1]}"):
            assert_problem(await client.get(path, headers=admin), 422, "validation_failed")
        bad_replay = await client.post(f"{BASE}/dead-letters/123/replay", headers=admin)
        assert_problem(bad_replay, 422, "validation_failed")
        assert_problem(
            await client.get(f"{BASE}/dead-letters/{known}", headers=admin),
            404,
            "events.dead_letter_not_found",
        )
        assert_problem(
            await client.post(f"{BASE}/dead-letters/{known}/replay", headers=admin),
            404,
            "events.dead_letter_not_found",
        )
        unknown_consumer = await client.post(
            f"{BASE}/consumers/nobody/replay", json={"since": "2026-01-01T00:00:00Z"}, headers=admin
        )
        assert_problem(unknown_consumer, 404, "events.consumer_not_found")
        assert_problem(
            await client.post(
                f"{BASE}/dead-letters/replay", json={"consumer": "nobody"}, headers=admin
            ),
            404,
            "events.consumer_not_found",
        )
        for body in (
            {"since": "yesterday"},
            {"since": "2026-01-01T00:00:00Z", "extra": 1},
            {},
            [],
        ):
            response = await client.post(
                f"{BASE}/consumers/ledger-auditor/replay", json=body, headers=admin
            )
            assert_problem(response, 422, "validation_failed")
        bad_name = await client.post(
            f"{BASE}/consumers/Bad%20Name/replay",
            json={"since": "2026-01-01T00:00:00Z"},
            headers=admin,
        )
        assert_problem(bad_name, 422, "validation_failed")
        bad_filter = await client.get(
            f"{BASE}/dead-letters", params={"consumer": "x" * 300}, headers=admin
        )
        assert_problem(bad_filter, 422, "validation_failed")
        assert_problem(
            await client.get(f"{BASE}/dead-letters", params={"cursor": "junk"}, headers=admin),
            400,
            "pagination.invalid_cursor",
        )
        not_json = await client.post(
            f"{BASE}/dead-letters/replay",
            content=b"consumer=ledger-auditor",
            headers={**admin, "content-type": "application/x-www-form-urlencoded"},
        )
        assert_problem(not_json, 415, "unsupported_media_type")
        malformed = await client.post(
            f"{BASE}/dead-letters/replay",
            content=b'{"consumer": ',
            headers={**admin, "content-type": "application/json"},
        )
        assert_problem(malformed, 422, "validation_failed")
        oversized = await client.post(
            f"{BASE}/dead-letters/replay",
            content=b'{"consumer": "' + b"x" * (2 * 1024 * 1024) + b'"}',
            headers={**admin, "content-type": "application/json"},
        )
        assert_problem(oversized, 413, "payload_too_large")
