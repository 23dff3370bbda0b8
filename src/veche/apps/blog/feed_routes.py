"""`/api/v1/blog/feed`, `/me`, `/notifications` and `/suggestions`: a signed-in user's own
views. Nothing here reaches another user's rows (their notification or suggestion is a
404). The feed's first page and `/me` are served from the cache while no event changed
them; `Cache-Status` says whether an answer came from it."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query, Response, status

from veche.apps.blog.caching import FEED, ME, feed_cache_of
from veche.apps.blog.feed import feed_page
from veche.apps.blog.me import me_read
from veche.apps.blog.notifications import NotificationService, notification_read
from veche.apps.blog.schemas import (
    FeedItem,
    MarkedRead,
    MeRead,
    NotificationRead,
    SuggestionRead,
)
from veche.apps.blog.suggestions import SuggestionService
from veche.apps.blog.views import Runtime
from veche.kernel import (
    CursorCodec,
    DbSession,
    KernelDep,
    Page,
    PageParams,
    api_router,
    page_params,
    problem_openapi,
    rate_limit,
)
from veche.kernel.identity import CurrentUser

router = api_router(tags=["blog"], dependencies=[Depends(rate_limit("default"))])
writes = [Depends(rate_limit("blog_write"))]

Paging = Annotated[PageParams, Depends(page_params)]
JSON = "application/json"
CACHED = {"Cache-Status": "veche; hit"}
COMPUTED = {"Cache-Status": "veche; fwd=miss"}
UNCACHED = {"Cache-Status": "veche; fwd=bypass"}


@router.get(
    "/feed",
    response_model=Page[FeedItem],
    responses=problem_openapi(400, 401),
    summary="Posts of the blogs and authors you follow, newest first, with AI suggestions "
    "mixed into the first page",
)
async def get_feed(
    session: DbSession, user: CurrentUser, kernel: KernelDep, runtime: Runtime, page: Paging
) -> Response:
    feed_cache = feed_cache_of(kernel)
    first = page.cursor is None
    token: str | None = None
    if first:
        body, token = await feed_cache.lookup(FEED, user.id, str(page.limit))
        if body is not None:
            return Response(body, media_type=JSON, headers=CACHED)
    answer = await feed_page(
        session,
        user.id,
        page,
        codec=CursorCodec(kernel.cursor_key),
        runtime=runtime,
        suggestions=kernel.settings.blog.feed_suggestions,
    )
    body = answer.model_dump_json().encode()
    if first:
        await feed_cache.store(FEED, user.id, token, body, str(page.limit))
    return Response(body, media_type=JSON, headers=COMPUTED if first else UNCACHED)


@router.get(
    "/me",
    response_model=MeRead,
    responses=problem_openapi(401, 404),
    summary="Your profile, blogs, unread message count and latest notifications",
)
async def get_me(
    session: DbSession, user: CurrentUser, kernel: KernelDep, runtime: Runtime
) -> Response:
    feed_cache = feed_cache_of(kernel)
    body, token = await feed_cache.lookup(ME, user.id)
    if body is not None:
        return Response(body, media_type=JSON, headers=CACHED)
    body = (await me_read(session, user, runtime)).model_dump_json().encode()
    await feed_cache.store(ME, user.id, token, body)
    return Response(body, media_type=JSON, headers=COMPUTED)


@router.get(
    "/notifications",
    response_model=Page[NotificationRead],
    responses=problem_openapi(400, 401),
    summary="Your notifications, newest first; `unread=true` keeps the unread ones",
)
async def list_notifications(
    session: DbSession,
    user: CurrentUser,
    kernel: KernelDep,
    page: Paging,
    unread: Annotated[bool | None, Query(description="true: unread only; false: read only")] = None,
) -> Page[NotificationRead]:
    service = NotificationService(session, user.id)
    return await service.page(page, CursorCodec(kernel.cursor_key), unread)


@router.post(
    "/notifications/read-all",
    response_model=MarkedRead,
    responses=problem_openapi(401),
    dependencies=writes,
    summary="Mark all your notifications read",
)
async def mark_all_read(session: DbSession, user: CurrentUser, kernel: KernelDep) -> MarkedRead:
    marked = await NotificationService(session, user.id).mark_all_read()
    feed_cache_of(kernel).invalidate_after_commit(session, ME, [user.id])
    return MarkedRead(marked=marked)


@router.post(
    "/notifications/{notification_id}/read",
    response_model=NotificationRead,
    responses=problem_openapi(401, 404),
    dependencies=writes,
    summary="Mark one of your notifications read (again is fine)",
)
async def mark_read(
    notification_id: UUID, session: DbSession, user: CurrentUser, kernel: KernelDep
) -> NotificationRead:
    row = await NotificationService(session, user.id).mark_read(notification_id)
    feed_cache_of(kernel).invalidate_after_commit(session, ME, [user.id])
    return notification_read(row)


@router.get(
    "/suggestions",
    response_model=Page[SuggestionRead],
    responses=problem_openapi(400, 401),
    summary="Posts the AI suggests to you, newest first (none while you turned them off)",
)
async def list_suggestions(
    session: DbSession, user: CurrentUser, kernel: KernelDep, page: Paging
) -> Page[SuggestionRead]:
    return await SuggestionService(session, user.id).page(page, CursorCodec(kernel.cursor_key))


@router.delete(
    "/suggestions/{suggestion_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 404),
    dependencies=writes,
    summary="Dismiss one of your suggestions (again is fine)",
)
async def dismiss_suggestion(
    suggestion_id: UUID, session: DbSession, user: CurrentUser, kernel: KernelDep
) -> Response:
    await SuggestionService(session, user.id).dismiss(suggestion_id)
    feed_cache_of(kernel).invalidate_after_commit(session, FEED, [user.id])
    return Response(status_code=status.HTTP_204_NO_CONTENT)
