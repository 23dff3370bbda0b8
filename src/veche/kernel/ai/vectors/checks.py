"""Validation every vector store shares: vectors, records and filters are checked the same
way whichever implementation stores them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
import orjson

from veche.kernel.ai.vectors.base import JSONScalar, VectorFilter, VectorRecord

_FORBIDDEN_KEY_CHARACTERS = frozenset('.[]"')
Vector = npt.NDArray[np.float32]


def normalise_vector(vector: Vector | Sequence[float], dimensions: int) -> Vector:
    """The vector scaled to unit length as float32; `ValueError` for a wrong shape, NaN or zero."""
    try:
        array = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"vector is not a sequence of numbers: {error}") from None
    if array.ndim != 1 or array.shape[0] != dimensions:
        raise ValueError(
            f"vector has shape {array.shape}, this store holds {dimensions}-dimensional vectors"
        )
    if not np.isfinite(array).all():
        raise ValueError("vector has NaN or infinite components")
    norm = float(np.linalg.norm(array))
    if norm == 0.0:
        raise ValueError("a zero vector has no direction to compare")
    return (array / norm).astype(np.float32)


@dataclass(frozen=True, slots=True)
class CheckedRecord:
    """A record that passed validation: unit vector, payload as JSON and as parsed again."""

    id: str
    app: str
    scope: str
    user_id: UUID | None
    payload_json: str
    payload: dict[str, Any]
    vector: Vector


def check_record(record: VectorRecord, dimensions: int) -> CheckedRecord:
    """Validate one record; `ValueError` says what is wrong with it."""
    if not isinstance(record.id, str) or not record.id:
        raise ValueError("a vector record needs a non-empty string id")
    if not isinstance(record.app, str) or not record.app:
        raise ValueError(f"record {record.id!r} needs a non-empty app")
    if not isinstance(record.scope, str):
        raise ValueError(f"record {record.id!r} has a scope that is not a string")
    if record.user_id is not None and not isinstance(record.user_id, UUID):
        raise ValueError(f"record {record.id!r} has a user_id that is not a UUID")
    try:
        payload_json = orjson.dumps(dict(record.payload)).decode()
    except (TypeError, ValueError) as error:
        raise ValueError(f"record {record.id!r} has a payload that is not JSON: {error}") from None
    try:
        vector = normalise_vector(record.vector, dimensions)
    except ValueError as error:
        raise ValueError(f"record {record.id!r}: {error}") from None
    # Parsed back from the JSON so the mirror holds exactly what a restart would load.
    payload: dict[str, Any] = orjson.loads(payload_json)
    return CheckedRecord(
        record.id, record.app, record.scope, record.user_id, payload_json, payload, vector
    )


def check_filter(filter: VectorFilter) -> None:
    """Reject filters that implementations would read differently (`ValueError`)."""
    if filter.app is not None and not isinstance(filter.app, str):
        raise ValueError("filter app must be a string")
    if filter.scope is not None and not isinstance(filter.scope, str):
        raise ValueError("filter scope must be a string")
    if filter.user_id is not None and not isinstance(filter.user_id, UUID):
        raise ValueError("filter user_id must be a UUID")
    if filter.ids is not None and (
        isinstance(filter.ids, str) or not all(isinstance(i, str) for i in filter.ids)
    ):
        raise ValueError("filter ids must be a sequence of strings")
    for key, value in filter.payload.items():
        # Qdrant reads dots and brackets as a path into nested objects; forbid them everywhere
        # so a filter means the same thing in every implementation.
        if not isinstance(key, str) or not key or _FORBIDDEN_KEY_CHARACTERS & set(key):
            raise ValueError(f"payload filter key {key!r} must be a plain top-level key")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(f"payload filter value for {key!r} must be a JSON scalar")
        if isinstance(value, float) and not np.isfinite(value):
            raise ValueError(f"payload filter value for {key!r} must be finite")


def payload_matches(payload: Mapping[str, Any], wanted: Mapping[str, JSONScalar]) -> bool:
    """Equality on top-level keys: strings with strings, numbers with numbers (1 == 1.0),
    booleans only with booleans, `None` with an explicit JSON null."""
    for key, expected in wanted.items():
        if key not in payload:
            return False
        actual = payload[key]
        if expected is None:
            matched = actual is None
        elif isinstance(expected, bool) or isinstance(actual, bool):
            matched = type(actual) is type(expected) and actual == expected
        elif isinstance(expected, str):
            matched = isinstance(actual, str) and actual == expected
        else:
            matched = isinstance(actual, int | float) and actual == expected
        if not matched:
            return False
    return True


def has_no_conditions(filter: VectorFilter) -> bool:
    return (
        filter.app is None
        and filter.user_id is None
        and filter.scope is None
        and not filter.payload
        and filter.ids is None
    )
