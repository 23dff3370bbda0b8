"""Schemathesis over the agents app's operations on a real uvicorn server: no input, valid
or invalid, gets a 500 or an answer its schema does not promise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
import schemathesis.checks
import uvicorn
from schemathesis.core.result import Ok

from tests.kernel.test_openapi import LiveServer, fuzz_all, sign_in_as_admin
from veche.apps.agents import module as agents_module
from veche.kernel import build_app
from veche.settings import Settings


class AgentsServer(LiveServer):
    """The live server with only the agents app mounted."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.app = build_app(settings, [agents_module])
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on"
        )
        self.server = uvicorn.Server(config)


@pytest.fixture
def agents_server(clean: None, settings: Settings) -> Iterator[AgentsServer]:
    server = AgentsServer(settings)
    with server:
        yield server


def test_schemathesis_finds_no_server_errors_or_schema_violations(
    agents_server: AgentsServer,
) -> None:
    headers = sign_in_as_admin(agents_server)  # an admin still sees only their own objects
    schema = schemathesis.openapi.from_url(f"{agents_server.url}/openapi.json")
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.path.startswith("/api/v1/agents/"):
            found.append(operation)
    assert len(found) == len(agents_module.manifest.exposes.api)
    failures, statuses = fuzz_all(found, agents_server.url, headers)
    assert not failures, "\n\n".join(failures)
    for label in ("POST /api/v1/agents/projects", "POST /api/v1/agents/agents"):
        assert statuses[label][201] > 0, (label, statuses[label])
        assert statuses[label][422] > 0, (label, statuses[label])
    assert statuses["GET /api/v1/agents/agents"][200] > 0
    assert statuses["PATCH /api/v1/agents/agents/{agent_id}"][404] > 0
