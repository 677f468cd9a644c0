"""tiers: growth ledger, tier history, grants, review periods

Revision ID: 0004_tiers
Revises: 0003_loyalty_base
Create Date: 2026-11-23 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision = "0004_tiers"
down_revision = "0003_loyalty_base"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "growth_entries",
        sa.Column("id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("growth", sa.Integer(), nullable=False),
        sa.Column("spend_fen", sa.Integer(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("fact", sa.String(length=200), nullable=False),
        sa.Column("order_id", ID, nullable=True),
        sa.Column("at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("created_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_growth_entries_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_growth_entries_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_growth_entries")),
        sa.UniqueConstraint("fact", name=op.f("uq_growth_entries_fact")),
    )
    with op.batch_alter_table("growth_entries", schema=None) as batch_op:
        batch_op.create_index("ix_growth_entries_member_at", ["member_id", "at"], unique=False)

    op.create_table(
        "tier_history",
        sa.Column("id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("from_code", sa.String(length=20), nullable=True),
        sa.Column("to_code", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_tier_history_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_history")),
    )
    with op.batch_alter_table("tier_history", schema=None) as batch_op:
        batch_op.create_index("ix_tier_history_member_at", ["member_id", "at"], unique=False)

    op.create_table(
        "tier_grants",
        sa.Column("id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("tier_code", sa.String(length=20), nullable=False),
        sa.Column("held_code", sa.String(length=20), nullable=True),
        sa.Column("starts_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("revoked_at", siyu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", siyu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_tier_grants_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_grants")),
    )
    with op.batch_alter_table("tier_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tier_grants_ends_at"), ["ends_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tier_grants_member_id"), ["member_id"], unique=False)

    op.create_table(
        "tier_periods",
        sa.Column("member_id", ID, nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("review_on", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_tier_periods_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_tier_periods")),
    )
    with op.batch_alter_table("tier_periods", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tier_periods_review_on"), ["review_on"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tier_periods", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tier_periods_review_on"))
    op.drop_table("tier_periods")
    with op.batch_alter_table("tier_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tier_grants_member_id"))
        batch_op.drop_index(batch_op.f("ix_tier_grants_ends_at"))
    op.drop_table("tier_grants")
    with op.batch_alter_table("tier_history", schema=None) as batch_op:
        batch_op.drop_index("ix_tier_history_member_at")
    op.drop_table("tier_history")
    with op.batch_alter_table("growth_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_growth_entries_member_at")
    op.drop_table("growth_entries")
