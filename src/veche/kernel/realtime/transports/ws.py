"""The WebSocket transport: JSON frames both ways.

The client authenticates with its first frame, `{"type": "auth", "token": "<access
token>"}`, so the token never appears in a URL or an access log. Then it may send
`subscribe` (with `epoch` and `offset` to recover from), `unsubscribe`, `publish` where the
channel's policy allows, `ping`, and `auth` again with a fresh token of the same user to
keep the connection past its first token's expiry. Every reply echoes the request's `ref`.
A `publish` frame on a channel whose policy has a `receive` handler goes to that handler
(the app validates and stores it, then publishes), and its answer comes back as `reply`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import structlog
from fastapi import WebSocket, WebSocketDisconnect

from veche.kernel.errors import ProblemError, overload
from veche.kernel.realtime.connection import (
    AUTH_REASONS,
    CLOSE_CODES,
    CLOSED,
    HEARTBEAT,
    Connection,
    Outgoing,
)
from veche.kernel.realtime.errors import UserMismatch
from veche.kernel.realtime.hub import Hub
from veche.kernel.realtime.message import EVENT_PATTERN, Position
from veche.kernel.realtime.policy import ReceiveHandler
from veche.kernel.realtime.transports.auth import Credential, credential, session_check
from veche.kernel.realtime.transports.stream import router
from veche.kernel.runtime import Kernel

log = structlog.get_logger("veche.realtime")
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
# The close reason (read by people, not programs) when the token ran out.
AUTH_CLOSE_REASONS = {"token_expired": "token expired", "session_revoked": "session revoked"}


class FrameError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _error(code: str, detail: str, ref: Any = None, **extra: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {**extra, "type": "error", "code": code, "detail": detail}
    if ref is not None:
        frame["ref"] = ref
    return frame


async def _send(websocket: WebSocket, frame: dict[str, Any]) -> None:
    await websocket.send_text(orjson.dumps(frame).decode())


def _parse(text: str, limit: int) -> dict[str, Any]:
    if len(text.encode()) > limit:
        raise FrameError("frame_too_large", f"Frames may be at most {limit} bytes")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError("invalid_frame", "A frame must be one JSON object") from exc
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise FrameError("invalid_frame", "A frame must be a JSON object with a 'type'")
    return value


async def _receive(websocket: WebSocket, limit: int) -> dict[str, Any] | None:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is None:
        raw = message.get("bytes") or b""
        if len(raw) > limit:
            raise FrameError("frame_too_large", f"Frames may be at most {limit} bytes")
        raise FrameError("invalid_frame", "Send frames as text, not binary")
    return _parse(text, limit)


def _token(frame: dict[str, Any]) -> str | None:
    token = frame.get("token")
    if frame["type"] != "auth" or not isinstance(token, str) or not token:
        return None
    return token


async def _authenticate(websocket: WebSocket, kernel: Kernel) -> tuple[Credential, str] | None:
    hub = kernel.realtime
    try:
        async with asyncio.timeout(hub.settings.auth_timeout_seconds):
            frame = await _receive(websocket, hub.settings.max_frame_bytes)
    except TimeoutError:
        await _send(websocket, _error("unauthorized", "Send an auth frame first"))
        await websocket.close(POLICY_VIOLATION, "unauthorized")
        return None
    except FrameError as exc:
        await _send(websocket, _error(exc.code, exc.detail))
        await websocket.close(POLICY_VIOLATION, exc.code)
        return None
    if frame is None:
        return None
    token = _token(frame)
    if token is None:
        detail = 'The first frame must be {"type": "auth", "token": "<access token>"}'
        await _send(websocket, _error("unauthorized", detail))
        await websocket.close(POLICY_VIOLATION, "unauthorized")
        return None
    try:
        return await credential(kernel, token), token
    except ProblemError as exc:
        await _send(websocket, _error(exc.code, exc.detail or exc.title))
        await websocket.close(POLICY_VIOLATION, exc.code)
        return None


async def _reauthenticate(
    kernel: Kernel, connection: Connection, frame: dict[str, Any], ref: Any
) -> None:
    """A fresh token of the same user extends the connection; any other is refused and
    the connection closed, so a signed-out session cannot keep it alive."""
    hub = kernel.realtime
    token = _token(frame)
    try:
        if token is None:
            raise FrameError("unauthorized", 'Send {"type": "auth", "token": "<access token>"}')
        fresh = await credential(kernel, token)
        if fresh.user.id != connection.user.id:
            raise UserMismatch("The token belongs to another user; open a new connection")
    except FrameError as exc:
        connection.close(exc.code, final=_error(exc.code, exc.detail, ref))
        return
    except ProblemError as exc:
        connection.close(exc.code, final=_error(exc.code, exc.detail or exc.title, ref))
        return
    if connection.closing:
        return
    connection.user = fresh.user
    hub.track_expiry(connection, fresh.expires_at, session_check(kernel, token), warn=True)
    reply: dict[str, Any] = {"type": "authenticated", "expires_at": connection.expires_at_text}
    if ref is not None:
        reply["ref"] = ref
    connection.send(reply)


_OWN_MEMBERS = frozenset({"type", "code", "detail", "ref"})


async def _receive_by_policy(
    kernel: Kernel,
    connection: Connection,
    receive: ReceiveHandler,
    channel: str,
    event: str,
    frame: dict[str, Any],
) -> None:
    """Hand a client's frame to the channel policy's handler and send its reply. A
    `ProblemError` becomes an `error` frame with the problem's code, status and extra
    members (a rate limit's `retry_after`, validation `errors`); anything else is a bug,
    logged, and answered with `internal_error` so the connection survives it."""
    ref = frame.get("ref")
    try:
        data = await receive(kernel, connection.user, channel, event, frame.get("data"))
    except ProblemError as exc:
        # The frame's own members win over extra members of the same name.
        extra = {key: value for key, value in exc.extra.items() if key not in _OWN_MEMBERS}
        extra.update(status=exc.status, channel=channel)
        connection.send(_error(exc.code, exc.detail or exc.title, ref, **extra))
        return
    except Exception as exc:
        busy = overload(exc)
        if busy is not None:  # nothing was stored: the client may send the frame again
            log.warning("realtime_receive_busy", channel=channel, event_name=event)
            connection.send(
                _error(
                    busy.code,
                    busy.detail or busy.title,
                    ref,
                    status=busy.status,
                    retry_after=busy.retry_after,
                    channel=channel,
                )
            )
            return
        log.exception("realtime_receive_failed", channel=channel, event_name=event)
        connection.send(_error("internal_error", "The server failed", ref, channel=channel))
        return
    reply: dict[str, Any] = {"type": "reply", "channel": channel, "event": event, "data": data}
    if ref is not None:
        reply["ref"] = ref
    connection.send(reply)


def _since(frame: dict[str, Any]) -> Position | None:
    offset, epoch = frame.get("offset"), frame.get("epoch")
    if offset is None and epoch is None:
        return None
    if not isinstance(offset, int) or isinstance(offset, bool) or not isinstance(epoch, str):
        raise FrameError("invalid_frame", "To recover, send both 'epoch' (text) and 'offset'")
    return Position(epoch, offset)


async def _handle(kernel: Kernel, connection: Connection, frame: dict[str, Any]) -> None:
    hub = kernel.realtime
    kind, ref = frame["type"], frame.get("ref")
    channel = frame.get("channel")
    if kind == "ping":
        connection.send({"type": "pong", "ref": ref} if ref is not None else {"type": "pong"})
        return
    if kind == "auth":
        await _reauthenticate(kernel, connection, frame, ref)
        return
    if kind not in ("subscribe", "unsubscribe", "publish"):
        raise FrameError("invalid_frame", f"Unknown frame type {str(kind)[:40]!r}")
    if not isinstance(channel, str):
        raise FrameError("invalid_frame", f"A {kind} frame needs a 'channel'")
    try:
        if kind == "subscribe":
            await hub.subscribe(connection, channel, _since(frame))
        elif kind == "unsubscribe":
            await hub.unsubscribe(connection, channel)
            connection.send({"type": "unsubscribed", "channel": channel, "ref": ref})
        else:
            event = frame.get("event", "message")
            if not isinstance(event, str) or not EVENT_PATTERN.match(event):
                raise FrameError("invalid_frame", "'event' must be a short name (._:- allowed)")
            policy = await hub.policies.authorize_publish(connection.user, channel, kernel)
            if policy.receive is not None:
                await _receive_by_policy(kernel, connection, policy.receive, channel, event, frame)
                return
            message = await hub.publish(channel, frame.get("data"), event=event)
            connection.send(
                {"type": "published", "channel": channel, "offset": message.offset, "ref": ref}
            )
    except ProblemError as exc:
        connection.send(_error(exc.code, exc.detail or exc.title, ref, channel=channel))


async def _read(websocket: WebSocket, kernel: Kernel, connection: Connection) -> None:
    limit = kernel.realtime.settings.max_frame_bytes
    while not connection.closing:
        try:
            frame = await _receive(websocket, limit)
        except FrameError as exc:
            if exc.code == "frame_too_large":
                connection.close("frame_too_large")  # the writer says why, then closes
                return
            connection.send(_error(exc.code, exc.detail))
            continue
        if frame is None:
            return
        try:
            await _handle(kernel, connection, frame)
        except FrameError as exc:
            connection.send(_error(exc.code, exc.detail, frame.get("ref")))


async def _write(websocket: WebSocket, hub: Hub, connection: Connection) -> None:
    while True:
        item = await connection.next()
        if item is CLOSED:
            reason = connection.close_reason or "shutdown"
            code = CLOSE_CODES.get(reason, POLICY_VIOLATION)
            final: dict[str, Any] | None = {"type": "reconnect", "reason": reason}
            text = reason
            if connection.final_frame is not None:
                final = connection.final_frame
            elif reason == "frame_too_large":
                code = MESSAGE_TOO_BIG
                limit = hub.settings.max_frame_bytes
                final = _error(reason, f"Frames may be at most {limit} bytes")
            elif reason in AUTH_REASONS:
                final, text = {"type": "reauth", "reason": reason}, AUTH_CLOSE_REASONS[reason]
            elif reason == "goodbye":
                final = None
            if final is not None:
                with contextlib.suppress(Exception):
                    await _send(websocket, final)
            with contextlib.suppress(Exception):
                await websocket.close(code, text)
            return
        if item is HEARTBEAT:
            await _send(websocket, {"type": "heartbeat"})
            continue
        assert isinstance(item, Outgoing)
        await _send(websocket, item.frame)


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    kernel: Kernel = websocket.app.state.kernel
    hub = kernel.realtime
    await websocket.accept()
    authenticated = await _authenticate(websocket, kernel)
    if authenticated is None:
        return
    first, token = authenticated
    try:
        connection = hub.open(first.user, "ws", kernel)
    except ProblemError as exc:
        await _send(websocket, _error(exc.code, exc.detail or exc.title))
        await websocket.close(CLOSE_CODES["shutdown"], exc.code)
        return
    try:
        hub.track_expiry(connection, first.expires_at, session_check(kernel, token), warn=True)
        welcome = {
            "type": "welcome",
            "connection_id": connection.id,
            "user_id": str(first.user.id),
            "expires_at": connection.expires_at_text,
        }
        await _send(websocket, welcome)
        reader = asyncio.create_task(_read(websocket, kernel, connection))
        writer = asyncio.create_task(_write(websocket, hub, connection))
        done, _pending = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        if reader in done and not connection.closing:
            # The client went away (or broke the protocol): nothing more to write.
            writer.cancel()
        elif writer in done:
            reader.cancel()
        for task in (reader, writer):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
    finally:
        hub.disconnect(connection)
