"""insight refresh: lifecycle transitions and matrix, groups, early signals

Revision ID: 0012_insight_refresh
Revises: 0010_insight
Create Date: 2026-11-23 16:42:56.633930
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision = "0012_insight_refresh"
down_revision = "0010_insight"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insight_early_signals",
        sa.Column("cohort", sa.String(length=7), nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.Column("first_within_7d", sa.BigInteger(), nullable=False),
        sa.Column("second_within_30d", sa.BigInteger(), nullable=False),
        sa.Column("early", sa.BigInteger(), nullable=False),
        sa.Column("early_super", sa.BigInteger(), nullable=False),
        sa.Column("other_super", sa.BigInteger(), nullable=False),
        sa.Column("mature", sa.Boolean(), nullable=False),
        sa.Column("computed_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cohort", name=op.f("pk_insight_early_signals")),
    )
    op.create_table(
        "lifecycle_matrix",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("from_stage", sa.String(length=10), nullable=False),
        sa.Column("to_stage", sa.String(length=10), nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "month", "from_stage", "to_stage", name=op.f("pk_lifecycle_matrix")
        ),
    )
    op.create_table(
        "insight_groups",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("dimension", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=20), nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.Column("spend_fen", sa.BigInteger(), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["insight_runs.id"], name=op.f("fk_insight_groups_run_id_insight_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", "dimension", "key", name=op.f("pk_insight_groups")),
    )
    op.create_table(
        "lifecycle_transitions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("from_stage", sa.String(length=10), nullable=True),
        sa.Column("to_stage", sa.String(length=10), nullable=False),
        sa.Column("at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_lifecycle_transitions_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["insight_runs.id"],
            name=op.f("fk_lifecycle_transitions_run_id_insight_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_transitions")),
        info={"merge": "derived"},
    )
    with op.batch_alter_table("lifecycle_transitions", schema=None) as batch_op:
        batch_op.create_index("ix_lifecycle_transitions_at", ["at"], unique=False)
        batch_op.create_index(
            "ix_lifecycle_transitions_member_at", ["member_id", "at"], unique=False
        )
        batch_op.create_index("ix_lifecycle_transitions_run", ["run_id"], unique=False)
    with op.batch_alter_table("insight_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=10), server_default="done", nullable=False)
        )
    with op.batch_alter_table("member_insight", schema=None) as batch_op:
        batch_op.drop_index("ix_member_insight_rfm_group")
        batch_op.create_index(
            "ix_member_insight_rfm_group_member", ["rfm_group", "member_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("member_insight", schema=None) as batch_op:
        batch_op.drop_index("ix_member_insight_rfm_group_member")
        batch_op.create_index("ix_member_insight_rfm_group", ["rfm_group"], unique=False)
    with op.batch_alter_table("insight_runs", schema=None) as batch_op:
        batch_op.drop_column("status")
    with op.batch_alter_table("lifecycle_transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_lifecycle_transitions_run")
        batch_op.drop_index("ix_lifecycle_transitions_member_at")
        batch_op.drop_index("ix_lifecycle_transitions_at")

    op.drop_table("lifecycle_transitions")
    op.drop_table("insight_groups")
    op.drop_table("lifecycle_matrix")
    op.drop_table("insight_early_signals")
