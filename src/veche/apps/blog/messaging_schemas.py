"""Request and response shapes of the messenger (HTTP bodies and WebSocket frame data).

Limits that settings choose (the longest body, the biggest group) are checked by the
services; these models hold the fixed shape and absolute ceilings."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ConversationKind = Literal["direct", "group"]
MemberRole = Literal["owner", "member"]

# Plain text: newlines and tabs, no other control characters (NUL included).
_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_PRINTABLE = r"^[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
# The absolute ceiling; `VECHE_BLOG__MESSAGE_MAX_CHARS` (at most this) is the real limit.
BODY_CEILING = 100_000
MessageBody = Annotated[
    str,
    Field(
        min_length=1,
        max_length=BODY_CEILING,
        pattern=_TEXT,
        description="Plain text; at most VECHE_BLOG__MESSAGE_MAX_CHARS (4000) characters",
    ),
]
ClientId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Your idempotency key: sending again with it returns the first message",
    ),
]
GroupTitle = Annotated[str, Field(min_length=1, max_length=200, pattern=_PRINTABLE)]
# Group sizes are checked against `VECHE_BLOG__GROUP_MAX_MEMBERS`; this only bounds input.
UserIds = Annotated[list[UUID], Field(max_length=1000)]
PREVIEW_CHARS = 200


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be only whitespace")
    return value


def _distinct(value: list[UUID]) -> list[UUID]:
    if len(set(value)) != len(value):
        raise ValueError("must not repeat a user")
    return value


class ConversationCreate(BaseModel):
    """A direct conversation names exactly one other user and no title; a group has a
    title and any number of other users (up to the group limit)."""

    model_config = ConfigDict(extra="forbid")

    kind: ConversationKind
    member_ids: UserIds = Field(description="The other users (you are added yourself)")
    title: GroupTitle | None = Field(default=None, description="Groups only, and required")

    @field_validator("member_ids")
    @classmethod
    def _distinct_members(cls, value: list[UUID]) -> list[UUID]:
        return _distinct(value)

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.kind == "direct":
            if len(self.member_ids) != 1:
                raise ValueError("a direct conversation names exactly one other user")
            if self.title is not None:
                raise ValueError("a direct conversation has no title")
        elif self.title is None:
            raise ValueError("a group needs a title")
        return self


class MembersAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: Annotated[list[UUID], Field(min_length=1, max_length=1000)]

    @field_validator("user_ids")
    @classmethod
    def _distinct_members(cls, value: list[UUID]) -> list[UUID]:
        return _distinct(value)


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: MessageBody
    client_id: ClientId | None = None

    @field_validator("body")
    @classmethod
    def _body(cls, value: str) -> str:
        return _not_blank(value)


class MessageUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: MessageBody

    @field_validator("body")
    @classmethod
    def _body(cls, value: str) -> str:
        return _not_blank(value)


class ReadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: Annotated[int, Field(ge=0, le=2**62)] | None = Field(
        default=None, description="Read up to this seq; the newest message when left out"
    )


class TypingFrame(BaseModel):
    """The data of a `typing` frame."""

    model_config = ConfigDict(extra="forbid")

    typing: bool = True


class MessageRead(BaseModel):
    """A message; a deleted one is a tombstone: `deleted` true, `body` null."""

    id: UUID
    conversation_id: UUID
    seq: int
    sender_id: UUID
    body: str | None
    client_id: str | None
    deleted: bool
    edit_count: int
    created_at: dt.datetime
    edited_at: dt.datetime | None
    deleted_at: dt.datetime | None


class MessagePreview(BaseModel):
    id: UUID
    seq: int
    sender_id: UUID
    body: str | None = Field(description=f"The first {PREVIEW_CHARS} characters")
    deleted: bool
    created_at: dt.datetime


class MessageEditRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int = Field(description="1 is the body as first sent")
    body: str
    replaced_at: dt.datetime


class MessageHistory(BaseModel):
    """Messages in `seq` order (oldest first); `has_more` says whether more lie beyond
    the page in the direction asked (newer with `after_seq`, older otherwise)."""

    items: list[MessageRead]
    has_more: bool
    last_seq: int = Field(description="The conversation's newest seq")


class ConversationMemberRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: UUID
    role: MemberRole
    last_read_seq: int
    joined_at: dt.datetime


class ConversationRead(BaseModel):
    id: UUID
    kind: ConversationKind
    title: str | None
    created_by: UUID | None
    created_at: dt.datetime
    last_activity_at: dt.datetime
    last_seq: int
    members: list[ConversationMemberRead]
    unread_count: int
    last_message: MessagePreview | None


class ReadState(BaseModel):
    conversation_id: UUID
    user_id: UUID
    last_read_seq: int
    unread_count: int


class UnreadRead(BaseModel):
    total: int = Field(description="Unread messages in all your conversations")


class BlockRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: UUID = Field(validation_alias="blocked_id")
    created_at: dt.datetime
