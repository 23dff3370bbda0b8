"""The blog app's tables: profiles (what the kernel's user lacks), blogs with their owner
and authors, follows, posts with tags, attached media and revisions, comments, and the
uploaded media whose bytes live in the kernel blob store."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from veche.kernel import Base, IdMixin, TimestampMixin, utcnow


class Profile(Base):
    """The public face of a kernel user in the blog: keyed by the user's id."""

    __tablename__ = "blog_profiles"

    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    # Stored lower-cased, so uniqueness ignores case.
    username: Mapped[str | None] = mapped_column(String(32), unique=True, default=None)
    bio: Mapped[str] = mapped_column(Text, default="")
    links: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    avatar_media_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("blog_media.id", ondelete="SET NULL"), default=None
    )
    # Users following this one and followed by them (`blog_user_follows`).
    follower_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    following_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Off: no AI suggestions are made for this user, and none are shown.
    suggestions_enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Blog(IdMixin, TimestampMixin, Base):
    __tablename__ = "blog_blogs"
    __table_args__ = (Index("ix_blog_blogs_owner_id_created_at", "owner_id", "created_at"),)

    owner_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    follower_count: Mapped[int] = mapped_column(Integer, default=0)


class BlogMember(Base):
    """Who may write in a blog: its owner (one) and the authors the owner adds."""

    __tablename__ = "blog_members"
    __table_args__ = (Index("ix_blog_members_user_id", "user_id"),)

    blog_id: Mapped[UUID] = mapped_column(
        ForeignKey("blog_blogs.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Follow(Base):
    __tablename__ = "blog_follows"
    __table_args__ = (Index("ix_blog_follows_user_id", "user_id"),)

    blog_id: Mapped[UUID] = mapped_column(
        ForeignKey("blog_blogs.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Post(IdMixin, TimestampMixin, Base):
    """A post: `draft`, `scheduled` (published by a job at `publish_at`) or `published`."""

    __tablename__ = "blog_posts"
    __table_args__ = (
        UniqueConstraint("blog_id", "slug"),
        Index("ix_blog_posts_state_published_at", "state", "published_at"),
        Index("ix_blog_posts_blog_id_state_published_at", "blog_id", "state", "published_at"),
        Index("ix_blog_posts_author_id_created_at", "author_id", "created_at"),
        Index("ix_blog_posts_state_publish_at", "state", "publish_at"),
        # The feed's "posts by followed authors" branch.
        Index("ix_blog_posts_author_id_state_published_at", "author_id", "state", "published_at"),
    )

    blog_id: Mapped[UUID] = mapped_column(ForeignKey("blog_blogs.id", ondelete="CASCADE"))
    author_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(300))
    slug: Mapped[str] = mapped_column(String(120))
    body_html: Mapped[str] = mapped_column(Text)
    # Escaped for HTML, so up to a few times the 500 characters a client may send.
    excerpt: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16))
    publish_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    published_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    comment_count: Mapped[int] = mapped_column(Integer, default=0)
    like_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class PostTag(Base):
    """One tag of a post, as a row, so listings filter by tag with an index."""

    __tablename__ = "blog_post_tags"
    __table_args__ = (Index("ix_blog_post_tags_tag", "tag"),)

    post_id: Mapped[UUID] = mapped_column(
        ForeignKey("blog_posts.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(40), primary_key=True)


class PostMedia(Base):
    __tablename__ = "blog_post_media"
    __table_args__ = (Index("ix_blog_post_media_media_id", "media_id"),)

    post_id: Mapped[UUID] = mapped_column(
        ForeignKey("blog_posts.id", ondelete="CASCADE"), primary_key=True
    )
    media_id: Mapped[UUID] = mapped_column(
        ForeignKey("blog_media.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer)


class PostRevision(IdMixin, Base):
    """The content a post had at one revision; written once, never changed."""

    __tablename__ = "blog_post_revisions"
    __table_args__ = (UniqueConstraint("post_id", "number"),)

    post_id: Mapped[UUID] = mapped_column(ForeignKey("blog_posts.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    editor_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(300))
    slug: Mapped[str] = mapped_column(String(120))
    body_html: Mapped[str] = mapped_column(Text)
    # Escaped for HTML, so up to a few times the 500 characters a client may send.
    excerpt: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Comment(IdMixin, TimestampMixin, Base):
    __tablename__ = "blog_comments"
    __table_args__ = (Index("ix_blog_comments_post_id_created_at", "post_id", "created_at"),)

    post_id: Mapped[UUID] = mapped_column(ForeignKey("blog_posts.id", ondelete="CASCADE"))
    author_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    body_html: Mapped[str] = mapped_column(Text)
    edited: Mapped[bool] = mapped_column(default=False)


class Media(IdMixin, Base):
    """An uploaded image; its WebP variants are blobs under `blog/media/<id>/`."""

    __tablename__ = "blog_media"
    __table_args__ = (Index("ix_blog_media_owner_id_created_at", "owner_id", "created_at"),)

    owner_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    source_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # name -> {"key", "width", "height", "size", "etag"}
    variants: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# -- likes, user follows, reads, notifications and AI suggestions (migration 0009) -------


class Like(Base):
    """A user's like of a published post; `Post.like_count` counts them."""

    __tablename__ = "blog_likes"
    __table_args__ = (Index("ix_blog_likes_user_id_created_at", "user_id", "created_at"),)

    post_id: Mapped[UUID] = mapped_column(
        ForeignKey("blog_posts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class UserFollow(Base):
    """`follower_id` follows `followee_id`: the followee's posts reach the follower's feed."""

    __tablename__ = "blog_user_follows"
    __table_args__ = (Index("ix_blog_user_follows_followee_id", "followee_id"),)

    follower_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    followee_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Read(Base):
    """A signed-in user opened a post (its first time): reading history for suggestions."""

    __tablename__ = "blog_reads"
    __table_args__ = (Index("ix_blog_reads_post_id", "post_id"),)

    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    post_id: Mapped[UUID] = mapped_column(
        ForeignKey("blog_posts.id", ondelete="CASCADE"), primary_key=True
    )
    read_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Notification(IdMixin, Base):
    """Something that happened to a user's things: `comment`, `like`, `follower`,
    `blog_follower` or `suggestion`. Written by the `blog-notifier` consumer."""

    __tablename__ = "blog_notifications"
    __table_args__ = (
        Index("ix_blog_notifications_user_id_created_at", "user_id", "created_at"),
        Index("ix_blog_notifications_user_id_read_at", "user_id", "read_at"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), default=None
    )
    post_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("blog_posts.id", ondelete="CASCADE"), default=None
    )
    # What the client shows without another request (a post title, a reason line).
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    read_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Suggestion(IdMixin, Base):
    """A post suggested to a reader by the recommender, with the model's reason line."""

    __tablename__ = "blog_suggestions"
    __table_args__ = (
        UniqueConstraint("user_id", "post_id"),
        Index("ix_blog_suggestions_user_id_created_at", "user_id", "created_at"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    post_id: Mapped[UUID] = mapped_column(ForeignKey("blog_posts.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)
    dismissed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# The feed's "did I comment here" look-up, by the caller over one page of posts.
Index("ix_blog_comments_author_id_post_id", Comment.author_id, Comment.post_id)


# -- Messenger (migration 0008) -----------------------------------------------------------
# Conversations (direct, one per pair of users, or groups with a title), their members with
# each one's read position, messages numbered per conversation (`seq`), the bodies messages
# had before each edit, and blocks between users. `seq` is the messenger's own ordering: it
# grows by one per message in a conversation, so a client that knows the last `seq` it has
# asks for exactly what it missed (realtime offsets only cover the hub's short history).


class Conversation(IdMixin, Base):
    """A `direct` conversation between two users or a `group` with a title."""

    __tablename__ = "blog_conversations"
    __table_args__ = (Index("ix_blog_conversations_last_activity_at", "last_activity_at"),)

    kind: Mapped[str] = mapped_column(String(8))
    title: Mapped[str | None] = mapped_column(String(200), default=None)
    created_by: Mapped[UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # `<lower user id hex>:<higher user id hex>` for direct conversations, so a pair has one
    # (a unique column: two concurrent "start a conversation" requests make one row).
    direct_key: Mapped[str | None] = mapped_column(String(65), unique=True, default=None)
    # The `seq` of the newest message; raised by one conditional UPDATE per message.
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The conversation list's order: creation, then each new message.
    last_activity_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ConversationMember(Base):
    """A user in a conversation: `owner` (a group's creator, or who inherited it) or
    `member`, and the `seq` up to which they have read."""

    __tablename__ = "blog_conversation_members"
    __table_args__ = (Index("ix_blog_conversation_members_user_id", "user_id"),)

    conversation_id: Mapped[UUID] = mapped_column(
        ForeignKey("blog_conversations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(8))
    last_read_seq: Mapped[int] = mapped_column(Integer, default=0)
    joined_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Message(IdMixin, Base):
    """A message; deleting it empties `body` and sets `deleted_at` (a tombstone keeps its
    `seq`, so history stays without gaps)."""

    __tablename__ = "blog_messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq"),
        # A retried send with the same `client_id` finds the first one.
        UniqueConstraint("conversation_id", "sender_id", "client_id"),
    )

    conversation_id: Mapped[UUID] = mapped_column(
        ForeignKey("blog_conversations.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    sender_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str | None] = mapped_column(String(64), default=None)
    body: Mapped[str] = mapped_column(Text)
    edit_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    edited_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class MessageEdit(IdMixin, Base):
    """The body a message had before its `number`-th edit; removed when it is deleted."""

    __tablename__ = "blog_message_edits"
    __table_args__ = (UniqueConstraint("message_id", "number"),)

    message_id: Mapped[UUID] = mapped_column(ForeignKey("blog_messages.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    # When this body was replaced by the edit.
    replaced_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Block(IdMixin, Base):
    """`blocker_id` blocked `blocked_id` (see docs/blog.md for what that stops)."""

    __tablename__ = "blog_blocks"
    __table_args__ = (
        UniqueConstraint("blocker_id", "blocked_id"),
        Index("ix_blog_blocks_blocked_id", "blocked_id"),
    )

    blocker_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    blocked_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
