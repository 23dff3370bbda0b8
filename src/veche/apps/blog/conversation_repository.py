"""Every query of the messenger.

A conversation and its messages are reached only through `Membership`, built on the
caller's id: every look-up joins the caller's membership row, so a conversation they are
not in is indistinguishable from one that does not exist. Counters (`last_seq`) move by
one conditional `UPDATE`, so concurrent senders never share a `seq`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Select, and_, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.models import (
    Block,
    Conversation,
    ConversationMember,
    Message,
    MessageEdit,
)
from veche.apps.blog.repository import rowcount
from veche.kernel.identity import User


def direct_key(first: UUID, second: UUID) -> str:
    """The one key of the pair's direct conversation, whoever starts it."""
    low, high = sorted((first, second))
    return f"{low.hex}:{high.hex}"


def unread_condition(user_id: UUID) -> Any:
    """Messages the member has not read: after their read position, not their own, not
    deleted (a tombstone is nothing to read)."""
    return and_(
        Message.conversation_id == ConversationMember.conversation_id,
        ConversationMember.user_id == user_id,
        Message.seq > ConversationMember.last_read_seq,
        Message.sender_id != user_id,
        Message.deleted_at.is_(None),
    )


class Membership:
    """What one user reaches in the messenger: their conversations, the messages in
    them, their own blocks."""

    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id

    # -- users and blocks -------------------------------------------------------------

    async def active_users(self, user_ids: Sequence[UUID]) -> set[UUID]:
        if not user_ids:
            return set()
        rows = await self.session.scalars(
            select(User.id).where(User.id.in_(user_ids), User.is_active.is_(True))
        )
        return set(rows)

    async def blocked_by(self, user_ids: Sequence[UUID]) -> set[UUID]:
        """Which of these users blocked the caller."""
        if not user_ids:
            return set()
        rows = await self.session.scalars(
            select(Block.blocker_id).where(
                Block.blocked_id == self.user_id, Block.blocker_id.in_(user_ids)
            )
        )
        return set(rows)

    async def blocked_between(self, other_id: UUID) -> bool:
        """A block either way between the caller and `other_id`."""
        statement = select(
            exists().where(
                or_(
                    and_(Block.blocker_id == self.user_id, Block.blocked_id == other_id),
                    and_(Block.blocker_id == other_id, Block.blocked_id == self.user_id),
                )
            )
        )
        return bool(await self.session.scalar(statement))

    async def block(self, blocked_id: UUID) -> Block | None:
        row: Block | None = await self.session.scalar(
            select(Block).where(Block.blocker_id == self.user_id, Block.blocked_id == blocked_id)
        )
        return row

    async def unblock(self, blocked_id: UUID) -> bool:
        result = await self.session.execute(
            delete(Block).where(Block.blocker_id == self.user_id, Block.blocked_id == blocked_id)
        )
        return rowcount(result) == 1

    def blocks(self) -> Select[Block]:
        return select(Block).where(Block.blocker_id == self.user_id)

    # -- conversations ----------------------------------------------------------------

    async def conversation(self, conversation_id: UUID) -> Conversation | None:
        """The conversation if the caller is in it."""
        row: Conversation | None = await self.session.scalar(
            select(Conversation).where(
                Conversation.id == conversation_id,
                exists().where(
                    ConversationMember.conversation_id == Conversation.id,
                    ConversationMember.user_id == self.user_id,
                ),
            )
        )
        return row

    async def direct_with(self, other_id: UUID) -> Conversation | None:
        row: Conversation | None = await self.session.scalar(
            select(Conversation).where(
                Conversation.direct_key == direct_key(self.user_id, other_id)
            )
        )
        return row

    def conversations(self) -> Select[Conversation]:
        mine = select(ConversationMember.conversation_id).where(
            ConversationMember.user_id == self.user_id
        )
        return select(Conversation).where(Conversation.id.in_(mine))

    async def member(self, conversation_id: UUID, user_id: UUID) -> ConversationMember | None:
        row: ConversationMember | None = await self.session.get(
            ConversationMember, (conversation_id, user_id)
        )
        return row

    async def members(
        self, conversation_ids: Sequence[UUID]
    ) -> dict[UUID, list[ConversationMember]]:
        """Each conversation's members, in the order they joined."""
        grouped: dict[UUID, list[ConversationMember]] = {cid: [] for cid in conversation_ids}
        if not conversation_ids:
            return grouped
        rows = await self.session.scalars(
            select(ConversationMember)
            .where(ConversationMember.conversation_id.in_(conversation_ids))
            .order_by(ConversationMember.joined_at, ConversationMember.user_id)
        )
        for row in rows:
            grouped[row.conversation_id].append(row)
        return grouped

    async def last_messages(self, conversation_ids: Sequence[UUID]) -> dict[UUID, Message]:
        if not conversation_ids:
            return {}
        rows = await self.session.scalars(
            select(Message)
            .join(
                Conversation,
                and_(
                    Conversation.id == Message.conversation_id,
                    Conversation.last_seq == Message.seq,
                ),
            )
            .where(Conversation.id.in_(conversation_ids))
        )
        return {row.conversation_id: row for row in rows}

    async def unread_counts(self, conversation_ids: Sequence[UUID]) -> dict[UUID, int]:
        if not conversation_ids:
            return {}
        rows = await self.session.execute(
            select(Message.conversation_id, func.count())
            .select_from(ConversationMember)
            .join(Message, unread_condition(self.user_id))
            .where(ConversationMember.conversation_id.in_(conversation_ids))
            .group_by(Message.conversation_id)
        )
        counts = dict.fromkeys(conversation_ids, 0)
        counts.update({conversation_id: int(count) for conversation_id, count in rows})
        return counts

    async def unread_total(self) -> int:
        count = await self.session.scalar(
            select(func.count())
            .select_from(ConversationMember)
            .join(Message, unread_condition(self.user_id))
        )
        return int(count or 0)

    async def member_count(self, conversation_id: UUID) -> int:
        count = await self.session.scalar(
            select(func.count()).where(ConversationMember.conversation_id == conversation_id)
        )
        return int(count or 0)

    async def member_ids(self, conversation_id: UUID) -> list[UUID]:
        rows = await self.session.scalars(
            select(ConversationMember.user_id)
            .where(ConversationMember.conversation_id == conversation_id)
            .order_by(ConversationMember.joined_at, ConversationMember.user_id)
        )
        return list(rows)

    async def remove_member(self, conversation_id: UUID, user_id: UUID) -> bool:
        result = await self.session.execute(
            delete(ConversationMember).where(
                ConversationMember.conversation_id == conversation_id,
                ConversationMember.user_id == user_id,
            )
        )
        return rowcount(result) == 1

    async def next_seq(self, conversation_id: UUID, now: dt.datetime) -> int:
        """Take the conversation's next `seq` (one conditional UPDATE: on PostgreSQL the
        row lock orders concurrent senders, on SQLite the write lock does)."""
        seq = await self.session.scalar(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(last_seq=Conversation.last_seq + 1, last_activity_at=now)
            .returning(Conversation.last_seq)
            .execution_options(synchronize_session=False)
        )
        if seq is None:
            raise LookupError(f"conversation {conversation_id} is gone")
        return int(seq)

    async def advance_read(self, conversation_id: UUID, seq: int) -> bool:
        """Move the caller's read position forward to `seq`; never backward."""
        result = await self.session.execute(
            update(ConversationMember)
            .where(
                ConversationMember.conversation_id == conversation_id,
                ConversationMember.user_id == self.user_id,
                ConversationMember.last_read_seq < seq,
            )
            .values(last_read_seq=seq)
            .execution_options(synchronize_session=False)
        )
        return rowcount(result) == 1

    # -- messages ---------------------------------------------------------------------

    async def message(self, message_id: UUID) -> Message | None:
        """The message if the caller is in its conversation."""
        row: Message | None = await self.session.scalar(
            select(Message).where(
                Message.id == message_id,
                exists().where(
                    ConversationMember.conversation_id == Message.conversation_id,
                    ConversationMember.user_id == self.user_id,
                ),
            )
        )
        return row

    async def sent_with_client_id(self, conversation_id: UUID, client_id: str) -> Message | None:
        row: Message | None = await self.session.scalar(
            select(Message).where(
                Message.conversation_id == conversation_id,
                Message.sender_id == self.user_id,
                Message.client_id == client_id,
            )
        )
        return row

    async def history(
        self,
        conversation_id: UUID,
        *,
        after_seq: int | None,
        before_seq: int | None,
        limit: int,
    ) -> tuple[list[Message], bool]:
        """Up to `limit` messages in `seq` order and whether more lie beyond: after
        `after_seq` going forward, else the newest ones before `before_seq` (or at all)."""
        statement = select(Message).where(Message.conversation_id == conversation_id)
        if after_seq is not None:
            statement = statement.where(Message.seq > after_seq)
        if before_seq is not None:
            statement = statement.where(Message.seq < before_seq)
        if after_seq is not None:
            rows = list(
                await self.session.scalars(statement.order_by(Message.seq).limit(limit + 1))
            )
            return rows[:limit], len(rows) > limit
        rows = list(
            await self.session.scalars(statement.order_by(Message.seq.desc()).limit(limit + 1))
        )
        return list(reversed(rows[:limit])), len(rows) > limit

    async def edits(self, message_id: UUID) -> list[MessageEdit]:
        rows = await self.session.scalars(
            select(MessageEdit)
            .where(MessageEdit.message_id == message_id)
            .order_by(MessageEdit.number)
        )
        return list(rows)

    async def drop_edits(self, message_id: UUID) -> None:
        await self.session.execute(delete(MessageEdit).where(MessageEdit.message_id == message_id))


def membership_row(conversation_id: UUID, user_id: UUID) -> Select[UUID]:
    """The statement that finds one membership (for single reads outside a unit of work)."""
    return select(ConversationMember.user_id).where(
        ConversationMember.conversation_id == conversation_id,
        ConversationMember.user_id == user_id,
    )
