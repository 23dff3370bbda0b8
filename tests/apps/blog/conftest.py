"""What the HTTP tests of the blog app share: the app with only the blog module mounted,
signed-in users, and images made on the spot with Pillow."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import func, select

from tests.conftest import GENEROUS_LIMITS, client_for, empty_tables
from tests.helpers import bearer, signed_up
from tests.kernel.storage.conftest import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)
from veche.apps.blog import module as blog_module
from veche.kernel.events import OutboxEvent
from veche.settings import Settings

PREFIX = "/api/v1/blog"
BLOG_LIMITS = {**GENEROUS_LIMITS, "blog_write": "10000/minute", "blog_media": "10000/minute"}


@dataclass
class Caller:
    headers: dict[str, str]
    user_id: str


@pytest.fixture
async def clean(settings: Settings) -> AsyncIterator[None]:
    """Empty tables and no blobs, before and after each test."""
    await empty_tables(settings)
    shutil.rmtree(settings.data_dir / "blobs", ignore_errors=True)
    yield
    await empty_tables(settings)
    shutil.rmtree(settings.data_dir / "blobs", ignore_errors=True)


@pytest.fixture
def blog_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(rate_limits=BLOG_LIMITS)


@pytest.fixture
async def blog_app(app_factory: Callable[..., Any], blog_settings: Settings) -> FastAPI:
    app: FastAPI = await app_factory(blog_settings, [blog_module])
    return app


@pytest.fixture
async def http(blog_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(blog_app) as client:
        yield client


async def sign_up(http: httpx.AsyncClient, email: str, name: str) -> Caller:
    tokens = await signed_up(http, email, name)
    return Caller(bearer(tokens), tokens["user"]["id"])


@pytest.fixture
async def ann(http: httpx.AsyncClient) -> Caller:
    return await sign_up(http, "ann@example.com", "Ann")


@pytest.fixture
async def bob(http: httpx.AsyncClient) -> Caller:
    return await sign_up(http, "bob@example.com", "Bob")


def image_bytes(
    image_format: str = "PNG",
    size: tuple[int, int] = (640, 480),
    colour: tuple[int, int, int] = (30, 120, 200),
    **save: Any,
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, image_format, **save)
    return buffer.getvalue()


def jpeg_with_exif(size: tuple[int, int] = (800, 600)) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "LeakyCam"  # Make
    exif[0x0131] = "SecretSoftware 1.0"  # Software
    exif[0x8298] = "Copyright Ann Secret"  # Copyright
    return image_bytes("JPEG", size, exif=exif.tobytes())


def files(data: bytes, name: str = "photo.png", content_type: str = "image/png") -> Any:
    return {"file": (name, data, content_type)}


async def upload(
    http: httpx.AsyncClient, caller: Caller, data: bytes | None = None
) -> dict[str, Any]:
    response = await http.post(
        f"{PREFIX}/media", files=files(data or image_bytes()), headers=caller.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_blog(
    http: httpx.AsyncClient, caller: Caller, slug: str = "lighthouse", **fields: Any
) -> dict[str, Any]:
    response = await http.post(
        f"{PREFIX}/blogs",
        json={"slug": slug, "title": "The Lighthouse", **fields},
        headers=caller.headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_post(
    http: httpx.AsyncClient, caller: Caller, blog: str = "lighthouse", **fields: Any
) -> dict[str, Any]:
    payload = {"blog": blog, "title": "First light", "body_html": "<p>Hello</p>", **fields}
    response = await http.post(f"{PREFIX}/posts", json=payload, headers=caller.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def events_of(app: FastAPI, event_type: str) -> list[dict[str, Any]]:
    """The payloads of the outbox rows of this type, oldest first."""
    kernel = app.state.kernel
    async with kernel.db.unit_of_work() as session:
        rows = await session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.type == event_type)
            .order_by(OutboxEvent.occurred_at)
        )
        return [dict(row.data) for row in rows]


async def count_rows(app: FastAPI, model: type[Any]) -> int:
    kernel = app.state.kernel
    async with kernel.db.unit_of_work() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def stored_blobs(settings: Settings) -> list[str]:
    """Every file the local blob store holds."""
    root = settings.data_dir / "blobs"
    if not root.exists():
        return []
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
