"""Comments on published posts: anyone signed in writes one, its author edits it, its
author or the post's author deletes it. Bodies are sanitized like posts, with fewer tags."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.errors import (
    CommentNotFound,
    EmptyContent,
    NotCommentAuthor,
    PostNotFound,
)
from veche.apps.blog.models import Comment, Post
from veche.apps.blog.repository import PostWrites, Scoped
from veche.apps.blog.sanitize import clean_comment_html
from veche.contracts.blog import COMMENT_CREATED, CommentCreated
from veche.kernel import utcnow
from veche.kernel.events import emit


def _clean(body: str) -> str:
    cleaned = clean_comment_html(body)
    if not cleaned:
        raise EmptyContent("The comment is empty once unsafe markup is removed")
    return cleaned


class CommentService:
    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id
        self.scoped = Scoped(session, user_id)
        self.writes = PostWrites(session)

    async def commentable(self, post_id: UUID) -> Post:
        post = await self.scoped.published_post(post_id)
        if post is None:
            raise PostNotFound(f"There is no published post {post_id}")
        return post

    async def create(self, post_id: UUID, body: str) -> Comment:
        post = await self.commentable(post_id)
        comment = Comment(post_id=post.id, author_id=self.user_id, body_html=_clean(body))
        self.session.add(comment)
        await self.session.flush()
        await self.writes.count_comments(post.id, 1)
        await emit(
            self.session,
            COMMENT_CREATED,
            CommentCreated(
                comment_id=comment.id,
                post_id=post.id,
                post_author_id=post.author_id,
                author_id=self.user_id,
            ),
            subject=str(comment.id),
            actor_id=self.user_id,
        )
        return comment

    async def _visible(self, comment_id: UUID) -> tuple[Comment, Post]:
        comment = await self.scoped.comment(comment_id)
        post = await self.scoped.visible_post(comment.post_id) if comment else None
        if comment is None or post is None:
            raise CommentNotFound(f"There is no comment {comment_id}")
        return comment, post

    async def update(self, comment_id: UUID, body: str) -> Comment:
        comment, _ = await self._visible(comment_id)
        if comment.author_id != self.user_id:
            raise NotCommentAuthor("Only the comment's author may edit it")
        comment.body_html = _clean(body)
        comment.edited = True
        comment.updated_at = utcnow()
        await self.session.flush()
        return comment

    async def delete(self, comment_id: UUID) -> None:
        comment, post = await self._visible(comment_id)
        if self.user_id not in {comment.author_id, post.author_id}:
            raise NotCommentAuthor("Only the comment's author or the post's author may delete it")
        await self.session.delete(comment)
        await self.session.flush()
        await self.writes.count_comments(post.id, -1)
