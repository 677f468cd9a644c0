"""paid: the savings ledger of paid members

Revision ID: 0009_paid_savings
Revises: 0008_merge_loyalty
Create Date: 2026-11-23 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision = "0009_paid_savings"
down_revision = "0008_merge_loyalty"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "paid_savings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "subscription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("kind", sa.String(length=15), nullable=False),
        sa.Column("amount_fen", sa.Integer(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("fact", sa.String(length=120), nullable=False),
        sa.Column("at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('member_price', 'coupon', 'freight', 'extra_points')",
            name=op.f("ck_paid_savings_kind_known"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_paid_savings_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_paid_savings_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["paid_subscriptions.id"],
            name=op.f("fk_paid_savings_subscription_id_paid_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_paid_savings")),
        sa.UniqueConstraint("fact", name=op.f("uq_paid_savings_fact")),
    )
    op.create_index(
        op.f("ix_paid_savings_member_at"), "paid_savings", ["member_id", "at"], unique=False
    )
    op.create_index(op.f("ix_paid_savings_order_id"), "paid_savings", ["order_id"], unique=False)
    op.create_index(
        op.f("ix_paid_savings_subscription_id"), "paid_savings", ["subscription_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_paid_savings_subscription_id"), table_name="paid_savings")
    op.drop_index(op.f("ix_paid_savings_order_id"), table_name="paid_savings")
    op.drop_index(op.f("ix_paid_savings_member_at"), table_name="paid_savings")
    op.drop_table("paid_savings")
