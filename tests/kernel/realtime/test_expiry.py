"""Access-token expiry: WebSocket warns, accepts a fresh token of the same user or closes
with 4001; SSE and NDJSON end with `reauth` and resume losslessly with a fresh token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.kernel.realtime.conftest import (
    Live,
    LiveFactory,
    NdjsonReader,
    SseReader,
    WsClient,
    ndjson_request,
    sse_request,
    user_channel,
)
from veche.kernel.realtime import hub as hub_module
from veche.settings import RealtimeSettings, Settings

TTL_SECONDS = 3
WARN_SECONDS = 1.0  # `auth_expiring` this long before expiry, instead of 30 s


@pytest.fixture
def short_lived(
    live_factory: LiveFactory,
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> Live:
    """A server whose access tokens live a few seconds."""
    monkeypatch.setattr(hub_module, "AUTH_EXPIRING_SECONDS", WARN_SECONDS)
    realtime = RealtimeSettings(heartbeat_seconds=0.5, shutdown_timeout_seconds=3.0)
    settings = settings_factory(auth={"access_token_ttl_seconds": TTL_SECONDS}, realtime=realtime)
    return live_factory(settings)


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _exp(tokens: dict[str, Any]) -> int:
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    return int(claims["exp"])


async def _closed(client: WsClient) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        await client.receive_type("never")
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_a_websocket_is_warned_then_closed_with_4001_when_its_token_expires(
    short_lived: Live,
) -> None:
    live = short_lived
    ann = await live.account("ann@example.com")
    async with live.ws(ann) as client:
        expires_at = _timestamp(client.welcome["expires_at"])
        assert expires_at == _exp(ann)
        assert (await client.subscribe(user_channel(ann)))["type"] == "subscribed"
        warning = await client.receive_type("auth_expiring")
        assert warning == {"type": "auth_expiring", "expires_at": client.welcome["expires_at"]}
        assert time.time() < expires_at
        final = await client.receive_type("reauth", "auth_expiring")
        assert final == {"type": "reauth", "reason": "token_expired"}  # warned only once
        assert time.time() >= expires_at - 0.2
        assert await _closed(client) == (4001, "token expired")
    assert await live.in_server(_connections(live)) == 0


async def _connections(live: Live) -> int:
    return live.hub.connection_count


async def test_a_fresh_token_of_the_same_user_keeps_the_websocket_past_expiry(
    short_lived: Live,
) -> None:
    live = short_lived
    ann = await live.account("ann@example.com")
    channel = user_channel(ann)
    async with live.ws(ann) as client:
        first_expiry = _timestamp(client.welcome["expires_at"])
        assert (await client.subscribe(channel))["type"] == "subscribed"
        await client.receive_type("auth_expiring")
        fresh = await live.refreshed(ann)
        await client.send({"type": "auth", "token": fresh["access_token"], "ref": "renew"})
        renewed = await client.receive_type("authenticated", "error", "reauth")
        assert renewed["type"] == "authenticated", renewed
        assert renewed["ref"] == "renew"
        assert _timestamp(renewed["expires_at"]) == _exp(fresh) > first_expiry

        await asyncio.sleep(max(first_expiry - time.time(), 0.0) + 0.3)
        await live.publish(channel, {"n": 1})
        delivered = await client.receive_type("message", "reauth", "error")
        assert delivered["type"] == "message", delivered
        assert delivered["data"] == {"n": 1}
        # The fresh token has its own warning and expiry.
        assert (await client.receive_type("auth_expiring"))["expires_at"] == renewed["expires_at"]
        assert await _closed(client) == (4001, "token expired")


async def test_a_token_of_another_user_or_an_invalid_one_is_refused_and_closes(
    live: Live,
) -> None:
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    for token, code in ((bob["access_token"], "user_mismatch"), ("x", "auth.invalid_token")):
        async with live.ws(ann) as client:
            await client.send({"type": "auth", "token": token, "ref": 5})
            error = await client.receive_type("error", "authenticated")
            assert (error["type"], error["code"], error["ref"]) == ("error", code, 5)
            assert (await _closed(client))[0] == 1008


async def test_a_signed_out_session_cannot_extend_its_websocket(live: Live) -> None:
    ann = await live.account("ann@example.com")
    async with live.ws(ann) as client:
        await live.logout(ann)
        await client.send({"type": "auth", "token": ann["access_token"]})
        error = await client.receive_type("error", "authenticated")
        assert error["code"] == "auth.invalid_token"
        assert (await _closed(client))[0] == 1008


async def test_a_signed_out_session_is_closed_when_its_token_is_about_to_expire(
    short_lived: Live,
) -> None:
    live = short_lived
    ann = await live.account("ann@example.com")
    async with live.ws(ann) as client:
        expires_at = _timestamp(client.welcome["expires_at"])
        await live.logout(ann)
        final = await client.receive_type("reauth", "auth_expiring")
        assert final == {"type": "reauth", "reason": "session_revoked"}
        assert time.time() < expires_at  # at the check before expiry, not at expiry
        assert await _closed(client) == (4001, "session revoked")


async def test_an_sse_stream_ends_with_reauth_and_resumes_with_a_fresh_token(
    short_lived: Live,
) -> None:
    live = short_lived
    ann = await live.account("ann@example.com")
    channel = user_channel(ann)
    async with live.http() as http:
        async with sse_request(http, ann, channel) as response:
            reader = SseReader(response)
            await reader.next_of("subscribed")
            await live.publish(channel, {"n": 1})
            first = await reader.next_of("message")
            final = await reader.next_of("reauth", "reconnect")
            assert final.event == "reauth"
            assert final.data == {
                "type": "reauth",
                "reason": "token_expired",
                "resume_token": first.id,
            }
            assert final.id == first.id
            assert time.time() >= _exp(ann) - 0.2
            assert await reader.next() is None  # a clean end of stream
        for n in (2, 3):
            await live.publish(channel, {"n": n})
        fresh = await live.refreshed(ann)
        async with sse_request(http, fresh, channel, last_event_id=final.id) as response:
            reader = SseReader(response)
            assert (await reader.next_of("subscribed")).data["recovered"] is True
            missed = [(await reader.next_of("message")).data["data"]["n"] for _ in range(2)]
            assert missed == [2, 3]
            await live.publish(channel, {"n": 4})
            assert (await reader.next_of("message")).data["data"] == {"n": 4}


async def test_an_ndjson_stream_ends_with_reauth_and_resumes_with_a_fresh_token(
    short_lived: Live,
) -> None:
    live = short_lived
    ann = await live.account("ann@example.com")
    channel = user_channel(ann)
    async with live.http() as http:
        async with ndjson_request(http, ann, channel) as response:
            reader = NdjsonReader(response)
            await reader.next_of("subscribed")
            await live.publish(channel, {"n": 1})
            first = await reader.next_of("message")
            final = await reader.next_of("reauth", "reconnect")
            assert final == {
                "type": "reauth",
                "reason": "token_expired",
                "resume_token": first["resume_token"],
            }
            assert await reader.next() is None
        for n in (2, 3):
            await live.publish(channel, {"n": n})
        fresh = await live.refreshed(ann)
        token = final["resume_token"]
        async with ndjson_request(http, fresh, channel, last_event_id=token) as response:
            reader = NdjsonReader(response)
            assert (await reader.next_of("subscribed"))["recovered"] is True
            missed = [(await reader.next_of("message"))["data"]["n"] for _ in range(2)]
            assert missed == [2, 3]
            await live.publish(channel, {"n": 4})
            assert (await reader.next_of("message"))["data"] == {"n": 4}


async def test_a_stream_of_a_signed_out_session_ends_before_its_token_expires(
    short_lived: Live,
) -> None:
    live = short_lived
    ann = await live.account("ann@example.com")
    async with live.http() as http, ndjson_request(http, ann, user_channel(ann)) as response:
        reader = NdjsonReader(response)
        await reader.next_of("subscribed")
        await live.logout(ann)
        final = await reader.next_of("reauth", "reconnect")
        assert final["reason"] == "session_revoked"
        assert time.time() < _exp(ann)
