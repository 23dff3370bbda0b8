"""Conversations and blocks: starting a direct conversation (one per pair) or a group,
reading them, group membership (the owner adds and removes, anyone leaves), and the
blocks that stop users reaching each other. Plain async over a session; never commits.

Rules for blocks (a block is one-way, from the blocker):
- a direct conversation cannot be started while either user blocks the other, and no
  message is sent, edited or typed in one while a block stands either way (the blocker
  unblocks to write again); its history stays readable to both;
- nobody adds to a group a user who blocked them (at creation or later);
- in a group both keep reading and writing: a block is about reaching someone, and a
  group is shared with others (clients may hide the blocked user's messages).
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.conversation_repository import Membership, direct_key
from veche.apps.blog.conversation_views import (
    conversation_channel,
    conversation_read,
    user_channel,
)
from veche.apps.blog.errors import (
    CannotBlockSelf,
    ConversationFull,
    ConversationMemberNotFound,
    ConversationNotFound,
    ConversationWithSelf,
    DirectConversation,
    NotConversationOwner,
    ProfileNotFound,
    TooManyMembers,
    UserBlocked,
)
from veche.apps.blog.messaging_runtime import MessengerRuntime, Publication
from veche.apps.blog.messaging_schemas import ConversationCreate, ConversationRead
from veche.apps.blog.models import Block, Conversation, ConversationMember
from veche.kernel import utcnow
from veche.settings import BlogSettings


async def unread_total(session: AsyncSession, user_id: UUID) -> int:
    """Unread messages in all of the user's conversations: after their read position, not
    their own, not deleted."""
    return await Membership(session, user_id).unread_total()


async def describe(
    membership: Membership, conversations: Sequence[Conversation]
) -> list[ConversationRead]:
    """Conversations with their members, the caller's unread counts and the last message
    preview: three queries for a whole page."""
    ids = [row.id for row in conversations]
    members = await membership.members(ids)
    unread = await membership.unread_counts(ids)
    last = await membership.last_messages(ids)
    return [
        conversation_read(row, members[row.id], unread[row.id], last.get(row.id))
        for row in conversations
    ]


class ConversationService:
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

    async def get(self, conversation_id: UUID) -> Conversation:
        conversation = await self.membership.conversation(conversation_id)
        if conversation is None:
            raise ConversationNotFound(f"There is no conversation {conversation_id}")
        return conversation

    async def read(self, conversation_id: UUID) -> ConversationRead:
        return (await describe(self.membership, [await self.get(conversation_id)]))[0]

    async def _require_users(self, user_ids: Sequence[UUID]) -> None:
        active = await self.membership.active_users(user_ids)
        for user_id in user_ids:
            if user_id not in active:
                raise ProfileNotFound(f"There is no user {user_id}")

    async def create(self, body: ConversationCreate) -> tuple[Conversation, bool]:
        """The new conversation and True, or for a pair that already has a direct
        conversation, that one and False."""
        if body.kind == "direct":
            return await self._direct(body.member_ids[0])
        return await self._group(body.title or "", body.member_ids), True

    async def _direct(self, other_id: UUID) -> tuple[Conversation, bool]:
        if other_id == self.user_id:
            raise ConversationWithSelf("Start a direct conversation with someone else")
        await self._require_users([other_id])
        existing = await self.membership.direct_with(other_id)
        if existing is not None:
            return existing, False
        if await self.membership.blocked_between(other_id):
            raise UserBlocked("A block between you and this user stops a direct conversation")
        try:
            async with self.session.begin_nested():
                conversation = Conversation(
                    kind="direct",
                    created_by=self.user_id,
                    direct_key=direct_key(self.user_id, other_id),
                    last_seq=0,
                )
                self.session.add(conversation)
                await self.session.flush()
                self._add_members(conversation.id, [self.user_id, other_id], owner=None)
                await self.session.flush()
        except IntegrityError:  # the other user started it at the same moment
            existing = await self.membership.direct_with(other_id)
            if existing is None:
                raise
            return existing, False
        self._announce_added(conversation, [other_id])
        return conversation, True

    async def _group(self, title: str, member_ids: Sequence[UUID]) -> Conversation:
        others = [user_id for user_id in member_ids if user_id != self.user_id]
        limit = self.settings.group_max_members
        if len(others) + 1 > limit:
            raise TooManyMembers(f"A group has at most {limit} members, you included")
        await self._require_users(others)
        if await self.membership.blocked_by(others):
            raise UserBlocked("A user you named blocked you; they cannot be added")
        conversation = Conversation(kind="group", title=title, created_by=self.user_id, last_seq=0)
        self.session.add(conversation)
        await self.session.flush()
        self._add_members(conversation.id, [self.user_id, *others], owner=self.user_id)
        await self.session.flush()
        self._announce_added(conversation, others)
        return conversation

    def _add_members(
        self, conversation_id: UUID, user_ids: Sequence[UUID], owner: UUID | None
    ) -> None:
        now = utcnow()
        for user_id in user_ids:
            self.session.add(
                ConversationMember(
                    conversation_id=conversation_id,
                    user_id=user_id,
                    role="owner" if user_id == owner else "member",
                    last_read_seq=0,
                    joined_at=now,
                )
            )

    def _announce_added(self, conversation: Conversation, user_ids: Sequence[UUID]) -> None:
        """Tell the added users on their own channel, which their clients already read."""
        data = {"conversation_id": str(conversation.id), "kind": conversation.kind}
        self.runtime.after_commit(
            self.session,
            [
                Publication(user_channel(user_id), "blog.conversation.added", data)
                for user_id in user_ids
            ],
        )

    async def _owned_group(self, conversation_id: UUID) -> Conversation:
        conversation = await self.get(conversation_id)
        if conversation.kind == "direct":
            raise DirectConversation("A direct conversation's members do not change")
        member = await self.membership.member(conversation.id, self.user_id)
        if member is None or member.role != "owner":
            raise NotConversationOwner("Only the group's owner adds and removes members")
        return conversation

    async def add_members(self, conversation_id: UUID, user_ids: Sequence[UUID]) -> Conversation:
        """Add users to a group (its owner only); users already in it are left as they are."""
        conversation = await self._owned_group(conversation_id)
        present = set(await self.membership.member_ids(conversation.id))
        new = [user_id for user_id in user_ids if user_id not in present]
        if not new:
            return conversation
        await self._require_users(new)
        if await self.membership.blocked_by(new):
            raise UserBlocked("A user you named blocked you; they cannot be added")
        limit = self.settings.group_max_members
        if len(present) + len(new) > limit:
            raise ConversationFull(f"A group has at most {limit} members")
        self._add_members(conversation.id, new, owner=None)
        await self.session.flush()
        self.runtime.after_commit(
            self.session,
            [
                Publication(
                    conversation_channel(conversation.id),
                    "member.added",
                    {"user_ids": [str(user_id) for user_id in new], "by": str(self.user_id)},
                )
            ],
        )
        self._announce_added(conversation, new)
        return conversation

    async def remove_member(self, conversation_id: UUID, user_id: UUID) -> None:
        """The owner removes a member; a member naming themselves leaves."""
        if user_id == self.user_id:
            await self.leave(conversation_id)
            return
        conversation = await self._owned_group(conversation_id)
        if not await self.membership.remove_member(conversation.id, user_id):
            raise ConversationMemberNotFound(f"{user_id} is not in this conversation")
        self.runtime.after_commit(
            self.session,
            [
                Publication(
                    conversation_channel(conversation.id),
                    "member.removed",
                    {"user_id": str(user_id), "by": str(self.user_id)},
                )
            ],
        )

    async def leave(self, conversation_id: UUID) -> None:
        """Leave a group. An owner who leaves hands the group to the member who joined
        first; the last member to leave deletes it."""
        conversation = await self.get(conversation_id)
        if conversation.kind == "direct":
            raise DirectConversation("A direct conversation cannot be left")
        me = await self.membership.member(conversation.id, self.user_id)
        assert me is not None  # `get` found the conversation through this membership
        was_owner = me.role == "owner"
        await self.membership.remove_member(conversation.id, self.user_id)
        remaining = await self.membership.member_ids(conversation.id)
        if not remaining:
            await self.session.delete(conversation)
            await self.session.flush()
            return
        new_owner: UUID | None = None
        if was_owner:
            new_owner = remaining[0]
            heir = await self.membership.member(conversation.id, new_owner)
            assert heir is not None
            heir.role = "owner"
            await self.session.flush()
        self.runtime.after_commit(
            self.session,
            [
                Publication(
                    conversation_channel(conversation.id),
                    "member.left",
                    {
                        "user_id": str(self.user_id),
                        "new_owner_id": None if new_owner is None else str(new_owner),
                    },
                )
            ],
        )

    # -- blocks -----------------------------------------------------------------------

    async def block(self, user_id: UUID) -> Block:
        """Block a user (again is fine: the first block stands)."""
        if user_id == self.user_id:
            raise CannotBlockSelf("You cannot block yourself")
        await self._require_users([user_id])
        existing = await self.membership.block(user_id)
        if existing is not None:
            return existing
        try:
            async with self.session.begin_nested():
                block = Block(blocker_id=self.user_id, blocked_id=user_id, created_at=utcnow())
                self.session.add(block)
                await self.session.flush()
        except IntegrityError:  # a concurrent request of the same caller
            existing = await self.membership.block(user_id)
            if existing is None:
                raise
            return existing
        return block

    async def unblock(self, user_id: UUID) -> None:
        """Unblock (again is fine)."""
        await self.membership.unblock(user_id)
