"""agents memory: an index for searches filtered by type

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 22:55:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents_memory", schema=None) as batch_op:
        batch_op.create_index(
            "ix_agents_memory_agent_id_project_id_type_created_at",
            ["agent_id", "project_id", "type", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("agents_memory", schema=None) as batch_op:
        batch_op.drop_index("ix_agents_memory_agent_id_project_id_type_created_at")
