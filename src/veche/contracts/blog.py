"""Events the blog app publishes (version 1 of each payload)."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProfileUpdated(_Payload):
    """`blog.profile.updated`: a user changed their public profile."""

    user_id: UUID
    username: str | None
    fields: list[str]


class PostChanged(_Payload):
    """`blog.post.published|updated|unpublished|deleted`: a post as it is after the change."""

    post_id: UUID
    blog_id: UUID
    blog_slug: str
    author_id: UUID
    title: str
    slug: str
    state: str
    tags: list[str]
    revision: int
    published_at: dt.datetime | None


class CommentCreated(_Payload):
    """`blog.comment.created`."""

    comment_id: UUID
    post_id: UUID
    post_author_id: UUID
    author_id: UUID


class MediaUploaded(_Payload):
    """`blog.media.uploaded`: an image was checked, converted and stored."""

    media_id: UUID
    owner_id: UUID
    kind: str
    width: int
    height: int
    variants: list[str]


PROFILE_UPDATED = "blog.profile.updated"
POST_PUBLISHED = "blog.post.published"
POST_UPDATED = "blog.post.updated"
POST_UNPUBLISHED = "blog.post.unpublished"
POST_DELETED = "blog.post.deleted"
COMMENT_CREATED = "blog.comment.created"
MEDIA_UPLOADED = "blog.media.uploaded"

EVENTS: dict[str, type[BaseModel]] = {
    PROFILE_UPDATED: ProfileUpdated,
    POST_PUBLISHED: PostChanged,
    POST_UPDATED: PostChanged,
    POST_UNPUBLISHED: PostChanged,
    POST_DELETED: PostChanged,
    COMMENT_CREATED: CommentCreated,
    MEDIA_UPLOADED: MediaUploaded,
}
