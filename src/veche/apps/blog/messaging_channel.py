"""The `conversation:{id}` realtime channels: only members subscribe, and what clients send
on them goes through the messenger instead of straight to the hub.

Client frames (`{"type": "publish", "channel": "conversation:<id>", "event": ..., "data":
..., "ref": ...}`):

| event | data | reply data |
|---|---|---|
| `message.send` | `{"body": "...", "client_id": "..."}` | `{"message": {...}, "created": bool}` |
| `typing` | `{"typing": true}` (false when stopped) | `{"typing": bool}` |
| `read` | `{"seq": 17}` (or `{}` for the newest) | the read state |

Sends count against the `blog_messages` rate limit (shared with `POST .../messages`),
typing and read frames against `blog_signals`. A member removed from a group, or one who
leaves, stops receiving at once: the `member.removed` / `member.left` push revokes their
subscriptions on every replica."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from veche.apps.blog.conversation_repository import membership_row
from veche.apps.blog.conversation_views import (
    conversation_channel,
    conversation_id_of,
    message_data,
)
from veche.apps.blog.errors import InvalidFrameData, UnknownFrameEvent
from veche.apps.blog.messaging import MessageService
from veche.apps.blog.messaging_runtime import messenger_of
from veche.apps.blog.messaging_schemas import MessageCreate, ReadCreate, TypingFrame
from veche.kernel import Kernel, TooManyRequests
from veche.kernel.identity import User
from veche.kernel.realtime import ChannelPolicy, Message

ModelT = TypeVar("ModelT", bound=BaseModel)

SEND_POLICY = "blog_messages"
SIGNAL_POLICY = "blog_signals"
REVOKING_EVENTS = frozenset({"member.removed", "member.left"})


async def spend(kernel: Kernel, user_id: UUID, policy: str) -> None:
    """Count one action against the named rate limit policy, keyed like the HTTP routes'
    `rate_limit` (by user), so the WebSocket and HTTP share one budget."""
    limiter = kernel.limiter
    state = await limiter.hit(limiter.policy(policy), policy, f"user:{user_id}")
    if not state.allowed:
        retry_after = max(state.reset_after, 1)
        raise TooManyRequests(
            f"Rate limit for {policy!r} reached; retry in {retry_after} s",
            headers=state.headers(),
            extra={"retry_after": retry_after, "limit": state.limit},
        )


def _parse(model: type[ModelT], data: Any) -> ModelT:
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        errors = [
            {"loc": ["data", *error["loc"]], "msg": error["msg"], "type": error["type"]}
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise InvalidFrameData("The frame's data is not valid", extra={"errors": errors}) from exc


def _well_formed(_user: User, channel: str) -> bool:
    return conversation_id_of(channel) is not None


async def _is_member(kernel: Kernel, user: User, channel: str) -> bool:
    conversation_id = conversation_id_of(channel)
    if conversation_id is None:
        return False
    # A single read outside any unit of work: this runs for every subscription and frame.
    row = await kernel.db.read_one(membership_row(conversation_id, user.id))
    return row is not None


async def _receive(
    kernel: Kernel, user: User, channel: str, event: str, data: Any
) -> dict[str, Any]:
    conversation_id = conversation_id_of(channel)
    assert conversation_id is not None  # `_well_formed` let the frame through
    settings = kernel.settings.blog
    runtime = messenger_of(kernel)
    if event == "message.send":
        send = _parse(MessageCreate, data)
        await spend(kernel, user.id, SEND_POLICY)
        async with kernel.db.unit_of_work() as session:
            message, created = await MessageService(session, user.id, settings, runtime).send(
                conversation_id, send.body, send.client_id
            )
            reply = {"message": message_data(message), "created": created}
        return reply
    if event == "typing":
        typing = _parse(TypingFrame, data)
        await spend(kernel, user.id, SIGNAL_POLICY)
        async with kernel.db.unit_of_work() as session:
            await MessageService(session, user.id, settings, runtime).check_typing(conversation_id)
        # Ephemeral: never stored, pushed as it is.
        await kernel.realtime.publish(
            conversation_channel(conversation_id),
            {"user_id": str(user.id), "typing": typing.typing},
            event="typing",
        )
        return {"typing": typing.typing}
    if event == "read":
        read = _parse(ReadCreate, data)
        await spend(kernel, user.id, SIGNAL_POLICY)
        async with kernel.db.unit_of_work() as session:
            state = await MessageService(session, user.id, settings, runtime).mark_read(
                conversation_id, read.seq
            )
        return state.model_dump(mode="json")
    raise UnknownFrameEvent(f"Unknown event {event!r}; send 'message.send', 'typing' or 'read'")


def _revoked(message: Message) -> list[str]:
    if message.event in REVOKING_EVENTS and isinstance(message.data, dict):
        user_id = message.data.get("user_id")
        if isinstance(user_id, str):
            return [user_id]
    return []


CONVERSATION_POLICY = ChannelPolicy(
    subscribe=_well_formed, audience=_is_member, receive=_receive, revokes=_revoked
)
