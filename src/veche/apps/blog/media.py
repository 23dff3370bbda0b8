"""Media: uploads checked and converted by the kernel's image pipeline, their WebP
variants stored as blobs, the rows that name them, and their deletion."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.errors import MediaNotFound, NotMediaOwner
from veche.apps.blog.models import Media
from veche.apps.blog.repository import PublicQueries
from veche.apps.blog.runtime import BlogRuntime
from veche.contracts.blog import MEDIA_UPLOADED, MediaUploaded
from veche.kernel import new_id
from veche.kernel.events import emit
from veche.kernel.storage import Variant

IMAGE = "image"
AVATAR = "avatar"
# Post images: fitted into these boxes, never enlarged; `thumb` is the preview.
IMAGE_VARIANTS = (Variant("large", 1600), Variant("medium", 800), Variant("thumb", 320))
# Avatars: centred square crops.
AVATAR_VARIANTS = (Variant("s256", 256, True), Variant("s128", 128, True), Variant("s64", 64, True))
VARIANTS = {IMAGE: IMAGE_VARIANTS, AVATAR: AVATAR_VARIANTS}


async def find_media(session: AsyncSession, media_id: UUID) -> Media:
    media = await PublicQueries(session).media(media_id)
    if media is None:
        raise MediaNotFound(f"There is no media {media_id}")
    return media


def blob_keys(media: Media) -> list[str]:
    return [str(variant["key"]) for variant in media.variants.values()]


class MediaService:
    def __init__(self, session: AsyncSession, user_id: UUID, runtime: BlogRuntime) -> None:
        self.session = session
        self.user_id = user_id
        self.runtime = runtime
        self.public = PublicQueries(session)

    async def upload(self, data: bytes, kind: str = IMAGE) -> Media:
        """Check, convert and store the image; nothing is stored if any step refuses it."""
        processed = await self.runtime.images.process(data, VARIANTS[kind])
        media_id = new_id()
        variants: dict[str, dict[str, object]] = {}
        written: list[str] = []
        try:
            for output in processed.outputs:
                key = f"blog/media/{media_id}/{output.name}.webp"
                stored = await self.runtime.blobs.put(key, output.data, output.content_type)
                written.append(key)
                variants[output.name] = {
                    "key": key,
                    "width": output.width,
                    "height": output.height,
                    "size": stored.size,
                    "etag": stored.etag,
                }
        except BaseException:
            await self.runtime.delete_blobs(written)
            raise
        self.runtime.delete_after_rollback(self.session, written)
        media = Media(
            id=media_id,
            owner_id=self.user_id,
            kind=kind,
            source_type=processed.source_type,
            width=processed.width,
            height=processed.height,
            variants=variants,
        )
        self.session.add(media)
        await emit(
            self.session,
            MEDIA_UPLOADED,
            MediaUploaded(
                media_id=media_id,
                owner_id=self.user_id,
                kind=kind,
                width=processed.width,
                height=processed.height,
                variants=list(variants),
            ),
            subject=str(media_id),
            actor_id=self.user_id,
        )
        await self.session.flush()
        return media

    async def delete(self, media_id: UUID) -> None:
        media = await find_media(self.session, media_id)
        if media.owner_id != self.user_id:
            raise NotMediaOwner("Only the user who uploaded it may delete this media")
        await self.discard(media)

    async def discard(self, media: Media) -> None:
        """Delete the row now and its blobs once the deletion commits."""
        keys = blob_keys(media)
        await self.session.delete(media)
        await self.session.flush()
        self.runtime.delete_after_commit(self.session, keys)
