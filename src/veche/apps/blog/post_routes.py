"""`/api/v1/blog/posts/*` and `/api/v1/blog/comments/*`. Published posts and their
comments are public; drafts and scheduled posts are seen by their author and the blog's
owner only (anyone else gets the same 404 as for a post that does not exist)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Body, Depends, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.comments import CommentService
from veche.apps.blog.errors import PostNotFound
from veche.apps.blog.models import Comment, Post, PostRevision
from veche.apps.blog.posts import PostFilters, PostService, public_listing
from veche.apps.blog.repository import PublicQueries
from veche.apps.blog.schemas import (
    CommentCreate,
    CommentRead,
    PostCreate,
    PostRead,
    PostSummary,
    PostUpdate,
    PublishRequest,
    RevisionRead,
)
from veche.apps.blog.social_repository import Social
from veche.apps.blog.views import Runtime, Viewer, post_read, post_summary
from veche.kernel import (
    CursorCodec,
    DbSession,
    Kernel,
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

router = api_router(tags=["blog"], dependencies=[Depends(rate_limit("default"))])
writes = [Depends(rate_limit("blog_write"))]
# Readable without a token; with one, the caller also sees their own drafts.
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}]}  # added to the bearer entry

Paging = Annotated[PageParams, Depends(page_params)]
OLDEST_FIRST = SortKey.parse("created_at")
NEWEST_FIRST = SortKey.parse("-number")
SortName = Literal[
    "-published_at",
    "published_at",
    "-created_at",
    "created_at",
    "-updated_at",
    "updated_at",
    "publish_at",
    "-publish_at",
]


async def post_service(session: DbSession, user: CurrentUser) -> PostService:
    return PostService(session, user.id)


async def comment_service(session: DbSession, user: CurrentUser) -> CommentService:
    return CommentService(session, user.id)


Posts = Annotated[PostService, Depends(post_service)]
Comments = Annotated[CommentService, Depends(comment_service)]


async def _read(session: AsyncSession, post: Post, runtime: Runtime) -> PostRead:
    queries = PublicQueries(session)
    blog = await queries.blog_by_id(post.blog_id)
    assert blog is not None  # posts go with their blog
    media = (await queries.media_of([post.id]))[post.id]
    return post_read(post, blog, media, runtime)


async def _visible(session: AsyncSession, viewer: Viewer, post_id: UUID) -> Post:
    if viewer is not None:
        return await PostService(session, viewer.id).get(post_id)
    post = await PublicQueries(session).published_post(post_id)
    if post is None:
        raise PostNotFound(f"There is no post {post_id}")
    return post


def _codec(kernel: Kernel) -> CursorCodec:
    return CursorCodec(kernel.cursor_key)


# -- posts ------------------------------------------------------------------------------


@router.post(
    "/posts",
    status_code=status.HTTP_201_CREATED,
    response_model=PostRead,
    responses=problem_openapi(401, 403, 404, 409, 413, 415),
    dependencies=writes,
    summary="Write a post: a draft, published now, or scheduled for `publish_at`",
)
async def create_post(
    body: PostCreate, posts: Posts, session: DbSession, runtime: Runtime
) -> PostRead:
    post, _ = await posts.create(body)
    return await _read(session, post, runtime)


@router.get(
    "/posts",
    response_model=Page[PostSummary],
    responses=problem_openapi(400, 401, 404),
    summary="Posts, filtered and sorted; drafts and scheduled ones are your own",
    openapi_extra=OPTIONAL_AUTH,
)
async def list_posts(
    session: DbSession,
    kernel: KernelDep,
    viewer: Viewer,
    page: Paging,
    state: Literal["published", "draft", "scheduled"] = "published",
    blog: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9-]+$")] = None,
    tag: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9][a-z0-9-]*$")] = None,
    author: Annotated[str | None, Query(max_length=64, description="A user id or username")] = None,
    sort: SortName | None = None,
) -> Page[PostSummary]:
    filters = PostFilters(state=state, blog=blog, tag=tag, author=author, sort=sort)
    # A published listing is the same for everyone; a list of drafts is the caller's own.
    scope = filters.scope()
    if viewer is None:
        statement = await public_listing(session, filters)
    else:
        statement = await PostService(session, viewer.id).listing(filters)
        if state != "published":
            scope = f"{scope}|{viewer.id}"
    rows, next_cursor = await paginate(
        session,
        statement,
        Post,
        sort=SortKey.parse(filters.sort_spec),
        params=page,
        codec=_codec(kernel),
        scope=scope,
    )
    return Page(items=[post_summary(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/posts/{post_id}",
    response_model=PostRead,
    responses=problem_openapi(401, 404),
    summary="One post: published, or your own draft or scheduled post",
    openapi_extra=OPTIONAL_AUTH,
)
async def get_post(post_id: UUID, session: DbSession, viewer: Viewer, runtime: Runtime) -> PostRead:
    post = await _visible(session, viewer, post_id)
    if viewer is not None and post.state == "published" and post.author_id != viewer.id:
        # Reading history, for suggestions: what a signed-in reader opened.
        await Social(session, viewer.id).record_read(post.id)
    return await _read(session, post, runtime)


@router.patch(
    "/posts/{post_id}",
    response_model=PostRead,
    responses=problem_openapi(401, 403, 404, 409, 413, 415),
    dependencies=writes,
    summary="Edit a post (its author or the blog's owner); each edit is a revision",
)
async def update_post(
    post_id: UUID, body: PostUpdate, posts: Posts, session: DbSession, runtime: Runtime
) -> PostRead:
    post, _ = await posts.update(post_id, body)
    return await _read(session, post, runtime)


@router.delete(
    "/posts/{post_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 403, 404),
    dependencies=writes,
    summary="Delete a post (its author or the blog's owner)",
)
async def delete_post(post_id: UUID, posts: Posts) -> Response:
    await posts.delete(post_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/posts/{post_id}/publish",
    response_model=PostRead,
    responses=problem_openapi(401, 403, 404, 415),
    dependencies=writes,
    summary="Publish a post now, or schedule it with `publish_at`",
)
async def publish_post(
    post_id: UUID,
    posts: Posts,
    session: DbSession,
    runtime: Runtime,
    body: Annotated[PublishRequest | None, Body()] = None,
) -> PostRead:
    post, _ = await posts.publish(post_id, body.publish_at if body else None)
    return await _read(session, post, runtime)


@router.get(
    "/posts/{post_id}/revisions",
    response_model=Page[RevisionRead],
    responses=problem_openapi(400, 401, 403, 404),
    summary="A post's edit history, newest first (its author or the blog's owner)",
)
async def list_revisions(
    post_id: UUID, posts: Posts, session: DbSession, kernel: KernelDep, page: Paging
) -> Page[RevisionRead]:
    post, _ = await posts.editable(post_id)
    rows, next_cursor = await paginate(
        session,
        posts.scoped.revisions(post.id),
        PostRevision,
        sort=NEWEST_FIRST,
        params=page,
        codec=_codec(kernel),
        scope=f"blog.revisions|{post.id}",
    )
    return Page(items=[RevisionRead.model_validate(row) for row in rows], next_cursor=next_cursor)


# -- comments ---------------------------------------------------------------------------


@router.post(
    "/posts/{post_id}/comments",
    status_code=status.HTTP_201_CREATED,
    response_model=CommentRead,
    responses=problem_openapi(401, 404, 413, 415),
    dependencies=writes,
    summary="Comment on a published post",
)
async def create_comment(post_id: UUID, body: CommentCreate, comments: Comments) -> CommentRead:
    return CommentRead.model_validate(await comments.create(post_id, body.body_html))


@router.get(
    "/posts/{post_id}/comments",
    response_model=Page[CommentRead],
    responses=problem_openapi(400, 401, 404),
    summary="A post's comments, oldest first",
    openapi_extra=OPTIONAL_AUTH,
)
async def list_comments(
    post_id: UUID, session: DbSession, kernel: KernelDep, viewer: Viewer, page: Paging
) -> Page[CommentRead]:
    post = await _visible(session, viewer, post_id)
    rows, next_cursor = await paginate(
        session,
        PublicQueries(session).comments(post.id),
        Comment,
        sort=OLDEST_FIRST,
        params=page,
        codec=_codec(kernel),
        scope=f"blog.comments|{post.id}",
    )
    return Page(items=[CommentRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.patch(
    "/comments/{comment_id}",
    response_model=CommentRead,
    responses=problem_openapi(401, 403, 404, 413, 415),
    dependencies=writes,
    summary="Edit your comment",
)
async def update_comment(comment_id: UUID, body: CommentCreate, comments: Comments) -> CommentRead:
    return CommentRead.model_validate(await comments.update(comment_id, body.body_html))


@router.delete(
    "/comments/{comment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 403, 404),
    dependencies=writes,
    summary="Delete your comment, or one on your post",
)
async def delete_comment(comment_id: UUID, comments: Comments) -> Response:
    await comments.delete(comment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
