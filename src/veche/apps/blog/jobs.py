"""Scheduled work of the blog app: publishing scheduled posts when their time comes, and
deleting uploads that were never attached to anything."""

from __future__ import annotations

import datetime as dt
import time

import structlog

from veche.apps.blog.media import blob_keys
from veche.apps.blog.posts import post_changed
from veche.apps.blog.repository import PostWrites, PublicQueries, SystemQueries
from veche.apps.blog.runtime import runtime_of
from veche.contracts.blog import POST_PUBLISHED
from veche.kernel import Kernel, ScheduledJob, utcnow
from veche.kernel.events import emit

log = structlog.get_logger("veche.blog.jobs")

BATCH = 100


async def publish_scheduled_posts(kernel: Kernel, at: dt.datetime | None = None) -> int:
    """Publish every scheduled post whose time has come (by `at`, default now); the
    number published."""
    published = 0
    while True:
        async with kernel.db.unit_of_work() as session:
            now = at or utcnow()
            system = SystemQueries(session)
            due = await system.due_posts(now, BATCH)
            writes = PostWrites(session)
            for post_id in due:
                # One conditional UPDATE each: an edit that unscheduled the post wins.
                if not await writes.publish_if_scheduled(post_id, now):
                    continue
                post = await system.post(post_id)
                blog = await PublicQueries(session).blog_by_id(post.blog_id) if post else None
                if post is None or blog is None:
                    continue
                await emit(
                    session,
                    POST_PUBLISHED,
                    post_changed(post, blog.slug),
                    subject=str(post.id),
                    actor_id=post.author_id,
                )
                published += 1
        if len(due) < BATCH:
            break
    if published:
        log.info("scheduled_posts_published", count=published)
    return published


async def sweep_orphaned_media(kernel: Kernel) -> int:
    """Delete uploads attached to no post or profile for longer than the grace period."""
    runtime = runtime_of(kernel)
    cut_off = utcnow() - dt.timedelta(hours=kernel.settings.blog.orphan_media_hours)
    removed = 0
    while True:
        async with kernel.db.unit_of_work() as session:
            orphans = await SystemQueries(session).orphaned_media(cut_off, BATCH)
            keys = [key for media in orphans for key in blob_keys(media)]
            for media in orphans:
                await session.delete(media)
        # After the commit: a rollback keeps rows and their blobs together.
        await runtime.delete_blobs(keys)
        removed += len(orphans)
        if len(orphans) < BATCH:
            break
    if removed:
        log.info("orphaned_media_removed", count=removed)
    return removed


def _due(kernel: Kernel, name: str, every_seconds: float) -> bool:
    """Whether this process last ran `name` at least `every_seconds` ago (the jobs tick
    at a fixed rate; the settings say how often they really work)."""
    runtime = runtime_of(kernel)
    now = time.monotonic()
    last = runtime.last_runs.get(name)
    if last is not None and now - last < every_seconds:
        return False
    runtime.last_runs[name] = now
    return True


async def _publish_tick(kernel: Kernel) -> None:
    if _due(kernel, "publish", kernel.settings.blog.publish_interval_seconds):
        await publish_scheduled_posts(kernel)


async def _sweep_tick(kernel: Kernel) -> None:
    if _due(kernel, "sweep", kernel.settings.blog.orphan_sweep_interval_seconds):
        await sweep_orphaned_media(kernel)


publish_job = ScheduledJob(
    name="blog.publish_scheduled_posts", interval=dt.timedelta(seconds=5), run=_publish_tick
)
sweep_job = ScheduledJob(
    name="blog.sweep_orphaned_media", interval=dt.timedelta(seconds=60), run=_sweep_tick
)
