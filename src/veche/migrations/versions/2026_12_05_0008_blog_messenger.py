"""blog messenger: conversations, members, messages and their edits, blocks

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 22:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veche.kernel.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blog_conversations",
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("direct_key", sa.String(length=65), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_activity_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_blog_conversations_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_conversations")),
        sa.UniqueConstraint("direct_key", name=op.f("uq_blog_conversations_direct_key")),
    )
    with op.batch_alter_table("blog_conversations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_blog_conversations_last_activity_at", ["last_activity_at"], unique=False
        )

    op.create_table(
        "blog_conversation_members",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("last_read_seq", sa.Integer(), nullable=False),
        sa.Column("joined_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["blog_conversations.id"],
            name=op.f("fk_blog_conversation_members_conversation_id_blog_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_blog_conversation_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "conversation_id", "user_id", name=op.f("pk_blog_conversation_members")
        ),
    )
    with op.batch_alter_table("blog_conversation_members", schema=None) as batch_op:
        batch_op.create_index("ix_blog_conversation_members_user_id", ["user_id"], unique=False)

    op.create_table(
        "blog_messages",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sender_id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("edit_count", sa.Integer(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("edited_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["blog_conversations.id"],
            name=op.f("fk_blog_messages_conversation_id_blog_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sender_id"],
            ["users.id"],
            name=op.f("fk_blog_messages_sender_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_messages")),
        sa.UniqueConstraint(
            "conversation_id", "seq", name=op.f("uq_blog_messages_conversation_id_seq")
        ),
        sa.UniqueConstraint(
            "conversation_id",
            "sender_id",
            "client_id",
            name=op.f("uq_blog_messages_conversation_id_sender_id_client_id"),
        ),
    )

    op.create_table(
        "blog_message_edits",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("replaced_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["blog_messages.id"],
            name=op.f("fk_blog_message_edits_message_id_blog_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_message_edits")),
        sa.UniqueConstraint(
            "message_id", "number", name=op.f("uq_blog_message_edits_message_id_number")
        ),
    )

    op.create_table(
        "blog_blocks",
        sa.Column("blocker_id", sa.Uuid(), nullable=False),
        sa.Column("blocked_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["blocked_id"],
            ["users.id"],
            name=op.f("fk_blog_blocks_blocked_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["blocker_id"],
            ["users.id"],
            name=op.f("fk_blog_blocks_blocker_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_blocks")),
        sa.UniqueConstraint(
            "blocker_id", "blocked_id", name=op.f("uq_blog_blocks_blocker_id_blocked_id")
        ),
    )
    with op.batch_alter_table("blog_blocks", schema=None) as batch_op:
        batch_op.create_index("ix_blog_blocks_blocked_id", ["blocked_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("blog_blocks", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_blocks_blocked_id")
    op.drop_table("blog_blocks")
    op.drop_table("blog_message_edits")
    op.drop_table("blog_messages")
    with op.batch_alter_table("blog_conversation_members", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_conversation_members_user_id")
    op.drop_table("blog_conversation_members")
    with op.batch_alter_table("blog_conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_conversations_last_activity_at")
    op.drop_table("blog_conversations")
