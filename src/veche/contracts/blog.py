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


class MessageSent(_Payload):
    """`blog.message.sent`: a new message in a conversation (never its body, which only its
    members may read)."""

    message_id: UUID
    conversation_id: UUID
    sender_id: UUID
    member_ids: list[UUID]
    seq: int


class PostLiked(_Payload):
    """`blog.post.liked` / `blog.post.unliked`: a like given or taken back (once each)."""

    post_id: UUID
    blog_id: UUID
    post_author_id: UUID
    user_id: UUID
    like_count: int


class UserFollowed(_Payload):
    """`blog.user.followed` / `blog.user.unfollowed`: one user started or stopped
    following another."""

    follower_id: UUID
    followee_id: UUID


class BlogFollowed(_Payload):
    """`blog.blog.followed` / `blog.blog.unfollowed`: a user started or stopped following
    a blog."""

    blog_id: UUID
    blog_slug: str
    owner_id: UUID
    user_id: UUID


class SuggestionGenerated(_Payload):
    """`blog.ai.suggestion.generated`: the recommender suggested a post to a reader."""

    suggestion_id: UUID
    user_id: UUID
    post_id: UUID
    post_title: str
    reason: str
    score: float


PROFILE_UPDATED = "blog.profile.updated"
POST_PUBLISHED = "blog.post.published"
POST_UPDATED = "blog.post.updated"
POST_UNPUBLISHED = "blog.post.unpublished"
POST_DELETED = "blog.post.deleted"
COMMENT_CREATED = "blog.comment.created"
MEDIA_UPLOADED = "blog.media.uploaded"
MESSAGE_SENT = "blog.message.sent"
POST_LIKED = "blog.post.liked"
POST_UNLIKED = "blog.post.unliked"
USER_FOLLOWED = "blog.user.followed"
USER_UNFOLLOWED = "blog.user.unfollowed"
BLOG_FOLLOWED = "blog.blog.followed"
BLOG_UNFOLLOWED = "blog.blog.unfollowed"
SUGGESTION_GENERATED = "blog.ai.suggestion.generated"

EVENTS: dict[str, type[BaseModel]] = {
    PROFILE_UPDATED: ProfileUpdated,
    POST_PUBLISHED: PostChanged,
    POST_UPDATED: PostChanged,
    POST_UNPUBLISHED: PostChanged,
    POST_DELETED: PostChanged,
    COMMENT_CREATED: CommentCreated,
    MEDIA_UPLOADED: MediaUploaded,
    MESSAGE_SENT: MessageSent,
    POST_LIKED: PostLiked,
    POST_UNLIKED: PostLiked,
    USER_FOLLOWED: UserFollowed,
    USER_UNFOLLOWED: UserFollowed,
    BLOG_FOLLOWED: BlogFollowed,
    BLOG_UNFOLLOWED: BlogFollowed,
    SUGGESTION_GENERATED: SuggestionGenerated,
}
