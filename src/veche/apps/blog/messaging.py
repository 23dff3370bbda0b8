"""Messages: sending (numbered by `seq`, idempotent by the sender's `client_id`), history
by `seq` cursors, editing with kept history, soft deletion, read positions and typing.
Plain async over a session; never commits. What members should see live is handed to
the messenger runtime, which publishes it once the transaction commits."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.conversation_repository import Membership
from veche.apps.blog.conversation_views import (
    conversation_channel,
    message_data,
    message_read,
    user_channel,
)
from veche.apps.blog.errors import (
    ClientIdReused,
    ConversationNotFound,
    InvalidSeq,
    MessageDeleted,
    MessageNotFound,
    MessageTooLong,
    NotMessageSender,
    UserBlocked,
)
from veche.apps.blog.messaging_runtime import MessengerRuntime, Publication
from veche.apps.blog.messaging_schemas import MessageHistory, ReadState
from veche.apps.blog.models import Conversation, Message, MessageEdit
from veche.contracts.blog import MESSAGE_SENT, MessageSent
from veche.kernel import utcnow
from veche.kernel.events import emit
from veche.settings import BlogSettings


class MessageService:
    def __init__(
        self,
        session: AsyncSession,
        user_id: UUID,
        settings: BlogSettings,
        runtime: MessengerRuntime,
    ) -> None:
        self.session = session
        self.user_id = user_id
        self.settings = settings
        self.runtime = runtime
        self.membership = Membership(session, user_id)

    async def conversation(self, conversation_id: UUID) -> Conversation:
        conversation = await self.membership.conversation(conversation_id)
        if conversation is None:
            raise ConversationNotFound(f"There is no conversation {conversation_id}")
        return conversation

    async def message(self, message_id: UUID) -> Message:
        message = await self.membership.message(message_id)
        if message is None:
            raise MessageNotFound(f"There is no message {message_id}")
        return message

    def _check_length(self, body: str) -> None:
        limit = self.settings.message_max_chars
        if len(body) > limit:
            raise MessageTooLong(
                f"A message has at most {limit} characters; this one has {len(body)}",
                extra={"max_chars": limit},
            )

    async def _check_reachable(self, conversation: Conversation) -> list[UUID] | None:
        """In a direct conversation a block either way stops writing (both ways). Returns
        a direct conversation's members (which never change), None for a group."""
        if conversation.kind != "direct":
            return None
        member_ids = await self.membership.member_ids(conversation.id)
        for other_id in member_ids:
            if other_id != self.user_id and await self.membership.blocked_between(other_id):
                raise UserBlocked("A block between you and this user stops writing here")
        return member_ids

    async def send(
        self, conversation_id: UUID, body: str, client_id: str | None = None
    ) -> tuple[Message, bool]:
        """The stored message and True; or, for a `client_id` this sender already used in
        this conversation, the message it made then and False (a retry, not a new one)."""
        conversation = await self.conversation(conversation_id)
        self._check_length(body)
        if client_id is not None:
            earlier = await self.membership.sent_with_client_id(conversation.id, client_id)
            if earlier is not None:
                return self._replayed(earlier, body), False
        direct_members = await self._check_reachable(conversation)
        now = utcnow()
        try:
            # The seq is taken inside the savepoint, so a lost race on `client_id` gives
            # it back and leaves no gap.
            async with self.session.begin_nested():
                seq = await self.membership.next_seq(conversation.id, now)
                message = Message(
                    conversation_id=conversation.id,
                    seq=seq,
                    sender_id=self.user_id,
                    client_id=client_id,
                    body=body,
                    edit_count=0,
                    created_at=now,
                )
                self.session.add(message)
                await self.session.flush()
        except IntegrityError:
            if client_id is None:
                raise
            earlier = await self.membership.sent_with_client_id(conversation.id, client_id)
            if earlier is None:
                raise
            return self._replayed(earlier, body), False
        await self.membership.advance_read(conversation.id, seq)  # you have read your own
        member_ids = direct_members or await self.membership.member_ids(conversation.id)
        await emit(
            self.session,
            MESSAGE_SENT,
            MessageSent(
                message_id=message.id,
                conversation_id=conversation.id,
                sender_id=self.user_id,
                member_ids=member_ids,
                seq=seq,
            ),
            subject=f"conversation:{conversation.id}",
            actor_id=self.user_id,
        )
        notice = {
            "conversation_id": str(conversation.id),
            "message_id": str(message.id),
            "seq": seq,
            "sender_id": str(self.user_id),
        }
        self.runtime.after_commit(
            self.session,
            [
                Publication(
                    conversation_channel(conversation.id), "message.created", message_data(message)
                ),
                *(
                    Publication(user_channel(member_id), "blog.message", notice)
                    for member_id in member_ids
                    if member_id != self.user_id
                ),
            ],
        )
        return message, True

    @staticmethod
    def _replayed(earlier: Message, body: str) -> Message:
        # A retry carries the same body; another body under the same key is a client bug
        # that would otherwise lose the new text silently. Once the message was edited or
        # deleted its first body is no longer at hand, and the retry is taken as is.
        if earlier.deleted_at is None and earlier.edit_count == 0 and earlier.body != body:
            raise ClientIdReused(
                "This client_id already sent a different message; use a new client_id",
                extra={"message_id": str(earlier.id)},
            )
        return earlier

    async def history(
        self,
        conversation_id: UUID,
        *,
        after_seq: int | None,
        before_seq: int | None,
        limit: int,
    ) -> MessageHistory:
        conversation = await self.conversation(conversation_id)
        rows, has_more = await self.membership.history(
            conversation.id, after_seq=after_seq, before_seq=before_seq, limit=limit
        )
        return MessageHistory(
            items=[message_read(row) for row in rows],
            has_more=has_more,
            last_seq=conversation.last_seq,
        )

    async def _own(self, message_id: UUID) -> Message:
        message = await self.message(message_id)
        if message.sender_id != self.user_id:
            raise NotMessageSender("Only the message's sender may change it")
        return message

    async def edit(self, message_id: UUID, body: str) -> Message:
        """Replace the body; the one it had is kept as an edit. The same body again is not
        an edit."""
        message = await self._own(message_id)
        if message.deleted_at is not None:
            raise MessageDeleted("A deleted message cannot be edited")
        self._check_length(body)
        conversation = await self.conversation(message.conversation_id)
        await self._check_reachable(conversation)
        if body == message.body:
            return message
        now = utcnow()
        number = message.edit_count + 1
        self.session.add(
            MessageEdit(message_id=message.id, number=number, body=message.body, replaced_at=now)
        )
        message.body = body
        message.edit_count = number
        message.edited_at = now
        await self.session.flush()
        self.runtime.after_commit(
            self.session,
            [
                Publication(
                    conversation_channel(message.conversation_id),
                    "message.edited",
                    message_data(message),
                )
            ],
        )
        return message

    async def delete(self, message_id: UUID) -> Message:
        """Empty the body and drop its edit history; the tombstone keeps its `seq`.
        Deleting again is fine."""
        message = await self._own(message_id)
        if message.deleted_at is not None:
            return message
        message.body = ""
        message.edit_count = 0
        message.deleted_at = utcnow()
        await self.membership.drop_edits(message.id)
        await self.session.flush()
        self.runtime.after_commit(
            self.session,
            [
                Publication(
                    conversation_channel(message.conversation_id),
                    "message.deleted",
                    message_data(message),
                )
            ],
        )
        return message

    async def edits(self, message_id: UUID) -> list[MessageEdit]:
        """The bodies the message had before each edit, oldest first."""
        message = await self.message(message_id)
        return await self.membership.edits(message.id)

    async def mark_read(self, conversation_id: UUID, seq: int | None) -> ReadState:
        """Move the caller's read position to `seq` (the newest message if None); a
        position never moves back. Members see it as a `read` push."""
        conversation = await self.conversation(conversation_id)
        target = conversation.last_seq if seq is None else seq
        if target > conversation.last_seq:
            raise InvalidSeq(
                f"The newest message is seq {conversation.last_seq}",
                extra={"last_seq": conversation.last_seq},
            )
        advanced = await self.membership.advance_read(conversation.id, target)
        member = await self.membership.member(conversation.id, self.user_id)
        assert member is not None
        await self.session.refresh(member)
        unread = (await self.membership.unread_counts([conversation.id]))[conversation.id]
        if advanced:
            self.runtime.after_commit(
                self.session,
                [
                    Publication(
                        conversation_channel(conversation.id),
                        "read",
                        {"user_id": str(self.user_id), "last_read_seq": member.last_read_seq},
                    )
                ],
            )
        return ReadState(
            conversation_id=conversation.id,
            user_id=self.user_id,
            last_read_seq=member.last_read_seq,
            unread_count=unread,
        )

    async def check_typing(self, conversation_id: UUID) -> None:
        """Whether the caller may show others they are typing: a member who could send."""
        await self._check_reachable(await self.conversation(conversation_id))
