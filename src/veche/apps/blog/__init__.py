"""The blog app (Quark): public profiles, blogs with owners and authors, follows, posts
(draft, scheduled, published) with sanitized HTML, tags, attached images and their edit
history, comments, and image uploads converted to WebP through the kernel's storage, and the
messenger: direct and group conversations over HTTP and the kernel WebSocket, likes,
user follows, the feed, `/me`, notifications and AI suggestions made by event consumers.
Accounts are the kernel's; what the blog adds to a user lives in its own tables."""

from __future__ import annotations

from veche.apps.blog import caching, messaging_runtime, runtime
from veche.apps.blog.consumers import CONSUMERS
from veche.apps.blog.feed_routes import router as feed_router
from veche.apps.blog.jobs import publish_job, sweep_job
from veche.apps.blog.media_routes import router as media_router
from veche.apps.blog.messaging_channel import CONVERSATION_POLICY
from veche.apps.blog.messaging_routes import router as messaging_router
from veche.apps.blog.post_routes import router as post_router
from veche.apps.blog.routes import router
from veche.apps.blog.social_routes import router as social_router
from veche.apps.blog.web_routes import router as web_router
from veche.contracts.blog import EVENTS
from veche.kernel import AppModule, Manifest

module = AppModule(
    name="blog",
    manifest=Manifest.from_package("veche.apps.blog"),
    routers=[
        router,
        post_router,
        media_router,
        messaging_router,
        social_router,
        feed_router,
        web_router,
    ],
    events=EVENTS,
    jobs=[publish_job, sweep_job],
    on_startup=[runtime.start, messaging_runtime.start, caching.start],
    on_shutdown=[caching.stop, messaging_runtime.stop, runtime.stop],
    readiness={"blobs": runtime.blobs_ready, "cache": caching.cache_ready},
    consumers=CONSUMERS,
    channel_policies={"conversation:": CONVERSATION_POLICY},
)
