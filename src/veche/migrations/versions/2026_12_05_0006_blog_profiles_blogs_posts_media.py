"""blog: profiles, blogs, members, follows, posts with tags, media and revisions, comments,
uploaded media

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 19:39:46.435831
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veche.kernel.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blog_blogs",
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("follower_count", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_blog_blogs_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_blogs")),
        sa.UniqueConstraint("slug", name=op.f("uq_blog_blogs_slug")),
    )
    with op.batch_alter_table("blog_blogs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_blog_blogs_owner_id_created_at", ["owner_id", "created_at"], unique=False
        )

    op.create_table(
        "blog_media",
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source_type", sa.String(length=32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_blog_media_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_media")),
    )
    with op.batch_alter_table("blog_media", schema=None) as batch_op:
        batch_op.create_index(
            "ix_blog_media_owner_id_created_at", ["owner_id", "created_at"], unique=False
        )

    op.create_table(
        "blog_follows",
        sa.Column("blog_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["blog_id"],
            ["blog_blogs.id"],
            name=op.f("fk_blog_follows_blog_id_blog_blogs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_blog_follows_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("blog_id", "user_id", name=op.f("pk_blog_follows")),
    )
    with op.batch_alter_table("blog_follows", schema=None) as batch_op:
        batch_op.create_index("ix_blog_follows_user_id", ["user_id"], unique=False)

    op.create_table(
        "blog_members",
        sa.Column("blog_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["blog_id"],
            ["blog_blogs.id"],
            name=op.f("fk_blog_members_blog_id_blog_blogs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_blog_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("blog_id", "user_id", name=op.f("pk_blog_members")),
    )
    with op.batch_alter_table("blog_members", schema=None) as batch_op:
        batch_op.create_index("ix_blog_members_user_id", ["user_id"], unique=False)

    op.create_table(
        "blog_posts",
        sa.Column("blog_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("excerpt", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("publish_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("published_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("comment_count", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_blog_posts_author_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["blog_id"],
            ["blog_blogs.id"],
            name=op.f("fk_blog_posts_blog_id_blog_blogs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_posts")),
        sa.UniqueConstraint("blog_id", "slug", name=op.f("uq_blog_posts_blog_id_slug")),
    )
    with op.batch_alter_table("blog_posts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_blog_posts_author_id_created_at", ["author_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_blog_posts_blog_id_state_published_at",
            ["blog_id", "state", "published_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_blog_posts_state_publish_at", ["state", "publish_at"], unique=False
        )
        batch_op.create_index(
            "ix_blog_posts_state_published_at", ["state", "published_at"], unique=False
        )

    op.create_table(
        "blog_profiles",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("username", sa.String(length=32), nullable=True),
        sa.Column("bio", sa.Text(), nullable=False),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.Column("avatar_media_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["avatar_media_id"],
            ["blog_media.id"],
            name=op.f("fk_blog_profiles_avatar_media_id_blog_media"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_blog_profiles_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_blog_profiles")),
        sa.UniqueConstraint("username", name=op.f("uq_blog_profiles_username")),
    )
    op.create_table(
        "blog_comments",
        sa.Column("post_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("edited", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_blog_comments_author_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["blog_posts.id"],
            name=op.f("fk_blog_comments_post_id_blog_posts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_comments")),
    )
    with op.batch_alter_table("blog_comments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_blog_comments_post_id_created_at", ["post_id", "created_at"], unique=False
        )

    op.create_table(
        "blog_post_media",
        sa.Column("post_id", sa.Uuid(), nullable=False),
        sa.Column("media_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["media_id"],
            ["blog_media.id"],
            name=op.f("fk_blog_post_media_media_id_blog_media"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["blog_posts.id"],
            name=op.f("fk_blog_post_media_post_id_blog_posts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("post_id", "media_id", name=op.f("pk_blog_post_media")),
    )
    with op.batch_alter_table("blog_post_media", schema=None) as batch_op:
        batch_op.create_index("ix_blog_post_media_media_id", ["media_id"], unique=False)

    op.create_table(
        "blog_post_revisions",
        sa.Column("post_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("editor_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("excerpt", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", veche.kernel.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["editor_id"],
            ["users.id"],
            name=op.f("fk_blog_post_revisions_editor_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["blog_posts.id"],
            name=op.f("fk_blog_post_revisions_post_id_blog_posts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_post_revisions")),
        sa.UniqueConstraint(
            "post_id", "number", name=op.f("uq_blog_post_revisions_post_id_number")
        ),
    )
    op.create_table(
        "blog_post_tags",
        sa.Column("post_id", sa.Uuid(), nullable=False),
        sa.Column("tag", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["blog_posts.id"],
            name=op.f("fk_blog_post_tags_post_id_blog_posts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("post_id", "tag", name=op.f("pk_blog_post_tags")),
    )
    with op.batch_alter_table("blog_post_tags", schema=None) as batch_op:
        batch_op.create_index("ix_blog_post_tags_tag", ["tag"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("blog_post_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_post_tags_tag")

    op.drop_table("blog_post_tags")
    op.drop_table("blog_post_revisions")
    with op.batch_alter_table("blog_post_media", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_post_media_media_id")

    op.drop_table("blog_post_media")
    with op.batch_alter_table("blog_comments", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_comments_post_id_created_at")

    op.drop_table("blog_comments")
    op.drop_table("blog_profiles")
    with op.batch_alter_table("blog_posts", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_posts_state_published_at")
        batch_op.drop_index("ix_blog_posts_state_publish_at")
        batch_op.drop_index("ix_blog_posts_blog_id_state_published_at")
        batch_op.drop_index("ix_blog_posts_author_id_created_at")

    op.drop_table("blog_posts")
    with op.batch_alter_table("blog_members", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_members_user_id")

    op.drop_table("blog_members")
    with op.batch_alter_table("blog_follows", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_follows_user_id")

    op.drop_table("blog_follows")
    with op.batch_alter_table("blog_media", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_media_owner_id_created_at")

    op.drop_table("blog_media")
    with op.batch_alter_table("blog_blogs", schema=None) as batch_op:
        batch_op.drop_index("ix_blog_blogs_owner_id_created_at")

    op.drop_table("blog_blogs")
