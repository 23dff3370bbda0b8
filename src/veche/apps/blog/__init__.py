"""The blog app (Quark): public profiles, blogs with owners and authors, follows, posts
(draft, scheduled, published) with sanitized HTML, tags, attached images and their edit
history, comments, and image uploads converted to WebP through the kernel's storage.
Accounts are the kernel's; what the blog adds to a user lives in its own tables."""

from __future__ import annotations

from veche.apps.blog import runtime
from veche.apps.blog.jobs import publish_job, sweep_job
from veche.apps.blog.media_routes import router as media_router
from veche.apps.blog.post_routes import router as post_router
from veche.apps.blog.routes import router
from veche.contracts.blog import EVENTS
from veche.kernel import AppModule, Manifest

module = AppModule(
    name="blog",
    manifest=Manifest.from_package("veche.apps.blog"),
    routers=[router, post_router, media_router],
    events=EVENTS,
    jobs=[publish_job, sweep_job],
    on_startup=[runtime.start],
    on_shutdown=[runtime.stop],
    readiness={"blobs": runtime.blobs_ready},
)
