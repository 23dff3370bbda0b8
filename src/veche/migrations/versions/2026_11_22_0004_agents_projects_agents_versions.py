"""agents projects agents versions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 03:34:42.635721
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veche.kernel.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agents_agents",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_agents_agents_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents_agents")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_agents_agents_user_id_name")),
    )
    with op.batch_alter_table("agents_agents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_agents_agents_user_id_created_at", ["user_id", "created_at"], unique=False
        )

    op.create_table(
        "agents_projects",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("workspace", sa.String(length=255), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_agents_projects_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents_projects")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_agents_projects_user_id_name")),
    )
    with op.batch_alter_table("agents_projects", schema=None) as batch_op:
        batch_op.create_index(
            "ix_agents_projects_user_id_created_at", ["user_id", "created_at"], unique=False
        )

    op.create_table(
        "agents_agent_versions",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents_agents.id"],
            name=op.f("fk_agents_agent_versions_agent_id_agents_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_agents_agent_versions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents_agent_versions")),
        sa.UniqueConstraint(
            "agent_id", "number", name=op.f("uq_agents_agent_versions_agent_id_number")
        ),
    )
    with op.batch_alter_table("agents_agent_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agents_agent_versions_user_id"), ["user_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("agents_agent_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agents_agent_versions_user_id"))

    op.drop_table("agents_agent_versions")
    with op.batch_alter_table("agents_projects", schema=None) as batch_op:
        batch_op.drop_index("ix_agents_projects_user_id_created_at")

    op.drop_table("agents_projects")
    with op.batch_alter_table("agents_agents", schema=None) as batch_op:
        batch_op.drop_index("ix_agents_agents_user_id_created_at")

    op.drop_table("agents_agents")
