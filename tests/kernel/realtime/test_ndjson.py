"""NDJSON: one JSON frame per line, resumable with `?last_event_id=`."""

from __future__ import annotations

from tests.helpers import assert_problem, bearer
from tests.kernel.realtime.conftest import Live, NdjsonReader, ndjson_request, user_channel


async def test_frames_arrive_one_per_line_and_resume_exactly(live: Live) -> None:
    ann = await live.account("ann@example.com")
    channel = user_channel(ann)
    async with live.http() as http:
        async with ndjson_request(http, ann, channel) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/x-ndjson")
            reader = NdjsonReader(response)
            subscribed = await reader.next_of("subscribed")
            assert subscribed["channel"] == channel
            assert subscribed["resume_token"]
            await live.publish(channel, {"n": 1})
            first = await reader.next_of("message")
            assert first["data"] == {"n": 1}
            assert (await reader.next_of("heartbeat"))["type"] == "heartbeat"
        await live.publish(channel, {"n": 2})
        await live.publish(channel, {"n": 3})
        token = first["resume_token"]
        async with ndjson_request(http, ann, channel, last_event_id=token) as response:
            reader = NdjsonReader(response)
            assert (await reader.next_of("subscribed"))["recovered"] is True
            missed = [(await reader.next_of("message"))["data"]["n"] for _ in range(2)]
            assert missed == [2, 3]


async def test_refusals_and_a_bad_token_are_problems(live: Live) -> None:
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    async with live.http() as http:
        url = "/api/v1/realtime/stream"
        response = await http.get(url, params={"channel": user_channel(ann)})
        assert_problem(response, 401, "unauthorized")
        response = await http.get(url, params={"channel": user_channel(bob)}, headers=bearer(ann))
        assert_problem(response, 403, "channel_forbidden")
        response = await http.get(
            url,
            params={"channel": user_channel(ann), "last_event_id": "v1.bm9wZQ.c2ln"},
            headers=bearer(ann),
        )
        assert_problem(response, 400, "invalid_resume_token")
