"""`/api/v1/blog/media/*`: image uploads, their metadata, their bytes (with a strong
ETag and a year of immutable caching: a media id and variant name always mean the same
bytes) and deleting them (the uploader only)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Path, Request, Response, status

from veche.apps.blog.errors import MediaNotFound
from veche.apps.blog.media import MediaService, find_media
from veche.apps.blog.schemas import MediaRead
from veche.apps.blog.views import Runtime, media_read
from veche.kernel import DbSession, KernelDep, api_router, problem_openapi, rate_limit
from veche.kernel.identity import CurrentUser
from veche.kernel.storage import UPLOAD_BODY_CEILING, WEBP, BlobNotFound, receive_file

router = api_router(tags=["blog"], dependencies=[Depends(rate_limit("default"))])

IMMUTABLE = "public, max-age=31536000, immutable"
VariantName = Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[a-z0-9]+$")]
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


async def media_service(session: DbSession, user: CurrentUser, runtime: Runtime) -> MediaService:
    return MediaService(session, user.id, runtime)


Media = Annotated[MediaService, Depends(media_service)]


@router.post(
    "/media",
    status_code=status.HTTP_201_CREATED,
    response_model=MediaRead,
    responses=problem_openapi(400, 401, 413, 415),
    dependencies=[Depends(rate_limit("blog_media"))],
    max_body_size=UPLOAD_BODY_CEILING,
    openapi_extra=UPLOAD_BODY,
    summary="Upload an image (multipart field `file`): JPEG, PNG, WebP or GIF, stored as WebP",
)
async def upload_media(
    request: Request, kernel: KernelDep, media: Media, runtime: Runtime
) -> MediaRead:
    upload = await receive_file(request, max_bytes=kernel.settings.storage.max_upload_bytes)
    return media_read(await media.upload(upload.data), runtime)


@router.get(
    "/media/{media_id}",
    response_model=MediaRead,
    responses=problem_openapi(404),
    summary="An uploaded image's sizes and variant URLs",
)
async def get_media(media_id: UUID, session: DbSession, runtime: Runtime) -> MediaRead:
    return media_read(await find_media(session, media_id), runtime)


@router.get(
    "/media/{media_id}/{variant}",
    response_class=Response,
    responses={
        200: {"content": {WEBP: {}}, "description": "The image"},
        304: {"description": "Not modified"},
        **problem_openapi(404),
    },
    summary="The bytes of one variant (WebP), cacheable forever",
)
async def get_media_bytes(
    media_id: UUID, variant: VariantName, request: Request, session: DbSession, runtime: Runtime
) -> Response:
    found = await find_media(session, media_id)
    item = found.variants.get(variant)
    if item is None:
        names = ", ".join(sorted(found.variants))
        raise MediaNotFound(f"Media {media_id} has no variant {variant!r}; it has {names}")
    etag = str(item["etag"])
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    if _matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    try:
        data = await runtime.blobs.get(str(item["key"]))
    except BlobNotFound as exc:  # deleted in the meantime
        raise MediaNotFound(f"There is no media {media_id}") from exc
    return Response(content=data, media_type=WEBP, headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    return etag in {part.strip().removeprefix("W/") for part in if_none_match.split(",")}


@router.delete(
    "/media/{media_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 403, 404),
    summary="Delete your upload (it leaves every post it was attached to)",
)
async def delete_media(media_id: UUID, media: Media) -> Response:
    await media.delete(media_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
