"""`veche check`: everything that would make the process fail later, found now."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from veche.kernel.modules import ManifestError
from veche.kernel.observability.tracing import tracing_problem
from veche.kernel.ratelimit import RateLimiter
from veche.settings import Settings

TIMEOUT_SECONDS = 5.0


async def _database(settings: Settings) -> list[str]:
    from veche.kernel.db import Database
    from veche.migrate import current_revision, head_revision

    try:
        database = Database.from_settings(settings)
    except Exception as exc:  # a malformed URL, or a driver that is not installed
        # The type only: a URL parse error may quote the URL, password included.
        return [f"database: VECHE_DATABASE_URL cannot be used ({type(exc).__name__})"]
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await database.ping()
    except Exception as exc:
        return [f"database: not reachable ({type(exc).__name__})"]
    finally:
        await database.dispose()
    current, head = await current_revision(settings), head_revision()
    if current is None:
        return ["database: not migrated; run `veche migrate`"]
    if current != head:
        return [f"database: at revision {current}, code expects {head}; run `veche migrate`"]
    return []


async def _redis(settings: Settings) -> list[str]:
    if not settings.redis_url:
        return []
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await RateLimiter(settings).check_storage()
    except Exception as exc:
        return [f"redis: not reachable ({type(exc).__name__})"]
    return []


async def _events(settings: Settings) -> list[str]:
    from veche.kernel.events.backends import create_backend

    if not settings.events_url:
        return []
    try:
        backend = create_backend(settings.events_url, settings.events.stream_prefix)
    except ValueError:  # the message quotes the URL, which may hold credentials
        return ["events: VECHE_EVENTS_URL names no events backend (use nats://...)"]
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await backend.ping()
    except Exception as exc:
        return [f"events: not reachable ({type(exc).__name__})"]
    finally:
        await backend.close()
    return []


async def _ai(settings: Settings) -> list[str]:
    from veche.kernel.ai.services import AIServices
    from veche.kernel.db import Database

    # The services want a database for usage rows; nothing is written during a check, so a
    # file that is never opened stands in (the real URL is `_database`'s to judge).
    unused = Path(tempfile.gettempdir()) / "veche-check-unused.db"
    database = Database(settings, url=f"sqlite+aiosqlite:///{unused.as_posix()}")
    ai = AIServices(settings, database)
    try:
        problems = [f"ai: {problem}" for problem in ai.problems()]
        if settings.qdrant_url and not problems:
            try:
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    store = await ai.vectors()
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    await store.health()
            except Exception as exc:
                problems.append(f"ai: Qdrant not reachable ({type(exc).__name__})")
    finally:
        await ai.aclose()
        await database.dispose()
    return problems


def _apps(settings: Settings) -> list[str]:
    from veche.registry import UnknownApp, load_modules

    try:
        modules = load_modules(settings.apps)
        for module in modules:
            module.validate()
    except (UnknownApp, ManifestError) as exc:
        return [f"apps: {exc}"]
    return []


async def run_checks(settings: Settings) -> list[str]:
    """Every problem found, one readable line each (empty when all is well)."""
    problems = _apps(settings)
    if settings.otel_enabled and (problem := tracing_problem()):
        problems.append(f"tracing: {problem}")
    problems += await _database(settings)
    problems += await _redis(settings)
    problems += await _events(settings)
    problems += await _ai(settings)
    return problems
