"""lookup indexes: order_lines.order_id's own index dropped (the unique (order_id, line_no)
already leads with it, so every line write paid for a second copy); coupons.used_at
indexed for the coupons used in a period (paid-membership benefit cost)

Revision ID: 0019_lookup_indexes
Revises: 0018_insight_incremental
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0019_lookup_indexes"
down_revision = "0018_insight_incremental"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_lines_order_id"))
    with op.batch_alter_table("coupons", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_coupons_used_at"), ["used_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("coupons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coupons_used_at"))
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_order_lines_order_id"), ["order_id"], unique=False)
