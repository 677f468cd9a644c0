"""segments: saved segments, snapshots, tag rules

Revision ID: 0013_segments
Revises: 0010_insight
Create Date: 2026-11-23 16:43:01.907132
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision = "0013_segments"
down_revision = "0010_insight"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("tree", sa.JSON(), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("created_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("name", name=op.f("uq_segments_name")),
    )
    op.create_table(
        "tag_rules",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("tree", sa.JSON(), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("created_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("computed_at", siyu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("data_as_of", siyu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("member_count", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tag_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_tag_rules_name")),
    )
    op.create_table(
        "segment_snapshots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "segment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("taken_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("data_as_of", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("tree", sa.JSON(), nullable=False),
        sa.Column("member_count", sa.BigInteger(), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_snapshots_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_snapshots")),
    )
    with op.batch_alter_table("segment_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_segment_snapshots_segment", ["segment_id", "taken_at"], unique=False
        )

    op.create_table(
        "member_rule_tags",
        sa.Column(
            "tag_rule_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tagged_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_rule_tags_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["tag_rule_id"],
            ["tag_rules.id"],
            name=op.f("fk_member_rule_tags_tag_rule_id_tag_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tag_rule_id", "member_id", name=op.f("pk_member_rule_tags")),
        info={"merge": "derived"},
    )
    with op.batch_alter_table("member_rule_tags", schema=None) as batch_op:
        batch_op.create_index("ix_member_rule_tags_member", ["member_id"], unique=False)

    op.create_table(
        "segment_members",
        sa.Column(
            "snapshot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_segment_members_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["segment_snapshots.id"],
            name=op.f("fk_segment_members_snapshot_id_segment_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "member_id", name=op.f("pk_segment_members")),
        info={"merge": "derived"},
    )
    with op.batch_alter_table("segment_members", schema=None) as batch_op:
        batch_op.create_index("ix_segment_members_member", ["member_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("segment_members", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_members_member")

    op.drop_table("segment_members")
    with op.batch_alter_table("member_rule_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_member_rule_tags_member")

    op.drop_table("member_rule_tags")
    with op.batch_alter_table("segment_snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_snapshots_segment")

    op.drop_table("segment_snapshots")
    op.drop_table("tag_rules")
    op.drop_table("segments")
