"""The HTTP edge: the request middleware, the kernel's route class and router factory.

`RequestMiddleware` gives every request an id (a valid incoming `X-Request-ID` or a new
one), resolves the client address (trusting `X-Forwarded-For` only from configured
proxies), binds both to the log context, writes one access line, records metrics, and makes
sure even the framework's own plain-text errors leave as problem+json.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Coroutine, Sequence
from enum import Enum
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request, Response, params
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from veche.kernel.context import RequestContext, bind_request, unbind_request
from veche.kernel.db import new_id
from veche.kernel.errors import (
    INTERNAL_ERROR_DETAIL,
    PROBLEM_MEDIA_TYPE,
    FieldError,
    ProblemError,
    UnprocessableContent,
    code_for_status,
    overload,
    problem_document,
    problem_openapi,
)
from veche.kernel.observability import metrics

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

access_log = structlog.get_logger("veche.access")
error_log = structlog.get_logger("veche.errors")


class PayloadTooLarge(ProblemError):
    status = 413
    code = "payload_too_large"
    title = "Content too large"


class UnsupportedMediaType(ProblemError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


_NUL_MESSAGE = "must not contain NUL characters"


async def _nul_errors(request: Request, json_body: bool) -> list[FieldError]:
    """Where the request carries NUL characters in text (PostgreSQL cannot store them)."""
    errors = [
        FieldError(loc=["query", name.replace("\x00", "")], msg=_NUL_MESSAGE, type="nul_character")
        for name, value in request.query_params.multi_items()
        if "\x00" in name or "\x00" in value
    ]
    errors += [
        FieldError(loc=["path", name], msg=_NUL_MESSAGE, type="nul_character")
        for name, value in request.path_params.items()
        if isinstance(value, str) and "\x00" in value
    ]
    if json_body:
        body = await request.body()  # cached: the handler reads the same bytes
        if b"\\u0000" in body:  # the only way JSON can spell NUL: decode to be sure
            try:
                if _holds_nul(orjson.loads(body)):
                    errors.append(FieldError(loc=["body"], msg=_NUL_MESSAGE, type="nul_character"))
            except orjson.JSONDecodeError:
                pass  # the handler reports malformed JSON itself
    return errors


class KernelRoute(APIRoute):
    """An APIRoute with the kernel's input rules: a JSON body must arrive as JSON (415),
    and no text may carry NUL characters (422), which PostgreSQL cannot store."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        json_body = self.body_field is not None and not isinstance(
            self.body_field.field_info, params.Form
        )

        async def checked(request: Request) -> Response:
            # Refused before the handler runs, even on routes that never read a body, so
            # nothing is done for a request that is answered 413.
            limit = request.scope.get(MAX_BODY_SIZE_SCOPE_KEY)
            declared = request.headers.get("content-length", "")
            if limit is not None and declared.isdigit() and int(declared) > limit:
                raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit}")
            if json_body:
                content_type = request.headers.get("content-type")
                has_body = request.headers.get("content-length", "0") != "0" or (
                    "transfer-encoding" in request.headers
                )
                if (content_type is not None or has_body) and not _is_json(content_type or ""):
                    shown = content_type or "untyped bytes"
                    raise UnsupportedMediaType(f"Send this body as application/json, not {shown}")
            if errors := await _nul_errors(request, json_body):
                raise UnprocessableContent("Text must not contain NUL characters", errors)
            return await handler(request)

        return checked


def api_router(
    prefix: str = "",
    *,
    tags: Sequence[str | Enum] | None = None,
    dependencies: Sequence[params.Depends] | None = None,
) -> APIRouter:
    """A router for kernel and app endpoints: problem responses documented, 415 enforced."""
    return APIRouter(
        prefix=prefix,
        tags=list(tags or []),
        dependencies=dependencies,
        route_class=KernelRoute,
        responses=problem_openapi(422, 429),
    )


def parse_networks(items: Sequence[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(item, strict=False) for item in items]


def resolve_client_ip(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> str | None:
    """The client's address: the peer, unless the peer is a trusted proxy, in which case
    the nearest untrusted hop in `X-Forwarded-For`, read from the right."""

    def trusted_address(value: str) -> bool:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return any(address in network for network in trusted)

    if peer is None or not trusted or not trusted_address(peer):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a forged or broken chain: trust nothing beyond the proxy
        if not trusted_address(hop):
            return hop
    return hops[0] if hops else peer


def _route_template(scope: Scope) -> str:
    # FastAPI keeps included routers whole: `scope["route"]` is the route as its router
    # declared it (`/ping`), without the prefix an app module is mounted under. The
    # effective route context FastAPI leaves in the scope has the full template.
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get("effective_route_context")
        full_path = getattr(context, "path_format", None)
        if isinstance(full_path, str) and full_path:
            return full_path
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


def _problem_body(status: int, scope: Scope, detail: str | None = None) -> bytes:
    title = _status_phrase(status)
    document = problem_document(
        status, code_for_status(status), title, detail, instance=scope.get("path")
    )
    return orjson.dumps(document)


class RequestMiddleware:
    """Request id, client address, access log, metrics and the problem+json safety net."""

    def __init__(
        self, app: ASGIApp, *, trusted_proxies: Sequence[str] = (), access_log: bool = True
    ) -> None:
        self.app = app
        self.trusted = parse_networks(trusted_proxies)
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming_id = headers.get("x-request-id", "")
        request_id = incoming_id if _REQUEST_ID.match(incoming_id) else new_id().hex
        client = scope.get("client")
        client_ip = resolve_client_ip(
            client[0] if client else None, headers.getlist("x-forwarded-for"), self.trusted
        )
        context = RequestContext(request_id=request_id, client_ip=client_ip)
        token = bind_request(context)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "started": False, "replace": False}

        async def send_with_context(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                state["status"] = status = message["status"]
                response_headers = MutableHeaders(scope=message)
                response_headers["X-Request-ID"] = request_id
                for name, value in context.response_headers.items():
                    response_headers[name] = value
                content_type = response_headers.get("content-type", "")
                if status >= 400 and content_type.startswith("text/plain"):
                    # A framework-level error (e.g. a body over the limit on an unknown
                    # path) answered in plain text: keep the status, speak problem+json.
                    state["replace"] = True
                    body = _problem_body(status, scope)
                    response_headers["content-type"] = PROBLEM_MEDIA_TYPE
                    response_headers["content-length"] = str(len(body))
                    await send(message)
                    await send({"type": "http.response.body", "body": body})
                    return
            elif message["type"] == "http.response.body" and state["replace"]:
                return
            elif message["type"] == "websocket.accept":
                state["status"] = 101  # switched protocols: the access log's status
            elif message["type"] == "websocket.close" and not state["started"]:
                state["status"] = 403  # refused before the handshake completed
            if message["type"] in ("websocket.accept", "websocket.close"):
                state["started"] = True
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_context)
        except Exception as exc:
            if not await self._answer_failure(exc, scope, send, state, request_id):
                raise
        finally:
            metrics.IN_FLIGHT.dec()
            self._record(scope, context, state["status"], time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id")
            unbind_request(token)

    @staticmethod
    async def _answer_failure(
        exc: Exception, scope: Scope, send: Send, state: dict[str, Any], request_id: str
    ) -> bool:
        """Answer an exception nothing else handled; False when it must propagate (the
        response had started, or a WebSocket). An overloaded database is a 503
        `server_busy` to retry (logged as a warning); anything else a 500 without details."""
        busy = overload(exc)
        if busy is not None:
            error_log.warning("server_busy", error=type(exc).__name__, path=scope.get("path"))
        else:
            error_log.error("unhandled_exception", exc_info=exc, path=scope.get("path"))
        if state["started"] or scope["type"] != "http":
            if not state["started"]:
                state["status"] = 500
            return False
        state["status"] = 500 if busy is None else busy.status
        await _send_problem(send, scope, request_id, busy)
        return True

    def _record(self, scope: Scope, context: RequestContext, status: int, seconds: float) -> None:
        method = scope.get("method", "WS")
        route = _route_template(scope)
        metrics.observe_request(method, route, status, seconds)
        if self.access_log:
            access_log.log(
                40 if status >= 500 else 30 if status >= 400 else 20,
                "request",
                method=method,
                path=scope.get("path"),
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 2),
                user_id=str(context.user_id) if context.user_id else None,
                client_ip=context.client_ip,
            )


async def _send_problem(
    send: Send, scope: Scope, request_id: str, problem: ProblemError | None
) -> None:
    """`problem` (None: the 500 without details) as the whole response."""
    if problem is None:
        status = 500
        body = _problem_body(500, scope, INTERNAL_ERROR_DETAIL)
        extra_headers: dict[str, str] = {}
    else:
        status = problem.status
        document = problem_document(
            problem.status,
            problem.code,
            problem.title,
            problem.detail,
            instance=scope.get("path"),
            extra=problem.extra,
        )
        body = orjson.dumps(document)
        extra_headers = dict(problem.headers or {})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                *((name.lower().encode(), value.encode()) for name, value in extra_headers.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _status_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
