"""Messenger rows to their public shapes, shared by the HTTP routes, the WebSocket replies
and the channel pushes, so a message looks the same wherever a client gets it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from veche.apps.blog.messaging_schemas import (
    PREVIEW_CHARS,
    ConversationMemberRead,
    ConversationRead,
    MessagePreview,
    MessageRead,
)
from veche.apps.blog.models import Conversation, ConversationMember, Message

CHANNEL_PREFIX = "conversation:"


def conversation_channel(conversation_id: UUID) -> str:
    return f"{CHANNEL_PREFIX}{conversation_id}"


def user_channel(user_id: UUID) -> str:
    return f"user:{user_id}"


def conversation_id_of(channel: str) -> UUID | None:
    """The conversation a channel names, if it names one in canonical form (one
    conversation, one channel: `conversation:<UUID with dashes, lower case>`)."""
    if not channel.startswith(CHANNEL_PREFIX):
        return None
    text = channel.removeprefix(CHANNEL_PREFIX)
    try:
        conversation_id = UUID(text)
    except ValueError:
        return None
    return conversation_id if str(conversation_id) == text else None


def message_read(row: Message) -> MessageRead:
    deleted = row.deleted_at is not None
    return MessageRead(
        id=row.id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        sender_id=row.sender_id,
        body=None if deleted else row.body,
        client_id=row.client_id,
        deleted=deleted,
        edit_count=row.edit_count,
        created_at=row.created_at,
        edited_at=row.edited_at,
        deleted_at=row.deleted_at,
    )


def message_data(row: Message) -> dict[str, Any]:
    """The message as JSON-ready data (channel pushes and WebSocket replies)."""
    return message_read(row).model_dump(mode="json")


def message_preview(row: Message) -> MessagePreview:
    deleted = row.deleted_at is not None
    return MessagePreview(
        id=row.id,
        seq=row.seq,
        sender_id=row.sender_id,
        body=None if deleted else row.body[:PREVIEW_CHARS],
        deleted=deleted,
        created_at=row.created_at,
    )


def conversation_read(
    row: Conversation,
    members: list[ConversationMember],
    unread_count: int,
    last_message: Message | None,
) -> ConversationRead:
    return ConversationRead(
        id=row.id,
        kind="direct" if row.kind == "direct" else "group",
        title=row.title,
        created_by=row.created_by,
        created_at=row.created_at,
        last_activity_at=row.last_activity_at,
        last_seq=row.last_seq,
        members=[ConversationMemberRead.model_validate(member) for member in members],
        unread_count=unread_count,
        last_message=None if last_message is None else message_preview(last_message),
    )
