"""Alembic migrations: one history for the kernel and every app (see `veche.migrate`)."""
