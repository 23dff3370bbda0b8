"""Test fixtures: a real migrated database (SQLite by default, PostgreSQL when
`VECHE_TEST_DATABASE_URL` is set), the real application, and HTTP clients.

Nothing of Veche's is mocked: every test talks to the app through HTTP or calls the
services on a real session, and every table is emptied after each test.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, make_url, text

from tests.example_app import module as example_module
from veche.kernel import Kernel, build_app
from veche.kernel.db import Base, create_engine
from veche.migrate import upgrade
from veche.settings import AuthSettings, Settings

pytest_plugins = ["tests.fakes.openai_fixtures"]

TEST_DATABASE_URL = os.environ.get("VECHE_TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("VECHE_TEST_REDIS_URL")
TEST_EVENTS_URL = os.environ.get("VECHE_TEST_EVENTS_URL")
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "a quiet lighthouse keeps time"

# Cheaper argon2 than production so the suite stays fast; one test checks the defaults.
FAST_AUTH = {"argon2_memory_kib": 8 * 1024, "argon2_time_cost": 1}
GENEROUS_LIMITS = {
    "default": "10000/minute",
    "auth": "10000/minute",
    "auth_refresh": "10000/minute",
    "admin": "10000/minute",
}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
def database_url(data_dir: Path) -> str:
    return TEST_DATABASE_URL or f"sqlite+aiosqlite:///{data_dir / 'test.db'}"


def make_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    auth = {**FAST_AUTH, **overrides.pop("auth", {})}
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": data_dir,
        "database_url": database_url,
        "redis_url": TEST_REDIS_URL,
        "events_url": TEST_EVENTS_URL,
        "secret_key": TEST_SECRET,
        "log_level": "warning",
        "rate_limits": GENEROUS_LIMITS,
        "auth": AuthSettings(**auth),
        # A full collection per app start would add minutes to the suite; covered by its
        # own test.
        "gc_tuning": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
async def migrated(data_dir: Path, database_url: str) -> str:
    """The test database, built by running the real migrations once per session."""
    settings = make_settings(data_dir, database_url)
    if database_url.startswith("postgresql"):
        engine = create_engine(settings)
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
        await engine.dispose()
    await upgrade(settings)
    return database_url


def _emptying_script() -> str:
    """Every table emptied in one transaction, children before parents (built again only
    when a test module's import has added tables)."""
    return _script_for(len(Base.metadata.tables))


@functools.cache
def _script_for(_table_count: int) -> str:
    deletes = [str(delete(table)) for table in reversed(Base.metadata.sorted_tables)]
    return ";\n".join(["BEGIN", *deletes, "COMMIT;"])


def _empty_sqlite(path: str, timeout: float) -> None:
    # The standard library's own connection, not the app's engine: one call for the whole
    # script (through aiosqlite each statement is several thread hops; 26 ms a test).
    with contextlib.closing(sqlite3.connect(path, timeout=timeout)) as connection:
        connection.executescript(_emptying_script())


async def _empty_postgresql(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(_emptying_script())  # one round trip, no parameters
    finally:
        await connection.close()


async def empty_tables(settings: Settings) -> None:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        try:
            _empty_sqlite(url.database, timeout=0.5)
        except sqlite3.OperationalError as error:
            # An app a test built and let go may still hold a SQLite connection, and with
            # it the write lock, until it is collected ("database is locked", seen in full
            # runs only: a connection whose reset was cancelled at the app's shutdown).
            # Waiting does not free it; collecting does, so the first try is short.
            if "locked" not in str(error):
                raise
            gc.collect()
            _empty_sqlite(url.database, timeout=10)
    else:
        plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
        await _empty_postgresql(plain)
    if settings.redis_url:
        import redis.asyncio as redis

        client = redis.from_url(settings.redis_url)
        await client.flushdb()
        await client.aclose()


@pytest.fixture
def settings_factory(data_dir: Path, migrated: str) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        return make_settings(data_dir, migrated, **overrides)

    return factory


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
async def clean(settings: Settings) -> AsyncIterator[None]:
    await empty_tables(settings)
    yield
    await empty_tables(settings)


@pytest.fixture
async def app_factory(
    clean: None,
) -> AsyncIterator[Callable[..., Any]]:
    """Builds apps with the test example module and runs their lifespan."""
    started: list[Any] = []

    async def factory(settings: Settings, modules: Any = None) -> FastAPI:
        app = build_app(settings, [example_module] if modules is None else modules)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        started.append(context)
        return app

    yield factory
    for context in reversed(started):
        await context.__aexit__(None, None, None)


@pytest.fixture
async def app(app_factory: Callable[..., Any], settings: Settings) -> FastAPI:
    result: FastAPI = await app_factory(settings)
    return result


@pytest.fixture
def kernel(app: FastAPI) -> Kernel:
    result: Kernel = app.state.kernel
    return result


def client_for(app: FastAPI, client_ip: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(client_ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http
