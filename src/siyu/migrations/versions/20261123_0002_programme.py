"""programme versions: the loyalty programme document with its effective-from time

Revision ID: 0002_programme
Revises: 0001_foundation
Create Date: 2026-11-23 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision = "0002_programme"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "programme_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("document_hash", sa.String(length=64), nullable=False),
        sa.Column("effective_from", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("created_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_programme_versions")),
    )
    with op.batch_alter_table("programme_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_programme_versions_effective_from"), ["effective_from"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("programme_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_programme_versions_effective_from"))
    op.drop_table("programme_versions")
