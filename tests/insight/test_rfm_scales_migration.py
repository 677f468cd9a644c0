"""Migration ``0023_rfm_scales``: the stored RFM scores go, the rows and the member-change
triggers on ``member_insight`` stay (a batch rebuild of the table on SQLite would have
dropped the triggers with it), and the way back restores the columns and the index."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect

from siyu.core.db import Database
from siyu.core.migrate import alembic_config, upgrade
from siyu.members import service
from siyu.members.models import CHANGE_SOURCES
from siyu.members.service import EnrolDraft

BEFORE = "0022_member_change_sources"
DERIVED = {"r_score", "f_score", "m_score", "rfm_group"}


@pytest.fixture
def before(own_database: Database) -> Database:
    """A database of its own at the revision before (the shared one stays at head)."""
    upgrade(own_database, BEFORE)
    return own_database


def _insight_columns(db: Database) -> set[str]:
    return {c["name"] for c in inspect(db.engine).get_columns("member_insight")}


def _listed_for_insight(db: Database, member_id: int) -> int:
    with db.engine.connect() as c:
        return int(
            c.exec_driver_sql(
                "SELECT count(*) FROM member_changes WHERE member_id = "
                f"{member_id} AND source = {CHANGE_SOURCES['member_insight']}"
            ).scalar()
            or 0
        )


def test_the_scores_go_and_the_rows_and_triggers_stay(before: Database) -> None:
    with before.unit_of_work() as s:
        member = service.enrol(s, EnrolDraft(phone="13800000001")).member_id
    with before.engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO member_insight (member_id, stage, frequency, monetary_fen, r_score, "
            f"f_score, m_score, rfm_group, super_user) VALUES ({member}, 'active', 3, 64100, "
            "4, 4, 4, 'important_value', false)"
        )
    assert _insight_columns(before) >= DERIVED

    upgrade(before)
    assert not DERIVED & _insight_columns(before)
    indexes = {i["name"] for i in inspect(before.engine).get_indexes("member_insight")}
    assert "ix_member_insight_rfm_group_member" not in indexes
    with before.engine.connect() as c:
        kept = c.exec_driver_sql(
            f"SELECT stage, frequency, monetary_fen FROM member_insight WHERE member_id = {member}"
        ).one()
    assert tuple(kept) == ("active", 3, 64100)
    listed = _listed_for_insight(before, member)
    with before.engine.begin() as c:
        c.exec_driver_sql(f"UPDATE member_insight SET frequency = 4 WHERE member_id = {member}")
    # the trigger still lists the member when their insight row is written
    assert _listed_for_insight(before, member) == listed + 1

    # and back: the columns (empty until a refresh under the old code) and the index
    command.downgrade(alembic_config(before), BEFORE)
    assert _insight_columns(before) >= DERIVED
    indexes = {i["name"] for i in inspect(before.engine).get_indexes("member_insight")}
    assert "ix_member_insight_rfm_group_member" in indexes
    assert "rfm_scales" not in inspect(before.engine).get_table_names()
