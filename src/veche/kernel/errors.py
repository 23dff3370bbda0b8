"""RFC 9457 problem details: the one shape of every error Veche answers with.

Expected failures are `ProblemError` subclasses with a status and a stable `code`; the
handlers installed by `install_error_handlers` turn them, Starlette's HTTP errors,
validation failures and unexpected exceptions into `application/problem+json`. A 500 never
carries the exception's message or trace: those go to the log with the request id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from veche.kernel.context import current_request_id

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:veche:problem:"

log = structlog.get_logger("veche.errors")


class FieldError(BaseModel):
    """One invalid input: where it is, what is wrong, and a stable machine-readable kind."""

    loc: list[str | int] = Field(description="Path to the field, e.g. ['body', 'email']")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A URN naming the problem kind")
    title: str
    status: int
    detail: str | None = None
    code: str = Field(description="Stable machine-readable error code")
    request_id: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """An expected failure that becomes a problem response.

    Subclasses set `status`, `code` and `title`. `commit` keeps the request's database
    changes even though it fails: a failed login still writes its audit row.
    """

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        commit: bool = False,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        self.commit = commit


class BadRequest(ProblemError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class Unauthorized(ProblemError):
    status = 401
    code = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        headers = {"WWW-Authenticate": "Bearer", **kwargs.pop("headers", {})}
        super().__init__(detail, headers=headers, **kwargs)


class Forbidden(ProblemError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class NotFound(ProblemError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(ProblemError):
    status = 409
    code = "conflict"
    title = "Conflict"


class UnprocessableContent(ProblemError):
    status = 422
    code = "validation_failed"
    title = "The request is not valid"

    def __init__(self, detail: str | None, errors: Sequence[FieldError], **kwargs: Any) -> None:
        extra = {"errors": [error.model_dump() for error in errors]}
        super().__init__(detail, extra=extra, **kwargs)


class TooManyRequests(ProblemError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class ServiceUnavailable(ProblemError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"


class ServerBusy(ProblemError):
    """The database could not take the work in time: retrying shortly is the answer. What
    failed was rolled back; with an idempotency key (a messenger `client_id`, say) the
    retry cannot make a duplicate."""

    status = 503
    code = "server_busy"
    title = "The server is busy"
    retry_after = 1

    def __init__(self) -> None:
        super().__init__(
            "The server is overloaded; retry the request in a moment.",
            headers={"Retry-After": str(self.retry_after)},
            extra={"retry_after": self.retry_after},
        )


# PostgreSQL's SQLSTATEs for a server out of connections or resources.
_OVERLOAD_SQLSTATES = frozenset({"53000", "53100", "53200", "53300", "53400", "57P03"})


def overload(exc: BaseException) -> ServerBusy | None:
    """The `ServerBusy` a database error stands for, or None when it is not an overload: a
    pool with no connection free in time, SQLite's single writer busy past its timeout, or
    PostgreSQL out of connections or resources."""
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return ServerBusy()
    if isinstance(exc, sqlalchemy.exc.OperationalError) and "database is locked" in str(exc.orig):
        return ServerBusy()
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if state in _OVERLOAD_SQLSTATES:
            return ServerBusy()
    return None


_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def code_for_status(status: int) -> str:
    return _STATUS_CODES.get(status, f"http_{status}")


INTERNAL_ERROR_DETAIL = (
    "The server failed to handle this request; quote the request id when reporting it."
)


def problem_document(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem details object, with the current request's id."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail if detail is not None else title,
        "code": code,
        "request_id": current_request_id(),
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extra or {})
    return body


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    request: Request | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    instance = request.url.path if request is not None else None
    body = problem_document(status, code, title, detail, instance=instance, extra=extra)
    return Response(
        content=orjson.dumps(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        location = [part if isinstance(part, int) else str(part) for part in error["loc"]]
        errors.append({"loc": location, "msg": str(error["msg"]), "type": str(error["type"])})
    return errors


async def _handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status,
        exc.code,
        exc.title,
        exc.detail,
        request=request,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = exc.detail if isinstance(exc.detail, str) else title
    if status == 404 and detail == "Not Found":
        detail = f"No resource at {request.url.path}"
    if status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(
        status,
        code_for_status(status),
        title,
        detail,
        request=request,
        headers=exc.headers,
    )


async def _handle_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    count = len(errors)
    detail = f"{count} field{'s' if count != 1 else ''} failed validation"
    return problem_response(
        422,
        "validation_failed",
        "The request is not valid",
        detail,
        request=request,
        extra={"errors": errors},
    )


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    busy = overload(exc)
    if busy is not None:
        log.warning("server_busy", error=type(exc).__name__, path=request.url.path)
        return await _handle_problem(request, busy)
    log.error("unhandled_exception", exc_info=exc, path=request.url.path)
    return problem_response(
        500,
        "internal_error",
        "Internal server error",
        INTERNAL_ERROR_DETAIL,
        request=request,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the application answers with a problem+json response."""
    app.add_exception_handler(ProblemError, _handle_problem)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(Exception, _handle_unexpected)


def problem_openapi(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, plus a problem default."""
    ref = {"$ref": "#/components/schemas/Problem"}
    responses: dict[int | str, dict[str, Any]] = {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": ref}},
        }
        for status in statuses
    }
    responses["default"] = {
        "description": "Any other error, as RFC 9457 problem details",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": ref}},
    }
    return responses
