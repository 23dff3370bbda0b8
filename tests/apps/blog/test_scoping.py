"""The visibility rule holds in one place: only the repository builds or runs queries,
and what `Scoped` builds is confined to what the caller may see."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path
from uuid import UUID

from sqlalchemy import Select
from sqlalchemy.dialects import sqlite

from veche.apps.blog.repository import Scoped

STATEMENT_BUILDERS = {"select", "delete", "update", "insert", "text", "func", "exists"}
SESSION_QUERIES = {"execute", "scalar", "scalars", "get", "stream", "stream_scalars"}
USER = UUID("01234567-89ab-cdef-0123-456789abcdef")


def _is_session(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "session") or (
        isinstance(node, ast.Attribute) and node.attr == "session"
    )


def test_only_the_repository_builds_or_runs_queries() -> None:
    package = Path(str(resources.files("veche.apps.blog")))
    offenders = []
    for source in sorted(package.rglob("*.py")):
        if source.name.endswith("repository.py"):  # repository.py, <area>_repository.py
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
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "where"
            ):
                offenders.append(f"{source.name}:{node.lineno} .where()")
    assert offenders == []


def sql(statement: Select[object]) -> str:
    return str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))


def test_scoped_posts_are_published_or_the_callers() -> None:
    scoped = Scoped(session=None, user_id=USER)  # type: ignore[arg-type]  # builds only
    editable = sql(scoped.editable_posts("draft"))
    assert f"blog_posts.author_id = '{USER.hex}'" in editable
    assert f"blog_blogs.owner_id = '{USER.hex}'" in editable
    assert "blog_posts.state = 'draft'" in editable
    visible = sql(scoped.visible_posts())
    assert "blog_posts.state = 'published' OR" in visible
    assert f"blog_posts.author_id = '{USER.hex}'" in visible
