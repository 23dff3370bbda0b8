"""The database layer: keys, UTC time, SQLite pragmas, units of work, and migrations that
build exactly the schema the models describe."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, bindparam, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError

from tests.conftest import make_settings
from veche.kernel import Kernel
from veche.kernel.ai.models import AIUsage, AIUsageDay
from veche.kernel.audit import AuditEvent
from veche.kernel.db import Base, Database, create_engine, new_id, utcnow
from veche.kernel.errors import Conflict, ProblemError, overload
from veche.kernel.identity.models import AuthSession, User
from veche.kernel.jobs import STATISTICS_JOB, ScheduledJob, Scheduler, kernel_jobs
from veche.migrate import current_revision, downgrade, head_revision, upgrade
from veche.registry import load_modules
from veche.settings import Settings

load_modules(None)  # every installed app's tables, as the migrations see them
MODEL_TABLES = set(Base.metadata.tables)


def audit_event(**overrides: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "id": new_id(),
        "occurred_at": dt.datetime.now(dt.UTC),
        "actor_id": None,
        "action": "test.thing.done",
        "data": {},
    }
    values.update(overrides)
    return AuditEvent(**values)


async def stored_actions(kernel: Kernel) -> list[str]:
    async with kernel.db.unit_of_work() as session:
        result = await session.scalars(select(AuditEvent.action).order_by(AuditEvent.action))
        return list(result)


async def table_names(settings: Settings, url: str) -> set[str]:
    engine = create_engine(settings, url)
    try:
        async with engine.connect() as connection:
            names: list[str] = await connection.run_sync(
                lambda sync: inspect(sync).get_table_names()
            )
    finally:
        await engine.dispose()
    return set(names)


# -- keys and time ----------------------------------------------------------------------


def test_new_id_is_a_uuid7_that_sorts_by_creation() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(2000)]

    assert all(isinstance(value, UUID) and value.version == 7 for value in ids)
    assert all(value.variant == "specified in RFC 4122" for value in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert [str(value) for value in ids] == sorted(str(value) for value in ids)
    # The first 48 bits are the Unix time in milliseconds.
    assert ids[0].int >> 80 >= before_ms


async def test_utc_column_round_trips_aware_datetimes_as_utc(kernel: Kernel) -> None:
    moscow = dt.timezone(dt.timedelta(hours=3))
    written = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=moscow)
    event = audit_event(occurred_at=written)
    async with kernel.db.unit_of_work() as session:
        session.add(event)

    async with kernel.db.unit_of_work() as session:
        read = await session.scalar(select(AuditEvent.occurred_at).where(AuditEvent.id == event.id))

    assert read == written
    assert read is not None
    assert read.utcoffset() == dt.timedelta(0)
    assert (read.hour, read.minute, read.microsecond) == (9, 30, 123456)


async def test_utc_column_compares_across_zones(kernel: Kernel) -> None:
    noon_utc = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    async with kernel.db.unit_of_work() as session:
        session.add(audit_event(action="early", occurred_at=noon_utc - dt.timedelta(hours=1)))
        session.add(audit_event(action="late", occurred_at=noon_utc + dt.timedelta(hours=1)))

    # 12:00 UTC written as 15:00 in UTC+3: the comparison must happen in UTC.
    cutoff = noon_utc.astimezone(dt.timezone(dt.timedelta(hours=3)))
    async with kernel.db.unit_of_work() as session:
        before = await session.scalars(
            select(AuditEvent.action).where(AuditEvent.occurred_at < cutoff)
        )
        assert list(before) == ["early"]


async def test_utc_column_refuses_naive_datetimes(kernel: Kernel) -> None:
    naive = dt.datetime(2026, 3, 1, 12, 0)

    with pytest.raises(StatementError, match="naive datetime given to a UTC column"):
        async with kernel.db.unit_of_work() as session:
            session.add(audit_event(occurred_at=naive))

    with pytest.raises(StatementError, match="naive datetime given to a UTC column"):
        async with kernel.db.unit_of_work() as session:
            await session.execute(select(AuditEvent).where(AuditEvent.occurred_at < naive))

    assert await stored_actions(kernel) == []


# -- connections ------------------------------------------------------------------------


async def test_sqlite_connections_enforce_foreign_keys_and_use_wal(
    settings: Settings, tmp_path: Path
) -> None:
    engine = create_engine(settings, f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'pragmas.db'}")
    try:
        async with engine.connect() as connection:
            foreign_keys = await connection.scalar(text("PRAGMA foreign_keys"))
            journal_mode = await connection.scalar(text("PRAGMA journal_mode"))
            busy_timeout = await connection.scalar(text("PRAGMA busy_timeout"))
            driver = (await connection.get_raw_connection()).driver_connection
    finally:
        await engine.dispose()

    assert foreign_keys == 1
    assert journal_mode == "wal"
    # Waiting for another process's lock is the driver's, off the event loop
    # (tests/kernel/test_sqlite_driver.py); the connection itself never waits.
    assert busy_timeout == 0
    assert driver.busy_timeout_ms == settings.sqlite_busy_timeout_ms
    assert (tmp_path / "fresh" / "pragmas.db").exists()


async def test_foreign_keys_are_enforced(kernel: Kernel) -> None:
    now = dt.datetime.now(dt.UTC)
    orphan = AuthSession(
        id=new_id(),
        user_id=new_id(),
        created_at=now,
        last_used_at=now,
        expires_at=now + dt.timedelta(days=1),
    )
    with pytest.raises(IntegrityError):
        async with kernel.db.unit_of_work() as session:
            session.add(orphan)

    async with kernel.db.unit_of_work() as session:
        assert await session.scalar(select(func.count()).select_from(AuthSession)) == 0


async def test_ping_and_pool_status(kernel: Kernel) -> None:
    await kernel.db.ping()
    status = kernel.db.pool_status()
    assert status["checkedout"] == 0
    assert kernel.db.dialect in ("sqlite", "postgresql")


async def test_refreshed_statistics_steer_a_users_id_lookup_to_the_primary_key(
    settings: Settings, tmp_path: Path
) -> None:
    """Without statistics SQLite guesses ten rows per value of any index, so for
    `user_id = ? AND id IN (...)` with more than ten ids it walks the user's index; after
    the statistics job it takes the primary key."""
    db = Database(settings, f"sqlite+aiosqlite:///{tmp_path / 'planner.db'}")
    ids = [f"n{n}" for n in range(0, 260, 20)]
    marks = ", ".join("?" * len(ids))
    lookup = f"EXPLAIN QUERY PLAN SELECT * FROM notes WHERE user_id = ? AND id IN ({marks})"  # noqa: S608
    values = ("u1", *ids)
    try:
        async with db.engine.begin() as connection:
            await connection.exec_driver_sql(
                "CREATE TABLE notes (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, body TEXT)"
            )
            await connection.exec_driver_sql("CREATE INDEX ix_notes_user_id ON notes (user_id)")
            await connection.exec_driver_sql(
                "INSERT INTO notes (id, user_id, body) VALUES (:id, 'u1', 'text')",
                [{"id": f"n{n}"} for n in range(2_000)],
            )
        async with db.engine.connect() as connection:
            before = (await connection.exec_driver_sql(lookup, values)).all()
        assert await db.refresh_statistics(analysis_limit=500) is True
        async with db.engine.connect() as connection:
            after = (await connection.exec_driver_sql(lookup, values)).all()
    finally:
        await db.dispose()

    assert "ix_notes_user_id" in str(before)
    assert "ix_notes_user_id" not in str(after)
    assert "sqlite_autoindex_notes_1" in str(after)


async def test_sqlite_writers_of_one_process_take_turns_in_order(
    settings: Settings, tmp_path: Path
) -> None:
    """While one unit of work holds the writer's turn, the others' writes queue in the
    order they came (SQLite's busy handler would let them race on its sleep schedule),
    reads go on, and a write that waits past the busy timeout is an overload."""
    quick = settings.model_copy(update={"sqlite_busy_timeout_ms": 400})
    db = Database(quick, f"sqlite+aiosqlite:///{tmp_path / 'writers.db'}")
    wrote: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with db.unit_of_work() as session:
            await session.execute(text("INSERT INTO t (name) VALUES ('first')"))
            wrote.append("first")
            holding.set()
            await release.wait()

    async def then(name: str) -> None:
        async with db.unit_of_work() as session:
            await session.execute(text("INSERT INTO t (name) VALUES (:name)"), {"name": name})
            wrote.append(name)

    try:
        async with db.engine.begin() as connection:
            await connection.exec_driver_sql("CREATE TABLE t (name TEXT)")
        holder = asyncio.create_task(first())
        await holding.wait()
        waiting = []
        for n in range(5):
            waiting.append(asyncio.create_task(then(f"w{n}")))
            await asyncio.sleep(0.01)  # each reaches its first write before the next starts
        async with db.unit_of_work() as session:  # a read does not wait for the writer
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 0
            counted = "WITH n AS (SELECT count(*) AS c FROM t) SELECT c FROM n"  # nor a CTE
            assert (await session.execute(text(counted))).scalar() == 0
        release.set()
        await asyncio.gather(holder, *waiting)
        assert wrote == ["first", "w0", "w1", "w2", "w3", "w4"]

        release.clear()
        holding.clear()
        holder = asyncio.create_task(first())
        await holding.wait()
        with pytest.raises(OperationalError) as waited:
            await then("too late")
        assert overload(waited.value) is not None
        with pytest.raises(OperationalError) as waited:  # a CTE that writes waits its turn
            async with db.unit_of_work() as session:
                await session.execute(
                    text("WITH v AS (SELECT 'cte' AS name) INSERT INTO t (name) SELECT name FROM v")
                )
        assert overload(waited.value) is not None
        release.set()
        await holder
        async with db.unit_of_work() as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 7
    finally:
        release.set()
        await db.dispose()


async def test_statistics_refresh_is_left_to_postgresql(kernel: Kernel) -> None:
    ran = await kernel.db.refresh_statistics()
    assert ran is (kernel.db.dialect == "sqlite")


# -- units of work ----------------------------------------------------------------------


async def test_unit_of_work_commits_on_success(kernel: Kernel) -> None:
    async with kernel.db.unit_of_work() as session:
        session.add(audit_event(action="kept"))

    assert await stored_actions(kernel) == ["kept"]


async def write_then_fail(kernel: Kernel, action: str, error: Exception) -> None:
    """Write an audit row into a unit of work's transaction, then fail with `error`."""
    async with kernel.db.unit_of_work() as session:
        session.add(audit_event(action=action))
        await session.flush()
        raise error


async def test_unit_of_work_rolls_back_on_an_exception(kernel: Kernel) -> None:
    with pytest.raises(RuntimeError, match="broke"):
        await write_then_fail(kernel, "lost", RuntimeError("broke"))

    assert await stored_actions(kernel) == []


async def test_unit_of_work_commits_when_a_problem_asks_for_it(kernel: Kernel) -> None:
    with pytest.raises(Conflict):
        await write_then_fail(kernel, "failure.recorded", Conflict("expected", commit=True))

    assert await stored_actions(kernel) == ["failure.recorded"]


async def test_unit_of_work_rolls_back_a_problem_by_default(kernel: Kernel) -> None:
    with pytest.raises(ProblemError):
        await write_then_fail(kernel, "lost", ProblemError("expected", commit=False))
    with pytest.raises(ProblemError):
        await write_then_fail(kernel, "lost.too", ProblemError("expected"))

    assert await stored_actions(kernel) == []


# -- migrations -------------------------------------------------------------------------


@pytest.fixture
async def scratch_database_url(tmp_path: Path, database_url: str) -> AsyncIterator[str]:
    """An empty database of the suite's kind: a new SQLite file, or a new PostgreSQL
    database next to the test database (dropped afterwards)."""
    if not database_url.startswith("postgresql"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'reversible.db'}"
        return
    name = f"veche_scratch_{new_id().hex[:12]}"
    admin = create_engine(make_settings(tmp_path, database_url))
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield database_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_migrations_are_reversible(tmp_path: Path, scratch_database_url: str) -> None:
    url = scratch_database_url
    settings = make_settings(tmp_path, url)

    await upgrade(settings)
    assert await table_names(settings, url) == MODEL_TABLES | {"alembic_version"}
    assert await current_revision(settings) == head_revision()

    await downgrade(settings, "base")
    assert await table_names(settings, url) <= {"alembic_version"}
    assert await current_revision(settings) is None

    await upgrade(settings)
    assert await table_names(settings, url) == MODEL_TABLES | {"alembic_version"}
    assert await current_revision(settings) == head_revision()


async def test_the_usage_days_migration_carries_over_todays_spending(
    tmp_path: Path, scratch_database_url: str
) -> None:
    settings = make_settings(tmp_path, scratch_database_url)
    await upgrade(settings, "0011")
    db = Database(settings)
    try:
        ann = User(email="ann@example.com", display_name="Ann", password_hash=None)
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)

        def call(user_id: UUID | None, tokens: int, at: dt.datetime) -> AIUsage:
            return AIUsage(
                user_id=user_id,
                app="blog",
                purpose="default",
                kind="chat",
                provider="openai",
                model="m",
                prompt_tokens=tokens,
                completion_tokens=1,
                latency_ms=1,
                outcome="ok",
                cost=0.0,
                created_at=at,
            )

        async with db.unit_of_work() as session:
            session.add(ann)
            await session.flush()
            session.add_all(
                [
                    call(ann.id, 29, today + dt.timedelta(seconds=1)),
                    call(ann.id, 19, utcnow()),
                    call(ann.id, 499, today - dt.timedelta(microseconds=1)),
                    call(None, 6, utcnow()),
                ]
            )
        await upgrade(settings)
        async with db.unit_of_work() as session:
            days = (await session.execute(select(AIUsageDay))).scalars().all()
            carried = [(d.user_id, d.day, d.ledger_id, d.tokens, d.batch) for d in days]
    finally:
        await db.dispose()
    assert carried == [(ann.id, today.date(), UUID(int=0), 50, 0)]


async def test_models_match_the_migrations(settings: Settings) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        result: list[Any] = compare_metadata(context, Base.metadata)
        return result

    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(differences)
    finally:
        await engine.dispose()

    assert diff == []


async def test_the_test_database_is_at_the_head_revision(settings: Settings) -> None:
    head = head_revision()

    assert head is not None
    assert await current_revision(settings) == head


async def test_every_model_table_exists_in_the_migrated_database(settings: Settings) -> None:
    assert await table_names(settings, settings.resolved_database_url) >= MODEL_TABLES


# -- single reads outside a unit of work ------------------------------------------------


async def test_read_one_returns_detached_rows_or_none(kernel: Kernel) -> None:
    async with kernel.db.unit_of_work() as session:
        session.add(audit_event(action="test.read.one"))
    statement = select(AuditEvent).where(AuditEvent.action == bindparam("action"))
    row = await kernel.db.read_one(statement, {"action": "test.read.one"})
    assert row is not None
    event = row[0]
    assert event.action == "test.read.one"
    assert inspect(event).detached
    assert await kernel.db.read_one(statement, {"action": "test.read.none"}) is None


async def test_read_all_returns_every_row_committed_and_nothing_uncommitted(
    kernel: Kernel,
) -> None:
    async with kernel.db.unit_of_work() as session:
        session.add_all(audit_event(action=f"test.read.all.{n}") for n in range(3))
    statement = (
        select(AuditEvent.action)
        .where(AuditEvent.action.like(bindparam("prefix")))
        .order_by(AuditEvent.action)
    )
    async with kernel.db.unit_of_work() as session:  # open while reading: not seen
        session.add(audit_event(action="test.read.all.9"))
        await session.flush()
        rows = await kernel.db.read_all(statement, {"prefix": "test.read.all.%"})
    assert [row[0] for row in rows] == [f"test.read.all.{n}" for n in range(3)]
    assert await kernel.db.read_all(statement, {"prefix": "test.read.none%"}) == []


def test_an_in_memory_sqlite_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a SQLite file"):
        Database(make_settings(tmp_path, "sqlite+aiosqlite:///:memory:"))


async def test_the_statistics_job_is_sqlites_and_waits_one_interval(kernel: Kernel) -> None:
    jobs = kernel_jobs(kernel)
    if kernel.db.dialect != "sqlite":
        assert jobs == []
        return
    (job,) = jobs
    assert job.name == STATISTICS_JOB
    assert job.interval == dt.timedelta(seconds=kernel.settings.sqlite_analyze_interval_seconds)
    assert job.at_startup is False

    ran: list[str] = []

    async def record(_kernel: Kernel, name: str) -> None:
        ran.append(name)

    hour = dt.timedelta(hours=1)
    scheduler = Scheduler(
        kernel,
        [
            ScheduledJob("test.at_startup", hour, functools.partial(record, name="now")),
            ScheduledJob(
                "test.later", hour, functools.partial(record, name="later"), at_startup=False
            ),
        ],
    )
    scheduler.start()
    try:
        for _ in range(100):
            if ran:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    finally:
        await scheduler.stop()
    assert ran == ["now"]
