"""The isolation rule holds in one place: only the repository builds queries, and every
query it builds is confined to one user."""

from __future__ import annotations

import ast
from importlib import resources
from uuid import UUID

from sqlalchemy.dialects import sqlite

from veche.apps.agents.models import Agent, AgentVersion, Project
from veche.apps.agents.repository import Scoped

# Building a statement, or running one (or a lookup by key) on the session directly.
STATEMENT_BUILDERS = {"select", "delete", "update", "insert", "text", "func"}
SESSION_QUERIES = {"execute", "scalar", "scalars", "get", "stream", "stream_scalars"}


def _is_session(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "session") or (
        isinstance(node, ast.Attribute) and node.attr == "session"
    )


def test_only_the_repository_builds_or_runs_queries() -> None:
    package = resources.files("veche.apps.agents")
    offenders = []
    for source in package.iterdir():
        if not source.name.endswith(".py") or source.name == "repository.py":
            continue
        for node in ast.walk(ast.parse(source.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                imported = {alias.name for alias in node.names} & STATEMENT_BUILDERS
                if imported:
                    offenders.append(f"{source.name}:{node.lineno} imports {sorted(imported)}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SESSION_QUERIES
                and _is_session(node.func.value)
            ):
                offenders.append(f"{source.name}:{node.lineno} session.{node.func.attr}()")
    assert offenders == []


def test_every_scoped_query_filters_by_the_user() -> None:
    user_id = UUID("01234567-89ab-cdef-0123-456789abcdef")
    scoped = Scoped(session=None, user_id=user_id)  # type: ignore[arg-type]  # builds only
    statements = {
        "agents_projects": scoped.select(Project),
        "agents_agents": scoped.select(Agent),
        "agents_agent_versions": scoped.select(AgentVersion),
    }
    for table, statement in statements.items():
        compiled = statement.compile(
            dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
        )
        assert f"{table}.user_id = '{user_id.hex}'" in str(compiled)
    versions = str(
        scoped.versions(user_id).compile(
            dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
        )
    )
    assert f"agents_agent_versions.user_id = '{user_id.hex}'" in versions
