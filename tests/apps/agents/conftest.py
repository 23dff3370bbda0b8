"""Fixtures for the agent tools: a fresh workspace per test and a toolbox in each
isolation mode. The bubblewrap one skips where bubblewrap cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apps.agents.chat_support import live_agents  # noqa: F401  (a fixture)
from veche.apps.agents.tools import IsolationMode, Toolbox, Workspace, detect_isolation_mode

BWRAP_AVAILABLE = detect_isolation_mode() is IsolationMode.BWRAP
needs_bwrap = pytest.mark.skipif(
    not BWRAP_AVAILABLE, reason="bubblewrap is not installed or cannot create namespaces here"
)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "workspace")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the workspace holding a secret the tools must never reach."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_text("top secret\n")
    return directory


@pytest.fixture
def restricted(workspace: Workspace) -> Toolbox:
    return Toolbox(workspace, isolation=IsolationMode.RESTRICTED)


@pytest.fixture
def sandboxed(workspace: Workspace) -> Toolbox:
    if not BWRAP_AVAILABLE:
        pytest.skip("bubblewrap is not installed or cannot create namespaces here")
    return Toolbox(workspace, isolation=IsolationMode.BWRAP)


@pytest.fixture(params=[IsolationMode.BWRAP, IsolationMode.RESTRICTED], ids=["bwrap", "restricted"])
def toolbox(request: pytest.FixtureRequest, workspace: Workspace) -> Toolbox:
    mode: IsolationMode = request.param
    if mode is IsolationMode.BWRAP and not BWRAP_AVAILABLE:
        pytest.skip("bubblewrap is not installed or cannot create namespaces here")
    return Toolbox(workspace, isolation=mode)
