"""Blogs: creating and changing them (the owner only), their authors, and follows."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.errors import (
    BlogNotFound,
    BlogSlugTaken,
    MemberNotFound,
    NotBlogOwner,
    OwnerIsMember,
    ProfileNotFound,
)
from veche.apps.blog.follows import announce_blog_follow
from veche.apps.blog.models import Blog, BlogMember
from veche.apps.blog.posts import post_changed
from veche.apps.blog.repository import PublicQueries, Scoped
from veche.apps.blog.schemas import BlogCreate, BlogUpdate
from veche.contracts.blog import POST_DELETED
from veche.kernel import record, utcnow
from veche.kernel.events import emit

OWNER = "owner"
AUTHOR = "author"


async def find_blog(queries: PublicQueries, slug: str) -> Blog:
    blog = await queries.blog(slug)
    if blog is None:
        raise BlogNotFound(f"There is no blog {slug!r}")
    return blog


class BlogService:
    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id
        self.scoped = Scoped(session, user_id)

    async def create(self, data: BlogCreate) -> Blog:
        if await self.scoped.slug_taken(data.slug):
            raise BlogSlugTaken(f"The blog address {data.slug!r} is taken")
        blog = Blog(
            owner_id=self.user_id,
            slug=data.slug,
            title=data.title,
            description=data.description,
            follower_count=0,
        )
        self.session.add(blog)
        try:
            await self.session.flush()
        except IntegrityError as exc:  # a concurrent request took the slug first
            raise BlogSlugTaken(f"The blog address {data.slug!r} is taken") from exc
        self.session.add(BlogMember(blog_id=blog.id, user_id=self.user_id, role=OWNER))
        record(
            self.session,
            "blog.blog.created",
            actor_id=self.user_id,
            target_type="blog.blog",
            target_id=blog.id,
            data={"slug": blog.slug},
        )
        await self.session.flush()
        return blog

    async def owned(self, slug: str) -> Blog:
        blog = await find_blog(self.scoped, slug)
        if blog.owner_id != self.user_id:
            raise NotBlogOwner(f"You do not own the blog {slug!r}")
        return blog

    async def update(self, slug: str, data: BlogUpdate) -> Blog:
        blog = await self.owned(slug)
        changes = data.model_dump(exclude_unset=True)
        for name, value in changes.items():
            setattr(blog, name, value)
        blog.updated_at = utcnow()
        await self.session.flush()
        return blog

    async def delete(self, slug: str) -> None:
        blog = await self.owned(slug)
        # Consumers that index published posts hear of each one going.
        for post in await self.scoped.published_in_blog(blog.id):
            await emit(
                self.session,
                POST_DELETED,
                post_changed(post, blog.slug),
                subject=str(post.id),
                actor_id=self.user_id,
            )
        await self.session.delete(blog)
        record(
            self.session,
            "blog.blog.deleted",
            actor_id=self.user_id,
            target_type="blog.blog",
            target_id=blog.id,
            data={"slug": blog.slug},
        )
        await self.session.flush()

    async def add_author(self, slug: str, user_id: UUID) -> BlogMember:
        blog = await self.owned(slug)
        if user_id == blog.owner_id:
            raise OwnerIsMember("The owner already writes in the blog")
        if await self.scoped.user(user_id) is None:
            raise ProfileNotFound(f"There is no user {user_id}")
        member = await self.scoped.member(blog.id, user_id)
        if member is None:
            member = BlogMember(blog_id=blog.id, user_id=user_id, role=AUTHOR)
            self.session.add(member)
            await self.session.flush()
        return member

    async def remove_author(self, slug: str, user_id: UUID) -> None:
        blog = await self.owned(slug)
        if user_id == blog.owner_id:
            raise OwnerIsMember("The owner cannot be removed from their blog")
        member = await self.scoped.member(blog.id, user_id)
        if member is None:
            raise MemberNotFound(f"{user_id} does not write in {slug!r}")
        await self.session.delete(member)
        await self.session.flush()

    async def follow(self, slug: str) -> tuple[Blog, bool]:
        blog = await find_blog(self.scoped, slug)
        if await self.scoped.follow(blog.id):
            await announce_blog_follow(self.session, blog, self.user_id, following=True)
        await self.session.refresh(blog, ["follower_count"])
        return blog, True

    async def unfollow(self, slug: str) -> tuple[Blog, bool]:
        blog = await find_blog(self.scoped, slug)
        if await self.scoped.unfollow(blog.id):
            await announce_blog_follow(self.session, blog, self.user_id, following=False)
        await self.session.refresh(blog, ["follower_count"])
        return blog, False
