"""Presence: join and leave events, and expiry of connections that vanished silently."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.kernel.realtime.conftest import Live, WsClient
from veche.kernel.realtime import Member, PresenceDisabled, UnknownChannel
from veche.kernel.realtime.backends.memory import MemoryBackend
from veche.kernel.realtime.message import Message, PresenceEvent
from veche.settings import RealtimeSettings


async def test_subscribers_see_who_joins_and_leaves(live: Live) -> None:
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    async with live.ws(ann) as watcher:
        subscribed = await watcher.subscribe("room:lobby")
        assert [member["user_id"] for member in subscribed["presence"]] == [ann["user"]["id"]]
        async with live.ws(bob) as visitor:
            seen = await visitor.subscribe("room:lobby")
            assert {member["user_id"] for member in seen["presence"]} == {
                ann["user"]["id"],
                bob["user"]["id"],
            }
            join = await watcher.receive_type("presence")
            while join["connection_id"] != visitor.connection_id:
                join = await watcher.receive_type("presence")
            assert (join["action"], join["user_id"]) == ("join", bob["user"]["id"])
            members = await live.in_server(live.hub.presence("room:lobby"))
            assert len(members) == 2
        leave = await watcher.receive_type("presence")
        assert (leave["action"], leave["connection_id"]) == ("leave", visitor.connection_id)


async def test_a_connection_that_dies_without_goodbye_leaves(live: Live) -> None:
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    async with live.ws(ann) as watcher:
        await watcher.subscribe("room:lobby")
        async with live.ws(bob) as visitor:
            await visitor.subscribe("room:lobby")
            await watcher.receive_type("presence")  # its join
            visitor.socket.transport.abort()  # no close frame: the TCP connection just ends
            leave = await watcher.receive_type("presence")
            assert (leave["action"], leave["connection_id"]) == ("leave", visitor.connection_id)


async def test_presence_that_is_not_refreshed_expires_with_a_leave_event() -> None:
    # A replica that died cannot say goodbye for its connections: their entries expire.
    backend = MemoryBackend(RealtimeSettings(presence_ttl_seconds=0.05))
    delivered: list[Message | PresenceEvent] = []
    await backend.start(delivered.append)
    member = Member("connection-1", "user-1")
    await backend.join("room:lobby", member)
    assert await backend.members("room:lobby") == [member]
    await asyncio.sleep(0.1)
    assert await backend.members("room:lobby") == []
    await backend.sweep()
    assert delivered == [
        PresenceEvent("room:lobby", "join", member),
        PresenceEvent("room:lobby", "leave", member),
    ]
    await backend.close()


async def _frames_until(client: WsClient, last: Callable[[dict[str, Any]], bool]) -> list[Any]:
    frames = []
    while True:
        frame = await client.receive_type("presence", "message", "pong")
        frames.append(frame)
        if last(frame):
            return frames


async def test_a_channel_without_presence_sends_no_joins_or_leaves(live: Live) -> None:
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    async with live.ws(ann) as watcher:
        assert (await watcher.subscribe("feed:main"))["presence"] is None
        assert len((await watcher.subscribe("room:lobby"))["presence"]) == 1
        async with live.ws(bob) as visitor:
            assert (await visitor.subscribe("feed:main"))["presence"] is None
            assert len((await visitor.subscribe("room:lobby"))["presence"]) == 2
            assert await live.in_server(live.hub.backend.members("feed:main")) == []
            with pytest.raises(PresenceDisabled):
                await live.in_server(live.hub.presence("feed:main"))
            await live.publish("feed:main", 1)
            seen = await _frames_until(watcher, lambda frame: frame["type"] == "message")
            assert [frame["channel"] for frame in seen] == ["room:lobby", "feed:main"]
        # The room announces bob's leave; the feed does not (a pong closes the window).
        seen = await _frames_until(watcher, lambda frame: frame.get("action") == "leave")
        await watcher.send({"type": "ping"})
        seen += await _frames_until(watcher, lambda frame: frame["type"] == "pong")
        assert [frame.get("channel") for frame in seen] == ["room:lobby", None]


async def test_presence_of_a_channel_no_policy_covers_is_refused(live: Live) -> None:
    with pytest.raises(UnknownChannel):
        await live.in_server(live.hub.presence("nowhere:1"))


async def test_a_busy_connection_keeps_its_presence_past_the_ttl(
    live_factory: Callable[..., Live],
) -> None:
    # Messages keep both connections busy, so neither ever gets a heartbeat: presence is
    # still refreshed by the hub's pulse, and nobody is announced as leaving.
    live = live_factory(heartbeat_seconds=0.2, presence_ttl_seconds=0.6)
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    # The visitor never reads its frames: without an unbounded queue the client stops
    # reading the socket once 16 wait, and its close would wait 10 s for a reply it cannot
    # see.
    async with live.ws(ann) as watcher, live.ws(bob, max_queue=None) as visitor:
        await watcher.subscribe("room:lobby")
        await visitor.subscribe("room:lobby")
        for n in range(30):  # 1.5 s: two and a half presence TTLs
            await live.publish("room:lobby", n)
            await asyncio.sleep(0.05)
        members = await live.in_server(live.hub.presence("room:lobby"))
        assert {member.connection_id for member in members} == {
            watcher.connection_id,
            visitor.connection_id,
        }
        await watcher.send({"type": "ping"})
        seen = await _frames_until(watcher, lambda frame: frame["type"] == "pong")
        assert [frame["action"] for frame in seen if frame["type"] == "presence"] == ["join"]
        assert sum(frame["type"] == "message" for frame in seen) == 30
