"""`/api/v1/blog/web`: Quark's minimal web client, one static page and its two assets.

The page talks to the public API only (the same calls any client makes) and keeps the
access token in memory. Served with a strict Content-Security-Policy: scripts and styles
from this origin only, no inline code, fetch and WebSocket to this origin only."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from veche.apps.blog.errors import WebAssetNotFound
from veche.kernel import rate_limit

router = APIRouter(
    tags=["blog web"], include_in_schema=False, dependencies=[Depends(rate_limit("default"))]
)

_ASSETS = resources.files("veche.apps.blog") / "web"
# Asset name -> media type; nothing else under web/ is served.
_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load: the page and its script change together with the server.
    "Cache-Control": "no-cache",
}


@functools.cache
def _body(name: str) -> bytes:
    """Read once per process (three small files): no file I/O on the event loop after."""
    return (_ASSETS / name).read_bytes()


def _asset(name: str) -> Response:
    media_type = _TYPES.get(name)
    if media_type is None:
        raise WebAssetNotFound(f"No web asset named {name!r}")
    return Response(_body(name), media_type=media_type, headers=_SECURITY_HEADERS)


@router.get("/web")
async def page() -> Response:
    return _asset("index.html")


@router.get("/web/{name}")
async def asset(name: Annotated[str, Path(max_length=32)]) -> Response:
    return _asset(name)
