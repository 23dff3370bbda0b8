"""Every query of the blog app.

Blogs, published posts, comments on them, profiles and media are public; what is not
public is reached only through `Scoped`, built on the caller's id: the posts a caller may
see beyond the published ones (their own, and those of blogs they own), their own media,
their own comments, their memberships. A draft of someone else is therefore
indistinguishable from a post that does not exist. Counters change by one conditional
`UPDATE` so concurrent follows and comments never lose a count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Select, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.models import (
    Blog,
    BlogMember,
    Comment,
    Follow,
    Media,
    Post,
    PostMedia,
    PostRevision,
    PostTag,
    Profile,
)
from veche.kernel.identity import User


def rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class PublicQueries:
    """What anyone may read."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def user(self, user_id: UUID) -> User | None:
        row: User | None = await self.session.scalar(
            select(User).where(User.id == user_id, User.is_active.is_(True))
        )
        return row

    async def profile(self, user_id: UUID) -> Profile | None:
        row: Profile | None = await self.session.get(Profile, user_id)
        return row

    async def profile_by_username(self, username: str) -> Profile | None:
        row: Profile | None = await self.session.scalar(
            select(Profile).where(Profile.username == username.lower())
        )
        return row

    async def username_taken(self, username: str, excluding: UUID) -> bool:
        statement = select(
            exists().where(Profile.username == username.lower(), Profile.user_id != excluding)
        )
        return bool(await self.session.scalar(statement))

    async def blog(self, slug: str) -> Blog | None:
        row: Blog | None = await self.session.scalar(select(Blog).where(Blog.slug == slug))
        return row

    async def blog_by_id(self, blog_id: UUID) -> Blog | None:
        row: Blog | None = await self.session.get(Blog, blog_id)
        return row

    def blogs(self, owner_id: UUID | None = None) -> Select[Blog]:
        statement = select(Blog)
        if owner_id is not None:
            statement = statement.where(Blog.owner_id == owner_id)
        return statement

    async def slug_taken(self, slug: str) -> bool:
        return bool(await self.session.scalar(select(exists().where(Blog.slug == slug))))

    async def members(self, blog_id: UUID, limit: int = 500) -> list[BlogMember]:
        rows = await self.session.scalars(
            select(BlogMember)
            .where(BlogMember.blog_id == blog_id)
            .order_by(BlogMember.created_at)
            .limit(limit)
        )
        return list(rows)

    async def member(self, blog_id: UUID, user_id: UUID) -> BlogMember | None:
        row: BlogMember | None = await self.session.get(BlogMember, (blog_id, user_id))
        return row

    async def published_post(self, post_id: UUID) -> Post | None:
        row: Post | None = await self.session.scalar(
            select(Post).where(Post.id == post_id, Post.state == "published")
        )
        return row

    async def post_slug_taken(self, blog_id: UUID, slug: str, excluding: UUID | None) -> bool:
        condition = exists().where(Post.blog_id == blog_id, Post.slug == slug)
        if excluding is not None:
            condition = condition.where(Post.id != excluding)
        return bool(await self.session.scalar(select(condition)))

    async def slugs_like(self, blog_id: UUID, base: str) -> set[str]:
        """The blog's post slugs that are `base` or `base-<something>`."""
        rows = await self.session.scalars(
            select(Post.slug).where(
                Post.blog_id == blog_id,
                or_(Post.slug == base, Post.slug.startswith(f"{base}-", autoescape=True)),
            )
        )
        return set(rows)

    def published_posts(self) -> Select[Post]:
        return select(Post).where(Post.state == "published")

    async def published_in_blog(self, blog_id: UUID) -> list[Post]:
        rows = await self.session.scalars(self.published_posts().where(Post.blog_id == blog_id))
        return list(rows)

    @staticmethod
    def narrow_posts(
        statement: Select[Post],
        *,
        blog_id: UUID | None = None,
        author_id: UUID | None = None,
        tag: str | None = None,
    ) -> Select[Post]:
        """The listing narrowed to one blog, one author and one tag (each optional)."""
        if blog_id is not None:
            statement = statement.where(Post.blog_id == blog_id)
        if author_id is not None:
            statement = statement.where(Post.author_id == author_id)
        if tag is not None:
            tagged = select(PostTag.post_id).where(PostTag.post_id == Post.id, PostTag.tag == tag)
            statement = statement.where(tagged.exists())
        return statement

    def comments(self, post_id: UUID) -> Select[Comment]:
        return select(Comment).where(Comment.post_id == post_id)

    async def comment(self, comment_id: UUID) -> Comment | None:
        row: Comment | None = await self.session.get(Comment, comment_id)
        return row

    async def media(self, media_id: UUID) -> Media | None:
        row: Media | None = await self.session.get(Media, media_id)
        return row

    async def media_of(self, post_ids: Sequence[UUID]) -> dict[UUID, list[Media]]:
        """Each post's attached media, in their order."""
        if not post_ids:
            return {}
        rows = await self.session.execute(
            select(PostMedia.post_id, Media)
            .join(Media, Media.id == PostMedia.media_id)
            .where(PostMedia.post_id.in_(post_ids))
            .order_by(PostMedia.post_id, PostMedia.position)
        )
        attached: dict[UUID, list[Media]] = {post_id: [] for post_id in post_ids}
        for post_id, media in rows:
            attached[post_id].append(media)
        return attached

    def revisions(self, post_id: UUID) -> Select[PostRevision]:
        return select(PostRevision).where(PostRevision.post_id == post_id)


class Scoped(PublicQueries):
    """Queries confined to what one user may see and change."""

    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        super().__init__(session)
        self.user_id = user_id

    def _editable(self) -> Any:
        owned_blogs = select(Blog.id).where(Blog.owner_id == self.user_id)
        return or_(Post.author_id == self.user_id, Post.blog_id.in_(owned_blogs))

    def visible_posts(self) -> Select[Post]:
        """Published posts, and the caller's own drafts and scheduled ones."""
        return select(Post).where(or_(Post.state == "published", self._editable()))

    def editable_posts(self, state: str | None = None) -> Select[Post]:
        statement = select(Post).where(self._editable())
        if state is not None:
            statement = statement.where(Post.state == state)
        return statement

    async def visible_post(self, post_id: UUID) -> Post | None:
        row: Post | None = await self.session.scalar(self.visible_posts().where(Post.id == post_id))
        return row

    async def own_media(self, media_ids: Sequence[UUID], kind: str) -> list[Media]:
        if not media_ids:
            return []
        rows = await self.session.scalars(
            select(Media).where(
                Media.id.in_(media_ids), Media.owner_id == self.user_id, Media.kind == kind
            )
        )
        return list(rows)

    async def own_profile(self) -> Profile:
        """The caller's profile row, made on first use."""
        profile = await self.profile(self.user_id)
        if profile is None:
            try:
                async with self.session.begin_nested():
                    profile = Profile(user_id=self.user_id, links=[])
                    self.session.add(profile)
            except IntegrityError:  # made by a concurrent request
                profile = await self.profile(self.user_id)
                assert profile is not None
        return profile

    async def follow(self, blog_id: UUID) -> bool:
        """Follow the blog; False if the caller already did."""
        already = await self.session.get(Follow, (blog_id, self.user_id))
        if already is not None:
            return False
        try:
            async with self.session.begin_nested():
                await self.session.execute(
                    insert(Follow).values(blog_id=blog_id, user_id=self.user_id)
                )
        except IntegrityError:  # a concurrent request of the same caller won
            return False
        await self._count_followers(blog_id, 1)
        return True

    async def unfollow(self, blog_id: UUID) -> bool:
        result = await self.session.execute(
            delete(Follow).where(Follow.blog_id == blog_id, Follow.user_id == self.user_id)
        )
        if rowcount(result) == 1:
            await self._count_followers(blog_id, -1)
            return True
        return False

    async def _count_followers(self, blog_id: UUID, delta: int) -> None:
        await self.session.execute(
            update(Blog)
            .where(Blog.id == blog_id)
            .values(follower_count=Blog.follower_count + delta)
            .execution_options(synchronize_session=False)
        )


class PostWrites:
    """Changes to a post's own rows: tags, attached media, revisions, counters."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def set_tags(self, post_id: UUID, tags: Sequence[str]) -> None:
        await self.session.execute(delete(PostTag).where(PostTag.post_id == post_id))
        if tags:
            await self.session.execute(
                insert(PostTag), [{"post_id": post_id, "tag": tag} for tag in tags]
            )

    async def set_media(self, post_id: UUID, media_ids: Sequence[UUID]) -> None:
        await self.session.execute(delete(PostMedia).where(PostMedia.post_id == post_id))
        if media_ids:
            await self.session.execute(
                insert(PostMedia),
                [
                    {"post_id": post_id, "media_id": media_id, "position": index}
                    for index, media_id in enumerate(media_ids)
                ],
            )

    async def count_comments(self, post_id: UUID, delta: int) -> None:
        await self.session.execute(
            update(Post)
            .where(Post.id == post_id)
            .values(comment_count=Post.comment_count + delta)
            .execution_options(synchronize_session=False)
        )

    async def publish_if_scheduled(self, post_id: UUID, now: dt.datetime) -> bool:
        """Publish one due scheduled post; False if another run or an edit came first."""
        result = await self.session.execute(
            update(Post)
            .where(Post.id == post_id, Post.state == "scheduled", Post.publish_at <= now)
            .values(state="published", published_at=now, publish_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return rowcount(result) == 1


class SystemQueries:
    """Queries of the scheduled jobs, across all users."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def due_posts(self, now: dt.datetime, limit: int) -> list[UUID]:
        rows = await self.session.scalars(
            select(Post.id)
            .where(Post.state == "scheduled", Post.publish_at <= now)
            .order_by(Post.publish_at)
            .limit(limit)
        )
        return list(rows)

    async def post(self, post_id: UUID) -> Post | None:
        row: Post | None = await self.session.get(Post, post_id, populate_existing=True)
        return row

    async def orphaned_media(self, created_before: dt.datetime, limit: int) -> list[Media]:
        """Uploads attached to no post and no profile, older than the cut-off."""
        attached = select(PostMedia.media_id).where(PostMedia.media_id == Media.id)
        avatar = select(Profile.user_id).where(Profile.avatar_media_id == Media.id)
        rows = await self.session.scalars(
            select(Media)
            .where(Media.created_at < created_before, ~attached.exists(), ~avatar.exists())
            .order_by(Media.created_at)
            .limit(limit)
        )
        return list(rows)

    async def count(self, model: type[Any]) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(model)) or 0)
