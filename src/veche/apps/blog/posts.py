"""Posts: writing, editing with revisions, the draft -> scheduled -> published states,
deleting, and the listings. The author or the blog's owner may change a post; a draft or
scheduled post is visible to them only.

Events: `blog.post.published` when a post becomes published (now or by the scheduler),
`blog.post.updated` when a published post's content changes, `blog.post.unpublished`
when a published post goes back to draft or scheduled, `blog.post.deleted`.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import Select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.errors import (
    BlogNotFound,
    InvalidPostFilter,
    InvalidSchedule,
    MediaNotUsable,
    NotBlogAuthor,
    NotPostEditor,
    PostNotFound,
    PostSlugTaken,
    ProfileNotFound,
)
from veche.apps.blog.media import IMAGE
from veche.apps.blog.models import Blog, Media, Post, PostRevision
from veche.apps.blog.repository import PostWrites, PublicQueries, Scoped
from veche.apps.blog.sanitize import clean_post_html, excerpt_of
from veche.apps.blog.schemas import PostCreate, PostUpdate
from veche.contracts.blog import (
    POST_DELETED,
    POST_PUBLISHED,
    POST_UNPUBLISHED,
    POST_UPDATED,
    PostChanged,
)
from veche.kernel import utcnow
from veche.kernel.events import emit

DRAFT, SCHEDULED, PUBLISHED = "draft", "scheduled", "published"
CONTENT_FIELDS = ("title", "slug", "body_html", "excerpt", "tags", "media_ids")
# Sorts per state: a draft has no publication time to sort by.
SORTS = {
    PUBLISHED: {"-published_at", "published_at", "-created_at", "created_at", "-updated_at"},
    DRAFT: {"-created_at", "created_at", "-updated_at", "updated_at"},
    SCHEDULED: {"publish_at", "-publish_at", "-created_at", "created_at"},
}
DEFAULT_SORT = {PUBLISHED: "-published_at", DRAFT: "-updated_at", SCHEDULED: "publish_at"}


def slugify(text: str) -> str:
    """A URL slug from a title: ASCII letters and digits joined by hyphens."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:80].rstrip("-") or "post"


def post_changed(post: Post, blog_slug: str) -> PostChanged:
    return PostChanged(
        post_id=post.id,
        blog_id=post.blog_id,
        blog_slug=blog_slug,
        author_id=post.author_id,
        title=post.title,
        slug=post.slug,
        state=post.state,
        tags=list(post.tags),
        revision=post.revision,
        published_at=post.published_at,
    )


@dataclass(frozen=True, slots=True)
class PostFilters:
    state: str = PUBLISHED
    blog: str | None = None
    tag: str | None = None
    author: str | None = None
    sort: str | None = None

    @property
    def sort_spec(self) -> str:
        return self.sort or DEFAULT_SORT[self.state]

    def scope(self) -> str:
        return f"blog.posts|{self.state}|{self.blog}|{self.tag}|{self.author}"


class PostService:
    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id
        self.scoped = Scoped(session, user_id)
        self.writes = PostWrites(session)

    # -- reading ---------------------------------------------------------------------

    async def get(self, post_id: UUID) -> Post:
        post = await self.scoped.visible_post(post_id)
        if post is None:
            raise PostNotFound(f"There is no post {post_id}")
        return post

    async def editable(self, post_id: UUID) -> tuple[Post, Blog]:
        post = await self.get(post_id)
        blog = await self.scoped.blog_by_id(post.blog_id)
        assert blog is not None  # posts go with their blog
        if self.user_id not in {post.author_id, blog.owner_id}:
            raise NotPostEditor("Only the post's author or the blog's owner may change it")
        return post, blog

    # -- writing ---------------------------------------------------------------------

    async def create(self, data: PostCreate) -> tuple[Post, Blog]:
        blog = await self.scoped.blog(data.blog)
        if blog is None:
            raise BlogNotFound(f"There is no blog {data.blog!r}")
        if await self.scoped.member(blog.id, self.user_id) is None:
            raise NotBlogAuthor(f"You do not write for the blog {data.blog!r}")
        body = clean_post_html(data.body_html)
        slug = data.slug or await self._free_slug(blog.id, slugify(data.title))
        if data.slug and await self.scoped.post_slug_taken(blog.id, slug, None):
            raise PostSlugTaken(f"The blog already has a post at {slug!r}")
        media = await self._own_media(data.media_ids)
        post = Post(
            blog_id=blog.id,
            author_id=self.user_id,
            title=data.title,
            slug=slug,
            body_html=body,
            excerpt=self._excerpt(data.excerpt, body),
            tags=list(data.tags),
            state=DRAFT,
            revision=1,
            comment_count=0,
        )
        self.session.add(post)
        await self._flush_slug(slug)
        await self.writes.set_tags(post.id, post.tags)
        await self.writes.set_media(post.id, [item.id for item in media])
        self._revision(post)
        await self._move(post, blog, data.state, data.publish_at)
        await self.session.flush()
        return post, blog

    async def update(self, post_id: UUID, data: PostUpdate) -> tuple[Post, Blog]:
        post, blog = await self.editable(post_id)
        changes = data.model_dump(exclude_unset=True)
        content = {name: changes[name] for name in CONTENT_FIELDS if name in changes}
        new_slug = content.get("slug", post.slug)
        if new_slug != post.slug and await self.scoped.post_slug_taken(blog.id, new_slug, post.id):
            raise PostSlugTaken(f"The blog already has a post at {content['slug']!r}")
        if "media_ids" in content:
            media = await self._own_media(content["media_ids"])
            await self.writes.set_media(post.id, [item.id for item in media])
        if "tags" in content:
            await self.writes.set_tags(post.id, content["tags"])
            post.tags = list(content["tags"])
        if "body_html" in content:
            post.body_html = clean_post_html(content["body_html"])
            if "excerpt" not in content:
                post.excerpt = self._excerpt(None, post.body_html)
        if "excerpt" in content:
            post.excerpt = self._excerpt(content["excerpt"], post.body_html)
        for name in ("title", "slug"):
            if name in content:
                setattr(post, name, content[name])
        was_published = post.state == PUBLISHED
        if content:
            post.revision += 1
            post.updated_at = utcnow()
            self._revision(post)
            await self._flush_slug(post.slug)
        if "state" in changes or "publish_at" in changes:
            await self._move(post, blog, changes.get("state", post.state), data.publish_at)
        if content and was_published and post.state == PUBLISHED:
            await self._announce(POST_UPDATED, post, blog)
        await self.session.flush()
        return post, blog

    async def publish(self, post_id: UUID, publish_at: dt.datetime | None) -> tuple[Post, Blog]:
        post, blog = await self.editable(post_id)
        await self._move(post, blog, SCHEDULED if publish_at else PUBLISHED, publish_at)
        await self.session.flush()
        return post, blog

    async def delete(self, post_id: UUID) -> None:
        post, blog = await self.editable(post_id)
        await self._announce(POST_DELETED, post, blog)
        await self.session.delete(post)
        await self.session.flush()

    # -- states ----------------------------------------------------------------------

    async def _move(
        self, post: Post, blog: Blog, state: str, publish_at: dt.datetime | None
    ) -> None:
        """Put the post in `state`, with the events that transition means."""
        was_published = post.state == PUBLISHED
        if state == SCHEDULED:
            if publish_at is None:
                raise InvalidSchedule("A scheduled post needs publish_at")
            if publish_at <= utcnow():
                raise InvalidSchedule("publish_at must be in the future")
            post.state, post.publish_at, post.published_at = SCHEDULED, publish_at, None
        elif publish_at is not None:
            raise InvalidSchedule("publish_at goes with state 'scheduled'")
        elif state == DRAFT:
            post.state, post.publish_at, post.published_at = DRAFT, None, None
        elif not was_published:
            post.state, post.publish_at, post.published_at = PUBLISHED, None, utcnow()
            await self.session.flush()
            await self._announce(POST_PUBLISHED, post, blog)
        if was_published and post.state != PUBLISHED:
            post.updated_at = utcnow()
            await self.session.flush()
            await self._announce(POST_UNPUBLISHED, post, blog)

    async def _announce(self, event_type: str, post: Post, blog: Blog) -> None:
        await emit(
            self.session,
            event_type,
            post_changed(post, blog.slug),
            subject=str(post.id),
            actor_id=self.user_id,
        )

    # -- helpers ---------------------------------------------------------------------

    def _excerpt(self, given: str | None, body: str) -> str:
        if given is not None:
            return excerpt_of(given, 500)
        return excerpt_of(body)

    def _revision(self, post: Post) -> None:
        self.session.add(
            PostRevision(
                post_id=post.id,
                number=post.revision,
                editor_id=self.user_id,
                title=post.title,
                slug=post.slug,
                body_html=post.body_html,
                excerpt=post.excerpt,
                tags=list(post.tags),
            )
        )

    async def _own_media(self, media_ids: Sequence[UUID]) -> list[Media]:
        found = {item.id: item for item in await self.scoped.own_media(media_ids, IMAGE)}
        missing = [str(media_id) for media_id in media_ids if media_id not in found]
        if missing:
            raise MediaNotUsable(f"Not your uploaded images: {', '.join(missing)}")
        return [found[media_id] for media_id in media_ids]

    async def _free_slug(self, blog_id: UUID, base: str) -> str:
        taken = await self.scoped.slugs_like(blog_id, base)
        slug, number = base, 1
        while slug in taken:
            number += 1
            slug = f"{base}-{number}"
        return slug

    async def _flush_slug(self, slug: str) -> None:
        try:
            await self.session.flush()
        except IntegrityError as exc:  # a concurrent request took the slug first
            raise PostSlugTaken(f"The blog already has a post at {slug!r}") from exc

    # -- listing ---------------------------------------------------------------------

    async def listing(self, filters: PostFilters) -> Select[Post]:
        """The posts the filters select that the caller may see (sorted by the caller)."""
        if filters.sort_spec not in SORTS[filters.state]:
            allowed = ", ".join(sorted(SORTS[filters.state]))
            raise InvalidPostFilter(f"Posts in state {filters.state!r} sort by one of: {allowed}")
        if filters.state == PUBLISHED:
            statement = self.scoped.published_posts()
        else:
            statement = self.scoped.editable_posts(filters.state)
        return await filter_posts(self.scoped, statement, filters)


async def filter_posts(
    queries: PublicQueries, statement: Select[Post], filters: PostFilters
) -> Select[Post]:
    blog_id = author_id = None
    if filters.blog is not None:
        blog = await queries.blog(filters.blog)
        if blog is None:
            raise BlogNotFound(f"There is no blog {filters.blog!r}")
        blog_id = blog.id
    if filters.author is not None:
        author_id = await _author_id(queries, filters.author)
    return queries.narrow_posts(statement, blog_id=blog_id, author_id=author_id, tag=filters.tag)


async def _author_id(queries: PublicQueries, author: str) -> UUID:
    try:
        return UUID(author)
    except ValueError:
        profile = await queries.profile_by_username(author)
        if profile is None:
            raise ProfileNotFound(f"There is no user {author!r}") from None
        return profile.user_id


async def public_listing(session: AsyncSession, filters: PostFilters) -> Select[Post]:
    """Published posts for a caller without an account."""
    if filters.state != PUBLISHED:
        raise InvalidPostFilter("Sign in to list drafts and scheduled posts")
    if filters.sort_spec not in SORTS[PUBLISHED]:
        allowed = ", ".join(sorted(SORTS[PUBLISHED]))
        raise InvalidPostFilter(f"Published posts sort by one of: {allowed}")
    queries = PublicQueries(session)
    return await filter_posts(queries, queries.published_posts(), filters)
