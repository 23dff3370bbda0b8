"""Likes: a signed-in user likes a published post they can see, once. Liking again or
taking back a like that is not there changes nothing (both are idempotent); each real
change emits `blog.post.liked` / `blog.post.unliked`, which the notifier turns into a
notification for the post's author and the feed cache consumer into fresh counts."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.errors import PostNotFound, PostNotPublished
from veche.apps.blog.models import Post
from veche.apps.blog.social_repository import Social
from veche.contracts.blog import POST_LIKED, POST_UNLIKED, PostLiked
from veche.kernel.events import emit


class LikeService:
    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id
        self.social = Social(session, user_id)

    async def _likeable(self, post_id: UUID) -> Post:
        # A draft of someone else is invisible (404); your own draft is visible but not
        # likeable yet (409).
        post = await self.social.visible_post(post_id)
        if post is None:
            raise PostNotFound(f"There is no post {post_id}")
        if post.state != "published":
            raise PostNotPublished("Only published posts can be liked")
        return post

    async def like(self, post_id: UUID) -> tuple[Post, bool, int]:
        """(post, liked, like count) after liking."""
        post = await self._likeable(post_id)
        if await self.social.like(post.id):
            await self._announce(POST_LIKED, post)
        return post, True, await self.social.like_count(post.id)

    async def unlike(self, post_id: UUID) -> tuple[Post, bool, int]:
        post = await self._likeable(post_id)
        if await self.social.unlike(post.id):
            await self._announce(POST_UNLIKED, post)
        return post, False, await self.social.like_count(post.id)

    async def _announce(self, event_type: str, post: Post) -> None:
        await emit(
            self.session,
            event_type,
            PostLiked(
                post_id=post.id,
                blog_id=post.blog_id,
                post_author_id=post.author_id,
                user_id=self.user_id,
                like_count=await self.social.like_count(post.id),
            ),
            subject=str(post.id),
            actor_id=self.user_id,
        )
