"""paid: rewards exclusive to paid members; the savings ledger by instant

Revision ID: 0011_paid_extras
Revises: 0010_insight
Create Date: 2026-11-23 16:47:36.962132
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_paid_extras"
down_revision = "0010_insight"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A month's benefit cost sums the savings ledger by instant, for every member at once.
    with op.batch_alter_table("paid_savings", schema=None) as batch_op:
        batch_op.create_index("ix_paid_savings_at", ["at"], unique=False)

    # Points-mall rewards for paid members only, optionally for some plans only. Existing
    # rewards stay open to everyone.
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("paid_only", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("paid_plans", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.drop_column("paid_plans")
        batch_op.drop_column("paid_only")

    with op.batch_alter_table("paid_savings", schema=None) as batch_op:
        batch_op.drop_index("ix_paid_savings_at")
