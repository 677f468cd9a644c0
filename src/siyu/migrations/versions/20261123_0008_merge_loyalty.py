"""one head again: tiers, points, benefits and paid were built side by side

Revision ID: 0008_merge_loyalty
Revises: 0004_tiers, 0005_points, 0006_benefits, 0007_paid
Create Date: 2026-11-23
"""

from __future__ import annotations

revision = "0008_merge_loyalty"
down_revision = ("0004_tiers", "0005_points", "0006_benefits", "0007_paid")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
