"""Alembic environment: runs migrations on the connection `veche.migrate` hands over."""

from __future__ import annotations

from alembic import context

import veche.kernel  # noqa: F401 - registers the kernel's tables
from veche.kernel.db import Base
from veche.registry import load_modules

load_modules(None)  # registers every installed app's tables

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `veche migrate` (veche.migrate)")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
