"""KPI reports materialized: insight_kpi_reports

Revision ID: 0017_kpi_reports
Revises: 0016_merge_insight
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision = "0017_kpi_reports"
down_revision = "0016_merge_insight"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insight_kpi_reports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("computed_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_insight_kpi_reports")),
        sa.UniqueConstraint(
            "kind",
            "period_start",
            "period_end",
            "timezone",
            name=op.f("uq_insight_kpi_reports_kind_period_start_period_end_timezone"),
        ),
    )


def downgrade() -> None:
    op.drop_table("insight_kpi_reports")
