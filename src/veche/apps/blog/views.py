"""Response shaping shared by the blog's routes: rows to the public schemas, and the
dependencies every route group uses (the services, the optional viewer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials

from veche.apps.blog.models import Blog, Media, Post
from veche.apps.blog.profiles import ProfileView
from veche.apps.blog.runtime import BlogRuntime, runtime_of
from veche.apps.blog.schemas import (
    Link,
    MediaRead,
    PostRead,
    PostSummary,
    ProfileRead,
    VariantRead,
)
from veche.kernel import KernelDep
from veche.kernel.identity import User
from veche.kernel.identity.deps import bearer_scheme, current_auth
from veche.kernel.storage import WEBP

PREFIX = "/api/v1/blog"


async def blog_runtime(kernel: KernelDep) -> BlogRuntime:
    return runtime_of(kernel)


Runtime = Annotated[BlogRuntime, Depends(blog_runtime)]


async def optional_viewer(
    kernel: KernelDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> User | None:
    """The caller if they sent a token (an invalid one is still a 401), else None."""
    if credentials is None:
        return None
    authenticated = await current_auth(kernel, credentials)
    return authenticated.user


Viewer = Annotated[User | None, Depends(optional_viewer)]


def media_read(media: Media, runtime: BlogRuntime) -> MediaRead:
    variants = {
        name: VariantRead(
            url=runtime.blobs.url(str(item["key"])) or f"{PREFIX}/media/{media.id}/{name}",
            width=int(item["width"]),
            height=int(item["height"]),
            size=int(item["size"]),
        )
        for name, item in media.variants.items()
    }
    return MediaRead(
        id=media.id,
        owner_id=media.owner_id,
        kind=media.kind,
        source_type=media.source_type,
        content_type=WEBP,
        width=media.width,
        height=media.height,
        variants=variants,
        created_at=media.created_at,
    )


def profile_read(view: ProfileView, runtime: BlogRuntime, *, own: bool = False) -> ProfileRead:
    """The profile; `own` adds what only its user sees (the suggestions switch)."""
    profile = view.profile
    return ProfileRead(
        id=view.user.id,
        username=profile.username if profile else None,
        display_name=view.user.display_name,
        bio=profile.bio if profile else "",
        links=[Link.model_validate(link) for link in profile.links] if profile else [],
        avatar=media_read(view.avatar, runtime) if view.avatar is not None else None,
        created_at=view.user.created_at,
        follower_count=profile.follower_count if profile else 0,
        following_count=profile.following_count if profile else 0,
        suggestions_enabled=(profile.suggestions_enabled if profile else True) if own else None,
    )


def post_summary(post: Post) -> PostSummary:
    return PostSummary.model_validate(post, from_attributes=True)


def post_read(post: Post, blog: Blog, media: list[Media], runtime: BlogRuntime) -> PostRead:
    return PostRead(
        **post_summary(post).model_dump(),
        blog_slug=blog.slug,
        body_html=post.body_html,
        media=[media_read(item, runtime) for item in media],
    )
