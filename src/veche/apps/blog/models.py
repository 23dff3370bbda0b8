"""The blog app's tables: profiles (what the kernel's user lacks), blogs with their owner
and authors, follows, posts with tags, attached media and revisions, comments, and the
uploaded media whose bytes live in the kernel blob store."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
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
