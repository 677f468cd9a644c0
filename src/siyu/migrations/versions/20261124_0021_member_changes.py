"""member changes: an append-only list of the members whose own rows were written, kept
by the database (triggers), so nightly copies read a night's changed members instead of
every member (``members.models.MemberChange``)

Revision ID: 0021_member_changes
Revises: 0020_members_not_active
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.core.db

revision = "0021_member_changes"
down_revision = "0020_members_not_active"
branch_labels = None
depends_on = None

# the tables watched and the column that names their member
WATCHED = (
    ("members", "id"),
    ("member_metrics", "member_id"),
    ("member_insight", "member_id"),
    ("paid_subscriptions", "member_id"),
    ("member_identities", "member_id"),
    ("member_tags", "member_id"),
    ("member_rule_tags", "member_id"),
)
EVENTS = ("insert", "update", "delete")


def _sqlite_trigger(table: str, key: str, event: str) -> str:
    listed = "INSERT INTO member_changes (member_id)"
    body = {
        "insert": f"{listed} VALUES (NEW.{key});",
        # an update lists the member after, and the one before when it differs (a merge
        # moves rows to the survivor); two plain statements: a UNION would build a
        # temporary index for every row written
        "update": (
            f"{listed} VALUES (NEW.{key}); "
            f"{listed} SELECT OLD.{key} WHERE OLD.{key} IS NOT NEW.{key};"
        ),
        "delete": f"{listed} VALUES (OLD.{key});",
    }[event]
    return (
        f"CREATE TRIGGER member_changed_{table}_{event} AFTER {event.upper()} ON {table} "
        f"BEGIN {body} END"
    )


def _postgresql_function(key: str) -> str:
    return f"""
CREATE FUNCTION member_changed_by_{key}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO member_changes (member_id) VALUES (OLD.{key});
    ELSIF TG_OP = 'UPDATE' AND OLD.{key} IS DISTINCT FROM NEW.{key} THEN
        INSERT INTO member_changes (member_id) VALUES (OLD.{key}), (NEW.{key});
    ELSE
        INSERT INTO member_changes (member_id) VALUES (NEW.{key});
    END IF;
    RETURN NULL;
END $$"""


def upgrade() -> None:
    op.create_table(
        "member_changes",
        sa.Column("id", siyu.core.db.BigId, nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_changes")),
    )
    op.create_table(
        "member_changes_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("pruned_upto", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_changes_state")),
    )
    if op.get_context().dialect.name == "sqlite":
        for table, key in WATCHED:
            for event in EVENTS:
                op.execute(_sqlite_trigger(table, key, event))
        return
    for key in sorted({key for _, key in WATCHED}):
        op.execute(_postgresql_function(key))
    for table, key in WATCHED:
        op.execute(
            f"CREATE TRIGGER member_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION member_changed_by_{key}()"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for table, _ in WATCHED:
            for event in EVENTS:
                op.execute(f"DROP TRIGGER IF EXISTS member_changed_{table}_{event}")
    else:
        for table, _ in WATCHED:
            op.execute(f"DROP TRIGGER IF EXISTS member_changed ON {table}")
        for key in sorted({key for _, key in WATCHED}):
            op.execute(f"DROP FUNCTION IF EXISTS member_changed_by_{key}()")
    op.drop_table("member_changes_state")
    op.drop_table("member_changes")
