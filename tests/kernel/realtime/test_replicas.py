"""Two server processes sharing Redis deliver each other's messages with one history.

Runs when `VECHE_TEST_REDIS_URL` is set; skips otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.kernel.realtime.conftest import LiveFactory, SseReader, sse_request, user_channel
from veche.kernel.db import new_id
from veche.settings import RealtimeSettings, Settings

pytestmark = pytest.mark.skipif(not TEST_REDIS_URL, reason="VECHE_TEST_REDIS_URL is not set")


@pytest.fixture
def shared_settings(settings_factory: Callable[..., Settings]) -> Settings:
    realtime = RealtimeSettings(heartbeat_seconds=0.5, namespace=f"test-{new_id().hex[:12]}")
    return settings_factory(realtime_url=TEST_REDIS_URL, realtime=realtime)


async def test_a_message_published_on_one_replica_reaches_subscribers_on_the_other(
    live_factory: LiveFactory, shared_settings: Settings
) -> None:
    first, second = live_factory(shared_settings), live_factory(shared_settings)
    ann = await first.account("ann@example.com")
    bob = await first.account("bob@example.com")
    async with first.ws(ann) as on_first, second.ws(bob) as on_second:
        await on_first.subscribe("room:lobby")
        await on_second.subscribe("room:lobby")
        await on_first.receive_type("presence")  # bob's join, seen across replicas
        await on_second.send({"type": "publish", "channel": "room:lobby", "data": "from 2"})
        await first.publish("room:lobby", "from 1")
        got_first = [await on_first.receive_type("message") for _ in range(2)]
        got_second = [await on_second.receive_type("message") for _ in range(2)]
        # One order and one offset sequence, whichever replica published.
        assert [m["offset"] for m in got_first] == [1, 2]
        assert got_first == got_second
        assert {m["data"] for m in got_first} == {"from 1", "from 2"}


async def test_a_client_resumes_on_another_replica_from_the_shared_history(
    live_factory: LiveFactory, shared_settings: Settings
) -> None:
    first, second = live_factory(shared_settings), live_factory(shared_settings)
    ann = await first.account("ann@example.com")
    channel = user_channel(ann)
    async with first.http() as http, sse_request(http, ann, channel) as response:
        reader = SseReader(response)
        await reader.next_of("subscribed")
        await second.publish(channel, 1)
        seen = await reader.next_of("message")
    for n in (2, 3):
        await first.publish(channel, n)
    async with (
        second.http() as http,
        sse_request(http, ann, channel, last_event_id=seen.id) as response,
    ):
        reader = SseReader(response)
        assert (await reader.next_of("subscribed")).data["recovered"] is True
        missed: list[Any] = [(await reader.next_of("message")).data["data"] for _ in range(2)]
        assert missed == [2, 3]


async def test_a_channel_without_presence_keeps_no_presence_in_redis(
    live_factory: LiveFactory, shared_settings: Settings
) -> None:
    first, second = live_factory(shared_settings), live_factory(shared_settings)
    ann = await first.account("ann@example.com")
    bob = await first.account("bob@example.com")
    async with first.ws(ann) as on_first, second.ws(bob) as on_second:
        assert (await on_first.subscribe("feed:main"))["presence"] is None
        assert (await on_second.subscribe("feed:main"))["presence"] is None
        await on_first.subscribe("room:lobby")
        await on_second.subscribe("room:lobby")
        join = await on_first.receive_type("presence", "message")
        assert (join["channel"], join["action"]) == ("room:lobby", "join")  # bob, on `room:`
        await second.publish("feed:main", "hello")
        message = await on_first.receive_type("presence", "message")
        assert (message["type"], message["data"]) == ("message", "hello")  # no `feed:` join
        assert await first.in_server(first.hub.backend.members("feed:main")) == []
        assert len(await first.in_server(first.hub.presence("room:lobby"))) == 2


async def test_a_stream_ended_by_token_expiry_resumes_on_another_replica(
    live_factory: LiveFactory, settings_factory: Callable[..., Settings]
) -> None:
    realtime = RealtimeSettings(heartbeat_seconds=0.5, namespace=f"test-{new_id().hex[:12]}")
    settings = settings_factory(
        realtime_url=TEST_REDIS_URL, realtime=realtime, auth={"access_token_ttl_seconds": 2}
    )
    first, second = live_factory(settings), live_factory(settings)
    ann = await first.account("ann@example.com")
    channel = user_channel(ann)
    async with first.http() as http, sse_request(http, ann, channel) as response:
        reader = SseReader(response)
        await reader.next_of("subscribed")
        await second.publish(channel, 1)
        seen = await reader.next_of("message")
        final = await reader.next_of("reauth", "reconnect")
        assert (final.event, final.data["reason"], final.id) == ("reauth", "token_expired", seen.id)
    for n in (2, 3):
        await first.publish(channel, n)
    fresh = await second.refreshed(ann)
    async with (
        second.http() as http,
        sse_request(http, fresh, channel, last_event_id=final.id) as response,
    ):
        reader = SseReader(response)
        assert (await reader.next_of("subscribed")).data["recovered"] is True
        missed: list[Any] = [(await reader.next_of("message")).data["data"] for _ in range(2)]
        assert missed == [2, 3]


async def test_refresh_extends_entries_that_exist_and_revives_none() -> None:
    from veche.kernel.realtime import Member
    from veche.kernel.realtime.backends.redis import RedisBackend

    settings = RealtimeSettings(presence_ttl_seconds=0.5, namespace=f"test-{new_id().hex[:12]}")
    backend = RedisBackend(TEST_REDIS_URL, settings)
    await backend.start(lambda _item: None)
    stays, gone = Member("connection-1", "user-1"), Member("connection-2", "user-2")
    try:
        await backend.join("room:lobby", stays)
        await backend.join("room:lobby", gone)
        await backend.leave("room:lobby", gone)
        for _ in range(4):  # 1.2 s in all: past the TTL only for an unrefreshed entry
            await asyncio.sleep(0.3)
            await backend.refresh([("room:lobby", stays), ("room:lobby", gone)])
        assert await backend.members("room:lobby") == [stays]
    finally:
        await backend.leave("room:lobby", stays)
        await backend.close()
