"""The image pipeline: type from bytes, pixel cap, polyglots, metadata, variants."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from PIL import Image

from veche.kernel.storage import (
    ImageCorrupt,
    ImagePipeline,
    ImagePolyglot,
    ImageTooManyPixels,
    UnsupportedImageType,
    Variant,
    detect_type,
    process_image,
)

VARIANTS = (Variant("large", 1600), Variant("thumb", 320), Variant("square", 100, square=True))


def encoded(
    image_format: str, size: tuple[int, int] = (640, 480), mode: str = "RGB", **save: Any
) -> bytes:
    buffer = io.BytesIO()
    colours: dict[str, Any] = {"L": 128, "P": 5, "LA": (128, 255), "RGBA": (10, 20, 30, 255)}
    colour = colours.get(mode, (10, 20, 30, 40)[: len(mode)])
    Image.new(mode, size, colour).save(buffer, image_format, **save)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image_format", "mime"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_detects_accepted_types_from_bytes(image_format: str, mime: str) -> None:
    assert detect_type(encoded(image_format)) == mime


@pytest.mark.parametrize("image_format", ["BMP", "TIFF", "ICO", "PPM", "TGA"])
def test_other_image_types_are_refused_by_name(image_format: str) -> None:
    with pytest.raises(UnsupportedImageType, match=image_format[:3]):
        detect_type(encoded(image_format, (64, 64)))


def test_variants_fit_and_crop_without_enlarging() -> None:
    result = process_image(encoded("PNG", (2000, 1000)), VARIANTS, max_pixels=10**7)
    sizes = {output.name: (output.width, output.height) for output in result.outputs}
    assert sizes == {"large": (1600, 800), "thumb": (320, 160), "square": (100, 100)}
    small = process_image(encoded("PNG", (50, 40)), VARIANTS, max_pixels=10**7)
    assert {o.name: (o.width, o.height) for o in small.outputs} == {
        "large": (50, 40),
        "thumb": (50, 40),
        "square": (40, 40),
    }
    assert result.megapixels == 2.0
    assert result.seconds > 0


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK"])
def test_modes_become_webp(mode: str) -> None:
    image_format = "JPEG" if mode == "CMYK" else "PNG"
    result = process_image(encoded(image_format, (100, 100), mode), VARIANTS, max_pixels=10**7)
    for output in result.outputs:
        with Image.open(io.BytesIO(output.data)) as decoded:
            assert decoded.format == "WEBP"


def test_transparency_is_kept() -> None:
    image = Image.new("RGBA", (80, 80), (255, 0, 0, 0))
    image.paste((0, 255, 0, 255), (0, 0, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    result = process_image(buffer.getvalue(), VARIANTS, max_pixels=10**7)
    with Image.open(io.BytesIO(result.outputs[0].data)) as decoded:
        assert decoded.mode == "RGBA"


def test_metadata_never_reaches_the_output() -> None:
    exif = Image.Exif()
    exif[0x010F] = "LeakyCam"
    exif[0x8825] = {1: "N"}  # GPS IFD
    source = encoded(
        "JPEG", (300, 200), exif=exif.tobytes(), icc_profile=b"\0" * 128, comment=b"secret note"
    )
    result = process_image(source, VARIANTS, max_pixels=10**7)
    for output in result.outputs:
        assert b"LeakyCam" not in output.data
        assert b"secret note" not in output.data
        with Image.open(io.BytesIO(output.data)) as decoded:
            assert not decoded.getexif()
            assert not {"exif", "icc_profile", "xmp", "comment"} & set(decoded.info)


def test_animated_gif_keeps_its_first_frame() -> None:
    frames = [Image.new("RGB", (60, 40), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = process_image(buffer.getvalue(), VARIANTS, max_pixels=10**7)
    with Image.open(io.BytesIO(result.outputs[0].data)) as decoded:
        assert getattr(decoded, "n_frames", 1) == 1
        red, _, blue = decoded.convert("RGB").getpixel((5, 5))  # type: ignore[misc]
        assert red > 200
        assert blue < 50


def test_pixel_cap_is_checked_before_decoding() -> None:
    with pytest.raises(ImageTooManyPixels, match="limit is 1000000"):
        process_image(encoded("PNG", (2000, 1000), "L"), VARIANTS, max_pixels=1_000_000)
    process_image(encoded("PNG", (1000, 1000), "L"), VARIANTS, max_pixels=1_000_000)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (encoded("PNG") + b"<?php echo 1; ?>", ImagePolyglot),
        (encoded("JPEG") + b"PK\x05\x06" + b"\0" * 18, ImagePolyglot),
        (encoded("GIF") + b"/*", ImagePolyglot),
        (encoded("WEBP") + b"trailing", ImagePolyglot),
        (encoded("GIF", comment=b"<svg onload=alert(1)>"), ImagePolyglot),
        (encoded("JPEG")[:200], ImageCorrupt),
        (encoded("PNG")[:60], ImageCorrupt),
    ],
    ids=["png-php", "jpeg-zip", "gif-trailer", "webp-trailer", "gif-svg", "jpeg-cut", "png-cut"],
)
def test_refusals(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        process_image(data, VARIANTS, max_pixels=10**7)


def test_zero_padding_after_the_image_is_allowed() -> None:
    process_image(encoded("JPEG") + b"\0" * 64, VARIANTS, max_pixels=10**7)


async def test_the_pipeline_works_off_the_event_loop() -> None:
    pipeline = ImagePipeline(max_pixels=10**7, workers=1)
    seen: list[str] = []
    original = Image.Image.thumbnail

    def spy(self: Image.Image, *args: Any, **kwargs: Any) -> None:
        seen.append(threading.current_thread().name)
        original(self, *args, **kwargs)

    Image.Image.thumbnail = spy  # type: ignore[method-assign]
    try:
        result = await pipeline.process(encoded("PNG"), VARIANTS)
    finally:
        Image.Image.thumbnail = original  # type: ignore[method-assign]
        pipeline.close()
    assert len(result.outputs) == 3
    assert seen
    assert all(name.startswith("image") for name in seen)
    assert threading.main_thread().name not in seen


def test_large_jpegs_decode_smaller_but_report_their_own_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # a quarter turn to view
    source = encoded("JPEG", (4000, 2000), exif=exif.tobytes())
    result = process_image(source, VARIANTS, max_pixels=10**8)
    assert (result.width, result.height) == (2000, 4000)
    sizes = {output.name: (output.width, output.height) for output in result.outputs}
    assert sizes == {"large": (800, 1600), "thumb": (160, 320), "square": (100, 100)}
