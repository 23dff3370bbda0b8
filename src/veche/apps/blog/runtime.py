"""The blog app's per-process runtime: the image pipeline and the blob deletions that
follow committed transactions, built by the startup hook into `kernel.apps["blog"]`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from veche.kernel import Kernel
from veche.kernel.db import on_outcome
from veche.kernel.storage import BlobStore, ImagePipeline

log = structlog.get_logger("veche.blog")

APP = "blog"


@dataclass(slots=True)
class BlogRuntime:
    blobs: BlobStore
    images: ImagePipeline
    # Job name -> when this process last ran it (time.monotonic()).
    last_runs: dict[str, float] = field(default_factory=dict)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    async def delete_blobs(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                await self.blobs.delete(key)
            except Exception:  # the orphan sweep cannot see it; say so
                log.exception("blob_delete_failed", key=key)

    def _spawn(self, keys: Sequence[str]) -> None:
        task = asyncio.get_running_loop().create_task(self.delete_blobs(list(keys)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def delete_after_commit(self, session: AsyncSession, keys: Sequence[str]) -> None:
        """The blobs go once the rows that name them are gone for good."""
        on_outcome(session, committed=lambda: self._spawn(keys))

    def delete_after_rollback(self, session: AsyncSession, keys: Sequence[str]) -> None:
        """Blobs written for rows that never commit are removed again."""
        on_outcome(session, rolled_back=lambda: self._spawn(keys))

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


async def start(kernel: Kernel) -> None:
    storage = kernel.settings.storage
    kernel.apps[APP] = BlogRuntime(
        blobs=kernel.blobs,
        images=ImagePipeline(
            max_pixels=storage.max_image_pixels,
            quality=storage.webp_quality,
            workers=storage.image_workers,
        ),
    )


async def stop(kernel: Kernel) -> None:
    runtime = kernel.apps.pop(APP, None)
    if isinstance(runtime, BlogRuntime):
        await runtime.drain()
        runtime.images.close()


def runtime_of(kernel: Kernel) -> BlogRuntime:
    runtime = kernel.apps.get(APP)
    if not isinstance(runtime, BlogRuntime):
        raise RuntimeError("the blog app is not started in this process")
    return runtime


async def blobs_ready(kernel: Kernel) -> None:
    await kernel.blobs.check()
