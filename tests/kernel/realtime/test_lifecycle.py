"""Backpressure and shutdown: a slow client is closed alone; a stopping server ends every
stream with reconnect advice."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.kernel.realtime.conftest import (
    WAIT,
    Live,
    LiveFactory,
    NdjsonReader,
    SseReader,
    ndjson_request,
    sse_request,
)

BIG = "x" * 100_000


async def test_a_slow_client_is_closed_without_slowing_the_others(
    live_factory: LiveFactory,
) -> None:
    live = live_factory(queue_size=8)
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    total = 250
    async with live.http() as fast_http, live.http() as slow_http:
        async with (
            sse_request(fast_http, ann, "room:flood") as fast_response,
            ndjson_request(slow_http, bob, "room:flood") as slow_response,
        ):
            fast, slow = SseReader(fast_response), NdjsonReader(slow_response)
            await fast.next_of("subscribed")
            await slow.next_of("subscribed")  # then the slow client stops reading

            # The fast client reads each message before the next is published: it is
            # never behind, while the slow one falls behind by the whole flood.
            for n in range(total):
                await live.publish("room:flood", [n, BIG])
                assert (await fast.next_of("message")).data["data"][0] == n

            received, last = 0, None
            while (frame := await slow.next()) is not None:
                if frame["type"] == "message":
                    received, last = received + 1, frame
                final = frame
            assert final["type"] == "reconnect"
            assert final["reason"] == "slow_consumer"
            assert 0 < received < total
            assert last is not None
            assert final["resume_token"] == last["resume_token"]
        # It resumes from where it stopped (history holds the last 100).
        async with ndjson_request(
            slow_http, bob, "room:flood", last_event_id=final["resume_token"]
        ) as response:
            subscribed = await NdjsonReader(response).next_of("subscribed")
            assert subscribed["recovered"] is (total - last["offset"] <= 100)


async def test_shutdown_closes_websockets_with_1012_and_ends_streams_cleanly(
    live_factory: LiveFactory,
) -> None:
    live = live_factory()
    ann = await live.account("ann@example.com")
    channel = f"user:{ann['user']['id']}"
    async with (
        live.http() as http,
        sse_request(http, ann, channel) as sse_response,
        ndjson_request(http, ann, channel) as ndjson_response,
        live.ws(ann) as client,
    ):
        sse, ndjson = SseReader(sse_response), NdjsonReader(ndjson_response)
        await sse.next_of("subscribed")
        await ndjson.next_of("subscribed")
        await client.subscribe(channel)
        await live.publish(channel, "before")
        last = await sse.next_of("message")

        live.hub.request_shutdown()  # what SIGTERM does under uvicorn

        advice = await client.receive_type("reconnect")
        assert advice["reason"] == "shutdown"
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive_type("never")
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012

        final = await sse.next_of("reconnect")
        assert final.data["reason"] == "shutdown"
        assert final.data["retry_ms"] == 2000
        assert final.id == last.id  # resume from the last message seen
        assert await sse.next() is None  # the stream ended cleanly
        assert (await ndjson.next_of("reconnect"))["reason"] == "shutdown"
        assert await ndjson.next() is None

    # New streams are refused while the server drains.
    async with live.http() as http:
        response = await http.get(
            "/api/v1/realtime/sse",
            params={"channel": channel},
            headers={"Authorization": f"Bearer {ann['access_token']}"},
        )
        assert response.status_code == 503
        assert response.json()["code"] == "realtime_stopping"


async def test_realtime_metrics_are_exported(live: Live) -> None:
    ann = await live.account("ann@example.com")
    async with live.ws(ann) as client:
        await client.subscribe(f"user:{ann['user']['id']}")
        async with httpx.AsyncClient(base_url=live.url, timeout=WAIT) as http:
            text = (await http.get("/metrics")).text
    for name in (
        'veche_realtime_connections{transport="ws"}',
        "veche_realtime_subscriptions",
        "veche_realtime_messages_delivered_total",
        "veche_realtime_delivery_seconds_bucket",
    ):
        assert name in text
