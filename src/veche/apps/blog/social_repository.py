"""Every query of likes, user follows, reads, the feed, notifications and suggestions
(the rest of the app's queries are in `repository.py`).

`Social` is confined to one caller, like `repository.Scoped`: a notification, suggestion
or like of someone else is never reached through it, so another user's id answers exactly
like a missing one. `Audience` holds the cross-user reads of the event consumers (who
follows a post's blog or author, who engaged with similar posts). Counters change with
one conditional `UPDATE` in the transaction of the row they count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Select, delete, func, insert, or_, select, union, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.models import (
    Block,
    Blog,
    Comment,
    Follow,
    Like,
    Notification,
    Post,
    Profile,
    Read,
    Suggestion,
    UserFollow,
)
from veche.apps.blog.repository import Scoped, rowcount
from veche.kernel import utcnow
from veche.kernel.identity import User

PUBLISHED = "published"


async def ensure_profiles(session: AsyncSession, user_ids: Iterable[UUID]) -> None:
    """Make the profile rows the counters live on, for users who never changed theirs."""
    for user_id in user_ids:
        if await session.get(Profile, user_id) is not None:
            continue
        try:
            async with session.begin_nested():
                await session.execute(insert(Profile).values(user_id=user_id, links=[]))
        except IntegrityError:  # made by a concurrent request
            continue


class Social(Scoped):
    """What one caller likes, follows, has read, is notified of and is suggested."""

    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        super().__init__(session, user_id)

    # -- likes ----------------------------------------------------------------------------

    async def like(self, post_id: UUID) -> bool:
        """Like the post; False if the caller already did."""
        if await self.session.get(Like, (post_id, self.user_id)) is not None:
            return False
        try:
            async with self.session.begin_nested():
                await self.session.execute(
                    insert(Like).values(post_id=post_id, user_id=self.user_id)
                )
        except IntegrityError:  # a concurrent request of the same caller won
            return False
        await self._count_likes(post_id, 1)
        return True

    async def unlike(self, post_id: UUID) -> bool:
        result = await self.session.execute(
            delete(Like).where(Like.post_id == post_id, Like.user_id == self.user_id)
        )
        if rowcount(result) == 1:
            await self._count_likes(post_id, -1)
            return True
        return False

    async def _count_likes(self, post_id: UUID, delta: int) -> None:
        await self.session.execute(
            update(Post)
            .where(Post.id == post_id)
            .values(like_count=Post.like_count + delta)
            .execution_options(synchronize_session=False)
        )

    async def like_count(self, post_id: UUID) -> int:
        return int(
            await self.session.scalar(select(Post.like_count).where(Post.id == post_id)) or 0
        )

    async def likes(self, post_id: UUID) -> bool:
        return await self.session.get(Like, (post_id, self.user_id)) is not None

    # -- user follows ---------------------------------------------------------------------

    async def follow_user(self, followee_id: UUID) -> bool:
        """Follow the user; False if the caller already did."""
        if await self.session.get(UserFollow, (self.user_id, followee_id)) is not None:
            return False
        await ensure_profiles(self.session, (self.user_id, followee_id))
        try:
            async with self.session.begin_nested():
                await self.session.execute(
                    insert(UserFollow).values(follower_id=self.user_id, followee_id=followee_id)
                )
        except IntegrityError:
            return False
        await self._count_follows(followee_id, 1)
        return True

    async def unfollow_user(self, followee_id: UUID) -> bool:
        result = await self.session.execute(
            delete(UserFollow).where(
                UserFollow.follower_id == self.user_id, UserFollow.followee_id == followee_id
            )
        )
        if rowcount(result) == 1:
            await self._count_follows(followee_id, -1)
            return True
        return False

    async def _count_follows(self, followee_id: UUID, delta: int) -> None:
        await self.session.execute(
            update(Profile)
            .where(Profile.user_id == followee_id)
            .values(follower_count=Profile.follower_count + delta)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(
            update(Profile)
            .where(Profile.user_id == self.user_id)
            .values(following_count=Profile.following_count + delta)
            .execution_options(synchronize_session=False)
        )

    async def follow_counts(self, user_id: UUID) -> tuple[int, int]:
        """(followers, following) of a user."""
        row = (
            await self.session.execute(
                select(Profile.follower_count, Profile.following_count).where(
                    Profile.user_id == user_id
                )
            )
        ).first()
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    async def follows_user(self, followee_id: UUID) -> bool:
        return await self.session.get(UserFollow, (self.user_id, followee_id)) is not None

    # -- reads ----------------------------------------------------------------------------

    async def record_read(self, post_id: UUID) -> None:
        """Remember the caller opened the post; a post read before costs one look-up and
        no write, so reading the same post again never takes a write lock."""
        if await self.session.get(Read, (self.user_id, post_id)) is not None:
            return
        try:
            async with self.session.begin_nested():
                await self.session.execute(
                    insert(Read).values(user_id=self.user_id, post_id=post_id)
                )
        except IntegrityError:  # a concurrent open of the same post
            return

    # -- the feed -------------------------------------------------------------------------

    def feed_posts(self) -> Select[Post]:
        """Published posts of the blogs and authors the caller follows (sorted by the caller).

        Two `IN` sub-selects over the follow tables' primary keys; each branch is served by
        an index on (blog_id | author_id, state, published_at)."""
        blogs = select(Follow.blog_id).where(Follow.user_id == self.user_id)
        authors = select(UserFollow.followee_id).where(UserFollow.follower_id == self.user_id)
        return select(Post).where(
            Post.state == PUBLISHED, or_(Post.blog_id.in_(blogs), Post.author_id.in_(authors))
        )

    async def liked_among(self, post_ids: Sequence[UUID]) -> set[UUID]:
        if not post_ids:
            return set()
        rows = await self.session.scalars(
            select(Like.post_id).where(Like.user_id == self.user_id, Like.post_id.in_(post_ids))
        )
        return set(rows)

    async def commented_among(self, post_ids: Sequence[UUID]) -> set[UUID]:
        if not post_ids:
            return set()
        rows = await self.session.scalars(
            select(Comment.post_id)
            .where(Comment.author_id == self.user_id, Comment.post_id.in_(post_ids))
            .distinct()
        )
        return set(rows)

    async def blog_slugs(self, blog_ids: Iterable[UUID]) -> dict[UUID, str]:
        wanted = list(set(blog_ids))
        if not wanted:
            return {}
        rows = await self.session.execute(select(Blog.id, Blog.slug).where(Blog.id.in_(wanted)))
        return dict(rows.all())

    async def owned_blogs(self, limit: int) -> list[Blog]:
        rows = await self.session.scalars(
            select(Blog)
            .where(Blog.owner_id == self.user_id)
            .order_by(Blog.created_at.desc(), Blog.id.desc())
            .limit(limit)
        )
        return list(rows)

    # -- suggestions ----------------------------------------------------------------------

    async def suggestions_enabled(self) -> bool:
        value = await self.session.scalar(
            select(Profile.suggestions_enabled).where(Profile.user_id == self.user_id)
        )
        return True if value is None else bool(value)

    def suggestions(self) -> Select[Suggestion]:
        """The caller's suggestions still worth showing: not dismissed, the post still
        published, and not read or liked since it was suggested."""
        read = select(Read.post_id).where(
            Read.user_id == self.user_id, Read.post_id == Suggestion.post_id
        )
        liked = select(Like.post_id).where(
            Like.user_id == self.user_id, Like.post_id == Suggestion.post_id
        )
        published = select(Post.id).where(Post.id == Suggestion.post_id, Post.state == PUBLISHED)
        return select(Suggestion).where(
            Suggestion.user_id == self.user_id,
            Suggestion.dismissed_at.is_(None),
            published.exists(),
            ~read.exists(),
            ~liked.exists(),
        )

    async def latest_suggestions(self, limit: int, excluding: Sequence[UUID]) -> list[Suggestion]:
        statement = self.suggestions()
        if excluding:
            statement = statement.where(Suggestion.post_id.not_in(excluding))
        rows = await self.session.scalars(
            statement.order_by(Suggestion.created_at.desc(), Suggestion.id.desc()).limit(limit)
        )
        return list(rows)

    async def posts_by_id(self, post_ids: Sequence[UUID]) -> dict[UUID, Post]:
        if not post_ids:
            return {}
        rows = await self.session.scalars(select(Post).where(Post.id.in_(post_ids)))
        return {post.id: post for post in rows}

    async def dismiss_suggestion(self, suggestion_id: UUID) -> bool:
        """Dismiss one of the caller's suggestions; False if it is not theirs or missing."""
        row = await self.session.scalar(
            select(Suggestion).where(
                Suggestion.id == suggestion_id, Suggestion.user_id == self.user_id
            )
        )
        if row is None:
            return False
        if row.dismissed_at is None:
            row.dismissed_at = utcnow()
            await self.session.flush()
        return True

    # -- notifications --------------------------------------------------------------------

    def notifications(self, unread: bool | None) -> Select[Notification]:
        statement = select(Notification).where(Notification.user_id == self.user_id)
        if unread is True:
            statement = statement.where(Notification.read_at.is_(None))
        elif unread is False:
            statement = statement.where(Notification.read_at.is_not(None))
        return statement

    async def latest_notifications(self, limit: int) -> list[Notification]:
        rows = await self.session.scalars(
            self.notifications(None)
            .order_by(Notification.created_at.desc(), Notification.id.desc())
            .limit(limit)
        )
        return list(rows)

    async def unread_notifications(self) -> int:
        count = await self.session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.user_id == self.user_id, Notification.read_at.is_(None))
        )
        return int(count or 0)

    async def notification(self, notification_id: UUID) -> Notification | None:
        row: Notification | None = await self.session.scalar(
            self.notifications(None).where(Notification.id == notification_id)
        )
        return row

    async def mark_all_read(self) -> int:
        result = await self.session.execute(
            update(Notification)
            .where(Notification.user_id == self.user_id, Notification.read_at.is_(None))
            .values(read_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return rowcount(result)


class Audience:
    """The event consumers' cross-user reads: who a post reaches and who might enjoy it."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def post(self, post_id: UUID) -> Post | None:
        row: Post | None = await self.session.get(Post, post_id)
        return row

    async def followers(self, blog_id: UUID, author_id: UUID) -> list[UUID]:
        """Everyone following the blog or the author (each once)."""
        of_blog = await self.session.scalars(
            select(Follow.user_id).where(Follow.blog_id == blog_id)
        )
        of_author = await self.session.scalars(
            select(UserFollow.follower_id).where(UserFollow.followee_id == author_id)
        )
        return list(dict.fromkeys([*of_blog, *of_author]))

    async def engaged(self, post_ids: Sequence[UUID], limit: int) -> list[tuple[UUID, UUID, str]]:
        """(user, post, how) for likes and reads of the posts, and follows of their
        blogs and authors (`how` is `liked`, `read`, `follows_blog`, `follows_author`);
        at most `limit` of each kind, newest first."""
        if not post_ids:
            return []
        found: list[tuple[UUID, UUID, str]] = []
        likes = await self.session.execute(
            select(Like.user_id, Like.post_id)
            .where(Like.post_id.in_(post_ids))
            .order_by(Like.created_at.desc())
            .limit(limit)
        )
        found.extend((user, post, "liked") for user, post in likes.all())
        reads = await self.session.execute(
            select(Read.user_id, Read.post_id)
            .where(Read.post_id.in_(post_ids))
            .order_by(Read.read_at.desc())
            .limit(limit)
        )
        found.extend((user, post, "read") for user, post in reads.all())
        blog_follows = await self.session.execute(
            select(Follow.user_id, Post.id)
            .join(Post, Post.blog_id == Follow.blog_id)
            .where(Post.id.in_(post_ids))
            .limit(limit)
        )
        found.extend((user, post, "follows_blog") for user, post in blog_follows.all())
        author_follows = await self.session.execute(
            select(UserFollow.follower_id, Post.id)
            .join(Post, Post.author_id == UserFollow.followee_id)
            .where(Post.id.in_(post_ids))
            .limit(limit)
        )
        found.extend((user, post, "follows_author") for user, post in author_follows.all())
        return found

    async def unwilling(self, post: Post, user_ids: Sequence[UUID]) -> set[UUID]:
        """Of `user_ids`, those who must not be suggested `post`: inactive accounts, those
        with suggestions off, who blocked its author, who already read, liked or were
        suggested it, or who follow its blog or author (it reaches their feed anyway)."""
        if not user_ids:
            return set()
        ids = list(user_ids)
        statements: list[Any] = [
            select(User.id).where(User.id.in_(ids), User.is_active.is_(False)),
            select(Profile.user_id).where(
                Profile.user_id.in_(ids), Profile.suggestions_enabled.is_(False)
            ),
            select(Block.blocker_id).where(
                Block.blocker_id.in_(ids), Block.blocked_id == post.author_id
            ),
            select(Read.user_id).where(Read.user_id.in_(ids), Read.post_id == post.id),
            select(Like.user_id).where(Like.user_id.in_(ids), Like.post_id == post.id),
            select(Suggestion.user_id).where(
                Suggestion.user_id.in_(ids), Suggestion.post_id == post.id
            ),
            select(Follow.user_id).where(Follow.user_id.in_(ids), Follow.blog_id == post.blog_id),
            select(UserFollow.follower_id).where(
                UserFollow.follower_id.in_(ids), UserFollow.followee_id == post.author_id
            ),
        ]
        rows = await self.session.execute(union(*statements))
        return set(rows.scalars())

    async def titles(self, post_ids: Sequence[UUID]) -> dict[UUID, str]:
        if not post_ids:
            return {}
        rows = await self.session.execute(select(Post.id, Post.title).where(Post.id.in_(post_ids)))
        return dict(rows.all())

    async def published(self, post_ids: Sequence[UUID]) -> set[UUID]:
        if not post_ids:
            return set()
        rows = await self.session.scalars(
            select(Post.id).where(Post.id.in_(post_ids), Post.state == PUBLISHED)
        )
        return set(rows)

    async def blog(self, blog_id: UUID) -> Blog | None:
        row: Blog | None = await self.session.get(Blog, blog_id)
        return row

    async def existing_user(self, user_id: UUID) -> UUID | None:
        """The user's id if the account still exists (its rows cascade away with it)."""
        return user_id if await self.session.get(User, user_id) is not None else None

    async def unread_like(self, author_id: UUID, liker_id: UUID, post_id: UUID) -> bool:
        """Whether the author has an unread notification of this like already: liking,
        unliking and liking again notifies once while the first is unread."""
        found = await self.session.scalar(
            select(Notification.id)
            .where(
                Notification.user_id == author_id,
                Notification.kind == "like",
                Notification.actor_id == liker_id,
                Notification.post_id == post_id,
                Notification.read_at.is_(None),
            )
            .limit(1)
        )
        return found is not None
