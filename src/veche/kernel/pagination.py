"""Keyset pagination: `?limit=&cursor=` in, `{"items": [...], "next_cursor": ...}` out.

A cursor is the sort key of the last item returned, signed with a key derived from the
secret key so a client can neither forge nor edit one. It is bound to the list and sort it
came from: a cursor from another list, another sort or other filters is a 400 problem, as is
any cursor that does not decode. Sorts come from an allow-list each endpoint declares, and
the primary key always breaks ties so no item is skipped or repeated between pages.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

import orjson
from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from veche.kernel.errors import BadRequest

ItemT = TypeVar("ItemT")
RowT = TypeVar("RowT")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_CURSOR_LENGTH = 1024
_SIGNATURE_BYTES = 16


class InvalidCursor(BadRequest):
    code = "pagination.invalid_cursor"
    title = "Invalid cursor"


class Page(BaseModel, Generic[ItemT]):
    """One page of a list and the cursor of the next (null on the last page)."""

    items: list[ItemT]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page")


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int
    cursor: str | None


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page"),
    ] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


@dataclass(frozen=True, slots=True)
class SortKey:
    """An ordering by model attributes, each ascending or descending (`-name`)."""

    attributes: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> SortKey:
        return cls(tuple(part.strip() for part in spec.split(",") if part.strip()))

    def with_tiebreaker(self, primary_key: str = "id") -> list[tuple[str, bool]]:
        fields = [(name.lstrip("-"), name.startswith("-")) for name in self.attributes]
        if all(name != primary_key for name, _ in fields):
            fields.append((primary_key, fields[0][1] if fields else False))
        return fields


def _encode_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    if isinstance(value, UUID):
        return {"u": value.hex}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot put {type(value).__name__} in a cursor")


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if "t" in value:
            return dt.datetime.fromisoformat(value["t"])
        if "u" in value:
            return UUID(hex=value["u"])
        raise ValueError("unknown tagged value")
    return value


def _scope_digest(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


class CursorCodec:
    """Signs and checks cursors with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def encode(self, scope: str, values: Sequence[Any]) -> str:
        values = [_encode_value(value) for value in values]
        payload = orjson.dumps({"s": _scope_digest(scope), "v": values})
        token = payload + self._sign(payload)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode()

    def decode(self, cursor: str, scope: str, width: int) -> list[Any]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursor("The cursor is not valid base64url") from exc
        payload, signature = raw[:-_SIGNATURE_BYTES], raw[-_SIGNATURE_BYTES:]
        if len(raw) <= _SIGNATURE_BYTES or not hmac.compare_digest(signature, self._sign(payload)):
            raise InvalidCursor("The cursor was not issued by this server or was altered")
        try:
            data = orjson.loads(payload)
            values = [_decode_value(value) for value in data["v"]]
            cursor_scope = data["s"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidCursor("The cursor is malformed") from exc
        if cursor_scope != _scope_digest(scope) or len(values) != width:
            raise InvalidCursor("The cursor belongs to another list, sort or filter")
        return values


def _after(columns: list[tuple[ColumnElement[Any], bool]], values: list[Any]) -> Any:
    """The rows strictly after `values` in the order the columns describe."""
    clauses = []
    for index, (column, descending) in enumerate(columns):
        equal_before = [columns[j][0] == values[j] for j in range(index)]
        beyond = column < values[index] if descending else column > values[index]
        clauses.append(and_(*equal_before, beyond))
    return or_(*clauses)


async def paginate(
    session: AsyncSession,
    statement: Select[RowT],
    model: type[Any],
    *,
    sort: SortKey,
    params: PageParams,
    codec: CursorCodec,
    scope: str,
) -> tuple[list[RowT], str | None]:
    """One page of the statement's rows in `sort` order, and the next page's cursor.

    `scope` names the list and its filters (e.g. `admin.audit|action=auth.login`); a
    cursor only works for the scope it was made for.
    """
    fields = sort.with_tiebreaker()
    columns: list[tuple[ColumnElement[Any], bool]] = [
        (getattr(model, name), descending) for name, descending in fields
    ]
    bound_scope = f"{scope}|{','.join(sort.attributes)}"
    if params.cursor:
        values = codec.decode(params.cursor, bound_scope, len(columns))
        statement = statement.where(_after(columns, values))
    order = [column.desc() if descending else column.asc() for column, descending in columns]
    statement = statement.order_by(*order).limit(params.limit + 1)
    rows = list((await session.scalars(statement)).all())
    next_cursor = None
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        last = rows[-1]
        next_cursor = codec.encode(bound_scope, [getattr(last, name) for name, _ in fields])
    return rows, next_cursor
