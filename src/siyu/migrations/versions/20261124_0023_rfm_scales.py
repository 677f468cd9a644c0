"""RFM scales: each refresh records where its scores begin, and the scores and group are
derived when read instead of stored on ``member_insight``

A night's stored scores changed for some 57,000 of a million members whose purchase
figures stood still (recency quintiles move with each day's buyers), and each of those
rows was written again for a derived number. The scores are now read off the last run's
scale (``rfm_scales``) and the row's figures. Until the next refresh records a scale the
scores read as empty.

Revision ID: 0023_rfm_scales
Revises: 0022_member_change_sources
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision = "0023_rfm_scales"
down_revision = "0022_member_change_sources"
branch_labels = None
depends_on = None

DERIVED = (
    ("r_score", sa.Integer()),
    ("f_score", sa.Integer()),
    ("m_score", sa.Integer()),
    ("rfm_group", sa.String(length=20)),
)


def upgrade() -> None:
    instant = siyu.core.db.UTCDateTime(timezone=True)
    op.create_table(
        "rfm_scales",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("as_of", instant, nullable=False),
        sa.Column("high_from", sa.Integer(), nullable=False),
        *(sa.Column(f"r{k}_from", instant, nullable=True) for k in range(2, 6)),
        *(sa.Column(f"f{k}_from", sa.BigInteger(), nullable=True) for k in range(2, 6)),
        *(sa.Column(f"m{k}_from", sa.BigInteger(), nullable=True) for k in range(2, 6)),
        sa.Column("computed_at", instant, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["insight_runs.id"], name=op.f("fk_rfm_scales_run_id_insight_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_rfm_scales")),
    )
    op.drop_index("ix_member_insight_rfm_group_member", table_name="member_insight")
    # plain ALTER TABLE … DROP COLUMN on both databases: a batch rebuild of the table on
    # SQLite would drop its member-change triggers with it
    for name, _ in DERIVED:
        op.execute(f"ALTER TABLE member_insight DROP COLUMN {name}")


def downgrade() -> None:
    for name, kind in DERIVED:
        op.add_column("member_insight", sa.Column(name, kind, nullable=True))
    op.create_index(
        "ix_member_insight_rfm_group_member",
        "member_insight",
        ["rfm_group", "member_id"],
        unique=False,
    )
    op.drop_table("rfm_scales")
