"""insight incremental: running purchase aggregates on member_insight, the refresh's
watermark on insight_runs; recency is computed when read, no longer stored

Revision ID: 0018_insight_incremental
Revises: 0017_kpi_reports
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision = "0018_insight_incremental"
down_revision = "0017_kpi_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("member_insight", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("first_order_at", siyu.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("last_order_at", siyu.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("order_count", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("orders_12m", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("spend_12m_fen", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("orders_by_join_7d", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("orders_by_join_30d", sa.Integer(), nullable=True))
        batch_op.drop_column("recency_days")
    with op.batch_alter_table("insight_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("order_watermark", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("refund_watermark", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("merge_watermark", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("settings_key", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("insight_runs", schema=None) as batch_op:
        batch_op.drop_column("settings_key")
        batch_op.drop_column("merge_watermark")
        batch_op.drop_column("refund_watermark")
        batch_op.drop_column("order_watermark")
    with op.batch_alter_table("member_insight", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recency_days", sa.Integer(), nullable=True))
        batch_op.drop_column("orders_by_join_30d")
        batch_op.drop_column("orders_by_join_7d")
        batch_op.drop_column("spend_12m_fen")
        batch_op.drop_column("orders_12m")
        batch_op.drop_column("order_count")
        batch_op.drop_column("last_order_at")
        batch_op.drop_column("first_order_at")
