"""The web client's files: served with their types and a strict policy; nothing else is."""

from __future__ import annotations

import httpx
import pytest

PAGE = "/api/v1/blog/web"


async def test_the_page_and_its_assets_are_served_with_a_strict_policy(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get(PAGE)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert 'src="web/app.js"' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"

    script = await http.get(f"{PAGE}/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "/realtime/ws" in script.text
    style = await http.get(f"{PAGE}/app.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("missing.js", 404, "blog.web_asset_not_found"),
        ("__init__.py", 404, "blog.web_asset_not_found"),
        ("index.htm", 404, "blog.web_asset_not_found"),
        ("..%2Fmanifest.yaml", 404, "not_found"),  # no route: the slash ends the name
        ("x" * 33, 422, "validation_failed"),
    ],
)
async def test_anything_else_under_web_is_not_found(
    http: httpx.AsyncClient, name: str, status: int, code: str
) -> None:
    response = await http.get(f"{PAGE}/{name}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
