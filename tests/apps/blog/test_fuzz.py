"""Schemathesis over the blog app's operations on a real uvicorn server: no input, valid
or invalid, gets a 500 or an answer its schema does not promise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from schemathesis.core.result import Ok

from tests.kernel.test_openapi import LiveServer, fuzz_all, sign_in_as_admin
from veche.apps.blog import module as blog_module
from veche.kernel import build_app
from veche.settings import Settings


class BlogServer(LiveServer):
    """The live server with only the blog app mounted."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.app = build_app(settings, [blog_module])
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on"
        )
        self.server = uvicorn.Server(config)


@pytest.fixture
def blog_server(clean: None, blog_settings: Settings) -> Iterator[BlogServer]:
    server = BlogServer(blog_settings)
    with server:
        yield server


def test_schemathesis_finds_no_server_errors_or_schema_violations(
    blog_server: BlogServer,
) -> None:
    headers = sign_in_as_admin(blog_server)  # an admin has no extra rights in the blog
    schema = schemathesis.openapi.from_url(f"{blog_server.url}/openapi.json")
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.path.startswith("/api/v1/blog/"):
            found.append(operation)
    # The web client's page and files are not API operations: they stay out of OpenAPI.
    operations = [e for e in blog_module.manifest.exposes.api if not e.startswith("GET /web")]
    assert len(found) == len(operations)
    failures, statuses = fuzz_all(found, blog_server.url, headers)
    assert not failures, "\n\n".join(failures)
    assert statuses["POST /api/v1/blog/blogs"][422] > 0, statuses["POST /api/v1/blog/blogs"]
    assert statuses["GET /api/v1/blog/posts"][200] > 0
    assert statuses["PATCH /api/v1/blog/posts/{post_id}"][404] > 0
