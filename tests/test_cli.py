"""The `veche` command, run in-process through Typer's runner with settings from the
environment, against fresh SQLite files and the session's migrated test database.

The commands call `asyncio.run()`, so these tests are synchronous: a coroutine test runs
inside pytest-asyncio's session loop, where `asyncio.run()` refuses to start. Even from a
plain test, `asyncio.run()` on the main thread ends by clearing that thread's current
event loop, the session loop pytest-asyncio set there; so every command (and every database
read of these tests) runs on a thread of its own and the main thread is left as it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import argon2
import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from tests.conftest import FAST_AUTH, PASSWORD, TEST_EVENTS_URL, TEST_REDIS_URL, TEST_SECRET
from veche.cli import app
from veche.kernel.audit import AuditEvent
from veche.kernel.db import Base, Database
from veche.kernel.identity.models import User
from veche.migrate import head_revision
from veche.settings import Settings

CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"
CLOSED_NATS_URL = "nats://127.0.0.1:1"
T = TypeVar("T")
PRODUCTION_VARIABLES = (
    "VECHE_SECRET_KEY",
    "VECHE_DATABASE_URL",
    "VECHE_REDIS_URL",
    "VECHE_PUBLIC_URL",
)


@pytest.fixture(autouse=True)
def cli_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings only from the variables each test sets, in a directory without `.env`."""
    for name in list(os.environ):
        if name.startswith("VECHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VECHE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("VECHE_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("VECHE_LOG_LEVEL", "warning")
    monkeypatch.setenv("VECHE_AUTH__ARGON2_MEMORY_KIB", str(FAST_AUTH["argon2_memory_kib"]))
    monkeypatch.setenv("VECHE_AUTH__ARGON2_TIME_COST", str(FAST_AUTH["argon2_time_cost"]))


@pytest.fixture
def test_database(monkeypatch: pytest.MonkeyPatch, migrated: str, clean: None) -> str:
    """Point the command at the session's migrated (and emptied) test database."""
    monkeypatch.setenv("VECHE_DATABASE_URL", migrated)
    if TEST_REDIS_URL:
        monkeypatch.setenv("VECHE_REDIS_URL", TEST_REDIS_URL)
    if TEST_EVENTS_URL:
        monkeypatch.setenv("VECHE_EVENTS_URL", TEST_EVENTS_URL)
    return migrated


def fresh_sqlite(monkeypatch: pytest.MonkeyPatch, path: Path) -> Path:
    monkeypatch.setenv("VECHE_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    return path


def on_own_thread(call: Callable[[], T]) -> T:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def veche(*args: str, stdin: str | None = None) -> Result:
    return on_own_thread(lambda: CliRunner().invoke(app, list(args), input=stdin))


def refusal(result: Result) -> str:
    """What a command that refused printed; it must exit 1 on purpose, not by crashing."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result.stderr


def sqlite_tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}


def users_and_audit(database_url: str) -> tuple[list[User], list[str]]:
    async def read() -> tuple[list[User], list[str]]:
        database = Database.from_settings(Settings(_env_file=None, database_url=database_url))
        try:
            async with database.unit_of_work() as session:
                users = list(await session.scalars(select(User).order_by(User.email)))
                actions = list(await session.scalars(select(AuditEvent.action)))
                return users, actions
        finally:
            await database.dispose()

    return on_own_thread(lambda: asyncio.run(read()))


# -- migrate ----------------------------------------------------------------------------


def test_migrate_builds_a_fresh_sqlite_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = fresh_sqlite(monkeypatch, tmp_path / "db" / "fresh.db")

    result = veche("migrate")

    assert result.exit_code == 0, result.output
    assert f"Database at revision {head_revision()}" in result.stdout
    assert sqlite_tables(path) == set(Base.metadata.tables) | {"alembic_version"}

    again = veche("migrate")
    assert again.exit_code == 0, again.output
    assert f"Database at revision {head_revision()}" in again.stdout


def test_migrate_downgrades_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = fresh_sqlite(monkeypatch, tmp_path / "down.db")
    assert veche("migrate").exit_code == 0

    refused = refusal(veche("migrate", "base"))
    assert "use --downgrade to go back" in refused
    assert "users" in sqlite_tables(path)

    result = veche("migrate", "base", "--downgrade")
    assert result.exit_code == 0, result.output
    assert "Database at revision base (empty)" in result.stdout
    assert sqlite_tables(path) == {"alembic_version"}


def test_migrate_defaults_to_the_data_dir(tmp_path: Path) -> None:
    result = veche("migrate")

    assert result.exit_code == 0, result.output
    assert sqlite_tables(tmp_path / "var" / "veche.db") >= set(Base.metadata.tables)


# -- users create -----------------------------------------------------------------------


def test_users_create_makes_an_admin(monkeypatch: pytest.MonkeyPatch, test_database: str) -> None:
    monkeypatch.setenv("VECHE_PASSWORD", PASSWORD)

    result = veche("users", "create", "Root@Example.com", "--admin", "--display-name", "Root")

    assert result.exit_code == 0, result.output
    assert "Created admin root@example.com" in result.stdout
    users, actions = users_and_audit(test_database)
    assert [(user.email, user.role, user.display_name) for user in users] == [
        ("root@example.com", "admin", "Root")
    ]
    assert str(users[0].id) in result.stdout
    assert users[0].password_hash is not None
    assert argon2.PasswordHasher().verify(users[0].password_hash, PASSWORD)
    assert actions == ["auth.registered"]


def test_users_create_makes_a_plain_user_by_default(
    monkeypatch: pytest.MonkeyPatch, test_database: str
) -> None:
    monkeypatch.setenv("VECHE_PASSWORD", PASSWORD)

    result = veche("users", "create", "ann@example.com")

    assert result.exit_code == 0, result.output
    assert "Created user ann@example.com" in result.stdout
    users, _ = users_and_audit(test_database)
    assert [(user.email, user.role) for user in users] == [("ann@example.com", "user")]


def test_users_create_asks_for_the_password_twice(test_database: str) -> None:
    result = veche("users", "create", "ann@example.com", stdin=f"{PASSWORD}\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    users, _ = users_and_audit(test_database)
    assert users[0].password_hash is not None
    assert argon2.PasswordHasher().verify(users[0].password_hash, PASSWORD)


def test_users_create_refuses_a_weak_password(
    monkeypatch: pytest.MonkeyPatch, test_database: str
) -> None:
    monkeypatch.setenv("VECHE_PASSWORD", "password")

    result = veche("users", "create", "root@example.com", "--admin")

    stderr = refusal(result)
    assert "The account was not created:" in stderr
    assert "Password is too easy to guess" in stderr
    assert users_and_audit(test_database) == ([], [])


def test_users_create_refuses_a_duplicate_email(
    monkeypatch: pytest.MonkeyPatch, test_database: str
) -> None:
    monkeypatch.setenv("VECHE_PASSWORD", PASSWORD)
    assert veche("users", "create", "root@example.com", "--admin").exit_code == 0

    result = veche("users", "create", "ROOT@example.com")

    stderr = refusal(result)
    assert "An account with root@example.com already exists" in stderr
    users, _ = users_and_audit(test_database)
    assert [user.role for user in users] == ["admin"]


def test_users_create_refuses_an_invalid_email(
    monkeypatch: pytest.MonkeyPatch, test_database: str
) -> None:
    monkeypatch.setenv("VECHE_PASSWORD", PASSWORD)

    result = veche("users", "create", "not-an-email")

    stderr = refusal(result)
    assert "The account is not valid:" in stderr
    assert "@-sign" in stderr
    assert users_and_audit(test_database) == ([], [])


def test_users_create_explains_an_unmigrated_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fresh_sqlite(monkeypatch, tmp_path / "empty.db")
    monkeypatch.setenv("VECHE_PASSWORD", PASSWORD)

    result = veche("users", "create", "root@example.com")

    stderr = refusal(result)
    assert "The account was not created:" in stderr
    assert "database error (OperationalError); is it migrated (`veche migrate`)?" in stderr


# -- openapi ----------------------------------------------------------------------------


def test_openapi_writes_the_schema_to_a_file(tmp_path: Path) -> None:
    output = tmp_path / "f.json"

    result = veche("openapi", "--output", str(output))

    assert result.exit_code == 0, result.output
    assert f"Wrote {output}" in result.stdout
    schema = json.loads(output.read_text(encoding="utf-8"))
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/auth/login" in schema["paths"]
    assert "post" in schema["paths"]["/api/v1/auth/login"]


def test_openapi_writes_to_stdout_by_default() -> None:
    result = veche("openapi")

    assert result.exit_code == 0, result.output
    assert "/api/v1/auth/login" in json.loads(result.stdout)["paths"]


# -- check ------------------------------------------------------------------------------


def test_check_passes_on_a_migrated_database(test_database: str) -> None:
    result = veche("check")

    assert result.exit_code == 0, result.output
    assert "every configured backend answers" in result.stdout


def test_check_names_an_unmigrated_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fresh_sqlite(monkeypatch, tmp_path / "empty.db")

    result = veche("check")

    stderr = refusal(result)
    assert "1 problem(s) found:" in stderr
    assert "database: not migrated; run `veche migrate`" in stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "ArgumentError"),
        ("nosuchdb+driver://db.internal/veche", "NoSuchModuleError"),
    ],
)
def test_check_names_an_unusable_database_url(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    monkeypatch.setenv("VECHE_DATABASE_URL", url)

    result = veche("check")

    stderr = refusal(result)
    assert "1 problem(s) found:" in stderr
    assert f"database: VECHE_DATABASE_URL cannot be used ({expected}" in stderr


def test_check_names_an_unreachable_redis(
    monkeypatch: pytest.MonkeyPatch, test_database: str
) -> None:
    monkeypatch.setenv("VECHE_REDIS_URL", CLOSED_REDIS_URL)

    result = veche("check")

    stderr = refusal(result)
    assert "1 problem(s) found:" in stderr
    assert "redis: not reachable" in stderr


def test_check_names_an_unreachable_nats(
    monkeypatch: pytest.MonkeyPatch, test_database: str
) -> None:
    monkeypatch.setenv("VECHE_EVENTS_URL", CLOSED_NATS_URL)

    result = veche("check")

    stderr = refusal(result)
    assert "1 problem(s) found:" in stderr
    assert "events: not reachable" in stderr
    assert "127.0.0.1" not in stderr


def test_check_names_an_unusable_events_url(
    monkeypatch: pytest.MonkeyPatch, test_database: str
) -> None:
    monkeypatch.setenv("VECHE_EVENTS_URL", "kafka://user:secret@broker.internal")

    result = veche("check")

    stderr = refusal(result)
    assert "1 problem(s) found:" in stderr
    assert "events: VECHE_EVENTS_URL names no events backend" in stderr
    assert "secret" not in stderr


def test_check_names_an_unknown_app(monkeypatch: pytest.MonkeyPatch, test_database: str) -> None:
    monkeypatch.setenv("VECHE_APPS", "nope")

    result = veche("check")

    stderr = refusal(result)
    assert "apps: unknown apps ['nope']; installed:" in stderr


def test_check_lists_every_problem_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fresh_sqlite(monkeypatch, tmp_path / "empty.db")
    monkeypatch.setenv("VECHE_REDIS_URL", CLOSED_REDIS_URL)
    monkeypatch.setenv("VECHE_APPS", "nope, nada")

    result = veche("check")

    stderr = refusal(result)
    assert "3 problem(s) found:" in stderr
    for problem in ("apps: unknown apps ['nope', 'nada']", "database: not migrated", "redis:"):
        assert problem in stderr


def test_check_lists_every_missing_production_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VECHE_SECRET_KEY")
    monkeypatch.setenv("VECHE_ENV", "production")

    result = veche("check")

    stderr = refusal(result)
    assert "The settings are not valid:" in stderr
    for variable in PRODUCTION_VARIABLES:
        assert f"  - {variable} is missing" in stderr


def test_check_names_an_invalid_setting_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECHE_PORT", "eighty")
    monkeypatch.setenv("VECHE_RATE_LIMITS", '{"auth": "plenty"}')

    result = veche("check")

    stderr = refusal(result)
    assert "  - VECHE_PORT: Input should be a valid integer" in stderr
    assert "  - VECHE_RATE_LIMITS: rate limit 'auth': 'plenty' is not a limit" in stderr


def test_no_command_shows_the_help() -> None:
    result = veche()

    assert result.exit_code != 0
    for command in ("serve", "migrate", "users", "openapi", "check"):
        assert command in result.output
