"""points: lots, ledger entries, reservations, check-ins

Revision ID: 0005_points
Revises: 0003_loyalty_base
Create Date: 2026-11-23 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision = "0005_points"
down_revision = "0003_loyalty_base"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "points_lots",
        sa.Column("id", BigId, nullable=False),
        sa.Column("member_id", BigId, nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("earned_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("available_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        sa.Column("expires_at", siyu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("fact", sa.String(length=120), nullable=False),
        sa.Column("order_id", BigId, nullable=True),
        sa.Column("lines", sa.JSON(), nullable=True),
        sa.CheckConstraint("points > 0", name=op.f("ck_points_lots_points_positive")),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= points", name=op.f("ck_points_lots_remaining_within")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_points_lots_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_points_lots_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_lots")),
        sa.UniqueConstraint("fact", name=op.f("uq_points_lots_fact")),
    )
    op.create_index(
        op.f("ix_points_lots_available_at"), "points_lots", ["available_at"], unique=False
    )
    op.create_index(op.f("ix_points_lots_expires_at"), "points_lots", ["expires_at"], unique=False)
    op.create_index(
        "ix_points_lots_member_expires", "points_lots", ["member_id", "expires_at"], unique=False
    )
    op.create_table(
        "points_entries",
        sa.Column("id", BigId, nullable=False),
        sa.Column("member_id", BigId, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("debt", sa.Integer(), nullable=False),
        sa.Column("balance_after", sa.Integer(), nullable=False),
        sa.Column("lot_id", BigId, nullable=True),
        sa.Column("fact", sa.String(length=120), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["points_lots.id"], name=op.f("fk_points_entries_lot_id_points_lots")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_points_entries_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_entries")),
        sa.UniqueConstraint("fact", "seq", name=op.f("uq_points_entries_fact_seq")),
    )
    op.create_index(
        "ix_points_entries_member_at", "points_entries", ["member_id", "at"], unique=False
    )
    op.create_table(
        "points_reservations",
        sa.Column("id", BigId, nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("member_id", BigId, nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", siyu.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("points > 0", name=op.f("ck_points_reservations_points_positive")),
        sa.CheckConstraint(
            "status IN ('held', 'confirmed', 'released', 'expired')",
            name=op.f("ck_points_reservations_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_points_reservations_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_reservations")),
        sa.UniqueConstraint("key", name=op.f("uq_points_reservations_key")),
    )
    op.create_index(
        "ix_points_reservations_member_status",
        "points_reservations",
        ["member_id", "status"],
        unique=False,
    )
    op.create_index(
        "ix_points_reservations_status_expires",
        "points_reservations",
        ["status", "expires_at"],
        unique=False,
    )
    op.create_table(
        "check_ins",
        sa.Column("id", BigId, nullable=False),
        sa.Column("member_id", BigId, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("at", siyu.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_check_ins_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_ins")),
        sa.UniqueConstraint("member_id", "day", name=op.f("uq_check_ins_member_id_day")),
    )


def downgrade() -> None:
    op.drop_table("check_ins")
    op.drop_index("ix_points_reservations_status_expires", table_name="points_reservations")
    op.drop_index("ix_points_reservations_member_status", table_name="points_reservations")
    op.drop_table("points_reservations")
    op.drop_index("ix_points_entries_member_at", table_name="points_entries")
    op.drop_table("points_entries")
    op.drop_index("ix_points_lots_member_expires", table_name="points_lots")
    op.drop_index(op.f("ix_points_lots_expires_at"), table_name="points_lots")
    op.drop_index(op.f("ix_points_lots_available_at"), table_name="points_lots")
    op.drop_table("points_lots")
