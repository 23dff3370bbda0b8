"""Keyset pagination: the cursor codec and sort keys alone, then walks over the real admin
lists (`/api/v1/admin/users`, `/api/v1/admin/audit`) with ties, filters and bad cursors."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
from typing import Any
from uuid import UUID

import httpx
import orjson
import pytest

from tests.conftest import PASSWORD
from tests.helpers import assert_problem, bearer, login, register
from veche.kernel import Kernel, new_id, record
from veche.kernel.identity.models import User
from veche.kernel.identity.service import IdentityService
from veche.kernel.pagination import CursorCodec, InvalidCursor, SortKey

USERS = "/api/v1/admin/users"
AUDIT = "/api/v1/admin/audit"
KEY = b"k" * 32
# Rows inserted with one shared timestamp, so only the id tiebreaker orders them.
TIED_AT = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)

# -- SortKey ----------------------------------------------------------------------------


def test_sort_key_parses_a_comma_list() -> None:
    assert SortKey.parse("-created_at").attributes == ("-created_at",)
    assert SortKey.parse(" email , ,-id ").attributes == ("email", "-id")
    assert SortKey.parse("").attributes == ()


def test_sort_key_adds_the_primary_key_in_the_first_direction() -> None:
    assert SortKey.parse("-created_at").with_tiebreaker() == [("created_at", True), ("id", True)]
    assert SortKey.parse("email").with_tiebreaker() == [("email", False), ("id", False)]
    assert SortKey.parse("a,-b").with_tiebreaker() == [("a", False), ("b", True), ("id", False)]
    assert SortKey.parse("").with_tiebreaker() == [("id", False)]


def test_sort_key_keeps_an_explicit_primary_key() -> None:
    assert SortKey.parse("-id").with_tiebreaker() == [("id", True)]
    assert SortKey.parse("email,-id").with_tiebreaker() == [("email", False), ("id", True)]
    assert SortKey.parse("-slug").with_tiebreaker("slug") == [("slug", True)]


# -- CursorCodec ------------------------------------------------------------------------


def test_cursor_round_trips_every_supported_value() -> None:
    codec = CursorCodec(KEY)
    when = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    ident = UUID("0190d0e3-7c4b-7a1e-8a5b-123456789abc")
    values = [when, ident, "ann@example.com", 42, 1.5, True, None]
    cursor = codec.encode("list|a=1", values)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    decoded = codec.decode(cursor, "list|a=1", len(values))
    assert decoded == values
    assert decoded[0].tzinfo is not None
    assert isinstance(decoded[1], UUID)


def test_cursor_refuses_values_it_cannot_carry() -> None:
    with pytest.raises(TypeError):
        CursorCodec(KEY).encode("list", [object()])


def test_cursor_is_bound_to_its_scope_and_width() -> None:
    codec = CursorCodec(KEY)
    cursor = codec.encode("admin.users|role=user|email", ["a@example.com", new_id()])
    with pytest.raises(InvalidCursor, match="another list"):
        codec.decode(cursor, "admin.users|role=admin|email", 2)
    with pytest.raises(InvalidCursor, match="another list"):
        codec.decode(cursor, "admin.users|role=user|email", 3)
    assert len(codec.decode(cursor, "admin.users|role=user|email", 2)) == 2


def test_cursor_from_another_key_is_refused() -> None:
    cursor = CursorCodec(b"other-key" * 4).encode("list", [1])
    with pytest.raises(InvalidCursor, match="not issued by this server"):
        CursorCodec(KEY).decode(cursor, "list", 1)


def flip(cursor: str, index: int) -> str:
    replacement = "B" if cursor[index] != "B" else "C"
    return cursor[:index] + replacement + cursor[index + 1 :]


def test_any_edited_character_breaks_the_signature() -> None:
    codec = CursorCodec(KEY)
    cursor = codec.encode("list", [dt.datetime(2030, 1, 1, tzinfo=dt.UTC), new_id()])
    # Every position but the last carries full bits (the last may hold padding bits).
    for index in range(len(cursor) - 1):
        with pytest.raises(InvalidCursor):
            codec.decode(flip(cursor, index), "list", 2)
    with pytest.raises(InvalidCursor):
        codec.decode(cursor[:-3], "list", 2)
    with pytest.raises(InvalidCursor):
        codec.decode(cursor + "AAAA", "list", 2)


@pytest.mark.parametrize("garbage", ["!!!", "A", "AAAA", "not a cursor", "=" * 8, "\u00e9t\u00e9"])
def test_garbage_cursors_are_refused(garbage: str) -> None:
    with pytest.raises(InvalidCursor):
        CursorCodec(KEY).decode(garbage, "list", 1)


@pytest.mark.parametrize(
    "payload",
    [b"not json", b'{"v": [1]}', b'{"s": "x"}', b'{"s": "x", "v": [{"z": 1}]}', b"[1]"],
)
def test_signed_but_malformed_payloads_are_refused(payload: bytes) -> None:
    # A payload signed with the right key (as a leaked key would allow) still has to parse.
    signature = hmac.new(KEY, payload, hashlib.sha256).digest()[:16]
    cursor = base64.urlsafe_b64encode(payload + signature).rstrip(b"=").decode()
    with pytest.raises(InvalidCursor):
        CursorCodec(KEY).decode(cursor, "list", 1)


# -- through the admin endpoints --------------------------------------------------------


async def admin_headers(client: httpx.AsyncClient, kernel: Kernel) -> dict[str, str]:
    async with kernel.db.unit_of_work() as session:
        await IdentityService(session, kernel).register(
            email="root@example.com", password=PASSWORD, display_name="Root", role="admin"
        )
    return bearer(await login(client, email="root@example.com"))


async def add_tied_users(kernel: Kernel, count: int) -> None:
    async with kernel.db.unit_of_work() as session:
        for index in range(count):
            session.add(
                User(
                    id=new_id(),
                    email=f"tied{index:02d}@example.com",
                    display_name=f"Tied {index}",
                    password_hash=None,
                    role="user",
                    is_active=index % 3 != 0,
                    created_at=TIED_AT,
                    updated_at=TIED_AT,
                )
            )


async def walk(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every item of a list, page by page; and the number of pages it took."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        pages += 1
        assert len(body["items"]) <= params["limit"]
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert len(body["items"]) == params["limit"]
        assert pages < 100, "the walk does not end"


def when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def ordered(items: list[dict[str, Any]], sort: str, time_field: str) -> list[str]:
    """The ids in the order `sort` (with the id tiebreaker) must produce."""
    descending = sort.startswith("-")
    field = sort.lstrip("-")

    def key(item: dict[str, Any]) -> tuple[Any, UUID]:
        value = when(item[field]) if field == time_field else item[field]
        return value, UUID(item["id"])

    return [item["id"] for item in sorted(items, key=key, reverse=descending)]


@pytest.fixture
async def populated(client: httpx.AsyncClient, kernel: Kernel) -> dict[str, str]:
    """An admin, four users registered through the API and nine tied on `created_at`."""
    headers = await admin_headers(client, kernel)
    for index in range(4):
        await register(client, email=f"user{index:02d}@example.com", display_name=f"User {index}")
    await add_tied_users(kernel, 9)
    return headers


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "email", "-email"])
@pytest.mark.parametrize("limit", [1, 2, 5, 14])
async def test_walking_users_visits_each_once_in_order(
    client: httpx.AsyncClient, populated: dict[str, str], sort: str, limit: int
) -> None:
    items, pages = await walk(client, USERS, populated, limit=limit, sort=sort)
    ids = [item["id"] for item in items]
    assert len(ids) == 14
    assert len(set(ids)) == 14
    assert pages == math.ceil(14 / limit)
    assert ids == ordered(items, sort, "created_at")
    everything = await client.get(USERS, params={"limit": 100, "sort": sort}, headers=populated)
    assert [item["id"] for item in everything.json()["items"]] == ids


async def test_default_user_order_is_newest_first(
    client: httpx.AsyncClient, populated: dict[str, str]
) -> None:
    response = await client.get(USERS, headers=populated)
    body = response.json()
    assert body["next_cursor"] is None
    ids = [item["id"] for item in body["items"]]
    assert ids == ordered(body["items"], "-created_at", "created_at")
    # The tied rows are dated in the future, so they lead, ordered by id alone.
    assert [when(item["created_at"]) for item in body["items"][:9]] == [TIED_AT] * 9


@pytest.mark.parametrize(
    ("filters", "expected"),
    [({"role": "admin"}, 1), ({"role": "user"}, 13), ({"is_active": "false"}, 3)],
)
async def test_filters_hold_on_every_page(
    client: httpx.AsyncClient,
    populated: dict[str, str],
    filters: dict[str, str],
    expected: int,
) -> None:
    items, _ = await walk(client, USERS, populated, limit=2, **filters)
    assert len({item["id"] for item in items}) == len(items) == expected
    for item in items:
        if "role" in filters:
            assert item["role"] == filters["role"]
        if "is_active" in filters:
            assert item["is_active"] is False


async def test_the_last_page_has_no_cursor(
    client: httpx.AsyncClient, populated: dict[str, str]
) -> None:
    exact = await client.get(USERS, params={"limit": 14}, headers=populated)
    assert len(exact.json()["items"]) == 14
    assert exact.json()["next_cursor"] is None
    short = await client.get(USERS, params={"limit": 13}, headers=populated)
    assert short.json()["next_cursor"] is not None
    last = await client.get(
        USERS, params={"limit": 13, "cursor": short.json()["next_cursor"]}, headers=populated
    )
    assert len(last.json()["items"]) == 1
    assert last.json()["next_cursor"] is None


async def first_cursor(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any
) -> str:
    response = await client.get(path, params={"limit": 1, **params}, headers=headers)
    assert response.status_code == 200, response.text
    cursor: str = response.json()["next_cursor"]
    assert cursor
    return cursor


async def test_tampered_cursor_is_400(client: httpx.AsyncClient, populated: dict[str, str]) -> None:
    cursor = await first_cursor(client, USERS, populated, sort="email")
    for index in (0, len(cursor) // 2, len(cursor) - 2):
        response = await client.get(
            USERS, params={"sort": "email", "cursor": flip(cursor, index)}, headers=populated
        )
        assert_problem(response, 400, "pagination.invalid_cursor")


@pytest.mark.parametrize("garbage", ["garbage", "!!!!", "eyJzIjoiYWJjIn0", "A" * 1000])
async def test_garbage_cursor_is_400(
    client: httpx.AsyncClient, populated: dict[str, str], garbage: str
) -> None:
    for path in (USERS, AUDIT):
        response = await client.get(path, params={"cursor": garbage}, headers=populated)
        assert_problem(response, 400, "pagination.invalid_cursor")


async def test_cursor_longer_than_allowed_is_422(
    client: httpx.AsyncClient, populated: dict[str, str]
) -> None:
    response = await client.get(USERS, params={"cursor": "A" * 1025}, headers=populated)
    body = assert_problem(response, 422, "validation_failed")
    assert body["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize(
    ("made_with", "used_with"),
    [
        ({"sort": "email"}, {"sort": "-email"}),
        ({"sort": "-created_at"}, {"sort": "created_at"}),
        ({"sort": "email"}, {"sort": "created_at"}),
        ({"role": "user"}, {"role": "admin"}),
        ({"role": "user"}, {}),
        ({}, {"is_active": "true"}),
    ],
)
async def test_cursor_from_another_sort_or_filter_is_400(
    client: httpx.AsyncClient,
    populated: dict[str, str],
    made_with: dict[str, str],
    used_with: dict[str, str],
) -> None:
    cursor = await first_cursor(client, USERS, populated, **made_with)
    response = await client.get(USERS, params={**used_with, "cursor": cursor}, headers=populated)
    assert_problem(response, 400, "pagination.invalid_cursor")
    same = await client.get(USERS, params={**made_with, "cursor": cursor}, headers=populated)
    assert same.status_code == 200


async def test_cursor_from_another_list_is_400(
    client: httpx.AsyncClient, populated: dict[str, str]
) -> None:
    users_cursor = await first_cursor(client, USERS, populated, sort="created_at")
    response = await client.get(
        AUDIT, params={"sort": "occurred_at", "cursor": users_cursor}, headers=populated
    )
    assert_problem(response, 400, "pagination.invalid_cursor")


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten"])
async def test_limit_out_of_range_is_422(
    client: httpx.AsyncClient, populated: dict[str, str], limit: str
) -> None:
    for path in (USERS, AUDIT):
        response = await client.get(path, params={"limit": limit}, headers=populated)
        body = assert_problem(response, 422, "validation_failed")
        assert [error["loc"] for error in body["errors"]] == [["query", "limit"]]


async def test_sort_outside_the_allow_list_is_422(
    client: httpx.AsyncClient, populated: dict[str, str]
) -> None:
    for sort in ("password_hash", "-id", "email,id"):
        response = await client.get(USERS, params={"sort": sort}, headers=populated)
        assert_problem(response, 422, "validation_failed")


async def test_limit_100_is_allowed(client: httpx.AsyncClient, populated: dict[str, str]) -> None:
    response = await client.get(USERS, params={"limit": 100}, headers=populated)
    assert response.status_code == 200
    assert len(response.json()["items"]) == 14


async def test_lists_need_an_admin(client: httpx.AsyncClient, populated: dict[str, str]) -> None:
    assert_problem(await client.get(USERS), 401, "unauthorized")
    user = bearer(await login(client, email="user00@example.com"))
    for path in (USERS, AUDIT):
        assert_problem(await client.get(path, headers=user), 403, "auth.permission_denied")


# -- the audit list ---------------------------------------------------------------------


async def add_audit_events(kernel: Kernel, tied: int, spread: int) -> None:
    async with kernel.db.unit_of_work() as session:
        for index in range(tied):
            event = record(session, "test.tied", actor_id=None, target_type="t", target_id="x")
            event.occurred_at = TIED_AT
            event.data = {"index": index}
        for index in range(spread):
            event = record(session, "test.spread", actor_id=None, target_type="t", target_id="y")
            event.occurred_at = TIED_AT + dt.timedelta(seconds=index + 1)


@pytest.mark.parametrize("sort", ["-occurred_at", "occurred_at"])
@pytest.mark.parametrize("limit", [1, 3, 7])
async def test_walking_the_audit_trail_visits_each_once_in_order(
    client: httpx.AsyncClient,
    kernel: Kernel,
    populated: dict[str, str],
    sort: str,
    limit: int,
) -> None:
    await add_audit_events(kernel, tied=6, spread=5)
    everything = await client.get(AUDIT, params={"limit": 100, "sort": sort}, headers=populated)
    total = len(everything.json()["items"])
    assert total >= 11
    items, pages = await walk(client, AUDIT, populated, limit=limit, sort=sort)
    ids = [item["id"] for item in items]
    assert len(set(ids)) == len(ids) == total
    assert pages == math.ceil(total / limit)
    assert ids == ordered(items, sort, "occurred_at")
    assert ids == [item["id"] for item in everything.json()["items"]]


async def test_audit_filters_bind_the_cursor(
    client: httpx.AsyncClient, kernel: Kernel, populated: dict[str, str]
) -> None:
    await add_audit_events(kernel, tied=4, spread=4)
    tied, _ = await walk(client, AUDIT, populated, limit=3, action="test.tied")
    assert len(tied) == 4
    assert {item["action"] for item in tied} == {"test.tied"}
    windowed, _ = await walk(
        client,
        AUDIT,
        populated,
        limit=1,
        since=(TIED_AT + dt.timedelta(seconds=2)).isoformat(),
        until=(TIED_AT + dt.timedelta(seconds=4)).isoformat(),
    )
    assert [when(item["occurred_at"]) for item in windowed] == [
        TIED_AT + dt.timedelta(seconds=3),
        TIED_AT + dt.timedelta(seconds=2),
    ]
    cursor = await first_cursor(client, AUDIT, populated, action="test.tied")
    for other in ({"action": "test.spread"}, {}, {"action": "test.tied", "target_id": "x"}):
        response = await client.get(AUDIT, params={**other, "cursor": cursor}, headers=populated)
        assert_problem(response, 400, "pagination.invalid_cursor")


def test_cursor_payload_names_no_filters_in_clear() -> None:
    cursor = CursorCodec(KEY).encode("admin.audit|action=secret.thing|-occurred_at", [1])
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    payload = orjson.loads(raw[:-16])
    assert "secret.thing" not in raw.decode(errors="replace")
    assert set(payload) == {"s", "v"}


@pytest.mark.parametrize("name", ["action", "target_type", "target_id"])
async def test_a_nul_byte_in_a_filter_is_422_not_500(
    client: httpx.AsyncClient, populated: dict[str, str], name: str
) -> None:
    # PostgreSQL cannot hold NUL in text; the filter must refuse it before the query.
    response = await client.get(AUDIT, params={name: "auth\x00login"}, headers=populated)
    body = assert_problem(response, 422, "validation_failed")
    assert [error["loc"] for error in body["errors"]] == [["query", name]]
