"""`/api/v1/blog/posts/{id}/like` and `/api/v1/blog/users/{id}/follow`: likes and user
follows, both idempotent PUT/DELETE pairs answering the state and count after the call.
The caller's own cached feed (and `/me`, for follows) is renewed once the change commits,
so their next read shows it; everyone else's by the `blog-feed-cache` consumer."""

from __future__ import annotations

from uuid import UUID

from fastapi import Depends

from veche.apps.blog.caching import FEED, ME, feed_cache_of
from veche.apps.blog.follows import FollowService
from veche.apps.blog.likes import LikeService
from veche.apps.blog.schemas import LikeRead, UserFollowRead
from veche.kernel import DbSession, KernelDep, api_router, problem_openapi, rate_limit
from veche.kernel.identity import CurrentUser

router = api_router(tags=["blog"], dependencies=[Depends(rate_limit("default"))])
writes = [Depends(rate_limit("blog_write"))]


@router.put(
    "/posts/{post_id}/like",
    response_model=LikeRead,
    responses=problem_openapi(401, 404, 409),
    dependencies=writes,
    summary="Like a published post (again is fine)",
)
async def like_post(
    post_id: UUID, session: DbSession, user: CurrentUser, kernel: KernelDep
) -> LikeRead:
    post, liked, count = await LikeService(session, user.id).like(post_id)
    feed_cache_of(kernel).invalidate_after_commit(session, FEED, [user.id])
    return LikeRead(post_id=post.id, liked=liked, like_count=count)


@router.delete(
    "/posts/{post_id}/like",
    response_model=LikeRead,
    responses=problem_openapi(401, 404, 409),
    dependencies=writes,
    summary="Take back your like (again is fine)",
)
async def unlike_post(
    post_id: UUID, session: DbSession, user: CurrentUser, kernel: KernelDep
) -> LikeRead:
    post, liked, count = await LikeService(session, user.id).unlike(post_id)
    feed_cache_of(kernel).invalidate_after_commit(session, FEED, [user.id])
    return LikeRead(post_id=post.id, liked=liked, like_count=count)


@router.put(
    "/users/{user_id}/follow",
    response_model=UserFollowRead,
    responses=problem_openapi(401, 404),
    dependencies=writes,
    summary="Follow a user: their posts in any blog reach your feed (again is fine)",
)
async def follow_user(
    user_id: UUID, session: DbSession, user: CurrentUser, kernel: KernelDep
) -> UserFollowRead:
    following, count = await FollowService(session, user.id).follow(user_id)
    _renew_own(session, kernel, user.id)
    return UserFollowRead(user_id=user_id, following=following, follower_count=count)


@router.delete(
    "/users/{user_id}/follow",
    response_model=UserFollowRead,
    responses=problem_openapi(401, 404),
    dependencies=writes,
    summary="Stop following a user (again is fine)",
)
async def unfollow_user(
    user_id: UUID, session: DbSession, user: CurrentUser, kernel: KernelDep
) -> UserFollowRead:
    following, count = await FollowService(session, user.id).unfollow(user_id)
    _renew_own(session, kernel, user.id)
    return UserFollowRead(user_id=user_id, following=following, follower_count=count)


def _renew_own(session: DbSession, kernel: KernelDep, user_id: UUID) -> None:
    feed_cache = feed_cache_of(kernel)
    feed_cache.invalidate_after_commit(session, FEED, [user_id])
    feed_cache.invalidate_after_commit(session, ME, [user_id])
