"""The OpenAPI document, and schemathesis fuzzing every operation on a real uvicorn server."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import hypothesis
import pytest
import requests
import schemathesis
import schemathesis.checks
import uvicorn
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from tests.conftest import PASSWORD
from tests.example_app import module as example_module
from veche.kernel import Kernel, build_app
from veche.kernel.errors import PROBLEM_MEDIA_TYPE
from veche.kernel.identity.service import IdentityService
from veche.settings import Settings

T = TypeVar("T")
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
# A deeper run: VECHE_FUZZ_EXAMPLES=500 pytest tests/kernel/test_openapi.py
EXAMPLES_PER_OPERATION = int(os.environ.get("VECHE_FUZZ_EXAMPLES", "25"))
# Operations that end the fuzzer's own session run last, so the others run signed in.
RUN_LAST = ("POST /api/v1/auth/logout", "POST /api/v1/auth/logout-all")


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


async def test_bearer_security_scheme_is_declared(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http"
    assert scheme["scheme"].lower() == "bearer"
    secured = {
        f"{method} {path}"
        for method, path, operation in operations(schema)
        if {"bearer": []} in operation.get("security", [])
    }
    assert {"GET /api/v1/me", "GET /api/v1/admin/users", "GET /api/v1/example/whoami"} <= secured
    assert "POST /api/v1/auth/login" not in secured


async def test_problem_schema_is_a_component(client: httpx.AsyncClient) -> None:
    components = (await client.get("/openapi.json")).json()["components"]["schemas"]
    problem = components["Problem"]
    assert set(problem["required"]) >= {"type", "title", "status", "code"}
    assert {"type", "title", "status", "detail", "code", "request_id", "errors"} <= set(
        problem["properties"]
    )
    assert "FieldError" in components
    assert set(components["FieldError"]["required"]) == {"loc", "msg", "type"}


async def test_every_error_response_is_problem_json(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    checked = 0
    for method, path, operation in operations(schema):
        responses = operation["responses"]
        if path.startswith("/api/"):
            assert "default" in responses, f"{method} {path} documents no default error"
        for status, response in responses.items():
            if status == "default" or int(status) >= 400:
                content = response.get("content", {})
                assert list(content) == [PROBLEM_MEDIA_TYPE], (method, path, status, content)
                checked += 1
    assert checked > 20


async def test_documented_operations_exist_and_hidden_ones_do_not_show(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    labels = {f"{method} {path}" for method, path, _ in operations(schema)}
    assert {
        "GET /health",
        "GET /ready",
        "POST /api/v1/auth/register",
        "DELETE /api/v1/auth/sessions/{session_id}",
        "PATCH /api/v1/admin/users/{user_id}",
        "POST /api/v1/example/echo",
    } <= labels
    assert "GET /metrics" not in labels
    assert "GET /api/v1/example/boom" not in labels


async def test_docs_serve_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


# -- schemathesis against a real server -------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class LiveServer:
    """A uvicorn server on its own thread and event loop."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = build_app(settings, [example_module])
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve()

        asyncio.run(serve())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop (where its database engine lives)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive(), "the server did not start"
            assert time.monotonic() < deadline, "the server took too long to start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def live_server(clean: None, settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server


def sign_in_as_admin(server: LiveServer) -> dict[str, str]:
    """An admin's bearer header, so the fuzzer reaches past every permission check."""
    kernel: Kernel = server.app.state.kernel

    async def create_admin() -> None:
        async with kernel.db.unit_of_work() as session:
            await IdentityService(session, kernel).register(
                email="fuzz@example.com", password=PASSWORD, display_name="Fuzz", role="admin"
            )

    server.run(create_admin())
    login = {"email": "fuzz@example.com", "password": PASSWORD}
    signed_in = requests.post(f"{server.url}/api/v1/auth/login", json=login, timeout=10)
    assert signed_in.status_code == 200, signed_in.text
    return {"Authorization": f"Bearer {signed_in.json()['access_token']}"}


def fuzz(
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    call: Callable[[schemathesis.Case[Any]], None],
) -> None:
    # The bearer header is fixed, so negative cases never "drop" it behind our back.
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, headers=headers))
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        call(case)

    run()


def fuzz_all(
    operations: list[Any], base_url: str, headers: dict[str, str]
) -> tuple[list[str], dict[str, Counter[int]]]:
    """Every operation with valid and invalid input against a live server: the failed
    checks, one line each, and the statuses each operation answered."""
    session = requests.Session()
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = defaultdict(Counter)

    def call(case: schemathesis.Case[Any]) -> None:
        response = case.call_and_validate(
            base_url=base_url,
            session=session,
            # The API validates more than a JSON schema says (a real email address, the
            # password policy, a taken name, repeated tools): schema-valid data may get a
            # 422 or 409 by design. Every other check runs.
            excluded_checks=[schemathesis.checks.positive_data_acceptance],
        )
        statuses[case.operation.label][response.status_code] += 1

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, headers, call)
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no input
            except (AssertionError, BaseExceptionGroup) as exc:  # check failures
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    return failures, statuses


def test_schemathesis_finds_no_server_errors_or_schema_violations(
    live_server: LiveServer,
) -> None:
    headers = sign_in_as_admin(live_server)
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # every operation in the document loads
        found.append(result.ok())
    found.sort(key=lambda operation: operation.label in RUN_LAST)
    assert len(found) >= 15
    failures, statuses = fuzz_all(found, live_server.url, headers)
    assert not failures, "\n\n".join(failures)
    # The fuzzer really got in: signed in, as an admin, with valid and invalid input.
    for label in ("GET /api/v1/me", "GET /api/v1/admin/users", "GET /api/v1/admin/audit"):
        assert statuses[label][200] > 0, (label, statuses[label])
    assert statuses["POST /api/v1/example/echo"][422] > 0
    assert statuses["PATCH /api/v1/admin/users/{user_id}"][404] > 0
