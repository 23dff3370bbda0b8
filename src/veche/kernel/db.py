"""The database: SQLAlchemy 2 async engine, declarative base, keys, time and units of work.

SQLite (aiosqlite, WAL, foreign keys on) is the embedded default and PostgreSQL (asyncpg)
the production database; the URL picks one and nothing else changes. Tables get UUIDv7
primary keys and timezone-aware UTC timestamps; constraints are named by convention so
Alembic can change them on both databases. Alembic is the only way a schema is made.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar
from uuid import UUID

import sqlalchemy
import uuid6
from sqlalchemy import DateTime, MetaData, Row, event, make_url, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeDecorator, Uuid
from sqlalchemy.util import await_only

from veche.kernel.errors import ProblemError
from veche.kernel.sqlite_driver import loop_connector
from veche.settings import Settings

AnyRow = Row[*tuple[Any, ...]]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> UUID:
    """A new UUIDv7: time-ordered, so it makes good keys and cursors."""
    return UUID(bytes=uuid6.uuid7().bytes)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_ON_COMMIT = "veche.on_commit"
_ON_ROLLBACK = "veche.on_rollback"


def on_outcome(
    session: AsyncSession | Session,
    *,
    committed: Callable[[], None] | None = None,
    rolled_back: Callable[[], None] | None = None,
) -> None:
    """Run `committed` once the session's transaction commits, or `rolled_back` if it rolls
    back instead: for effects outside the database (files) that must follow the rows. The
    actions are synchronous and run on the event loop's thread; hand slow work to a thread.
    """
    info = session.info
    if committed is not None:
        info.setdefault(_ON_COMMIT, []).append(committed)
    if rolled_back is not None:
        info.setdefault(_ON_ROLLBACK, []).append(rolled_back)


@event.listens_for(Session, "after_commit")
def _run_commit_actions(session: Session) -> None:
    session.info.pop(_ON_ROLLBACK, None)
    for action in session.info.pop(_ON_COMMIT, []):
        action()


@event.listens_for(Session, "after_rollback")
def _run_rollback_actions(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)
    for action in session.info.pop(_ON_ROLLBACK, []):
        action()


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database.

    SQLite keeps no zone, so values are stored as naive UTC and made aware on the way out;
    a naive value on the way in is a bug in the caller and is refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """The declarative base of every Veche table, kernel and apps alike."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime(), UUID: Uuid()}


class IdMixin:
    id: Mapped[UUID] = mapped_column(primary_key=True, default=new_id)


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def _sqlite_pragmas(busy_timeout_ms: int | None) -> Any:
    """The pragmas of every SQLite connection; the busy timeout is set last (None: as the
    connection was opened)."""

    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if busy_timeout_ms is not None:
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    return on_connect


def _loop_connections(busy_timeout_ms: int) -> Any:
    """The engine's connections run their statements on the event loop's thread
    (`sqlite_driver`), opened with the arguments the dialect made from the URL."""
    connect = loop_connector(busy_timeout_ms)

    def do_connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        return dialect.loaded_dbapi.connect(*cargs, async_creator_fn=connect, **cparams)

    return do_connect


def create_engine(settings: Settings, url: str | None = None, **options: Any) -> AsyncEngine:
    """An engine for the configured database, with pool settings and SQLite pragmas."""
    url = url or settings.resolved_database_url
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            echo=settings.database_echo,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout_seconds,
            **options,
        )
        event.listen(
            engine.sync_engine, "do_connect", _loop_connections(settings.sqlite_busy_timeout_ms)
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(None))
        return engine
    return create_async_engine(
        url,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_seconds,
        pool_recycle=settings.database_pool_recycle_seconds,
        pool_pre_ping=settings.database_pre_ping,
        **options,
    )


_WRITING = re.compile(r"\b(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


class _SQLiteWriters:
    """One writing transaction at a time per process, queued in order.

    SQLite has one writer. Without this, the transactions of one process that want to
    write at once each retry in SQLite's busy handler, which sleeps between attempts (1,
    2, 5, 10... ms): on a busy server most of a write's time went to those sleeps while
    the lock was already free. Here a transaction's first statement that is not a read
    waits its turn on an `asyncio.Lock` (first come, first served, woken the moment the
    previous writer ends), and the turn ends when its connection goes back to the pool
    (every unit of work gives it back when its transaction ends). Other processes
    on the same file still meet in SQLite's busy handler. Waiting longer than the busy
    timeout raises SQLite's own "database is locked" error.
    """

    INFO_KEY = "veche.sqlite_writer"

    def __init__(self, engine: AsyncEngine, timeout_seconds: float) -> None:
        self.timeout = timeout_seconds
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", self._before_execute)
        # A session gives its connection back once its transaction has ended (committed,
        # rolled back, or closed midway): the turn ends then, after the COMMIT itself.
        event.listen(sync_engine.pool, "checkin", self._checked_in)

    @staticmethod
    def _reads_only(statement: str) -> bool:
        head = statement.lstrip()[:8].upper()
        if head.startswith(("SELECT", "PRAGMA", "EXPLAIN")):
            return True
        # A common table expression is a read unless a writing keyword appears anywhere
        # in it (a string that merely holds one is taken for a write: the safe side).
        return head.startswith("WITH") and _WRITING.search(statement) is None

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def _acquire(self) -> asyncio.Lock:
        lock = self._lock()
        try:
            async with asyncio.timeout(self.timeout):
                await lock.acquire()
        except TimeoutError:
            raise sqlalchemy.exc.OperationalError(
                "waiting for this process's SQLite writer",
                None,
                sqlite3.OperationalError("database is locked"),
            ) from None
        return lock

    def _before_execute(
        self,
        connection: sqlalchemy.Connection,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        info = connection.info
        if self.INFO_KEY in info or self._reads_only(statement):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a synchronous use outside any event loop: SQLite decides
            return
        info[self.INFO_KEY] = await_only(self._acquire())

    def _checked_in(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        lock = record.info.pop(self.INFO_KEY, None)
        if lock is not None:
            lock.release()


class _SQLiteReads:
    """Single reads on a synchronous SQLite engine, made on the event loop's thread (a
    read by key takes microseconds; see `sqlite_driver` for why not a thread).

    Nothing here waits: the connections have no busy timeout. In WAL mode a read meets a
    lock only while another process holds the file exclusively or recovers it; the read
    then fails at once with SQLite's "database is locked", which the API answers as a 503
    to retry (`errors.overload`), instead of holding up the whole process."""

    def __init__(self, settings: Settings, url: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite")
        self.engine = sqlalchemy.create_engine(
            sync_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout_seconds,
            connect_args={"check_same_thread": False, "timeout": 0},
        )
        event.listen(self.engine, "connect", _sqlite_pragmas(None))

    async def one(self, statement: Executable, params: Mapping[str, Any]) -> AnyRow | None:
        with Session(self.engine) as session:
            return session.execute(statement, params).one_or_none()

    async def all(self, statement: Executable, params: Mapping[str, Any]) -> list[AnyRow]:
        with Session(self.engine) as session:
            return list(session.execute(statement, params).all())

    async def dispose(self) -> None:
        self.engine.dispose()


class _AutocommitReads:
    """Single reads on autocommit connections of their own pool: one round trip per read,
    without the BEGIN and COMMIT a unit of work sends."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.engine = create_engine(settings, url, isolation_level="AUTOCOMMIT")
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def one(self, statement: Executable, params: Mapping[str, Any]) -> AnyRow | None:
        async with self._sessions() as session:
            return (await session.execute(statement, params)).one_or_none()

    async def all(self, statement: Executable, params: Mapping[str, Any]) -> list[AnyRow]:
        async with self._sessions() as session:
            return list((await session.execute(statement, params)).all())

    async def dispose(self) -> None:
        await self.engine.dispose()


class Database:
    """The engine and session factory one process shares, and a fast path for single
    reads that need no unit of work (the per-request session lookup)."""

    def __init__(self, settings: Settings, url: str | None = None) -> None:
        url = url or settings.resolved_database_url
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            # Each connection would see its own empty database.
            raise ValueError("Veche needs a SQLite file, not an in-memory database")
        self.engine = create_engine(settings, url)
        if self.engine.dialect.name == "sqlite":
            _SQLiteWriters(self.engine, settings.sqlite_busy_timeout_ms / 1000)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self._reads: _SQLiteReads | _AutocommitReads = (
            _SQLiteReads(settings, url)
            if self.engine.dialect.name == "sqlite"
            else _AutocommitReads(settings, url)
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings)

    async def read_one(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> AnyRow | None:
        """One row (or none) of a read-only statement, outside any unit of work.

        ORM objects in the row are detached: to change one, load or merge it into the
        request's session.
        """
        return await self._reads.one(statement, params or {})

    async def read_all(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> list[AnyRow]:
        """Every row of one read-only statement, outside any unit of work, as `read_one`:
        for reads made often enough that a `BEGIN` and a `COMMIT` around each would count."""
        return await self._reads.all(statement, params or {})

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits if the block succeeds and rolls back if it fails.

        A `ProblemError` raised with `commit=True` still commits: the failure is expected
        and what was written about it (an audit row, a revoked token family) must stay.
        """
        async with self.sessions() as session:
            try:
                yield session
            except ProblemError as exc:
                if exc.commit:
                    await session.commit()
                else:
                    await session.rollback()
                raise
            except BaseException:
                await session.rollback()
                raise
            else:
                await session.commit()

    async def refresh_statistics(self, analysis_limit: int = 1000) -> bool:
        """Refresh SQLite's query-planner statistics; True if it ran.

        Without statistics SQLite prefers any equality index, so `user_id = ? AND id IN
        (...)` walks every row of the user through their index instead of taking the
        primary key (18 ms instead of 0.1 ms at 100,000 rows). `analysis_limit` samples
        that many rows per index, so the cost stays bounded as tables grow. PostgreSQL's
        autovacuum keeps its own statistics: nothing to do there.
        """
        if self.dialect != "sqlite":
            return False
        async with self.engine.connect() as connection:
            await connection.exec_driver_sql(f"PRAGMA analysis_limit={int(analysis_limit)}")
            await connection.exec_driver_sql("ANALYZE")
            await connection.commit()
        return True

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    def pool_status(self) -> dict[str, int]:
        pool: Any = self.engine.pool
        status: dict[str, int] = {}
        for name in ("size", "checkedout", "overflow", "checkedin"):
            method = getattr(pool, name, None)
            if callable(method):
                status[name] = int(method())
        return status

    async def dispose(self) -> None:
        await self.engine.dispose()
        await self._reads.dispose()
