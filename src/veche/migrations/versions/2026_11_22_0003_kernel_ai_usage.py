"""kernel ai usage

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 01:53:46.504818
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veche.kernel.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ai_usage",
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("app", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("prompt", sa.String(length=200), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_ai_usage_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_usage")),
    )
    with op.batch_alter_table("ai_usage", schema=None) as batch_op:
        batch_op.create_index("ix_ai_usage_app_created_at", ["app", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_ai_usage_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            "ix_ai_usage_user_id_created_at", ["user_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("ai_usage", schema=None) as batch_op:
        batch_op.drop_index("ix_ai_usage_user_id_created_at")
        batch_op.drop_index(batch_op.f("ix_ai_usage_created_at"))
        batch_op.drop_index("ix_ai_usage_app_created_at")

    op.drop_table("ai_usage")
