"""The member changes (会员变更): the database lists every member whose own rows are
written, whatever writes them, and the list is pruned only below what its reader read."""

from __future__ import annotations

from datetime import datetime

from alembic import command
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.migrate import alembic_config, upgrade
from siyu.insight.models import MemberInsight
from siyu.members import service
from siyu.members.models import CHANGE_SOURCES, MemberChange, MemberChangesState
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft
from siyu.segments import tags
from siyu.segments.models import MemberRuleTag


def _listed(db: Database, after: int) -> tuple[set[int], int]:
    """The members listed with ids above ``after``, and the last id."""
    with db.unit_of_work() as s:
        rows = s.execute(
            select(MemberChange.id, MemberChange.member_id).where(MemberChange.id > after)
        ).all()
    return {member for _, member in rows}, max((i for i, _ in rows), default=after)


def _an_order(s: Session, member_id: int) -> None:
    orders.ingest_orders(
        s,
        [
            OrderDraft(
                channel="store",
                external_id="O1",
                paid_at=datetime(2026, 11, 20, 4, tzinfo=clock.UTC),
                member_id=member_id,
                lines=[LineDraft("SKU-1", "奶粉", 1, 25_600)],
            )
        ],
    )


def test_every_write_to_a_members_own_rows_lists_the_member(
    clean_db: Database, programme_in_force: None
) -> None:
    with clean_db.unit_of_work() as s:
        an = service.enrol(s, EnrolDraft(phone="13800000001", name="安")).member_id
        bai = service.enrol(s, EnrolDraft(phone="13800000002", name="白")).member_id
        chen = service.enrol(s, EnrolDraft(phone="13800000003", name="陈")).member_id
    # enrolling lists each new member (the member, their phone identity)
    listed, last = _listed(clean_db, 0)
    assert listed == {an, bai, chen}

    # a profile edit, a tag, an identity: only that member
    for write in (
        lambda s: service.update(s, bai, {"gender": "F"}, principal=SYSTEM),
        lambda s: service.add_tags(s, bai, ["孕妈"], principal=SYSTEM),
        lambda s: service.remove_tag(s, bai, "孕妈", principal=SYSTEM),
        lambda s: service.add_identity(s, bai, "jd", "j-bai", principal=SYSTEM),
    ):
        with clean_db.unit_of_work() as s:
            write(s)
        listed, last = _listed(clean_db, last)
        assert listed == {bai}

    # an order: the buyer's metrics and balances
    with clean_db.unit_of_work() as s:
        _an_order(s, an)
    listed, last = _listed(clean_db, last)
    assert listed == {an}

    # the insight refresh's and the rule tags' rows
    with clean_db.unit_of_work() as s:
        s.add(MemberInsight(member_id=chen, stage="prospect", computed_at=clock.now()))
        rule = tags.create_rule(
            s,
            name="新客",
            tree={"field": "stage", "op": "eq", "value": "prospect"},
            principal=SYSTEM,
        )
        s.flush()
        s.add(MemberRuleTag(tag_rule_id=rule.id, member_id=chen, tagged_at=clock.now()))
    listed, last = _listed(clean_db, last)
    assert listed == {chen}

    # a merge moves rows from one member to the other: both are listed
    with clean_db.unit_of_work() as s:
        service.merge(s, bai, an, reason="one person", principal=SYSTEM)
    listed, last = _listed(clean_db, last)
    assert listed == {an, bai}


def test_pruning_removes_only_what_was_read_and_keeps_the_last_change(session: Session) -> None:
    for n in range(5):
        service.enrol(session, EnrolDraft(phone=f"1380000000{n}"))
    service.ensure_changes_state(session)
    token = session.get(MemberChangesState, 1).token  # type: ignore[union-attr]
    ids = list(session.scalars(select(MemberChange.id).order_by(MemberChange.id)))
    last = ids[-1]

    # pruning below the last change removes the ones before it, and notes how far
    assert service.prune_changes(session, last) == len(ids) - 1
    assert list(session.scalars(select(MemberChange.id))) == [last]
    state = session.get(MemberChangesState, 1)
    assert state is not None and (state.token, state.pruned_upto) == (token, last - 1)
    # pruning less far again does nothing; the state row is made once
    assert service.prune_changes(session, 1) == 0
    service.ensure_changes_state(session)
    assert session.get(MemberChangesState, 1).token == token  # type: ignore[union-attr]
    # the next change's id follows the last one's (SQLite reuses ids only of an empty table)
    service.enrol(session, EnrolDraft(phone="13800000009"))
    assert min(session.scalars(select(MemberChange.id).where(MemberChange.id > last))) > last


def _written(db: Database, after: int) -> set[tuple[int, str]]:
    """The (member, table written) pairs listed with ids above ``after``."""
    tables = {code: name for name, code in CHANGE_SOURCES.items()}
    with db.unit_of_work() as s:
        rows = s.execute(
            select(MemberChange.member_id, MemberChange.source).where(MemberChange.id > after)
        ).all()
    return {(member, tables[source]) for member, source in rows}


def _last(db: Database) -> int:
    with db.unit_of_work() as s:
        return int(s.scalar(select(func.max(MemberChange.id))) or 0)


def test_each_change_notes_the_table_written(clean_db: Database, programme_in_force: None) -> None:
    with clean_db.unit_of_work() as s:
        an = service.enrol(s, EnrolDraft(phone="13800000001", name="安")).member_id
    # enrolling writes the member and their phone identity
    assert {"members", "member_identities"} <= {t for m, t in _written(clean_db, 0) if m == an}

    steps = [
        (lambda s: service.update(s, an, {"gender": "F"}, principal=SYSTEM), {"members"}),
        (lambda s: service.add_tags(s, an, ["孕妈"], principal=SYSTEM), {"member_tags"}),
        (
            lambda s: s.add(MemberInsight(member_id=an, stage="prospect", computed_at=clock.now())),
            {"member_insight"},
        ),
    ]
    for write, tables in steps:
        last = _last(clean_db)
        with clean_db.unit_of_work() as s:
            write(s)
        assert _written(clean_db, last) == {(an, t) for t in tables}

    # an order: the buyer's metrics and their points balance on the member row
    last = _last(clean_db)
    with clean_db.unit_of_work() as s:
        _an_order(s, an)
    assert {"member_metrics", "members"} <= {t for _, t in _written(clean_db, last)}


def test_the_migration_notes_the_sources_and_gives_the_list_a_new_token(
    own_database: Database,
) -> None:
    # a database of its own, at the revision before (the shared one stays at head)
    before = own_database
    upgrade(before, "0021_member_changes")
    with before.unit_of_work() as s:
        first = service.enrol(s, EnrolDraft(phone="13800000001")).member_id
        service.ensure_changes_state(s)
    with before.engine.connect() as c:
        token = c.exec_driver_sql("SELECT token FROM member_changes_state").scalar()
    upgrade(before)
    with before.unit_of_work() as s:
        second = service.enrol(s, EnrolDraft(phone="13800000002")).member_id
        state = s.get(MemberChangesState, 1)
        assert state is not None and state.token != token  # copies made before: whole
    # the changes listed before carry no source; those after, their table's
    assert (first, 0) in _pairs(before) and (second, CHANGE_SOURCES["members"]) in _pairs(before)
    assert all(source for member, source in _pairs(before) if member == second)

    # and back: the triggers list members without a source again
    command.downgrade(alembic_config(before), "0021_member_changes")
    with before.unit_of_work() as s:
        third = service.enrol(s, EnrolDraft(phone="13800000003")).member_id
    with before.engine.connect() as c:
        listed = {m for (m,) in c.exec_driver_sql("SELECT member_id FROM member_changes")}
    assert {first, second, third} <= listed


def _pairs(db: Database) -> set[tuple[int, int]]:
    with db.engine.connect() as c:
        return {
            (int(m), int(s))
            for m, s in c.exec_driver_sql("SELECT member_id, source FROM member_changes")
        }
