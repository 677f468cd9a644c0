"""one head again: paid extras, the insight refresh, segments and console users were
built side by side

Revision ID: 0016_merge_insight
Revises: 0011_paid_extras, 0012_insight_refresh, 0013_segments, 0015_console_users
Create Date: 2026-11-23
"""

from __future__ import annotations

revision = "0016_merge_insight"
down_revision = ("0011_paid_extras", "0012_insight_refresh", "0013_segments", "0015_console_users")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
