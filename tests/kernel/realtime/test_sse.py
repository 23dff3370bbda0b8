"""SSE: subscribe, receive, resume with Last-Event-ID, and refusals before the stream."""

from __future__ import annotations

import httpx

from tests.helpers import assert_problem, bearer
from tests.kernel.realtime.conftest import Live, SseReader, sse_request, user_channel


async def test_a_user_receives_messages_on_their_channel_with_resume_ids(live: Live) -> None:
    ann = await live.account("ann@example.com")
    channel = user_channel(ann)
    async with live.http() as http, sse_request(http, ann, channel) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        advice = await reader.next()
        assert advice is not None
        assert advice.retry == 2000
        subscribed = await reader.next_of("subscribed")
        assert subscribed.data["channel"] == channel
        assert subscribed.data["recovered"] is None
        assert subscribed.id
        await live.publish(channel, {"n": 1}, event="note.created")
        first = await reader.next_of("message")
        assert first.data["data"] == {"n": 1}
        assert first.data["event"] == "note.created"
        assert first.data["offset"] == subscribed.data["offset"] + 1
        assert first.data["epoch"] == subscribed.data["epoch"]
        assert first.id
        assert first.id != subscribed.id


async def test_heartbeats_are_comments(live: Live) -> None:
    ann = await live.account("ann@example.com")
    async with live.http() as http, sse_request(http, ann, user_channel(ann)) as response:
        reader = SseReader(response)
        await reader.next_of("subscribed")
        event = await reader.next()
        assert event is not None
        assert event.comment == "heartbeat"


async def test_reconnecting_with_last_event_id_delivers_exactly_the_missed_messages(
    live: Live,
) -> None:
    ann = await live.account("ann@example.com")
    channel = user_channel(ann)
    async with live.http() as http:
        async with sse_request(http, ann, channel) as response:
            reader = SseReader(response)
            await reader.next_of("subscribed")
            for n in (1, 2):
                await live.publish(channel, {"n": n})
            await reader.next_of("message")
            second = await reader.next_of("message")
            assert second.data["data"] == {"n": 2}
        for n in (3, 4, 5):
            await live.publish(channel, {"n": n})
        async with sse_request(http, ann, channel, last_event_id=second.id) as response:
            reader = SseReader(response)
            subscribed = await reader.next_of("subscribed")
            assert subscribed.data["recovered"] is True
            missed = [(await reader.next_of("message")).data["data"]["n"] for _ in range(3)]
            assert missed == [3, 4, 5]
            await live.publish(channel, {"n": 6})
            live_one = await reader.next_of("message")
            assert live_one.data["data"] == {"n": 6}  # no duplicates of 3..5 before it


async def test_a_multi_channel_token_resumes_each_channel_from_its_own_position(
    live: Live,
) -> None:
    ann = await live.account("ann@example.com")
    mine, room = user_channel(ann), "room:lobby"
    async with live.http() as http:
        async with sse_request(http, ann, mine, room) as response:
            reader = SseReader(response)
            await reader.next_of("subscribed")
            await reader.next_of("subscribed")
            await live.publish(mine, "a1")
            await live.publish(room, "r1")
            await reader.next_of("message")
            last = await reader.next_of("message")
        await live.publish(room, "r2")
        await live.publish(mine, "a2")
        async with sse_request(http, ann, mine, room, last_event_id=last.id) as response:
            reader = SseReader(response)
            # Each channel's `subscribed` comes right before its own missed messages.
            events = [await reader.next_of("subscribed", "message") for _ in range(4)]
            assert [(event.event, event.data["channel"]) for event in events] == [
                ("subscribed", mine),
                ("message", mine),
                ("subscribed", room),
                ("message", room),
            ]
            assert events[0].data["recovered"] is True
            assert events[2].data["recovered"] is True
            assert [events[1].data["data"], events[3].data["data"]] == ["a2", "r2"]


async def test_recovered_is_false_when_history_no_longer_holds_the_missed_messages(
    live_factory: object,
) -> None:
    live = live_factory(history_size=2)  # type: ignore[operator]
    ann = await live.account("ann@example.com")
    channel = user_channel(ann)
    async with live.http() as http:
        async with sse_request(http, ann, channel) as response:
            reader = SseReader(response)
            subscribed = await reader.next_of("subscribed")
        for n in range(5):
            await live.publish(channel, n)
        async with sse_request(http, ann, channel, last_event_id=subscribed.id) as response:
            reader = SseReader(response)
            again = await reader.next_of("subscribed")
            assert again.data["recovered"] is False
            assert again.data["offset"] == subscribed.data["offset"] + 5
            await live.publish(channel, "fresh")
            assert (await reader.next_of("message")).data["data"] == "fresh"


async def test_refusals_are_problems_with_stable_codes(live: Live) -> None:
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    async with live.http() as http:

        async def get(tokens: object, *channels: str, **headers: str) -> httpx.Response:
            auth = bearer(tokens) if tokens else {}  # type: ignore[arg-type]
            params = tuple(("channel", channel) for channel in channels)
            return await http.get(
                "/api/v1/realtime/sse", params=params, headers={**auth, **headers}
            )

        assert_problem(await get(None, user_channel(ann)), 401, "unauthorized")
        assert_problem(await get(ann, user_channel(bob)), 403, "channel_forbidden")
        assert_problem(await get(ann, "nowhere:1"), 403, "unknown_channel")
        assert_problem(await get(ann, "not a channel"), 400, "invalid_channel")
        assert_problem(await get(ann), 422, "validation_failed")
        too_many = [f"room:{n}" for n in range(40)]
        assert_problem(await get(ann, *too_many), 422, "too_many_channels")
        for token in ("garbage", "v1.e30.AAAA", "v1.!!!.???", "v1." + "x" * 20000):
            response = await get(ann, user_channel(ann), **{"Last-Event-ID": token})
            assert_problem(response, 400, "invalid_resume_token")
        # One forbidden channel among allowed ones refuses the whole stream.
        assert_problem(
            await get(ann, user_channel(ann), user_channel(bob)), 403, "channel_forbidden"
        )
