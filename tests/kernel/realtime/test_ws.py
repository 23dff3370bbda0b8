"""WebSocket: auth frame, subscribe, publish by policy, resume by offset, bad frames."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.kernel.realtime.conftest import WAIT, Live, LiveFactory, user_channel


async def test_subscribe_and_receive_then_resume_from_an_offset(live: Live) -> None:
    ann = await live.account("ann@example.com")
    channel = user_channel(ann)
    async with live.ws(ann) as client:
        subscribed = await client.subscribe(channel)
        assert subscribed["type"] == "subscribed"
        assert subscribed["recovered"] is None
        await live.publish(channel, {"n": 1})
        first = await client.receive_type("message")
        assert first["data"] == {"n": 1}
        assert first["channel"] == channel
        await client.send({"type": "ping", "ref": 7})
        assert await client.receive_type("pong") == {"type": "pong", "ref": 7}
    for n in (2, 3):
        await live.publish(channel, {"n": n})
    async with live.ws(ann) as client:
        resumed = await client.subscribe(channel, epoch=first["epoch"], offset=first["offset"])
        assert resumed["recovered"] is True
        missed = [(await client.receive_type("message"))["data"]["n"] for _ in range(2)]
        assert missed == [2, 3]
        stale = await client.subscribe(channel, epoch="another-epoch", offset=1)
        assert stale["recovered"] is False


async def test_publish_is_allowed_only_where_the_policy_says(live: Live) -> None:
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    async with live.ws(ann) as reader, live.ws(bob) as writer:
        assert (await reader.subscribe("room:lobby"))["type"] == "subscribed"
        await writer.send({"type": "publish", "channel": "room:lobby", "data": "hi", "ref": 1})
        published = await writer.receive_type("published", "error")
        assert published == {"type": "published", "channel": "room:lobby", "offset": 1, "ref": 1}
        message = await reader.receive_type("message")
        assert message["data"] == "hi"
        assert message["event"] == "message"

        refusals = [
            ("room:lobby:locked", "publish_forbidden"),
            ("news:today", "publish_forbidden"),
            (user_channel(ann), "publish_forbidden"),
            ("nowhere:1", "unknown_channel"),
        ]
        for channel, code in refusals:
            await writer.send({"type": "publish", "channel": channel, "data": 1, "ref": channel})
            error = await writer.receive_type("published", "error")
            assert (error["type"], error["code"], error["ref"]) == ("error", code, channel)


async def test_subscriptions_the_user_may_not_read_get_error_frames(live: Live) -> None:
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    async with live.ws(ann) as client:
        assert (await client.subscribe(user_channel(bob)))["code"] == "channel_forbidden"
        assert (await client.subscribe("nowhere:1"))["code"] == "unknown_channel"
        assert (await client.subscribe("bad name"))["code"] == "invalid_channel"
        assert (await client.subscribe("room:a", offset=3))["code"] == "invalid_frame"
        assert (await client.subscribe(user_channel(ann)))["type"] == "subscribed"


async def test_without_a_valid_auth_frame_the_socket_is_closed(live: Live) -> None:
    for first in ('{"type": "subscribe", "channel": "room:a"}', '{"type":"auth","token":"x"}'):
        async with connect(live.ws_url, open_timeout=WAIT) as socket:
            await socket.send(first)
            error = await asyncio.wait_for(socket.recv(), WAIT)
            assert '"type":"error"' in str(error)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), WAIT)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008


async def test_invalid_frames_get_errors_and_oversized_ones_close_the_socket(
    live: Live,
) -> None:
    ann = await live.account("ann@example.com")
    async with live.ws(ann) as client:
        for bad in ("not json", "[1, 2]", '{"no": "type"}', '{"type": "dance"}'):
            await client.socket.send(bad)
            assert (await client.receive_type("error"))["code"] == "invalid_frame"
        await client.socket.send(b"\x00binary")
        assert (await client.receive_type("error"))["code"] == "invalid_frame"
        await client.send({"type": "ping"})
        assert (await client.receive_type("pong"))["type"] == "pong"  # still open
        await client.socket.send('{"type": "ping", "pad": "' + "x" * 70_000 + '"}')
        assert (await client.receive_type("error"))["code"] == "frame_too_large"
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive_type("never")
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_unsubscribe_stops_delivery_and_too_many_channels_is_refused(
    live_factory: LiveFactory,
) -> None:
    live = live_factory(max_channels=2)
    ann = await live.account("ann@example.com")
    async with live.ws(ann) as client:
        assert (await client.subscribe("room:a"))["type"] == "subscribed"
        assert (await client.subscribe("room:b"))["type"] == "subscribed"
        refused = await client.subscribe("room:c")
        assert refused["code"] == "too_many_channels"
        await client.send({"type": "unsubscribe", "channel": "room:a", "ref": 9})
        done = await client.receive_type("unsubscribed")
        assert done == {"type": "unsubscribed", "channel": "room:a", "ref": 9}
        await live.publish("room:a", "not for you")
        await live.publish("room:b", "for you")
        assert (await client.receive_type("message"))["data"] == "for you"


async def test_websocket_sessions_are_counted_as_switched_protocols_not_errors(
    live: Live,
) -> None:
    ann = await live.account("ann@example.com")
    async with live.ws(ann) as client:
        await client.send({"type": "ping", "ref": 1})
        await client.receive_type("pong")
    async with live.http() as http:
        text = (await http.get("/metrics")).text
    ws_lines = [
        line
        for line in text.splitlines()
        if line.startswith("veche_http_requests_total") and "/api/v1/realtime/ws" in line
    ]
    assert any('status="101"' in line for line in ws_lines), ws_lines
    assert not any('status="500"' in line for line in ws_lines), ws_lines
