"""The blog app's durable event consumers (`veche.kernel.events`), each handling each
event once, retried with backoff and dead-lettered after the last attempt:

- `blog-feed-cache` renews the cached answers an event changes: the feeds of everyone
  following a post's blog or author when it is published, changed, unpublished, deleted,
  liked or commented on; the follower's feed when follows change; `/me` of whoever gets
  a notification, a follower, a profile change or a message. It is the path by which a
  new post reaches its followers' cached feeds (within milliseconds of the commit).
- `blog-notifier` writes notifications (a comment or like on your post, a new follower
  of you or your blog, a new suggestion) and pushes each on its recipient's `user:<id>`
  channel.
- `blog-recommender` indexes published posts and makes AI suggestions
  (`recommender.py`), pushing each on its reader's channel; a model that is down makes
  it retry and then dead-letter, never the publishing fail.

Pushes to the realtime hub and cache renewals that follow new rows run after the
consumer's transaction commits, so a batch that rolls back announces nothing.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.caching import FEED, ME, FeedCache, feed_cache_of
from veche.apps.blog.models import Notification
from veche.apps.blog.notifications import (
    BLOG_FOLLOWER,
    COMMENT,
    FOLLOWER,
    LIKE,
    SUGGESTION,
    add_notification,
    notification_read,
)
from veche.apps.blog.recommender import forget_post, recommend
from veche.apps.blog.social_repository import Audience
from veche.contracts.blog import (
    BLOG_FOLLOWED,
    BLOG_UNFOLLOWED,
    COMMENT_CREATED,
    MESSAGE_SENT,
    POST_DELETED,
    POST_LIKED,
    POST_PUBLISHED,
    POST_UNLIKED,
    POST_UNPUBLISHED,
    POST_UPDATED,
    PROFILE_UPDATED,
    SUGGESTION_GENERATED,
    USER_FOLLOWED,
    USER_UNFOLLOWED,
    BlogFollowed,
    CommentCreated,
    MessageSent,
    PostChanged,
    PostLiked,
    ProfileUpdated,
    SuggestionGenerated,
    UserFollowed,
)
from veche.kernel import Kernel
from veche.kernel.db import on_outcome
from veche.kernel.events import ConsumerContext, Event, consumer

log = structlog.get_logger("veche.blog.consumers")

POST_CHANGES = (POST_PUBLISHED, POST_UPDATED, POST_UNPUBLISHED, POST_DELETED)
POST_LIFECYCLE = (POST_PUBLISHED, POST_UNPUBLISHED, POST_DELETED)
NOTIFICATION_FRAME = "blog.notification"
SUGGESTION_FRAME = "blog.suggestion"


def user_channel(user_id: UUID) -> str:
    return f"user:{user_id}"


async def _push(kernel: Kernel, user_id: UUID, event: str, data: dict[str, Any]) -> None:
    try:
        await kernel.realtime.publish(user_channel(user_id), data, event=event)
    except Exception:  # the row is stored; a client that missed the push refetches
        log.exception("push_failed", user_id=str(user_id), event=event)


def push_after_commit(
    session: AsyncSession, kernel: Kernel, user_id: UUID, event: str, data: dict[str, Any]
) -> None:
    feed_cache = feed_cache_of(kernel)
    on_outcome(session, committed=lambda: feed_cache.spawn(_push(kernel, user_id, event, data)))


# -- blog-feed-cache ---------------------------------------------------------------------


async def _post_audience(audience: Audience, blog_id: UUID, author_id: UUID) -> list[UUID]:
    return await audience.followers(blog_id, author_id)


@consumer(
    *POST_CHANGES,
    POST_LIKED,
    POST_UNLIKED,
    COMMENT_CREATED,
    USER_FOLLOWED,
    USER_UNFOLLOWED,
    BLOG_FOLLOWED,
    BLOG_UNFOLLOWED,
    SUGGESTION_GENERATED,
    PROFILE_UPDATED,
    MESSAGE_SENT,
    name="blog-feed-cache",
)
async def renew_cached_answers(event: Event, context: ConsumerContext) -> None:
    """Renew at once: what the event describes is already committed, so no later read
    can see the state from before it."""
    feed_cache = feed_cache_of(context.kernel)
    audience = Audience(context.session)
    feeds: list[UUID] = []
    mes: list[UUID] = []
    if event.type in POST_CHANGES:
        changed = event.parse(PostChanged)
        feeds = await _post_audience(audience, changed.blog_id, changed.author_id)
    elif event.type in (POST_LIKED, POST_UNLIKED):
        liked = event.parse(PostLiked)
        feeds = [
            liked.user_id,
            *await _post_audience(audience, liked.blog_id, liked.post_author_id),
        ]
    elif event.type == COMMENT_CREATED:
        comment = event.parse(CommentCreated)
        post = await audience.post(comment.post_id)
        feeds = [comment.author_id]
        if post is not None:
            feeds += await _post_audience(audience, post.blog_id, post.author_id)
    elif event.type in (USER_FOLLOWED, USER_UNFOLLOWED):
        follow = event.parse(UserFollowed)
        feeds, mes = [follow.follower_id], [follow.follower_id, follow.followee_id]
    elif event.type in (BLOG_FOLLOWED, BLOG_UNFOLLOWED):
        feeds = [event.parse(BlogFollowed).user_id]
    elif event.type == SUGGESTION_GENERATED:
        feeds = [event.parse(SuggestionGenerated).user_id]
    elif event.type == PROFILE_UPDATED:
        profile = event.parse(ProfileUpdated)
        mes = [profile.user_id]
        if "suggestions_enabled" in profile.fields:
            feeds = [profile.user_id]
    elif event.type == MESSAGE_SENT:
        mes = list(event.parse(MessageSent).member_ids)
    await _renew(feed_cache, feeds, mes)


async def _renew(feed_cache: FeedCache, feeds: list[UUID], mes: list[UUID]) -> None:
    if feeds:
        await feed_cache.invalidate(FEED, feeds)
    if mes:
        await feed_cache.invalidate(ME, mes)


# -- blog-notifier -----------------------------------------------------------------------


@consumer(
    COMMENT_CREATED,
    POST_LIKED,
    USER_FOLLOWED,
    BLOG_FOLLOWED,
    SUGGESTION_GENERATED,
    name="blog-notifier",
)
async def notify(event: Event, context: ConsumerContext) -> None:
    session = context.session
    audience = Audience(session)
    row: Notification | None = None
    if event.type == COMMENT_CREATED:
        comment = event.parse(CommentCreated)
        post = await audience.post(comment.post_id)
        if post is not None and comment.post_author_id != comment.author_id:
            row = add_notification(
                session,
                comment.post_author_id,
                COMMENT,
                actor_id=await audience.existing_user(comment.author_id),
                post_id=post.id,
                data={"post_title": post.title, "comment_id": str(comment.comment_id)},
            )
    elif event.type == POST_LIKED:
        liked = event.parse(PostLiked)
        post = await audience.post(liked.post_id)
        if (
            post is not None
            and liked.post_author_id != liked.user_id
            and not await audience.unread_like(liked.post_author_id, liked.user_id, liked.post_id)
        ):
            row = add_notification(
                session,
                liked.post_author_id,
                LIKE,
                actor_id=await audience.existing_user(liked.user_id),
                post_id=post.id,
                data={"post_title": post.title},
            )
    elif event.type == USER_FOLLOWED:
        follow = event.parse(UserFollowed)
        if await audience.existing_user(follow.followee_id) is not None:
            row = add_notification(
                session,
                follow.followee_id,
                FOLLOWER,
                actor_id=await audience.existing_user(follow.follower_id),
            )
    elif event.type == BLOG_FOLLOWED:
        blog_follow = event.parse(BlogFollowed)
        blog = await audience.blog(blog_follow.blog_id)
        if blog is not None and blog.owner_id != blog_follow.user_id:
            row = add_notification(
                session,
                blog.owner_id,
                BLOG_FOLLOWER,
                actor_id=await audience.existing_user(blog_follow.user_id),
                data={"blog_slug": blog.slug},
            )
    elif event.type == SUGGESTION_GENERATED:
        suggestion = event.parse(SuggestionGenerated)
        if await audience.post(suggestion.post_id) is not None:
            row = add_notification(
                session,
                suggestion.user_id,
                SUGGESTION,
                post_id=suggestion.post_id,
                data={
                    "post_title": suggestion.post_title,
                    "reason": suggestion.reason,
                    "suggestion_id": str(suggestion.suggestion_id),
                },
            )
    if row is None:
        return
    await session.flush()
    frame = notification_read(row).model_dump(mode="json")
    feed_cache = feed_cache_of(context.kernel)
    feed_cache.invalidate_after_commit(session, ME, [row.user_id])
    push_after_commit(session, context.kernel, row.user_id, NOTIFICATION_FRAME, frame)


# -- blog-recommender --------------------------------------------------------------------


@consumer(*POST_LIFECYCLE, name="blog-recommender")
async def recommend_published(event: Event, context: ConsumerContext) -> None:
    kernel = context.kernel
    # A broker whose server cannot filter by several subjects may deliver other types.
    if event.type not in POST_LIFECYCLE or not kernel.settings.blog.suggestions_enabled:
        return
    changed = event.parse(PostChanged)
    if event.type != POST_PUBLISHED:
        await forget_post(kernel.ai, changed.post_id)
        return
    for row in await recommend(kernel, context.session, changed.post_id):
        push_after_commit(
            context.session,
            kernel,
            row.user_id,
            SUGGESTION_FRAME,
            {
                "id": str(row.id),
                "post_id": str(row.post_id),
                "post_title": changed.title,
                "reason": row.reason,
                "score": row.score,
                "created_at": row.created_at.isoformat(),
            },
        )


CONSUMERS = [renew_cached_answers, notify, recommend_published]
