"""blog likes, user follows, reads, notifications and AI suggestions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 22:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veche.kernel.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blog_likes",
        sa.Column("post_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["blog_posts.id"],
            name=op.f("fk_blog_likes_post_id_blog_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_blog_likes_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("post_id", "user_id", name=op.f("pk_blog_likes")),
    )
    with op.batch_alter_table("blog_likes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_blog_likes_user_id_created_at", ["user_id", "created_at"], unique=False
        )

    op.create_table(
        "blog_user_follows",
        sa.Column("follower_id", sa.Uuid(), nullable=False),
        sa.Column("followee_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["followee_id"],
            ["users.id"],
            name=op.f("fk_blog_user_follows_followee_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["follower_id"],
            ["users.id"],
            name=op.f("fk_blog_user_follows_follower_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("follower_id", "followee_id", name=op.f("pk_blog_user_follows")),
    )
    with op.batch_alter_table("blog_user_follows", schema=None) as batch_op:
        batch_op.create_index("ix_blog_user_follows_followee_id", ["followee_id"], unique=False)

    op.create_table(
        "blog_reads",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("post_id", sa.Uuid(), nullable=False),
        sa.Column("read_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["blog_posts.id"],
            name=op.f("fk_blog_reads_post_id_blog_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_blog_reads_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "post_id", name=op.f("pk_blog_reads")),
    )
    with op.batch_alter_table("blog_reads", schema=None) as batch_op:
        batch_op.create_index("ix_blog_reads_post_id", ["post_id"], unique=False)

    op.create_table(
        "blog_notifications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("post_id", sa.Uuid(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("read_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name=op.f("fk_blog_notifications_actor_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["blog_posts.id"],
            name=op.f("fk_blog_notifications_post_id_blog_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_blog_notifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_notifications")),
    )
    with op.batch_alter_table("blog_notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_blog_notifications_user_id_created_at", ["user_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_blog_notifications_user_id_read_at", ["user_id", "read_at"], unique=False
        )

    op.create_table(
        "blog_suggestions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("post_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("dismissed_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["blog_posts.id"],
            name=op.f("fk_blog_suggestions_post_id_blog_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_blog_suggestions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_suggestions")),
        sa.UniqueConstraint("user_id", "post_id", name=op.f("uq_blog_suggestions_user_id_post_id")),
    )
    with op.batch_alter_table("blog_suggestions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_blog_suggestions_user_id_created_at", ["user_id", "created_at"], unique=False
        )

    with op.batch_alter_table("blog_posts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("like_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.create_index(
            "ix_blog_posts_author_id_state_published_at",
            ["author_id", "state", "published_at"],
            unique=False,
        )

    with op.batch_alter_table("blog_profiles", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("follower_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("following_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("suggestions_enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )

    with op.batch_alter_table("blog_comments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_blog_comments_author_id_post_id", ["author_id", "post_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("blog_comments", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_comments_author_id_post_id")

    with op.batch_alter_table("blog_profiles", schema=None) as batch_op:
        batch_op.drop_column("suggestions_enabled")
        batch_op.drop_column("following_count")
        batch_op.drop_column("follower_count")

    with op.batch_alter_table("blog_posts", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_posts_author_id_state_published_at")
        batch_op.drop_column("like_count")

    with op.batch_alter_table("blog_suggestions", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_suggestions_user_id_created_at")
    op.drop_table("blog_suggestions")

    with op.batch_alter_table("blog_notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_notifications_user_id_read_at")
        batch_op.drop_index("ix_blog_notifications_user_id_created_at")
    op.drop_table("blog_notifications")

    with op.batch_alter_table("blog_reads", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_reads_post_id")
    op.drop_table("blog_reads")

    with op.batch_alter_table("blog_user_follows", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_user_follows_followee_id")
    op.drop_table("blog_user_follows")

    with op.batch_alter_table("blog_likes", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_likes_user_id_created_at")
    op.drop_table("blog_likes")
