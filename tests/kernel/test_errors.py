"""Every error leaves as RFC 9457 problem+json with a stable code and the request id."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
import sqlalchemy.exc
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.conftest import PASSWORD, client_for
from tests.helpers import assert_problem, bearer, register, signed_up
from veche.kernel import AuditEvent, Kernel
from veche.kernel.errors import overload
from veche.kernel.identity.models import User
from veche.settings import Settings

ECHO = "/api/v1/example/echo"
REGISTER = "/api/v1/auth/register"
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
BODY_LIMIT = 256


async def row_count(kernel: Kernel, model: type[Any]) -> int:
    async with kernel.db.unit_of_work() as session:
        count: int = await session.scalar(select(func.count()).select_from(model)) or 0
    return count


def field_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = body["errors"]
    for error in errors:
        assert set(error) == {"loc", "msg", "type"}, error
        assert isinstance(error["loc"], list)
        assert error["msg"]
    return errors


# -- the framework's own errors ---------------------------------------------------------


async def test_unknown_path_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/no/such/thing")
    body = assert_problem(response, 404, "not_found")
    assert body["detail"] == "No resource at /api/v1/no/such/thing"
    assert body["instance"] == "/api/v1/no/such/thing"


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/example/ping")
    body = assert_problem(response, 405, "method_not_allowed")
    assert "DELETE" in body["detail"]
    assert response.headers["allow"] == "GET"


# -- body size --------------------------------------------------------------------------


@pytest.fixture
async def small_body_client(
    app_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = await app_factory(settings_factory(max_body_bytes=BODY_LIMIT))
    async with client_for(app) as http:
        yield http


def oversized_echo() -> bytes:
    return b'{"text": "' + b"a" * (BODY_LIMIT * 2) + b'"}'


async def test_body_under_the_limit_is_accepted(small_body_client: httpx.AsyncClient) -> None:
    response = await small_body_client.post(ECHO, json={"text": "a" * 100})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", [ECHO, REGISTER])
async def test_declared_content_length_over_the_limit_is_413(
    small_body_client: httpx.AsyncClient, path: str
) -> None:
    response = await small_body_client.post(
        path, content=oversized_echo(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")


@pytest.mark.parametrize("path", [ECHO, REGISTER])
async def test_streamed_body_over_the_limit_is_413(
    small_body_client: httpx.AsyncClient, path: str
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(8):
            yield b"a" * 64
        yield b'"}'

    response = await small_body_client.post(
        path, content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "payload_too_large")


async def test_an_oversized_body_to_a_bodyless_route_changes_nothing(
    small_body_client: httpx.AsyncClient, app_factory: Callable[..., Any]
) -> None:
    tokens = await signed_up(small_body_client)
    response = await small_body_client.post(
        "/api/v1/auth/logout",
        content=b"x" * (BODY_LIMIT * 2),
        headers={**bearer(tokens), "content-type": "text/plain"},
    )
    assert_problem(response, 413, "payload_too_large")
    # The session was not signed out: the handler never ran.
    assert (await small_body_client.get("/api/v1/me", headers=bearer(tokens))).status_code == 200


async def test_huge_body_to_an_unknown_path_is_still_a_problem(
    small_body_client: httpx.AsyncClient,
) -> None:
    response = await small_body_client.post(
        "/api/v1/nowhere", content=b"x" * (BODY_LIMIT * 40), headers={"content-type": "text/plain"}
    )
    assert_problem(response, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * BODY_LIMIT

    streamed = await small_body_client.post("/api/v1/nowhere", content=chunks())
    # The body is never read, so the path decides; either way it is a problem.
    assert streamed.status_code in (404, 413)
    assert_problem(streamed, streamed.status_code, streamed.json()["code"])


# -- media type -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [ECHO, REGISTER])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_json_body_sent_as_anything_else_is_415(
    client: httpx.AsyncClient, path: str, content_type: str | None
) -> None:
    body = b'{"text": "hi", "email": "a@example.com", "password": "x", "display_name": "A"}'
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post(path, content=body, headers=headers)
    if content_type is None:
        assert "content-type" not in response.request.headers
    problem = assert_problem(response, 415, "unsupported_media_type")
    assert "application/json" in problem["detail"]


async def test_json_with_a_charset_or_a_json_suffix_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await client.post(
            ECHO, content=b'{"text": "hi"}', headers={"content-type": content_type}
        )
        assert response.status_code == 200, (content_type, response.text)


# -- validation -------------------------------------------------------------------------


async def test_malformed_json_is_422_with_a_field_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        ECHO, content=b'{"text": "unterminated', headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 422, "validation_failed")
    errors = field_errors(body)
    assert [error["type"] for error in errors] == ["json_invalid"]
    assert errors[0]["loc"][0] == "body"


@pytest.mark.parametrize(
    ("payload", "loc", "kind"),
    [
        ({"text": 5}, ["body", "text"], "string_type"),
        ({"text": "hi", "count": "many"}, ["body", "count"], "int_parsing"),
        ({"text": "hi", "count": -1}, ["body", "count"], "greater_than_equal"),
        ({"text": "hi", "admin": True}, ["body", "admin"], "extra_forbidden"),
        ({"text": "a" * 201}, ["body", "text"], "string_too_long"),
        ({"text": ""}, ["body", "text"], "string_too_short"),
        ({}, ["body", "text"], "missing"),
        (["text"], ["body"], "model_attributes_type"),
    ],
)
async def test_invalid_fields_are_422_with_loc_msg_and_type(
    client: httpx.AsyncClient, payload: Any, loc: list[str], kind: str
) -> None:
    response = await client.post(ECHO, json=payload)
    body = assert_problem(response, 422, "validation_failed")
    errors = field_errors(body)
    assert {"loc": loc, "type": kind} in [{"loc": e["loc"], "type": e["type"]} for e in errors]
    noun = "field" if len(errors) == 1 else "fields"
    assert body["detail"] == f"{len(errors)} {noun} failed validation"


async def test_every_invalid_field_is_reported_at_once(client: httpx.AsyncClient) -> None:
    response = await client.post(ECHO, json={"text": 1, "count": "x", "extra": 1})
    body = assert_problem(response, 422, "validation_failed")
    locations = sorted(tuple(error["loc"]) for error in field_errors(body))
    assert locations == [("body", "count"), ("body", "extra"), ("body", "text")]
    assert body["detail"] == "3 fields failed validation"


async def test_invalid_query_parameter_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{ECHO}?repeat=9", json={"text": "hi"})
    body = assert_problem(response, 422, "validation_failed")
    assert [error["loc"] for error in field_errors(body)] == [["query", "repeat"]]


async def test_oversized_register_fields_are_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER,
        json={"email": "a" * 400 + "@example.com", "password": PASSWORD, "display_name": "x" * 101},
    )
    body = assert_problem(response, 422, "validation_failed")
    errors = {tuple(error["loc"]): error["type"] for error in field_errors(body)}
    assert errors == {
        ("body", "email"): "string_too_long",
        ("body", "display_name"): "string_too_long",
    }


# -- unexpected failures ----------------------------------------------------------------


async def test_an_unhandled_exception_is_a_500_without_details(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/example/boom")
    body = assert_problem(response, 500, "internal_error")
    assert set(body) <= {"type", "title", "status", "detail", "code", "request_id", "instance"}
    assert body.pop("instance") == "/api/v1/example/boom"
    assert "quote the request id" in body["detail"]
    for secret in ("hunter2", "RuntimeError", "Traceback", "boom", "example_app"):
        assert secret not in str(body)
    # The server keeps serving afterwards.
    assert (await client.get("/api/v1/example/ping")).status_code == 200


async def test_an_overloaded_database_is_a_503_to_retry(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/example/busy")
    body = assert_problem(response, 503, "server_busy")
    assert response.headers["retry-after"] == "1"
    assert body["retry_after"] == 1
    for internal in ("QueuePool", "TimeoutError", "overflow"):
        assert internal not in response.text
    assert (await client.get("/api/v1/example/ping")).status_code == 200


def test_overload_is_told_from_other_database_errors(tmp_path: Path) -> None:
    """SQLite's single writer held by one connection: another one's write gives up after
    its busy timeout with "database is locked", an overload; a missing table does not."""
    engine = sqlalchemy.create_engine(
        f"sqlite:///{tmp_path / 'locked.db'}", connect_args={"timeout": 0.05}
    )
    with engine.connect() as holder, engine.connect() as other:
        holder.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        holder.commit()
        holder.exec_driver_sql("BEGIN IMMEDIATE")
        holder.exec_driver_sql("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlalchemy.exc.OperationalError) as locked:
            other.exec_driver_sql("INSERT INTO t VALUES (2)")
        holder.rollback()
        with pytest.raises(sqlalchemy.exc.OperationalError) as missing:
            other.exec_driver_sql("SELECT * FROM nowhere")
    engine.dispose()
    busy = overload(locked.value)
    assert busy is not None
    assert (busy.status, busy.code, busy.headers) == (503, "server_busy", {"Retry-After": "1"})
    assert overload(missing.value) is None
    assert overload(RuntimeError("database is locked")) is None


# -- request ids ------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["abc-123", "trace.id:0001_x", "x" * 128])
async def test_a_valid_incoming_request_id_is_kept(
    client: httpx.AsyncClient, request_id: str
) -> None:
    ok = await client.get("/api/v1/example/ping", headers={"x-request-id": request_id})
    assert ok.headers["x-request-id"] == request_id
    failed = await client.get("/api/v1/missing", headers={"x-request-id": request_id})
    body = assert_problem(failed, 404, "not_found")
    assert body["request_id"] == request_id


@pytest.mark.parametrize(
    "request_id", ["x" * 129, "has space", "<script>", "a/b", "café".encode(), "id;drop", ""]
)
async def test_an_invalid_request_id_is_replaced(
    client: httpx.AsyncClient, request_id: str | bytes
) -> None:
    raw = request_id.encode() if isinstance(request_id, str) else request_id
    response = await client.get("/api/v1/missing", headers={b"x-request-id": raw})
    body = assert_problem(response, 404, "not_found")
    assert body["request_id"].encode() != raw
    assert GENERATED_ID.match(body["request_id"])


async def test_each_request_gets_its_own_generated_id(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/api/v1/example/ping")).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(GENERATED_ID.match(request_id) for request_id in ids)


# -- failed requests store nothing ------------------------------------------------------


async def test_a_rejected_registration_stores_nothing(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    invalid = await client.post(
        REGISTER,
        json={"email": "ann@example.com", "password": PASSWORD, "display_name": "Ann", "x": 1},
    )
    assert_problem(invalid, 422, "validation_failed")
    weak = await client.post(
        REGISTER, json={"email": "ann@example.com", "password": "password", "display_name": "Ann"}
    )
    assert_problem(weak, 422, "auth.weak_password")
    assert await row_count(kernel, User) == 0
    assert await row_count(kernel, AuditEvent) == 0


async def test_a_duplicate_registration_adds_no_rows(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    await register(client)
    users, events = await row_count(kernel, User), await row_count(kernel, AuditEvent)
    duplicate = await client.post(
        REGISTER, json={"email": "ann@example.com", "password": PASSWORD, "display_name": "Ann"}
    )
    assert_problem(duplicate, 409, "auth.email_taken")
    assert (await row_count(kernel, User), await row_count(kernel, AuditEvent)) == (users, events)
    assert users == 1
