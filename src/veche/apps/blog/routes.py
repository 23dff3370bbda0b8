"""`/api/v1/blog/users/*` and `/api/v1/blog/blogs/*`: profiles, blogs, their authors and
follows. Reads are public; changes need a token and belong to the owner."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Path, Query, Request, Response, status

from veche.apps.blog.blogs import BlogService, find_blog
from veche.apps.blog.models import Blog
from veche.apps.blog.profiles import ProfileQueries, ProfileService
from veche.apps.blog.repository import PublicQueries
from veche.apps.blog.schemas import (
    BlogCreate,
    BlogRead,
    BlogUpdate,
    FollowRead,
    MemberRead,
    ProfileRead,
    ProfileUpdate,
)
from veche.apps.blog.views import Runtime, profile_read
from veche.kernel import (
    CursorCodec,
    DbSession,
    KernelDep,
    Page,
    PageParams,
    SortKey,
    api_router,
    page_params,
    paginate,
    problem_openapi,
    rate_limit,
)
from veche.kernel.identity import CurrentUser
from veche.kernel.storage import UPLOAD_BODY_CEILING, receive_file

router = api_router(tags=["blog"], dependencies=[Depends(rate_limit("default"))])
writes = [Depends(rate_limit("blog_write"))]

Paging = Annotated[PageParams, Depends(page_params)]
SlugPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]
NEWEST_FIRST = SortKey.parse("-created_at")
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


async def profile_service(
    session: DbSession, user: CurrentUser, runtime: Runtime
) -> ProfileService:
    return ProfileService(session, user.id, runtime)


async def blog_service(session: DbSession, user: CurrentUser) -> BlogService:
    return BlogService(session, user.id)


Profiles = Annotated[ProfileService, Depends(profile_service)]
Blogs = Annotated[BlogService, Depends(blog_service)]


# -- profiles ---------------------------------------------------------------------------


@router.get(
    "/users/me",
    response_model=ProfileRead,
    responses=problem_openapi(401),
    summary="Your own profile",
)
async def my_profile(profiles: Profiles, runtime: Runtime) -> ProfileRead:
    return profile_read(await profiles.me(), runtime, own=True)


@router.patch(
    "/users/me",
    response_model=ProfileRead,
    responses=problem_openapi(401, 409, 413, 415),
    dependencies=writes,
    summary="Change your display name, username, bio or links",
)
async def update_profile(body: ProfileUpdate, profiles: Profiles, runtime: Runtime) -> ProfileRead:
    return profile_read(await profiles.update(body), runtime, own=True)


@router.put(
    "/users/me/avatar",
    response_model=ProfileRead,
    responses=problem_openapi(400, 401, 413, 415),
    dependencies=[Depends(rate_limit("blog_media"))],
    max_body_size=UPLOAD_BODY_CEILING,
    openapi_extra=UPLOAD_BODY,
    summary="Upload an avatar (multipart field `file`); square crops in three sizes",
)
async def set_avatar(
    request: Request, kernel: KernelDep, profiles: Profiles, runtime: Runtime
) -> ProfileRead:
    upload = await receive_file(request, max_bytes=kernel.settings.storage.max_upload_bytes)
    return profile_read(await profiles.set_avatar(upload.data), runtime, own=True)


@router.delete(
    "/users/me/avatar",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401),
    summary="Remove your avatar",
)
async def remove_avatar(profiles: Profiles) -> Response:
    await profiles.remove_avatar()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/users/{id_or_username}",
    response_model=ProfileRead,
    responses=problem_openapi(404),
    summary="A user's public profile, by id or username",
)
async def get_profile(
    id_or_username: Annotated[str, Path(min_length=1, max_length=64)],
    session: DbSession,
    runtime: Runtime,
) -> ProfileRead:
    return profile_read(await ProfileQueries(session).find(id_or_username), runtime)


# -- blogs ------------------------------------------------------------------------------


@router.post(
    "/blogs",
    status_code=status.HTTP_201_CREATED,
    response_model=BlogRead,
    responses=problem_openapi(401, 409, 413, 415),
    dependencies=writes,
    summary="Create a blog; you become its owner",
)
async def create_blog(body: BlogCreate, blogs: Blogs) -> BlogRead:
    return BlogRead.model_validate(await blogs.create(body))


@router.get(
    "/blogs",
    response_model=Page[BlogRead],
    responses=problem_openapi(400),
    summary="Blogs, newest first; `owner` keeps one user's",
)
async def list_blogs(
    session: DbSession,
    kernel: KernelDep,
    page: Paging,
    owner: Annotated[UUID | None, Query(description="Only this user's blogs")] = None,
) -> Page[BlogRead]:
    rows, next_cursor = await paginate(
        session,
        PublicQueries(session).blogs(owner),
        Blog,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"blog.blogs|{owner}",
    )
    return Page(items=[BlogRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/blogs/{slug}",
    response_model=BlogRead,
    responses=problem_openapi(404),
    summary="One blog with its follower count",
)
async def get_blog(slug: SlugPath, session: DbSession) -> BlogRead:
    return BlogRead.model_validate(await find_blog(PublicQueries(session), slug))


@router.patch(
    "/blogs/{slug}",
    response_model=BlogRead,
    responses=problem_openapi(401, 403, 404, 413, 415),
    dependencies=writes,
    summary="Change a blog's title or description (its owner only)",
)
async def update_blog(slug: SlugPath, body: BlogUpdate, blogs: Blogs) -> BlogRead:
    return BlogRead.model_validate(await blogs.update(slug, body))


@router.delete(
    "/blogs/{slug}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 403, 404),
    dependencies=writes,
    summary="Delete a blog with its posts (its owner only)",
)
async def delete_blog(slug: SlugPath, blogs: Blogs) -> Response:
    await blogs.delete(slug)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/blogs/{slug}/follow",
    response_model=FollowRead,
    responses=problem_openapi(401, 404),
    dependencies=writes,
    summary="Follow a blog (again is fine)",
)
async def follow_blog(slug: SlugPath, blogs: Blogs) -> FollowRead:
    blog, following = await blogs.follow(slug)
    return FollowRead(blog=blog.slug, following=following, follower_count=blog.follower_count)


@router.delete(
    "/blogs/{slug}/follow",
    response_model=FollowRead,
    responses=problem_openapi(401, 404),
    dependencies=writes,
    summary="Stop following a blog (again is fine)",
)
async def unfollow_blog(slug: SlugPath, blogs: Blogs) -> FollowRead:
    blog, following = await blogs.unfollow(slug)
    return FollowRead(blog=blog.slug, following=following, follower_count=blog.follower_count)


@router.get(
    "/blogs/{slug}/authors",
    response_model=list[MemberRead],
    responses=problem_openapi(404),
    summary="Who writes in a blog: its owner and authors",
)
async def list_authors(slug: SlugPath, session: DbSession) -> list[MemberRead]:
    queries = PublicQueries(session)
    blog = await find_blog(queries, slug)
    return [MemberRead.model_validate(row) for row in await queries.members(blog.id)]


@router.put(
    "/blogs/{slug}/authors/{user_id}",
    response_model=MemberRead,
    responses=problem_openapi(401, 403, 404, 409),
    dependencies=writes,
    summary="Let a user write in your blog",
)
async def add_author(slug: SlugPath, user_id: UUID, blogs: Blogs) -> MemberRead:
    return MemberRead.model_validate(await blogs.add_author(slug, user_id))


@router.delete(
    "/blogs/{slug}/authors/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 403, 404, 409),
    dependencies=writes,
    summary="Stop a user writing in your blog (their posts stay)",
)
async def remove_author(slug: SlugPath, user_id: UUID, blogs: Blogs) -> Response:
    await blogs.remove_author(slug, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
