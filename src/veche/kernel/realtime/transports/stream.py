"""SSE and NDJSON: one-way streams of the hub's frames over a plain HTTP response.

Both authenticate with `Authorization: Bearer`, refuse a channel the user may not read
before the stream starts (problem+json), resume from a token that carries the stream's
position in every channel, send heartbeats, and end with a `reconnect` frame when the
server stops or the client falls too far behind, or with a `reauth` frame when the access
token that opened the stream expires or its session is signed out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import StringConstraints

from veche.kernel.errors import problem_openapi
from veche.kernel.http import api_router
from veche.kernel.identity.deps import CurrentUser, bearer_scheme
from veche.kernel.identity.models import User
from veche.kernel.ratelimit import rate_limit
from veche.kernel.realtime.hub import AUTH_REASONS, CLOSED, Connection, Hub, Outgoing
from veche.kernel.realtime.message import Position
from veche.kernel.realtime.transports.auth import session_check, token_expiry
from veche.kernel.runtime import Kernel

router = api_router("/api/v1/realtime", tags=["realtime"])

# Bounded so a request always fits the server's request-line limit (uvicorn answers an
# over-long one itself, in plain text); the hub's own `max_channels` is usually lower.
ChannelName = Annotated[str, StringConstraints(min_length=1, max_length=240)]
Channels = Annotated[
    list[ChannelName],
    Query(
        alias="channel",
        min_length=1,
        max_length=64,
        description="A channel to subscribe to; repeat for several (`?channel=a&channel=b`)",
    ),
]
_RESPONSES = problem_openapi(400, 401, 403, 422, 429, 503)
# Opening a stream costs a policy check and a history read: limited like other requests.
_LIMIT = [Depends(rate_limit("default"))]
# The bearer token `CurrentUser` authenticated (FastAPI resolves the scheme once).
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def _kernel(request: Request) -> Kernel:
    kernel: Kernel = request.app.state.kernel
    return kernel


async def _open(
    kernel: Kernel,
    user: User,
    bearer: HTTPAuthorizationCredentials | None,
    transport: str,
    channels: list[str],
    resume_token: str | None,
) -> Connection:
    hub = kernel.realtime
    positions: dict[str, Position] = hub.tokens.decode(resume_token) if resume_token else {}
    unique = list(dict.fromkeys(channels))
    assert bearer is not None  # `CurrentUser` refused the request otherwise
    expires_at = token_expiry(kernel, bearer.credentials)
    connection = hub.open(user, transport)
    try:
        hub.track_expiry(
            connection, expires_at, session_check(kernel, bearer.credentials), warn=False
        )
        await hub.authorize(connection, unique)
        for channel in unique:
            await hub.subscribe(connection, channel, positions.get(channel))
    except BaseException:
        hub.disconnect(connection)
        raise
    return connection


def _advice(hub: Hub, connection: Connection, last: Outgoing | None) -> dict[str, object]:
    reason = connection.close_reason or "shutdown"
    frame: dict[str, object]
    if reason in AUTH_REASONS:
        # Reconnect with a fresh access token (and this resume token): nothing is lost.
        frame = {"type": "reauth", "reason": reason}
    else:
        frame = {"type": "reconnect", "reason": reason, "retry_ms": hub.settings.sse_retry_ms}
    if last is not None:
        frame["resume_token"] = hub.resume_token(last.positions)
    return frame


async def _frames(
    hub: Hub,
    connection: Connection,
    render: Callable[[Outgoing | None], bytes],
    render_end: Callable[[dict[str, object], Outgoing | None], bytes],
) -> AsyncIterator[bytes]:
    last: Outgoing | None = None
    try:
        while True:
            item = await connection.next(hub.settings.heartbeat_seconds)
            if item is CLOSED:
                yield render_end(_advice(hub, connection, last), last)
                return
            if item is None:
                await hub.refresh_presence(connection)
                yield render(None)
                continue
            assert isinstance(item, Outgoing)
            last = item
            yield render(item)
    finally:
        hub.disconnect(connection)


@router.get(
    "/sse",
    responses={**_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
    response_class=StreamingResponse,
    dependencies=_LIMIT,
)
async def sse(
    request: Request,
    user: CurrentUser,
    bearer: Bearer,
    channels: Channels,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="The last `id:` seen")
    ] = None,
) -> StreamingResponse:
    """Server-sent events: each event's `id:` is the resume token; reconnecting with it in
    `Last-Event-ID` delivers exactly the missed messages. The stream ends with a `reauth`
    event when the access token expires or its session is signed out."""
    kernel = _kernel(request)
    hub = kernel.realtime
    connection = await _open(kernel, user, bearer, "sse", channels, last_event_id or None)

    def render(item: Outgoing | None) -> bytes:
        if item is None:
            return b": heartbeat\n\n"
        token = hub.resume_token(item.positions)
        data = orjson.dumps(item.frame)
        return f"id: {token}\nevent: {item.frame['type']}\ndata: ".encode() + data + b"\n\n"

    def render_end(advice: dict[str, object], last: Outgoing | None) -> bytes:
        head = f"id: {advice['resume_token']}\n" if last is not None else ""
        kind = advice["type"]
        return f"{head}event: {kind}\ndata: ".encode() + orjson.dumps(advice) + b"\n\n"

    async def body() -> AsyncIterator[bytes]:
        yield f"retry: {hub.settings.sse_retry_ms}\n\n".encode()
        async for chunk in _frames(hub, connection, render, render_end):
            yield chunk

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/stream",
    responses={**_RESPONSES, 200: {"content": {"application/x-ndjson": {}}}},
    response_class=StreamingResponse,
    dependencies=_LIMIT,
)
async def ndjson(
    request: Request,
    user: CurrentUser,
    bearer: Bearer,
    channels: Channels,
    last_event_id: Annotated[
        str | None,
        Query(max_length=4096, description="A `resume_token` from an earlier stream"),
    ] = None,
) -> StreamingResponse:
    """Newline-delimited JSON: one frame per line, each carrying `resume_token`."""
    kernel = _kernel(request)
    hub = kernel.realtime
    connection = await _open(kernel, user, bearer, "ndjson", channels, last_event_id or None)

    def render(item: Outgoing | None) -> bytes:
        if item is None:
            return b'{"type":"heartbeat"}\n'
        frame = {**item.frame, "resume_token": hub.resume_token(item.positions)}
        return orjson.dumps(frame) + b"\n"

    def render_end(advice: dict[str, object], last: Outgoing | None) -> bytes:
        return orjson.dumps(advice) + b"\n"

    return StreamingResponse(
        _frames(hub, connection, render, render_end),
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# What an app's renderer gets: a hub frame (`message`, `subscribed`, ...) with the resume
# token after it, `None` for a heartbeat; and the closing advice (`reconnect`/`reauth`).
FrameRenderer = Callable[[dict[str, Any] | None, str | None], bytes]


async def ndjson_stream(
    request: Request,
    user: User,
    bearer: HTTPAuthorizationCredentials | None,
    channels: list[str],
    resume_token: str | None,
    render: FrameRenderer,
) -> StreamingResponse:
    """An NDJSON stream of `channels` for an app's own endpoint, in the app's own frame
    shape: the same authorization, resume, heartbeats and closing advice as `/stream`.
    The app checks its own ownership rules first; the channel policy is checked here too."""
    kernel = _kernel(request)
    hub = kernel.realtime
    connection = await _open(kernel, user, bearer, "ndjson", channels, resume_token or None)

    def render_item(item: Outgoing | None) -> bytes:
        if item is None:
            return render(None, None)
        return render(item.frame, hub.resume_token(item.positions))

    def render_end(advice: dict[str, object], last: Outgoing | None) -> bytes:
        token = advice.get("resume_token")
        return render(dict(advice), token if isinstance(token, str) else None)

    return StreamingResponse(
        _frames(hub, connection, render_item, render_end),
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
