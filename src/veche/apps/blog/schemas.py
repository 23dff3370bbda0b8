"""Request and response shapes of the blog app."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic.json_schema import SkipJsonSchema

PostState = Literal["draft", "scheduled", "published"]
MemberRole = Literal["owner", "author"]

_PRINTABLE = r"^[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
Title = Annotated[str, Field(min_length=1, max_length=200, pattern=_PRINTABLE)]
PostTitle = Annotated[str, Field(min_length=1, max_length=300, pattern=_PRINTABLE)]
DisplayName = Annotated[str, Field(min_length=1, max_length=100, pattern=_PRINTABLE)]
Description = Annotated[str, Field(max_length=2000)]
Bio = Annotated[str, Field(max_length=2000)]
Username = Annotated[
    str,
    Field(
        min_length=3,
        max_length=32,
        pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9_]*[A-Za-z0-9])?$",
        description="Letters, digits and '_' (not first or last); unique ignoring case",
    ),
]
BlogSlug = Annotated[
    str, Field(min_length=3, max_length=64, pattern=r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
]
PostSlug = Annotated[
    str, Field(min_length=1, max_length=120, pattern=r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
]
Tag = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9-]*$")]
Tags = Annotated[list[Tag], Field(max_length=10)]
MediaIds = Annotated[list[UUID], Field(max_length=20)]
PostBody = Annotated[str, Field(max_length=200_000, description="HTML; sanitized on input")]
Excerpt = Annotated[str, Field(max_length=500)]
CommentBody = Annotated[
    str, Field(min_length=1, max_length=10_000, description="HTML; sanitized on input")
]


def _not_null(value: object) -> object:
    # Fields of a partial update may be left out, not set to null.
    if value is None:
        raise ValueError("must not be null; leave the field out to keep it")
    return value


def _distinct(value: list[str] | None) -> list[str] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("must not repeat an item")
    return value


class Link(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Annotated[str, Field(min_length=1, max_length=40, pattern=_PRINTABLE)]
    url: Annotated[str, Field(max_length=500, pattern=r"^https?://[^\s\x00-\x1f\x7f<>\"']+$")]


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | SkipJsonSchema[None] = None
    username: Username | SkipJsonSchema[None] = None
    bio: Bio | SkipJsonSchema[None] = None
    links: Annotated[list[Link], Field(max_length=10)] | SkipJsonSchema[None] = None
    suggestions_enabled: StrictBool | SkipJsonSchema[None] = Field(
        default=None, description="false: no AI suggestions are made for you or shown"
    )

    @field_validator("display_name", "username", "bio", "links", mode="before")
    @classmethod
    def _present(cls, value: object) -> object:
        return _not_null(value)

    @field_validator("suggestions_enabled", mode="before")
    @classmethod
    def _present_flag(cls, value: object) -> object:
        return _not_null(value)


class VariantRead(BaseModel):
    url: str
    width: int
    height: int
    size: int


class MediaRead(BaseModel):
    id: UUID
    owner_id: UUID
    kind: str
    source_type: str = Field(description="The format the image was uploaded in")
    content_type: str = Field(description="The format every variant is served in")
    width: int
    height: int
    variants: dict[str, VariantRead]
    created_at: dt.datetime


class ProfileRead(BaseModel):
    id: UUID
    username: str | None
    display_name: str
    bio: str
    links: list[Link]
    avatar: MediaRead | None
    created_at: dt.datetime
    follower_count: int = 0
    following_count: int = 0
    suggestions_enabled: bool | None = Field(default=None, description="Only in your own profile")


class BlogCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: BlogSlug
    title: Title
    description: Description = ""


class BlogUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None

    @field_validator("title", "description", mode="before")
    @classmethod
    def _present(cls, value: object) -> object:
        return _not_null(value)


class BlogRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    slug: str
    title: str
    description: str
    owner_id: UUID
    follower_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


class FollowRead(BaseModel):
    blog: str
    following: bool
    follower_count: int


class MemberRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: UUID
    role: MemberRole
    created_at: dt.datetime


class PostCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blog: BlogSlug = Field(description="The slug of a blog you own or write for")
    title: PostTitle
    slug: PostSlug | None = Field(default=None, description="Made from the title when omitted")
    body_html: PostBody = ""
    excerpt: Excerpt | None = Field(default=None, description="Made from the body when omitted")
    tags: Tags = Field(default_factory=list)
    media_ids: MediaIds = Field(default_factory=list)
    state: PostState = "draft"
    publish_at: AwareDatetime | None = Field(
        default=None, description="Required with state 'scheduled': a future time"
    )

    @field_validator("tags", "media_ids")
    @classmethod
    def _distinct_items(cls, value: list[str]) -> list[str] | None:
        return _distinct(value)


class PostUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: PostTitle | SkipJsonSchema[None] = None
    slug: PostSlug | SkipJsonSchema[None] = None
    body_html: PostBody | SkipJsonSchema[None] = None
    excerpt: Excerpt | SkipJsonSchema[None] = None
    tags: Tags | SkipJsonSchema[None] = None
    media_ids: MediaIds | SkipJsonSchema[None] = None
    state: PostState | SkipJsonSchema[None] = None
    publish_at: AwareDatetime | None = None

    @field_validator("title", "slug", "body_html", "excerpt", "tags", "media_ids", "state")
    @classmethod
    def _present(cls, value: object) -> object:
        return _not_null(value)

    @field_validator("tags", "media_ids")
    @classmethod
    def _distinct_items(cls, value: list[str] | None) -> list[str] | None:
        return _distinct(value)


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    publish_at: AwareDatetime | None = Field(
        default=None, description="Schedule for this future time instead of publishing now"
    )


class PostSummary(BaseModel):
    id: UUID
    blog_id: UUID
    author_id: UUID
    title: str
    slug: str
    excerpt: str
    tags: list[str]
    state: PostState
    publish_at: dt.datetime | None
    published_at: dt.datetime | None
    revision: int
    comment_count: int
    like_count: int = 0
    created_at: dt.datetime
    updated_at: dt.datetime


class PostRead(PostSummary):
    blog_slug: str
    body_html: str
    media: list[MediaRead]


class RevisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    editor_id: UUID
    title: str
    slug: str
    body_html: str
    excerpt: str
    tags: list[str]
    created_at: dt.datetime


class CommentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body_html: CommentBody


class CommentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    post_id: UUID
    author_id: UUID
    body_html: str
    edited: bool
    created_at: dt.datetime
    updated_at: dt.datetime


# -- likes, user follows, the feed, /me, notifications, suggestions ---------------------


class LikeRead(BaseModel):
    post_id: UUID
    liked: bool
    like_count: int


class UserFollowRead(BaseModel):
    user_id: UUID
    following: bool
    follower_count: int


class SuggestionInfo(BaseModel):
    id: UUID
    reason: str = Field(description="The model's one line on why you may enjoy the post")
    created_at: dt.datetime


class FeedItem(PostSummary):
    """A post in the feed: from a blog or author you follow, or an AI suggestion."""

    blog_slug: str
    media: list[MediaRead]
    liked: bool = Field(description="You like this post")
    commented: bool = Field(description="You commented on this post")
    suggested: bool = Field(description="Not from your follows: an AI suggestion")
    suggestion: SuggestionInfo | None = None


class SuggestionRead(BaseModel):
    id: UUID
    post: PostSummary
    blog_slug: str
    reason: str
    score: float
    created_at: dt.datetime


NotificationKind = Literal["comment", "like", "follower", "blog_follower", "suggestion"]


class NotificationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    kind: NotificationKind
    actor_id: UUID | None
    post_id: UUID | None
    data: dict[str, str | float | int | None]
    read: bool
    read_at: dt.datetime | None
    created_at: dt.datetime


class MarkedRead(BaseModel):
    marked: int = Field(description="How many notifications were unread and are now read")


class MeRead(BaseModel):
    """Everything a client's home screen needs, in one call."""

    profile: ProfileRead
    blogs: list[BlogRead] = Field(description="Blogs you own, newest first (up to 50)")
    unread_messages: int
    unread_notifications: int
    notifications: list[NotificationRead] = Field(description="The latest 10")
