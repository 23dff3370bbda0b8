"""Uploads: only real images in, clean WebP out; everything refused leaves nothing behind."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.apps.blog.conftest import (
    BLOG_LIMITS,
    PREFIX,
    Caller,
    count_rows,
    create_blog,
    create_post,
    events_of,
    files,
    image_bytes,
    jpeg_with_exif,
    stored_blobs,
    upload,
)
from tests.conftest import client_for
from tests.helpers import assert_problem
from veche.apps.blog import module as blog_module
from veche.apps.blog.jobs import sweep_job, sweep_orphaned_media
from veche.apps.blog.models import Media
from veche.settings import Settings, StorageSettings


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header for a huge grey image whose data compresses to almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * width
    data = b"".join(compressor.compress(row) for _ in range(200)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def png_with_text(text: str) -> bytes:
    """A valid PNG carrying `text` in a tEXt chunk (where web shells hide)."""
    info = PngInfo()
    info.add_text("Comment", text)
    return image_bytes("PNG", pnginfo=info)


REFUSED_UPLOADS: list[tuple[str, bytes, str, int, str]] = [
    ("text", b"just some words, not an image", "a.png", 415, "storage.unsupported_image_type"),
    (
        "html",
        b"<html><script>alert(1)</script></html>",
        "a.jpg",
        415,
        "storage.unsupported_image_type",
    ),
    ("pdf", b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", "a.png", 415, "storage.unsupported_image_type"),
    ("bmp", image_bytes("BMP"), "a.png", 415, "storage.unsupported_image_type"),
    ("tiff", image_bytes("TIFF"), "a.png", 415, "storage.unsupported_image_type"),
    (
        "gif-with-script",
        image_bytes("GIF") + b"<script>alert(document.cookie)</script>",
        "a.gif",
        415,
        "storage.image_polyglot",
    ),
    (
        "jpeg-with-zip",
        image_bytes("JPEG") + b"PK\x03\x04\x14\x00\x00\x00payload.jsp",
        "a.jpg",
        415,
        "storage.image_polyglot",
    ),
    (
        "png-with-php-text",
        png_with_text("<?php system($_GET['c']); ?>"),
        "a.png",
        415,
        "storage.image_polyglot",
    ),
    (
        "png-with-html-text",
        png_with_text("<html><body onload=x>"),
        "a.png",
        415,
        "storage.image_polyglot",
    ),
    ("truncated-png", image_bytes("PNG", (300, 300))[:120], "a.png", 422, "storage.image_corrupt"),
    ("bomb", png_bomb(), "bomb.png", 422, "storage.image_too_many_pixels"),
]


@pytest.mark.parametrize(
    ("data", "name", "status", "code"),
    [case[1:] for case in REFUSED_UPLOADS],
    ids=[case[0] for case in REFUSED_UPLOADS],
)
async def test_refused_uploads_store_nothing(
    http: httpx.AsyncClient,
    blog_app: FastAPI,
    blog_settings: Settings,
    ann: Caller,
    data: bytes,
    name: str,
    status: int,
    code: str,
) -> None:
    response = await http.post(
        f"{PREFIX}/media", files=files(data, name, "image/png"), headers=ann.headers
    )
    body = assert_problem(response, status, code)
    assert body["detail"]
    assert await count_rows(blog_app, Media) == 0
    assert stored_blobs(blog_settings) == []
    assert await events_of(blog_app, "blog.media.uploaded") == []


async def test_oversized_upload_is_refused_before_it_is_read(
    app_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(
        rate_limits=BLOG_LIMITS, storage=StorageSettings(max_upload_bytes=50_000)
    )
    app = await app_factory(settings, [blog_module])
    async with client_for(app) as http:
        from tests.apps.blog.conftest import sign_up

        ann = await sign_up(http, "ann@example.com", "Ann")
        big = image_bytes("BMP", (400, 400))  # ~480 KB: over the limit whatever it is
        response = await http.post(
            f"{PREFIX}/media", files=files(big, "big.png"), headers=ann.headers
        )
        assert_problem(response, 413, "storage.upload_too_large")

        # A body without a length, streamed past the limit, is cut off too.
        async def chunks() -> Any:
            boundary = b"--b\r\n"
            yield (
                boundary + b'Content-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
            )
            for _ in range(40):
                yield b"\x00" * 4096
            yield b"\r\n--b--\r\n"

        response = await http.post(
            f"{PREFIX}/media",
            content=chunks(),
            headers={**ann.headers, "content-type": "multipart/form-data; boundary=b"},
        )
        assert_problem(response, 413, "storage.upload_too_large")
        assert await count_rows(app, Media) == 0
        assert stored_blobs(settings) == []


async def test_malformed_requests(http: httpx.AsyncClient, ann: Caller) -> None:
    not_multipart = await http.post(
        f"{PREFIX}/media",
        content=image_bytes(),
        headers={**ann.headers, "content-type": "image/png"},
    )
    assert_problem(not_multipart, 415, "storage.upload_not_multipart")
    as_json = await http.post(f"{PREFIX}/media", json={"file": "x"}, headers=ann.headers)
    assert_problem(as_json, 415, "storage.upload_not_multipart")
    wrong_field = await http.post(
        f"{PREFIX}/media",
        files={"image": ("a.png", image_bytes(), "image/png")},
        headers=ann.headers,
    )
    assert_problem(wrong_field, 422, "storage.upload_missing")
    empty = await http.post(f"{PREFIX}/media", files=files(b""), headers=ann.headers)
    assert_problem(empty, 422, "storage.upload_missing")
    broken = await http.post(
        f"{PREFIX}/media",
        content=b"--zz\r\nnot a part",
        headers={**ann.headers, "content-type": "multipart/form-data; boundary=b"},
    )
    assert_problem(broken, 400, "storage.upload_malformed")
    two_files = await http.post(
        f"{PREFIX}/media",
        files=[
            ("file", ("a.png", image_bytes(), "image/png")),
            ("file", ("b.png", image_bytes(), "image/png")),
        ],
        headers=ann.headers,
    )
    assert_problem(two_files, 400, "storage.upload_malformed")
    no_boundary = await http.post(
        f"{PREFIX}/media",
        content=b"x",
        headers={**ann.headers, "content-type": "multipart/form-data"},
    )
    assert_problem(no_boundary, 400, "storage.upload_malformed")
    unauthenticated = await http.post(f"{PREFIX}/media", files=files(image_bytes()))
    assert_problem(unauthenticated, 401, "unauthorized")


async def test_type_comes_from_the_bytes_not_the_name(http: httpx.AsyncClient, ann: Caller) -> None:
    # A GIF called .txt with a lying content type is a GIF.
    response = await http.post(
        f"{PREFIX}/media",
        files=files(image_bytes("GIF"), "notes.txt", "text/plain"),
        headers=ann.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["source_type"] == "image/gif"


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF"])
async def test_accepted_formats_come_back_as_webp_variants(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, image_format: str
) -> None:
    media = await upload(http, ann, image_bytes(image_format, (2400, 1200)))
    assert media["content_type"] == "image/webp"
    assert (media["width"], media["height"]) == (2400, 1200)
    sizes = {name: (item["width"], item["height"]) for name, item in media["variants"].items()}
    assert sizes == {"large": (1600, 800), "medium": (800, 400), "thumb": (320, 160)}
    for name, item in media["variants"].items():
        response = await http.get(item["url"])
        assert response.status_code == 200, name
        with Image.open(io.BytesIO(response.content)) as decoded:
            assert decoded.format == "WEBP"
            assert decoded.size == sizes[name]
    uploaded = await events_of(blog_app, "blog.media.uploaded")
    assert [event["media_id"] for event in uploaded] == [media["id"]]


async def test_exif_and_metadata_are_stripped(http: httpx.AsyncClient, ann: Caller) -> None:
    source = jpeg_with_exif()
    assert b"LeakyCam" in source
    media = await upload(http, ann, source)
    for item in media["variants"].values():
        data = (await http.get(item["url"])).content
        for secret in (b"LeakyCam", b"SecretSoftware", b"Copyright", b"Exif", b"XMP"):
            assert secret not in data
        with Image.open(io.BytesIO(data)) as decoded:
            assert not decoded.getexif()
            assert not {"exif", "xmp", "icc_profile"} & set(decoded.info)


async def test_exif_orientation_is_applied_before_it_is_dropped(
    http: httpx.AsyncClient, ann: Caller
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    media = await upload(http, ann, image_bytes("JPEG", (400, 200), exif=exif.tobytes()))
    assert (media["width"], media["height"]) == (200, 400)


async def test_bytes_are_cacheable_forever_with_etags(http: httpx.AsyncClient, ann: Caller) -> None:
    media = await upload(http, ann)
    url = media["variants"]["thumb"]["url"]
    first = await http.get(url)
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert first.headers["x-content-type-options"] == "nosniff"
    etag = first.headers["etag"]
    again = await http.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert (await http.get(url, headers={"If-None-Match": '"other"'})).status_code == 200
    assert_problem(
        await http.get(f"{PREFIX}/media/{media['id']}/huge"), 404, "blog.media_not_found"
    )
    assert_problem(
        await http.get(f"{PREFIX}/media/{media['id']}/BAD..name"), 422, "validation_failed"
    )


async def test_only_the_owner_deletes_media(
    http: httpx.AsyncClient,
    blog_app: FastAPI,
    blog_settings: Settings,
    ann: Caller,
    bob: Caller,
) -> None:
    await create_blog(http, ann)
    media = await upload(http, ann)
    post = await create_post(http, ann, media_ids=[media["id"]], state="published")
    assert_problem(
        await http.delete(f"{PREFIX}/media/{media['id']}", headers=bob.headers),
        403,
        "blog.not_media_owner",
    )
    assert_problem(await http.delete(f"{PREFIX}/media/{media['id']}"), 401, "unauthorized")
    assert len(stored_blobs(blog_settings)) == 3

    response = await http.delete(f"{PREFIX}/media/{media['id']}", headers=ann.headers)
    assert response.status_code == 204
    await blog_app.state.kernel.apps["blog"].drain()
    assert stored_blobs(blog_settings) == []
    assert_problem(await http.get(f"{PREFIX}/media/{media['id']}"), 404, "blog.media_not_found")
    # The post stays, without the image.
    assert (await http.get(f"{PREFIX}/posts/{post['id']}")).json()["media"] == []
    assert_problem(
        await http.delete(f"{PREFIX}/media/{media['id']}", headers=ann.headers),
        404,
        "blog.media_not_found",
    )


async def test_attaching_someone_elses_media_is_refused(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    await create_blog(http, ann)
    theirs = await upload(http, bob)
    response = await http.post(
        f"{PREFIX}/posts",
        json={"blog": "lighthouse", "title": "Borrowed", "media_ids": [theirs["id"]]},
        headers=ann.headers,
    )
    assert_problem(response, 422, "blog.media_not_usable")


async def test_orphaned_uploads_are_swept_after_the_grace_period(
    app_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    from veche.settings import BlogSettings

    settings = settings_factory(
        rate_limits=BLOG_LIMITS, blog=BlogSettings(orphan_media_hours=0.0001)
    )
    app = await app_factory(settings, [blog_module])
    async with client_for(app) as http:
        from tests.apps.blog.conftest import sign_up

        ann = await sign_up(http, "ann@example.com", "Ann")
        await create_blog(http, ann)
        orphan = await upload(http, ann)
        attached = await upload(http, ann)
        await create_post(http, ann, media_ids=[attached["id"]])
        avatar = await http.put(
            f"{PREFIX}/users/me/avatar", files=files(image_bytes()), headers=ann.headers
        )
        assert avatar.status_code == 200
        kernel = app.state.kernel
        import asyncio

        await asyncio.sleep(0.5)  # past the 0.36 s grace period
        assert await sweep_orphaned_media(kernel) == 1
        assert_problem(
            await http.get(f"{PREFIX}/media/{orphan['id']}"), 404, "blog.media_not_found"
        )
        assert (await http.get(f"{PREFIX}/media/{attached['id']}")).status_code == 200
        assert (await http.get(f"{PREFIX}/users/me", headers=ann.headers)).json()["avatar"]
        assert len(stored_blobs(settings)) == 6  # three variants each of image and avatar
        assert await sweep_orphaned_media(kernel) == 0
        assert sweep_job in blog_module.jobs


async def test_uploads_through_s3(
    app_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    s3_endpoint: str,
    s3_bucket: str,
) -> None:
    """With `VECHE_BLOB_URL=s3://...` the same upload lands in the bucket and is served."""
    import boto3

    settings = settings_factory(
        rate_limits=BLOG_LIMITS,
        blob_url=f"s3://{s3_bucket}/veche",
        storage=StorageSettings(
            s3_endpoint_url=s3_endpoint,
            s3_access_key_id="testing",
            s3_secret_access_key="testing-secret",
        ),
    )
    app = await app_factory(settings, [blog_module])
    assert app.state.kernel.blobs.name == "s3"
    async with client_for(app) as http:
        from tests.apps.blog.conftest import sign_up

        ann = await sign_up(http, "ann@example.com", "Ann")
        media = await upload(http, ann, jpeg_with_exif())
        client = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing-secret",
        )
        keys = sorted(item["Key"] for item in client.list_objects_v2(Bucket=s3_bucket)["Contents"])
        assert keys == [
            f"veche/blog/media/{media['id']}/{name}.webp" for name in ("large", "medium", "thumb")
        ]
        response = await http.get(media["variants"]["large"]["url"])
        assert response.status_code == 200
        assert b"LeakyCam" not in response.content
        with Image.open(io.BytesIO(response.content)) as decoded:
            assert decoded.format == "WEBP"
        ready = await http.get("/ready")
        assert ready.status_code == 200, ready.text

        refused = await http.post(
            f"{PREFIX}/media", files=files(b"not an image"), headers=ann.headers
        )
        assert_problem(refused, 415, "storage.unsupported_image_type")
        assert await http.delete(f"{PREFIX}/media/{media['id']}", headers=ann.headers)
        await app.state.kernel.apps["blog"].drain()
        assert "Contents" not in client.list_objects_v2(Bucket=s3_bucket)
