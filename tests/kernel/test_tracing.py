"""OpenTelemetry: with tracing on, request spans reach an OTLP/HTTP collector."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import client_for
from veche.kernel.observability.tracing import tracing_problem
from veche.settings import Settings


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A minimal OTLP/HTTP collector on loopback that keeps what it is sent."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            received.append((self.path, self.rfile.read(length)))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    server.shutdown()


def test_the_otel_extra_is_installed_for_the_suite() -> None:
    assert tracing_problem() is None


async def test_request_spans_are_exported(
    settings_factory: Callable[..., Settings],
    app_factory: Callable[..., Any],
    collector: tuple[str, list[tuple[str, bytes]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, received = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    app = await app_factory(settings_factory(otel_enabled=True, otel_service_name="veche-test"))
    async with client_for(app) as client:
        assert (await client.get("/api/v1/example/ping")).status_code == 200
    app.state.tracer_provider.force_flush()
    assert received, "no spans reached the collector"
    path, payload = received[0]
    assert path == "/v1/traces"
    assert b"veche-test" in payload
    assert b"/api/v1/example/ping" in payload
