"""kernel events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 00:31:22.174530
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veche.kernel.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_consumer_offsets",
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("log_position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", name=op.f("pk_event_consumer_offsets")),
    )
    op.create_table(
        "event_dead_letters",
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("error_type", sa.String(length=200), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_dead_letters")),
        sa.UniqueConstraint(
            "consumer", "event_id", name=op.f("uq_event_dead_letters_consumer_event_id")
        ),
    )
    with op.batch_alter_table("event_dead_letters", schema=None) as batch_op:
        batch_op.create_index(
            "ix_event_dead_letters_consumer_created_at", ["consumer", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_event_dead_letters_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "event_outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("occurred_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("log_position", sa.BigInteger(), nullable=True),
        sa.Column("published_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_outbox")),
        sa.UniqueConstraint("log_position", name=op.f("uq_event_outbox_log_position")),
    )
    with op.batch_alter_table("event_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_event_outbox_published_at"), ["published_at"], unique=False
        )

    op.create_table(
        "event_processed",
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("processed_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_event_processed")),
    )


def downgrade() -> None:
    op.drop_table("event_processed")
    with op.batch_alter_table("event_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_outbox_published_at"))

    op.drop_table("event_outbox")
    with op.batch_alter_table("event_dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_dead_letters_created_at"))
        batch_op.drop_index("ix_event_dead_letters_consumer_created_at")

    op.drop_table("event_dead_letters")
    op.drop_table("event_consumer_offsets")
