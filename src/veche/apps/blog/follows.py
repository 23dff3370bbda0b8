"""Following users: a follower sees the followee's published posts in their feed, in any
blog. Following twice counts once; the counts live on both profiles and change in the
same transaction as the follow row. Each real change emits `blog.user.followed` /
`blog.user.unfollowed` (the followee is notified; both users' cached answers are renewed).

Blog follows live in `blogs.py`; `announce_blog_follow` gives them the same events."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.errors import CannotFollowSelf, ProfileNotFound
from veche.apps.blog.models import Blog
from veche.apps.blog.social_repository import Social
from veche.contracts.blog import (
    BLOG_FOLLOWED,
    BLOG_UNFOLLOWED,
    USER_FOLLOWED,
    USER_UNFOLLOWED,
    BlogFollowed,
    UserFollowed,
)
from veche.kernel.events import emit


class FollowService:
    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id
        self.social = Social(session, user_id)

    async def _followee(self, user_id: UUID) -> UUID:
        if user_id == self.user_id:
            raise CannotFollowSelf("You cannot follow yourself")
        if await self.social.user(user_id) is None:
            raise ProfileNotFound(f"There is no user {user_id}")
        return user_id

    async def follow(self, user_id: UUID) -> tuple[bool, int]:
        """(following, the followee's follower count) after following."""
        followee = await self._followee(user_id)
        if await self.social.follow_user(followee):
            await self._announce(USER_FOLLOWED, followee)
        return True, (await self.social.follow_counts(followee))[0]

    async def unfollow(self, user_id: UUID) -> tuple[bool, int]:
        followee = await self._followee(user_id)
        if await self.social.unfollow_user(followee):
            await self._announce(USER_UNFOLLOWED, followee)
        return False, (await self.social.follow_counts(followee))[0]

    async def _announce(self, event_type: str, followee: UUID) -> None:
        await emit(
            self.session,
            event_type,
            UserFollowed(follower_id=self.user_id, followee_id=followee),
            subject=str(followee),
            actor_id=self.user_id,
        )


async def announce_blog_follow(
    session: AsyncSession, blog: Blog, user_id: UUID, *, following: bool
) -> None:
    """Emit `blog.blog.followed` or `blog.blog.unfollowed` for a follow that changed."""
    await emit(
        session,
        BLOG_FOLLOWED if following else BLOG_UNFOLLOWED,
        BlogFollowed(blog_id=blog.id, blog_slug=blog.slug, owner_id=blog.owner_id, user_id=user_id),
        subject=str(blog.id),
        actor_id=user_id,
    )
