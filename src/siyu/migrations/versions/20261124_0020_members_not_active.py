"""members who are not active: a partial index on the few frozen, closed or merged members,
so figures over active members subtract them instead of reading every member's status
(paid membership KPIs: a month's GMV of active members, penetration)

Revision ID: 0020_members_not_active
Revises: 0019_lookup_indexes
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_members_not_active"
down_revision = "0019_lookup_indexes"
branch_labels = None
depends_on = None

LEFT = sa.text("status <> 'active'")


def upgrade() -> None:
    op.create_index(
        "ix_members_not_active",
        "members",
        ["id"],
        unique=False,
        sqlite_where=LEFT,
        postgresql_where=LEFT,
    )


def downgrade() -> None:
    op.drop_index("ix_members_not_active", table_name="members")
