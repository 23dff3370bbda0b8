"""Receiving one file from a multipart/form-data request, within a byte limit.

The limit is held three times: against the declared `Content-Length` before anything is
read, against the bytes as they arrive (a body without a length, or one that lies about
it, is cut off at the limit), and against the file itself. The declared file name and
content type are kept only as information: what a file is comes from its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from veche.kernel.storage.errors import (
    UploadMalformed,
    UploadMissing,
    UploadNotMultipart,
    UploadTooLarge,
)

# Room for the multipart framing and a few small text fields around the file.
MULTIPART_OVERHEAD = 64 * 1024
# Routes that take uploads raise the app-wide body limit to this; the settings' own
# upload limit (at most 200 MiB) is then enforced by `receive_file`.
UPLOAD_BODY_CEILING = 200 * 1024 * 1024 + MULTIPART_OVERHEAD


@dataclass(frozen=True, slots=True)
class Upload:
    data: bytes
    filename: str | None
    declared_type: str | None


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(f"The file exceeds the limit of {limit} bytes")


async def receive_file(request: Request, *, max_bytes: int, field: str = "file") -> Upload:
    """The bytes of the form field `field`; problems for anything else."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        shown = content_type or "no content type"
        raise UploadNotMultipart(f"Send the file as multipart/form-data, not {shown}")
    body_limit = max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise _too_large(max_bytes)

    received = 0
    upstream = request.receive

    async def counted() -> Message:
        nonlocal received
        message = await upstream()
        received += len(message.get("body", b""))
        if received > body_limit:
            raise _too_large(max_bytes)
        return message

    limited = Request(request.scope, counted)
    try:
        form = await limited.form(max_files=1, max_fields=8, max_part_size=16 * 1024)
    except HTTPException as exc:
        raise UploadMalformed(str(exc.detail)) from exc
    try:
        item = form.get(field)
        if not isinstance(item, UploadFile):
            raise UploadMissing(f"Put the file in the multipart field {field!r}")
        data = await item.read()
        if len(data) > max_bytes:
            raise _too_large(max_bytes)
        if not data:
            raise UploadMissing("The file is empty")
        return Upload(data=data, filename=item.filename, declared_type=item.content_type)
    finally:
        await form.close()
