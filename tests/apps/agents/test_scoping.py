"""The isolation rule holds in one place: only the repository builds queries, and every
query it builds is confined to one user."""

from __future__ import annotations

import ast
import datetime as dt
from importlib import resources
from pathlib import Path
from uuid import UUID, uuid4

from sqlalchemy.dialects import sqlite

from veche.apps.agents.models import Agent, AgentVersion, Project
from veche.apps.agents.repository import MemoryQueries, MemoryReads, Scoped

# Building a statement, or running one (or a lookup by key) on the session directly.
STATEMENT_BUILDERS = {"select", "delete", "update", "insert", "text", "func"}
SESSION_QUERIES = {"execute", "scalar", "scalars", "get", "stream", "stream_scalars"}


def _is_session(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "session") or (
        isinstance(node, ast.Attribute) and node.attr == "session"
    )


def test_only_the_repository_builds_or_runs_queries() -> None:
    package = Path(str(resources.files("veche.apps.agents")))
    offenders = []
    for source in sorted(package.rglob("*.py")):
        if "repository" in source.relative_to(package).parts:
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

    memory = MemoryQueries(session=None, user_id=user_id)  # type: ignore[arg-type]
    reads = MemoryReads(source=None, user_id=user_id)  # type: ignore[arg-type]
    other, moment = UUID(int=7), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    memory_statements = [
        memory.entries(other, other, type="chat", success=True, since=moment, until=moment),
        reads.matching_ids_statement(other, other, type="chat", success=False),
        reads.by_ids_statement([other]),
        memory.entries_after_statement(other, None, (moment, other), 10),
        memory.ids_beyond_statement(other, other, 5),
        memory.ids_older_than_statement(other, None, moment),
        memory.memory_projects_statement(other),
        memory.delete_entries_statement([other]),
        memory.delete_memory_statement(agent_id=other),
        memory.delete_memory_statement(project_id=other),
        memory.totals_statement(other, None),
        memory.counts_by_type_statement(other, other),
    ]
    for statement in memory_statements:
        compiled = str(
            statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
        )
        assert f"agents_memory.user_id = '{user_id.hex}'" in compiled, compiled

    from veche.apps.agents.repository import ApprovalQueries

    approvals = ApprovalQueries(session=None, user_id=user_id)  # type: ignore[arg-type]
    approval_statements = {
        "agents_approvals": [
            approvals.approvals(),
            approvals.approvals(status="pending", session_id=other, task_id=other),
            approvals.resolve_statement(
                other, status="approved", decided_by="user", reason=None, now=moment
            ),
        ],
        "agents_approval_rules": [approvals.rules(), approvals.rules(project_id=other)],
        "agents_approval_policies": [approvals.policy_statement()],
    }
    for approval_table, approval_built in approval_statements.items():
        for statement in approval_built:
            sql = statement.compile(dialect=sqlite.dialect())
            assert f"{approval_table}.user_id = ?" in str(sql), str(sql)
            assert user_id in sql.params.values()

    from veche.apps.agents.repository import HealthQueries, PlanQueries

    health = HealthQueries(session=None, user_id=user_id)  # type: ignore[arg-type]
    # Built once with bound parameters: the user's filter is the `scope_user` parameter,
    # and the method gives it the user's id.
    plans = PlanQueries(session=None, user_id=user_id)  # type: ignore[arg-type]
    prepared = {
        "agents_agents": [health.lock_statement(other), health.settle_statement(other, moment)],
        "agents_tasks": [
            health.settle_statement(other, moment),
            plans.steps_statement(other),
            plans.mean_durations_statement([other, uuid4()]),
        ],
    }
    for table, pairs in prepared.items():
        for template, params in pairs:
            sql = template.compile(dialect=sqlite.dialect(paramstyle="named"))
            assert f"{table}.user_id = :scope_user" in str(sql), str(sql)
            assert sql.construct_params(params)["scope_user"] == user_id
    health_statements = {
        "agents_agents": [
            health.status_statement(other, "busy", None, moment),
            health.status_statement([other, uuid4()], "busy", None, moment),
        ],
        "agents_tasks": [
            health.counts_statement(other),
            health.mean_statement(other),
            health.ranked_statement(other, 3),
            PlanQueries.step_results_statement(user_id, other, ["t1", "t2"]),
        ],
    }
    for table, built in health_statements.items():
        for statement in built:
            compiled = str(
                statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
            )
            assert f"{table}.user_id = '{user_id.hex}'" in compiled, compiled
