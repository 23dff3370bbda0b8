"""The image pipeline: accept only real images, then re-encode them as clean WebP.

The type comes from the bytes (Pillow's identification, restricted to JPEG, PNG, WebP and
GIF), never from a file name or a declared content type. Before any pixel is decoded the
header's dimensions are held against a pixel cap, so a small file that would inflate to
gigabytes (a decompression bomb) is refused. A file that is an image and something else
at once (markup inside, bytes after the image's end: a polyglot) is refused too. What
passes is decoded, turned upright by its EXIF orientation and written out as new WebP
images with no metadata at all (EXIF, XMP, ICC, comments), in the sizes asked for. The
work runs on a small thread pool of its own: Pillow releases the GIL while it decodes
and encodes, and the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from veche.kernel.storage.errors import (
    ImageCorrupt,
    ImagePolyglot,
    ImageTooManyPixels,
    UnsupportedImageType,
)

ACCEPTED_TYPES: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
WEBP = "image/webp"
# Text that never belongs in an image and makes it a document a browser or server might
# run when it is served or sniffed as something else.
_MARKUP = (
    b"<script",
    b"<html",
    b"<?php",
    b"<svg",
    b"<!doctype",
    b"<iframe",
    b"<object",
    b"<embed",
    b"<body",
    b"javascript:",
)


@dataclass(frozen=True, slots=True)
class Variant:
    """One output: fitted inside `size` x `size`, or cropped to a centred square."""

    name: str
    size: int
    square: bool = False


@dataclass(frozen=True, slots=True)
class ImageOutput:
    name: str
    data: bytes
    width: int
    height: int
    content_type: str = WEBP


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    source_type: str
    width: int
    height: int
    outputs: tuple[ImageOutput, ...]
    seconds: float

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1_000_000


def detect_type(data: bytes) -> str:
    """The MIME type of an accepted image format, from the bytes alone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(ACCEPTED_TYPES)) as image:
                image_format = image.format or ""
    except UnidentifiedImageError:
        raise UnsupportedImageType(_unsupported_detail(data)) from None
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageCorrupt("The image header is damaged") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooManyPixels("The image's dimensions are far beyond any limit") from exc
    if image_format not in ACCEPTED_TYPES:
        raise UnsupportedImageType(_unsupported_detail(data))
    return ACCEPTED_TYPES[image_format]


def _unsupported_detail(data: bytes) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                found = image.format
    except Exception:  # anything Pillow cannot name is simply "not an image"
        found = None
    if found:
        return f"{found} images are not accepted; send JPEG, PNG, WebP or GIF"
    return "The file is not an image; send JPEG, PNG, WebP or GIF"


def check_not_polyglot(data: bytes, content_type: str) -> None:
    """Refuse markup anywhere in the file and any bytes after the image's end."""
    lowered = data.lower()
    for marker in _MARKUP:
        if marker in lowered:
            shown = marker.decode()
            raise ImagePolyglot(f"The file contains {shown!r}, which no image needs")
    end = _image_end(data, content_type)
    trailing = data[end:]
    if trailing.strip(b"\x00"):
        raise ImagePolyglot(f"{len(trailing)} bytes follow the end of the image")


def _image_end(data: bytes, content_type: str) -> int:
    try:
        if content_type == "image/png":
            return _png_end(data)
        if content_type == "image/jpeg":
            return _jpeg_end(data)
        if content_type == "image/gif":
            return _gif_end(data)
        return _webp_end(data)
    except (IndexError, struct.error) as exc:
        raise ImageCorrupt("The image's structure is damaged") from exc


def _png_end(data: bytes) -> int:
    position = 8
    while True:
        length = int(struct.unpack_from(">I", data, position)[0])
        kind = data[position + 4 : position + 8]
        position += 12 + length
        if kind == b"IEND":
            return position
        if position > len(data):
            raise IndexError("chunk past the end")


def _jpeg_end(data: bytes) -> int:
    position = 2  # after SOI
    size = len(data)
    while position < size:
        if data[position] != 0xFF:
            raise IndexError("expected a marker")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:
            return position + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
            continue
        length = int(struct.unpack_from(">H", data, position + 2)[0])
        position += 2 + length
        if marker == 0xDA:  # entropy-coded data runs to the next real marker
            while True:
                position = data.index(b"\xff", position)
                following = data[position + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    position += 2
                    continue
                if following == 0xFF:
                    position += 1
                    continue
                break
    raise IndexError("no end of image")


def _gif_sub_blocks(data: bytes, position: int) -> int:
    while True:
        length = data[position]
        position += 1 + length
        if length == 0:
            return position


def _gif_end(data: bytes) -> int:
    flags = data[10]
    position = 13
    if flags & 0x80:
        position += 3 * (2 ** ((flags & 0x07) + 1))
    while True:
        introducer = data[position]
        if introducer == 0x3B:
            return position + 1
        if introducer == 0x21:  # extension: label, then sub-blocks
            position = _gif_sub_blocks(data, position + 2)
        elif introducer == 0x2C:  # image descriptor, local colour table, LZW data
            local = data[position + 9]
            position += 10
            if local & 0x80:
                position += 3 * (2 ** ((local & 0x07) + 1))
            position = _gif_sub_blocks(data, position + 1)
        else:
            raise IndexError("unknown GIF block")


def _webp_end(data: bytes) -> int:
    length = int(struct.unpack_from("<I", data, 4)[0])
    return 8 + length + (length & 1)


def _upright(image: Image.Image) -> Image.Image:
    """The first frame, turned by its EXIF orientation, in a mode WebP can hold."""
    upright = ImageOps.exif_transpose(image) or image
    has_alpha = upright.mode in {"RGBA", "LA", "PA"} or (
        upright.mode == "P" and "transparency" in upright.info
    )
    converted = upright.convert("RGBA" if has_alpha else "RGB")
    # A fresh image: nothing of the source's metadata (EXIF, XMP, ICC, comments) follows.
    clean = Image.new(converted.mode, converted.size)
    clean.paste(converted)
    return clean


def _render(base: Image.Image, variant: Variant, quality: int) -> ImageOutput:
    if variant.square:
        side = min(variant.size, base.width, base.height)
        resized = ImageOps.fit(base, (side, side), Image.Resampling.LANCZOS)
    else:
        resized = base.copy()
        resized.thumbnail((variant.size, variant.size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.save(buffer, "WEBP", quality=quality, method=4)
    return ImageOutput(variant.name, buffer.getvalue(), resized.width, resized.height)


def _decode_smaller(image: Image.Image, variants: Sequence[Variant]) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale (nearly free) when even the largest
    variant needs no more: a 12-megapixel photo then decodes and resizes in a fraction of
    the time. Never below what any variant needs, so no output is enlarged."""
    fitted = [variant.size for variant in variants if not variant.square]
    squares = [variant.size for variant in variants if variant.square]
    ratios = [max(image.size) / max(fitted)] if fitted else []
    ratios += [min(image.size) / max(squares)] if squares else []
    ratio = min(ratios, default=1.0)
    if ratio >= 2:
        image.draft(None, (math.ceil(image.width / ratio), math.ceil(image.height / ratio)))


def process_image(
    data: bytes, variants: Sequence[Variant], *, max_pixels: int, quality: int = 80
) -> ProcessedImage:
    """Check the bytes and render every variant (synchronous: run it in a thread)."""
    started = time.perf_counter()
    content_type = detect_type(data)
    check_not_polyglot(data, content_type)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns below its hard limit; ours decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(ACCEPTED_TYPES)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageTooManyPixels(
                        f"The image is {width}x{height} ({width * height} pixels); "
                        f"the limit is {max_pixels} pixels"
                    )
                if image.format == "JPEG":
                    _decode_smaller(image, variants)
                image.load()
                decoded = image.size
                base = _upright(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooManyPixels("The image's dimensions are far beyond any limit") from exc
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise ImageCorrupt("The image could not be decoded") from exc
    outputs = tuple(_render(base, variant, quality) for variant in variants)
    # The source's own size, upright (the orientation may have turned it a quarter).
    if base.size != decoded:
        width, height = height, width
    return ProcessedImage(
        source_type=content_type,
        width=width,
        height=height,
        outputs=outputs,
        seconds=time.perf_counter() - started,
    )


class ImagePipeline:
    """`process_image` on a bounded pool of threads: at most `workers` images at once."""

    def __init__(self, *, max_pixels: int, quality: int = 80, workers: int = 2) -> None:
        self.max_pixels = max_pixels
        self.quality = quality
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image")

    async def process(self, data: bytes, variants: Sequence[Variant]) -> ProcessedImage:
        """Check and render the image off the event loop; raises the storage problems."""
        loop = asyncio.get_running_loop()

        def work() -> ProcessedImage:
            return process_image(data, variants, max_pixels=self.max_pixels, quality=self.quality)

        return await loop.run_in_executor(self._executor, work)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
