"""Channel policies that take client frames themselves (`receive`), check with the kernel
at hand (`audience`) and end subscriptions by message (`revokes`)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy.exc

from tests.example_app import module as example_module
from tests.kernel.realtime.conftest import LiveFactory, rooms_module
from veche.kernel import AppModule, Conflict, Kernel, Manifest, new_id
from veche.kernel.identity.models import User
from veche.kernel.realtime import ChannelForbidden, ChannelPolicy, Message, PublishForbidden
from veche.kernel.realtime.policy import PolicyRegistry

RECEIVED: list[tuple[str, str, Any]] = []


class Refused(Conflict):
    code = "relay.refused"
    title = "Refused by the relay"


def _anyone(_user: User, _channel: str) -> bool:
    return True


async def _open_relay(kernel: Kernel, _user: User, channel: str) -> bool:
    # The kernel is at hand: a real policy would query `kernel.db` here.
    assert isinstance(kernel, Kernel)
    return not channel.endswith(":closed")


async def _receive(
    kernel: Kernel, user: User, channel: str, event: str, data: Any
) -> dict[str, Any]:
    RECEIVED.append((channel, event, data))
    if event == "refuse":
        raise Refused("not this one", extra={"retry_after": 3})
    if event == "crash":
        raise RuntimeError("a bug in the handler")
    if event == "busy":  # what SQLAlchemy's pool raises when no connection frees up
        raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached")
    message = await kernel.realtime.publish(
        channel, {"from": str(user.id), "text": data}, event="relayed"
    )
    return {"stored": True, "offset": message.offset}


def _kicked(message: Message) -> list[str]:
    if message.event == "kick" and isinstance(message.data, dict):
        return [str(message.data["user_id"])]
    return []


relay_module = AppModule(
    name="relay",
    manifest=Manifest(name="relay", version="0.1.0"),
    channel_policies={
        "relay:": ChannelPolicy(
            subscribe=_anyone, audience=_open_relay, receive=_receive, revokes=_kicked
        ),
    },
)
MODULES = [example_module, rooms_module, relay_module]


async def test_publish_frames_go_to_the_handler_and_its_reply_comes_back(
    live_factory: LiveFactory,
) -> None:
    RECEIVED.clear()
    live = live_factory(modules=MODULES)
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    async with live.ws(ann) as writer, live.ws(bob) as reader:
        assert (await reader.subscribe("relay:1"))["type"] == "subscribed"
        await writer.send(
            {"type": "publish", "channel": "relay:1", "event": "say", "data": "hi", "ref": 1}
        )
        reply = await writer.receive_type("reply", "error", "published")
        assert reply == {
            "type": "reply",
            "channel": "relay:1",
            "event": "say",
            "data": {"stored": True, "offset": 1},
            "ref": 1,
        }
        # Only what the handler published reaches subscribers, not the raw frame.
        message = await reader.receive_type("message")
        assert (message["event"], message["data"]["text"]) == ("relayed", "hi")
        assert RECEIVED == [("relay:1", "say", "hi")]


async def test_handler_refusals_and_bugs_become_error_frames(live_factory: LiveFactory) -> None:
    live = live_factory(modules=MODULES)
    ann = await live.account("ann@example.com")
    async with live.ws(ann) as client:
        await client.send({"type": "publish", "channel": "relay:1", "event": "refuse", "ref": 2})
        error = await client.receive_type("error", "reply")
        assert error == {
            "type": "error",
            "code": "relay.refused",
            "detail": "not this one",
            "status": 409,
            "retry_after": 3,
            "channel": "relay:1",
            "ref": 2,
        }
        await client.send({"type": "publish", "channel": "relay:1", "event": "crash", "ref": 3})
        crashed = await client.receive_type("error", "reply")
        assert (crashed["code"], crashed["ref"]) == ("internal_error", 3)
        assert "bug" not in crashed["detail"]  # no internals to the client
        await client.send({"type": "publish", "channel": "relay:1", "event": "busy", "ref": 5})
        busy = await client.receive_type("error", "reply")
        assert (busy["code"], busy["status"], busy["retry_after"], busy["ref"]) == (
            "server_busy",
            503,
            1,
            5,
        )
        assert "QueuePool" not in busy["detail"]
        await client.send({"type": "ping", "ref": 4})
        assert (await client.receive_type("pong"))["ref"] == 4  # the connection survived


async def test_the_audience_check_gates_subscribing_and_publishing(
    live_factory: LiveFactory,
) -> None:
    RECEIVED.clear()
    live = live_factory(modules=MODULES)
    ann = await live.account("ann@example.com")
    async with live.ws(ann) as client:
        refused = await client.subscribe("relay:1:closed")
        assert (refused["type"], refused["code"]) == ("error", "channel_forbidden")
        await client.send(
            {"type": "publish", "channel": "relay:1:closed", "event": "say", "ref": 5}
        )
        error = await client.receive_type("error", "reply")
        assert (error["code"], error["ref"]) == ("publish_forbidden", 5)
    assert RECEIVED == []


async def test_a_revoking_message_ends_only_the_named_users_subscriptions(
    live_factory: LiveFactory,
) -> None:
    live = live_factory(modules=MODULES)
    ann = await live.account("ann@example.com")
    bob = await live.account("bob@example.com")
    async with live.ws(ann) as staying, live.ws(bob) as kicked:
        for client in (staying, kicked):
            assert (await client.subscribe("relay:room"))["type"] == "subscribed"
        await live.publish("relay:room", {"user_id": bob["user"]["id"]}, event="kick")
        # The kicked user gets the message itself, then loses the subscription.
        assert (await kicked.receive_type("message"))["event"] == "kick"
        gone = await kicked.receive_type("unsubscribed")
        assert gone == {"type": "unsubscribed", "channel": "relay:room", "reason": "revoked"}
        assert (await staying.receive_type("message"))["event"] == "kick"
        await live.publish("relay:room", "after", event="note")
        assert (await staying.receive_type("message"))["data"] == "after"
        await kicked.send({"type": "ping", "ref": 1})
        assert (await kicked.receive_type("message", "pong"))["type"] == "pong"


async def test_policies_without_a_handler_keep_raw_publishing(live_factory: LiveFactory) -> None:
    live = live_factory(modules=MODULES)
    ann = await live.account("ann@example.com")
    async with live.ws(ann) as client:
        await client.send({"type": "publish", "channel": "room:a", "data": 1, "ref": 1})
        published = await client.receive_type("published", "reply", "error")
        assert published == {"type": "published", "channel": "room:a", "offset": 1, "ref": 1}


async def test_an_audience_check_without_a_kernel_refuses() -> None:
    registry = PolicyRegistry()
    registry.register(
        "relay:",
        ChannelPolicy(subscribe=_anyone, audience=_open_relay, receive=_receive),
        owner="t",
    )
    user = User(id=new_id(), email="ann@example.com", display_name="Ann")
    with pytest.raises(ChannelForbidden):
        await registry.authorize_subscribe(user, "relay:1")
    with pytest.raises(PublishForbidden):
        await registry.authorize_publish(user, "relay:1")
    # A handler alone (no `publish` check) lets frames through to it.
    registry.register("echo:", ChannelPolicy(subscribe=_anyone, receive=_receive), owner="t")
    policy = await registry.authorize_publish(user, "echo:1")
    assert policy.receive is _receive
