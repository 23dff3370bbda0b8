"""agents tasks: the agent and status index also orders by finished_at

An agent's mean run time is taken over its latest completed tasks, read down this index;
(agent_id, status) is its prefix, so that index goes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 17:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents_tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_agents_tasks_agent_id_status_finished_at",
            ["agent_id", "status", "finished_at"],
            unique=False,
        )
        batch_op.drop_index("ix_agents_tasks_agent_id_status")


def downgrade() -> None:
    with op.batch_alter_table("agents_tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_agents_tasks_agent_id_status", ["agent_id", "status"], unique=False
        )
        batch_op.drop_index("ix_agents_tasks_agent_id_status_finished_at")
