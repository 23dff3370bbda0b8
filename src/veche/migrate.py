"""Schema migrations through Alembic: the only way a Veche schema is made or changed.

Migrations live in `veche/migrations` (shipped inside the package, so `veche migrate`
works wherever Veche is installed) as one history for the kernel and all apps.
"""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from veche.kernel.db import create_engine
from veche.settings import Settings


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "veche:migrations")
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


async def _with_connection(settings: Settings, action: Any, url: str | None = None) -> Any:
    engine = create_engine(settings, url)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(action)
    finally:
        await engine.dispose()


async def upgrade(settings: Settings, revision: str = "head", url: str | None = None) -> None:
    """Bring the database to `revision` (the newest by default)."""

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    await _with_connection(settings, run, url)


async def downgrade(settings: Settings, revision: str, url: str | None = None) -> None:
    def run(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), revision)

    await _with_connection(settings, run, url)


async def current_revision(settings: Settings, url: str | None = None) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    result: str | None = await _with_connection(settings, read, url)
    return result


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
