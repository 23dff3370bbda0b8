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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from veche.kernel.context import RequestContext, bind_request, unbind_request
from veche.kernel.db import new_id
from veche.kernel.errors import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPE_PREFIX,
    ProblemError,
    code_for_status,
    problem_openapi,
)
from veche.kernel.observability import metrics

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

access_log = structlog.get_logger("veche.access")
error_log = structlog.get_logger("veche.errors")


class UnsupportedMediaType(ProblemError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class KernelRoute(APIRoute):
    """An APIRoute that answers 415 when a JSON body arrives as anything but JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None or isinstance(self.body_field.field_info, params.Form):
            return handler

        async def json_only(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            has_body = request.headers.get("content-length", "0") != "0" or (
                "transfer-encoding" in request.headers
            )
            if (content_type is not None or has_body) and not _is_json(content_type or ""):
                raise UnsupportedMediaType(
                    f"Send this body as application/json, not {content_type or 'untyped bytes'}"
                )
            return await handler(request)

        return json_only


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


def _problem_body(status: int, detail: str, request_id: str) -> bytes:
    code = code_for_status(status)
    return orjson.dumps(
        {
            "type": PROBLEM_TYPE_PREFIX + code,
            "title": detail,
            "status": status,
            "detail": detail,
            "code": code,
            "request_id": request_id,
        }
    )


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
                    body = _problem_body(status, _status_phrase(status), request_id)
                    response_headers["content-type"] = PROBLEM_MEDIA_TYPE
                    response_headers["content-length"] = str(len(body))
                    await send(message)
                    await send({"type": "http.response.body", "body": body})
                    return
            elif message["type"] == "http.response.body" and state["replace"]:
                return
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_context)
        except Exception as exc:
            state["status"] = 500
            error_log.error("unhandled_exception", exc_info=exc, path=scope.get("path"))
            if state["started"] or scope["type"] != "http":
                raise
            await _send_internal_error(send, request_id)
        finally:
            metrics.IN_FLIGHT.dec()
            self._record(scope, context, state["status"], time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id")
            unbind_request(token)

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


async def _send_internal_error(send: Send, request_id: str) -> None:
    body = _problem_body(500, "Internal server error", request_id)
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
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
