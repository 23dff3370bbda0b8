"""kernel ai usage: each ledger's daily token totals per user

A budget check read the sum of the day's calls, which grows with every call; it now reads
a few totals that each ledger keeps as it stores the calls. Today's totals so far are
carried over under one ledger id of their own.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 20:00:00
"""

import datetime as dt
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veche.kernel.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The ledger id of the totals carried over from before the table existed.
CARRIED_OVER = uuid.UUID(int=0)


def upgrade() -> None:
    days = op.create_table(
        "ai_usage_days",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("ledger_id", sa.Uuid(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("batch", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_ai_usage_days_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "day", "ledger_id", name=op.f("pk_ai_usage_days")),
    )
    usage = sa.table(
        "ai_usage",
        sa.column("user_id", sa.Uuid()),
        sa.column("prompt_tokens", sa.Integer()),
        sa.column("completion_tokens", sa.Integer()),
        sa.column("created_at", veche.kernel.db.UTCDateTime(timezone=True)),
    )
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    spent = op.get_bind().execute(
        sa.select(usage.c.user_id, sa.func.sum(usage.c.prompt_tokens + usage.c.completion_tokens))
        .where(usage.c.user_id.is_not(None), usage.c.created_at >= today)
        .group_by(usage.c.user_id)
    )
    carried = [
        {
            "user_id": user_id,
            "day": today.date(),
            "ledger_id": CARRIED_OVER,
            "tokens": int(tokens or 0),
            "batch": 0,
        }
        for user_id, tokens in spent
    ]
    if carried:
        op.bulk_insert(days, carried)


def downgrade() -> None:
    op.drop_table("ai_usage_days")
