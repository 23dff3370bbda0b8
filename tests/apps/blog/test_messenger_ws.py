"""The messenger over real WebSocket connections to a live server: chatting, typing, read
receipts, catching up after being offline without gaps or duplicates, outsiders refused,
rate limits, bad frames, blocks, and members removed mid-conversation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.apps.blog.conftest import BLOG_LIMITS, PREFIX
from tests.helpers import bearer
from tests.kernel.realtime.conftest import Live, WsClient, running
from veche.apps.blog import module as blog_module
from veche.kernel import build_app
from veche.settings import RealtimeSettings, Settings

LiveBlog = Callable[..., Live]


@pytest.fixture
def live_blog(clean: None, settings_factory: Callable[..., Settings]) -> Iterator[LiveBlog]:
    """Starts a real server with the blog app; keyword arguments override rate limits."""
    stack = contextlib.ExitStack()

    def start(**rate_limits: str) -> Live:
        settings = settings_factory(
            rate_limits={**BLOG_LIMITS, **rate_limits},
            realtime=RealtimeSettings(heartbeat_seconds=0.5, shutdown_timeout_seconds=3.0),
        )
        return stack.enter_context(running(build_app(settings, [blog_module])))

    with stack:
        yield start


async def conversation(
    live: Live, owner: dict[str, Any], *others: dict[str, Any], title: str | None = None
) -> str:
    ids = [other["user"]["id"] for other in others]
    payload: dict[str, Any] = (
        {"kind": "direct", "member_ids": ids}
        if title is None
        else {"kind": "group", "title": title, "member_ids": ids}
    )
    async with live.http() as http:
        response = await http.post(f"{PREFIX}/conversations", json=payload, headers=bearer(owner))
        assert response.status_code == 201, response.text
        conversation_id: str = response.json()["id"]
        return conversation_id


async def post_message(live: Live, sender: dict[str, Any], cid: str, body: str) -> dict[str, Any]:
    async with live.http() as http:
        response = await http.post(
            f"{PREFIX}/conversations/{cid}/messages", json={"body": body}, headers=bearer(sender)
        )
        assert response.status_code == 201, response.text
        message: dict[str, Any] = response.json()
        return message


# Channel messages that arrived while a test waited for a reply, per client: a handler may
# publish (typing) before its reply is queued, and they must not be lost to the test.
BACKLOG: dict[int, list[dict[str, Any]]] = {}


async def frame(client: WsClient, channel: str, event: str, data: Any, ref: Any) -> dict[str, Any]:
    """Send a frame to the conversation and return the answer to it (`reply` or `error`)."""
    await client.send(
        {"type": "publish", "channel": channel, "event": event, "data": data, "ref": ref}
    )
    backlog = BACKLOG.setdefault(id(client.socket), [])
    while True:
        answer = await client.receive_type("reply", "error", "message")
        if answer["type"] != "message":
            assert answer["ref"] == ref, answer
            return answer
        backlog.append(answer)


async def next_message(client: WsClient) -> dict[str, Any]:
    backlog = BACKLOG.setdefault(id(client.socket), [])
    if backlog:
        return backlog.pop(0)
    return await client.receive_type("message")


async def pushed(client: WsClient, event: str) -> dict[str, Any]:
    """The next channel message with this event, skipping others (presence, own echoes)."""
    while True:
        message = await next_message(client)
        if message["event"] == event:
            return message


async def test_two_users_chat_with_typing_and_read_receipts(live_blog: LiveBlog) -> None:
    live = live_blog()
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    cid = await conversation(live, ann, bob)
    channel = f"conversation:{cid}"
    async with live.ws(ann) as a, live.ws(bob) as b:
        assert (await a.subscribe(channel))["type"] == "subscribed"
        assert (await b.subscribe(channel))["type"] == "subscribed"

        data = {"body": "Hi Bob", "client_id": "ann-1"}
        reply = await frame(a, channel, "message.send", data, ref=1)
        assert reply["type"] == "reply"
        assert reply["event"] == "message.send"
        assert reply["data"]["created"] is True
        message = reply["data"]["message"]
        assert (message["seq"], message["body"], message["sender_id"]) == (
            1,
            "Hi Bob",
            ann["user"]["id"],
        )
        live_message = await next_message(b)
        assert live_message["event"] == "message.created"
        assert live_message["data"] == message

        # A retry with the same client_id is the same message, pushed once.
        retry = await frame(a, channel, "message.send", data, ref=2)
        assert retry["data"] == {"message": message, "created": False}

        typing = await frame(b, channel, "typing", {"typing": True}, ref=3)
        assert typing["data"] == {"typing": True}
        assert (await next_message(b))["event"] == "typing"  # not a duplicate message
        seen_typing = await pushed(a, "typing")
        assert seen_typing["data"] == {"user_id": bob["user"]["id"], "typing": True}

        read = await frame(b, channel, "read", {"seq": 1}, ref=4)
        assert (read["data"]["last_read_seq"], read["data"]["unread_count"]) == (1, 0)
        receipt = await pushed(a, "read")
        assert receipt["data"] == {"user_id": bob["user"]["id"], "last_read_seq": 1}

        reply = await frame(b, channel, "message.send", {"body": "Hi Ann"}, ref=5)
        assert reply["data"]["message"]["seq"] == 2
        assert (await pushed(a, "message.created"))["data"]["body"] == "Hi Ann"

    async with live.http() as http:
        history = await http.get(f"{PREFIX}/conversations/{cid}/messages", headers=bearer(bob))
        assert [m["body"] for m in history.json()["items"]] == ["Hi Bob", "Hi Ann"]


async def test_a_member_back_online_catches_up_without_gaps_or_duplicates(
    live_blog: LiveBlog,
) -> None:
    live = live_blog()
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    cid = await conversation(live, ann, bob)
    channel = f"conversation:{cid}"
    async with live.ws(bob) as b:
        await b.subscribe(channel)
        await post_message(live, ann, cid, "one")
        first = await pushed(b, "message.created")
        position = {"epoch": first["epoch"], "offset": first["offset"]}
        last_seq = first["data"]["seq"]
    # Bob is offline: Ann writes over the WebSocket and over HTTP.
    async with live.ws(ann) as a:
        await frame(a, channel, "message.send", {"body": "two"}, ref=1)
    await post_message(live, ann, cid, "three")
    await post_message(live, ann, cid, "four")

    async with live.ws(bob) as b:
        resumed = await b.subscribe(channel, **position)
        assert resumed["recovered"] is True
        missed = [(await next_message(b))["data"] for _ in range(3)]
        assert [(m["seq"], m["body"]) for m in missed] == [(2, "two"), (3, "three"), (4, "four")]
        await b.send({"type": "ping", "ref": "after"})
        assert (await b.receive_type("message", "pong"))["type"] == "pong"  # nothing repeated

        # History by seq gives the same, and covers what the hub no longer can.
        stale = await b.subscribe(channel, epoch="an-old-epoch", offset=1)
        assert stale["recovered"] is False
    async with live.http() as http:
        caught_up = await http.get(
            f"{PREFIX}/conversations/{cid}/messages",
            params={"after_seq": last_seq},
            headers=bearer(bob),
        )
        assert [m["seq"] for m in caught_up.json()["items"]] == [2, 3, 4]
        assert caught_up.json()["has_more"] is False
        unread = await http.get(f"{PREFIX}/conversations/unread", headers=bearer(bob))
        assert unread.json() == {"total": 4}


async def test_outsiders_cannot_subscribe_publish_or_read(live_blog: LiveBlog) -> None:
    live = live_blog()
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    carl = await live.account("carl@example.com")
    cid = await conversation(live, ann, bob)
    channel = f"conversation:{cid}"
    async with live.ws(carl) as c:
        refused = await c.subscribe(channel)
        assert (refused["type"], refused["code"]) == ("error", "channel_forbidden")
        for event in ("message.send", "typing", "read"):
            answer = await frame(c, channel, event, {"body": "let me in"}, ref=event)
            assert (answer["type"], answer["code"]) == ("error", "publish_forbidden")
        for name in (
            "conversation:not-a-uuid",
            f"conversation:{cid.upper()}",
            f"conversation:{cid.replace('-', '')}",
        ):
            assert (await c.subscribe(name))["code"] == "channel_forbidden"
    async with live.http() as http:
        read = await http.get(f"{PREFIX}/conversations/{cid}/messages", headers=bearer(carl))
        assert read.status_code == 404
        history = await http.get(f"{PREFIX}/conversations/{cid}/messages", headers=bearer(ann))
        assert history.json()["items"] == []


async def test_sending_over_the_websocket_is_rate_limited_with_http(live_blog: LiveBlog) -> None:
    live = live_blog(blog_messages="2/minute", blog_signals="1/minute")
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    cid = await conversation(live, ann, bob)
    channel = f"conversation:{cid}"
    async with live.ws(ann) as a:
        for ref in (1, 2):
            assert (await frame(a, channel, "message.send", {"body": "hi"}, ref))["type"] == "reply"
        limited = await frame(a, channel, "message.send", {"body": "hi"}, ref=3)
        assert (limited["type"], limited["code"], limited["status"]) == (
            "error",
            "rate_limited",
            429,
        )
        assert limited["retry_after"] >= 1
        assert limited["limit"] == 2
        assert "retry in" in limited["detail"]
        # The same budget covers HTTP.
        async with live.http() as http:
            response = await http.post(
                f"{PREFIX}/conversations/{cid}/messages", json={"body": "hi"}, headers=bearer(ann)
            )
            assert response.status_code == 429
            assert response.json()["code"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1
        assert (await frame(a, channel, "typing", {}, ref=4))["type"] == "reply"
        assert (await frame(a, channel, "typing", {}, ref=5))["code"] == "rate_limited"
    async with live.ws(bob) as b:  # per user
        assert (await frame(b, channel, "message.send", {"body": "me"}, ref=1))["type"] == "reply"


async def test_bad_frames_get_clear_errors_and_store_nothing(live_blog: LiveBlog) -> None:
    live = live_blog()
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    cid = await conversation(live, ann, bob)
    channel = f"conversation:{cid}"
    async with live.ws(ann) as a:
        for ref, data in enumerate(
            [
                "just text",
                None,
                {},
                {"body": ""},
                {"body": "  "},
                {"body": "a\x00b"},
                {"body": "ok", "client_id": "bad id"},
                {"body": "ok", "extra": 1},
                {"body": 5},
            ],
        ):
            error = await frame(a, channel, "message.send", data, ref)
            assert (error["code"], error["status"]) == ("blog.invalid_frame_data", 422), error
            assert error["errors"]
            assert error["errors"][0]["loc"][0] == "data"
        too_long = await frame(a, channel, "message.send", {"body": "x" * 4001}, ref="long")
        assert (too_long["code"], too_long["max_chars"]) == ("blog.message_too_long", 4000)
        unknown = await frame(a, channel, "message.delete", {}, ref="unknown")
        assert unknown["code"] == "blog.unknown_frame_event"
        future = await frame(a, channel, "read", {"seq": 99}, ref="future")
        assert future["code"] == "blog.invalid_seq"
        assert (await frame(a, channel, "typing", {"typing": "perhaps"}, ref="t"))[
            "code"
        ] == "blog.invalid_frame_data"
        await a.send({"type": "publish", "channel": channel, "event": "bad event!", "ref": "e"})
        assert (await a.receive_type("error"))["code"] == "invalid_frame"
    async with live.http() as http:
        history = await http.get(f"{PREFIX}/conversations/{cid}/messages", headers=bearer(ann))
        assert history.json() == {"items": [], "has_more": False, "last_seq": 0}
    async with live.ws(ann) as a:
        body = {"body": "x" * 70_000}
        await a.send({"type": "publish", "channel": channel, "event": "message.send", "data": body})
        assert (await a.receive_type("error"))["code"] == "frame_too_large"
        with pytest.raises(ConnectionClosed) as closed:
            await a.receive_type("never")
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_blocks_stop_writing_over_the_websocket(live_blog: LiveBlog) -> None:
    live = live_blog()
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    cid = await conversation(live, ann, bob)
    channel = f"conversation:{cid}"
    async with live.http() as http:
        response = await http.put(f"{PREFIX}/users/{bob['user']['id']}/block", headers=bearer(ann))
        assert response.status_code == 200
    async with live.ws(bob) as b:
        assert (await b.subscribe(channel))["type"] == "subscribed"  # history stays readable
        for event, data in (("message.send", {"body": "hello?"}), ("typing", {})):
            refused = await frame(b, channel, event, data, ref=event)
            assert (refused["code"], refused["status"]) == ("blog.user_blocked", 403)


async def test_a_removed_member_stops_receiving_at_once(live_blog: LiveBlog) -> None:
    live = live_blog()
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    carl = await live.account("carl@example.com")
    cid = await conversation(live, ann, bob, carl, title="Keepers")
    channel = f"conversation:{cid}"
    async with live.ws(bob) as b, live.ws(carl) as c:
        await b.subscribe(channel)
        await c.subscribe(channel)
        async with live.http() as http:
            removed = await http.delete(
                f"{PREFIX}/conversations/{cid}/members/{bob['user']['id']}", headers=bearer(ann)
            )
            assert removed.status_code == 204
        notice = await pushed(b, "member.removed")
        assert notice["data"]["user_id"] == bob["user"]["id"]
        gone = await b.receive_type("unsubscribed")
        assert (gone["channel"], gone["reason"]) == (channel, "revoked")
        await post_message(live, ann, cid, "without Bob")
        assert (await pushed(c, "message.created"))["data"]["body"] == "without Bob"
        await b.send({"type": "ping", "ref": 1})
        assert (await b.receive_type("message", "pong"))["type"] == "pong"
        assert (await b.subscribe(channel))["code"] == "channel_forbidden"
        sent = await frame(b, channel, "message.send", {"body": "still here?"}, ref=2)
        assert sent["code"] == "publish_forbidden"
