"""member change sources: each listed change notes which table was written, so a copy
that reads only some of the member tables (the order book's members) follows only their
changes (``members.models.CHANGE_SOURCES``)

The list gets a new token: the changes listed before carry no source, so every copy made
from them reads its members whole once.

Revision ID: 0022_member_change_sources
Revises: 0021_member_changes
Create Date: 2026-11-24
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0022_member_change_sources"
down_revision = "0021_member_changes"
branch_labels = None
depends_on = None

# the tables watched, the column that names their member and the code of their changes
# (the same as ``members.models.CHANGE_SOURCES``: a migration does not import the
# application)
WATCHED = (
    ("members", "id", 1),
    ("member_metrics", "member_id", 2),
    ("member_insight", "member_id", 3),
    ("paid_subscriptions", "member_id", 4),
    ("member_identities", "member_id", 5),
    ("member_tags", "member_id", 6),
    ("member_rule_tags", "member_id", 7),
)
EVENTS = ("insert", "update", "delete")


def _sqlite_trigger(table: str, key: str, event: str, source: int | None) -> str:
    """As in ``0021_member_changes``, with the change's ``source`` when given."""
    if source is None:
        listed, value = "INSERT INTO member_changes (member_id)", ""
    else:
        listed, value = "INSERT INTO member_changes (member_id, source)", f", {source}"
    body = {
        "insert": f"{listed} VALUES (NEW.{key}{value});",
        # an update lists the member after, and the one before when it differs (a merge
        # moves rows to the survivor); two plain statements: a UNION would build a
        # temporary index for every row written
        "update": (
            f"{listed} VALUES (NEW.{key}{value}); "
            f"{listed} SELECT OLD.{key}{value} WHERE OLD.{key} IS NOT NEW.{key};"
        ),
        "delete": f"{listed} VALUES (OLD.{key}{value});",
    }[event]
    return (
        f"CREATE TRIGGER member_changed_{table}_{event} AFTER {event.upper()} ON {table} "
        f"BEGIN {body} END"
    )


def _postgresql_function(key: str, *, sources: bool) -> str:
    """As in ``0021_member_changes``; with ``sources``, the change's source is the
    trigger's argument."""
    if sources:
        listed, value = "INSERT INTO member_changes (member_id, source)", ", TG_ARGV[0]::smallint"
    else:
        listed, value = "INSERT INTO member_changes (member_id)", ""
    return f"""
CREATE OR REPLACE FUNCTION member_changed_by_{key}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        {listed} VALUES (OLD.{key}{value});
    ELSIF TG_OP = 'UPDATE' AND OLD.{key} IS DISTINCT FROM NEW.{key} THEN
        {listed} VALUES (OLD.{key}{value}), (NEW.{key}{value});
    ELSE
        {listed} VALUES (NEW.{key}{value});
    END IF;
    RETURN NULL;
END $$"""


def _triggers(*, sources: bool) -> None:
    if op.get_context().dialect.name == "sqlite":
        for table, key, source in WATCHED:
            for event in EVENTS:
                op.execute(f"DROP TRIGGER IF EXISTS member_changed_{table}_{event}")
                op.execute(_sqlite_trigger(table, key, event, source if sources else None))
        return
    for key in sorted({key for _, key, _ in WATCHED}):
        op.execute(_postgresql_function(key, sources=sources))
    for table, key, source in WATCHED:
        argument = f"'{source}'" if sources else ""
        op.execute(f"DROP TRIGGER IF EXISTS member_changed ON {table}")
        op.execute(
            f"CREATE TRIGGER member_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION member_changed_by_{key}({argument})"
        )


def _new_token() -> None:
    op.execute(f"UPDATE member_changes_state SET token = '{uuid.uuid4().hex}'")


def upgrade() -> None:
    op.add_column(
        "member_changes",
        sa.Column("source", sa.SmallInteger(), nullable=False, server_default="0"),
    )
    _triggers(sources=True)
    _new_token()


def downgrade() -> None:
    _triggers(sources=False)
    op.drop_column("member_changes", "source")
    _new_token()
