"""Growth and tiers through the services and events users trigger, on a real database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tiers_helpers import at, enrol, ingest, order

from siyu.core import clock
from siyu.core.audit import AuditEntry
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.errors import Conflict, InvalidInput
from siyu.jobs import service as jobs
from siyu.members import service as members
from siyu.members.models import Member
from siyu.orders import service as orders
from siyu.orders.rules import RefundDraft, RefundLineDraft
from siyu.tiers import service
from siyu.tiers.models import GrowthEntry, TierHistory, TierPeriod
from siyu.tiers.service import GrowthApplied, TiersChanged

Use = Callable[..., None]


def tier(session: Session, member_id: int) -> tuple[str | None, int]:
    member = session.get(Member, member_id, populate_existing=True)
    assert member is not None
    return member.tier_code, member.growth_balance


def reasons(session: Session, member_id: int) -> list[tuple[str | None, str, str]]:
    rows = session.scalars(
        select(TierHistory).where(TierHistory.member_id == member_id).order_by(TierHistory.id)
    )
    return [(h.from_code, h.to_code, h.reason) for h in rows]


def review(session: Session, db: Database, day: date) -> dict[str, int]:
    """Run the review job for a day; the test's own transaction commits first (SQLite has
    one writer at a time)."""
    session.commit()
    return jobs.run(db, "tiers.review", day).result


# --- joining -----------------------------------------------------------------------------


def test_a_new_member_joins_the_first_level_with_the_signup_growth(
    session: Session, programme_in_force: None, captured: dict[type, list]
) -> None:
    member_id = enrol(session, "13800138000", joined_at=clock.now())
    assert tier(session, member_id) == ("V1", 100)
    assert reasons(session, member_id) == [(None, "V1", "join")]
    [joined] = captured[TiersChanged]
    assert joined.changes[0].reason == "join" and joined.changes[0].is_upgrade
    period = session.get(TierPeriod, member_id)
    assert period is not None and period.review_on == date(2027, 11, 23)


def test_without_a_programme_there_is_no_growth_and_no_tier(
    session: Session, captured: dict[type, list]
) -> None:
    member_id = enrol(session, "13800138000")
    [order_id] = ingest(session, order("A1", member_id, clock.now(), 100_000))
    assert tier(session, member_id) == (None, 0)
    [applied] = captured[GrowthApplied]
    assert applied.tier_at_order == {order_id: None}
    assert captured[TiersChanged] == []


# --- orders and upgrades -------------------------------------------------------------------


def test_an_order_earns_per_line_without_freight_and_upgrades_in_its_transaction(
    session: Session, programme_in_force: None, captured: dict[type, list]
) -> None:
    member_id = enrol(session, "13800138000")
    # 256.00 + 99.90 (+ 10.00 freight): 256 + 99 growth, 100 first-order bonus, 100 signup
    [order_id] = ingest(
        session, order("A1", member_id, clock.now(), 25_600, 9_990, freight_fen=1_000)
    )
    assert tier(session, member_id) == ("V2", 555)
    assert reasons(session, member_id) == [(None, "V1", "join"), ("V1", "V2", "upgrade")]
    [applied] = captured[GrowthApplied]
    assert applied.tier_at_order == {order_id: "V1"}
    assert [o.order_id for o in applied.orders] == [order_id]
    upgrade = captured[TiersChanged][-1].changes[0]
    assert (upgrade.from_code, upgrade.to_code, upgrade.is_upgrade) == ("V1", "V2", True)
    kinds = session.execute(
        select(GrowthEntry.kind, GrowthEntry.growth, GrowthEntry.fact)
        .where(GrowthEntry.member_id == member_id)
        .order_by(GrowthEntry.id)
    ).all()
    assert [(k, g) for k, g, _ in kinds] == [("bonus", 100), ("earn", 355), ("bonus", 100)]
    assert kinds[1].fact == f"order:{order_id}"


def test_one_order_can_cross_two_levels_at_once(session: Session, programme_in_force: None) -> None:
    member_id = enrol(session, "13800138000")
    ingest(session, order("A1", member_id, clock.now(), 520_000))
    assert tier(session, member_id)[0] == "V4"
    assert reasons(session, member_id)[-1] == ("V1", "V4", "upgrade")


def test_the_first_order_bonus_is_granted_once(session: Session, programme_in_force: None) -> None:
    member_id = enrol(session, "13800138000")
    ingest(session, order("A1", member_id, clock.now() - timedelta(days=2), 1_000))
    ingest(session, order("A2", member_id, clock.now() - timedelta(days=1), 1_000))
    bonuses = session.scalar(
        select(func.count(GrowthEntry.id)).where(
            GrowthEntry.member_id == member_id, GrowthEntry.fact.like("bonus:first_order:%")
        )
    )
    assert bonuses == 1
    assert tier(session, member_id) == ("V1", 100 + 10 + 100 + 10)


def test_the_tier_at_each_order_does_not_depend_on_chunking(
    session: Session, programme_in_force: None, captured: dict[type, list]
) -> None:
    """The same orders, in one chunk for one member and one per chunk for another."""
    first, second = enrol(session, "13800138000"), enrol(session, "13800138001")
    start = clock.now() - timedelta(days=30)
    amounts = [30_000, 20_000, 150_000, 10_000, 400_000]
    for member_id, chunk_size, prefix in ((first, 1_000, "A"), (second, 1, "B")):
        ingest(
            session,
            *(
                order(f"{prefix}{i}", member_id, start + timedelta(days=i), fen)
                for i, fen in enumerate(amounts)
            ),
            chunk_size=chunk_size,
        )
    seen: dict[int, list[str | None]] = {first: [], second: []}
    for applied in captured[GrowthApplied]:
        for o in applied.orders:
            seen[o.member_id].append(applied.tier_at_order[o.order_id])
    assert seen[first] == seen[second] == ["V1", "V2", "V2", "V3", "V3"]
    assert tier(session, first) == tier(session, second)
    assert [r[1:] for r in reasons(session, first)] == [r[1:] for r in reasons(session, second)]


def test_spend_and_order_count_ladders(session: Session, use: Use) -> None:
    use(
        basis="order_count",
        levels=[
            {"code": "N1", "name": "一单", "threshold": 0},
            {"code": "N2", "name": "三单", "threshold": 3, "retention": 2},
        ],
    )
    member_id = enrol(session, "13800138000")
    start = clock.now() - timedelta(days=3)
    ingest(session, *(order(f"A{i}", member_id, start + timedelta(hours=i), 100) for i in range(2)))
    assert tier(session, member_id)[0] == "N1"
    ingest(session, order("A9", member_id, start + timedelta(days=1), 100))
    assert tier(session, member_id)[0] == "N2"


# --- refunds -------------------------------------------------------------------------------


def refund(external_id: str, order_external_id: str, *lines: RefundLineDraft) -> RefundDraft:
    return RefundDraft(
        channel="tmall",
        external_id=external_id,
        order_channel="tmall",
        order_external_id=order_external_id,
        refunded_at=clock.now(),
        lines=list(lines),
    )


def test_partial_refunds_reverse_exactly_what_the_lines_earned(session: Session, use: Use) -> None:
    doc_bonus_free = {"growth": {"per_yuan": "1", "signup_bonus": 0}}
    use()
    member_id = enrol(session, "13800138000")
    ingest(session, order("A1", member_id, clock.now() - timedelta(days=1), 25_600, 9_990))
    assert tier(session, member_id)[1] == 100 + 355 + 100
    # line 2 (99.90, earned 99) in three parts of 33.30: 33 + 33 + 33
    for i in range(3):
        orders.create_refund(session, refund(f"R{i}", "A1", RefundLineDraft(2, 0, 3_330)))
    reversed_ = session.scalars(
        select(GrowthEntry.growth).where(GrowthEntry.kind == "reverse").order_by(GrowthEntry.id)
    ).all()
    assert reversed_ == [-33, -33, -33]
    # the rest of the order: line 1 gives back its 256, and the order no longer counts
    orders.create_refund(session, refund("R9", "A1"))
    assert tier(session, member_id) == ("V2", 100 + 100)  # no downgrade on refund
    totals = session.execute(
        select(func.sum(GrowthEntry.spend_fen), func.sum(GrowthEntry.orders))
    ).one()
    assert tuple(totals) == (0, 0)
    assert doc_bonus_free  # the example's bonuses are kept; only line growth is reversed


def test_a_refund_replay_changes_nothing(session: Session, programme_in_force: None) -> None:
    member_id = enrol(session, "13800138000")
    ingest(session, order("A1", member_id, clock.now() - timedelta(days=1), 25_600))
    orders.create_refund(session, refund("R1", "A1", RefundLineDraft(1, 0, 12_800)))
    orders.create_refund(session, refund("R1", "A1", RefundLineDraft(1, 0, 12_800)))
    assert tier(session, member_id)[1] == 100 + 256 + 100 - 128


# --- review (保级) ---------------------------------------------------------------------------


def v4_in_2024(session: Session, use: Use, **tiers: object) -> int:
    use(window="calendar_year", **tiers)
    member_id = enrol(session, "13800138000", joined_at=at("2024-03-01 10:00"))
    ingest(session, order("A1", member_id, at("2024-03-02 10:00"), 520_000))
    assert tier(session, member_id)[0] == "V4"
    return member_id


def test_review_keeps_who_meets_the_retention_mark_and_drops_one_level_otherwise(
    session: Session, clean_db: Database, use: Use, captured: dict[type, list]
) -> None:
    member_id = v4_in_2024(session, use)
    ingest(session, order("A2", member_id, at("2025-05-01 10:00"), 310_000))
    assert review(session, clean_db, date(2025, 1, 1)) == {
        "grants_ended": 0,
        "reviewed": 1,
        "kept": 1,
        "downgraded": 0,
    }
    assert review(session, clean_db, date(2026, 1, 1))["kept"] == 1  # 2025: 3,100 >= 3,000
    assert review(session, clean_db, date(2027, 1, 1))["downgraded"] == 1  # 2026: nothing
    assert tier(session, member_id)[0] == "V3"
    assert reasons(session, member_id)[-1] == ("V4", "V3", "review")
    drop = captured[TiersChanged][-1].changes[0]
    assert drop.reason == "review" and not drop.is_upgrade


def test_review_to_qualifying_drops_to_the_level_whose_mark_is_met(
    session: Session, clean_db: Database, use: Use
) -> None:
    member_id = v4_in_2024(session, use, downgrade="to_qualifying")
    ingest(session, order("A2", member_id, at("2025-05-01 10:00"), 40_000))  # 400 >= V2's 300
    review(session, clean_db, date(2025, 1, 1))
    assert review(session, clean_db, date(2026, 1, 1))["downgraded"] == 1
    assert tier(session, member_id)[0] == "V2"


def test_hold_through_next_period_skips_the_first_review(
    session: Session, clean_db: Database, use: Use
) -> None:
    member_id = v4_in_2024(session, use, hold_through_next_period=True)
    period = session.get(TierPeriod, member_id)
    assert period is not None and period.review_on == date(2026, 1, 1)
    assert review(session, clean_db, date(2025, 1, 1))["reviewed"] == 0
    assert review(session, clean_db, date(2026, 1, 1))["downgraded"] == 1  # 2025: nothing
    assert tier(session, member_id)[0] == "V3"


def test_a_granted_tier_is_a_floor_until_it_ends(
    session: Session, clean_db: Database, use: Use
) -> None:
    member_id = v4_in_2024(session, use)
    ingest(session, order("A2", member_id, at("2025-05-01 10:00"), 310_000))
    assert review(session, clean_db, date(2026, 1, 1))["kept"] == 1
    service.grant_tier(
        session,
        member_id,
        "V4",
        ends_at=at("2027-06-30 00:00"),
        reason="store opening VIP",
        principal=SYSTEM,
    )
    # 2026 is empty, but the grant holds V4 at the review of 1 January 2027
    assert review(session, clean_db, date(2027, 1, 1)) == {
        "grants_ended": 0,
        "reviewed": 1,
        "kept": 1,
        "downgraded": 0,
    }
    assert tier(session, member_id)[0] == "V4"
    # at its end, the tier held before the grant is judged as a review would: V3
    assert review(session, clean_db, date(2027, 7, 1))["grants_ended"] == 1
    assert tier(session, member_id)[0] == "V3"
    assert reasons(session, member_id)[-1] == ("V4", "V3", "grant_end")


def test_a_grant_above_the_tier_applies_at_once(
    session: Session, programme_in_force: None, captured: dict[type, list]
) -> None:
    member_id = enrol(session, "13800138000")
    grant = service.grant_tier(
        session,
        member_id,
        "V5",
        ends_at=clock.now() + timedelta(days=90),
        reason="KOC",
        principal=SYSTEM,
    )
    assert tier(session, member_id)[0] == "V5" and grant.held_code == "V1"
    assert reasons(session, member_id)[-1] == ("V1", "V5", "grant")
    assert captured[TiersChanged][-1].changes[0].is_upgrade
    service.revoke_grant(session, grant.id, reason="left the programme", principal=SYSTEM)
    assert tier(session, member_id)[0] == "V1"
    assert reasons(session, member_id)[-1] == ("V5", "V1", "grant_end")
    with pytest.raises(InvalidInput):
        service.grant_tier(
            session,
            member_id,
            "V9",
            ends_at=clock.now() + timedelta(days=1),
            reason="x",
            principal=SYSTEM,
        )


def test_the_review_job_run_twice_is_run_once(
    session: Session, clean_db: Database, use: Use
) -> None:
    member_id = v4_in_2024(session, use)
    session.commit()
    day = date(2026, 1, 1)
    first = jobs.run(clean_db, "tiers.review", day)
    again = jobs.run(clean_db, "tiers.review", day)
    assert again.status == "skipped" and again.result == first.result
    # the job's own effects are idempotent too: the batch finds nobody due any more
    with clean_db.unit_of_work() as s:
        assert service.review_due(s, day).reviewed == 0
    # missed years are caught up once: V4 -> V3 at the first run
    assert tier(session, member_id)[0] == "V3"
    assert first.result["downgraded"] == 1


def test_a_rolling_window_reviews_a_year_after_the_last_change(
    session: Session, clean_db: Database, use: Use
) -> None:
    use()
    member_id = enrol(session, "13800138000", joined_at=at("2025-06-01 10:00"))
    ingest(session, order("A1", member_id, at("2025-07-01 10:00"), 210_000))
    session.commit()
    period = session.get(TierPeriod, member_id)
    assert period is not None and period.review_on == date(2026, 7, 1)
    assert (
        review(session, clean_db, date(2026, 7, 1))["kept"] == 1
    )  # 2,100 + 100 bonus in the window
    assert review(session, clean_db, date(2027, 7, 1))["downgraded"] == 1
    assert tier(session, member_id)[0] == "V2"


# --- bonus events and adjustments ----------------------------------------------------------


def test_bonus_events_respect_the_per_member_limit(
    session: Session, programme_in_force: None
) -> None:
    member_id = enrol(session, "13800138000")
    assert service.grant_bonus(session, member_id, "profile_completion", key="p1") == 50
    assert service.grant_bonus(session, member_id, "profile_completion", key="p1") == 50
    assert service.grant_bonus(session, member_id, "profile_completion", key="p2") == 0
    assert service.grant_bonus(session, member_id, "review", key="o1") == 5
    assert service.grant_bonus(session, member_id, "review", key="o2") == 5
    assert service.grant_bonus(session, member_id, "birthday", key="2026") == 0  # not in doc
    assert tier(session, member_id)[1] == 100 + 50 + 5 + 5


def test_an_adjustment_is_audited_idempotent_and_may_upgrade(
    session: Session, programme_in_force: None
) -> None:
    member_id = enrol(session, "13800138000")
    entry = service.adjust(
        session, member_id, 450, reason="complaint goodwill", principal=SYSTEM, key="c-1"
    )
    again = service.adjust(
        session, member_id, 450, reason="complaint goodwill", principal=SYSTEM, key="c-1"
    )
    assert again.id == entry.id
    assert tier(session, member_id) == ("V2", 550)
    assert reasons(session, member_id)[-1] == ("V1", "V2", "adjust")
    audits = session.scalars(select(AuditEntry).where(AuditEntry.action == "growth.adjust")).all()
    assert len(audits) == 1 and audits[0].detail["reason"] == "complaint goodwill"
    with pytest.raises(Conflict):
        service.adjust(session, member_id, 10, reason="x", principal=SYSTEM, key="c-1")
    with pytest.raises(InvalidInput):
        service.adjust(session, member_id, 10, reason=" ", principal=SYSTEM, key="c-2")


# --- merge ---------------------------------------------------------------------------------


def test_a_merge_moves_growth_and_keeps_the_higher_tier(
    session: Session, programme_in_force: None
) -> None:
    high, low = enrol(session, "13800138000"), enrol(session, "13800138001")
    ingest(session, order("A1", high, clock.now() - timedelta(days=1), 210_000))
    assert tier(session, high) == ("V3", 100 + 2_100 + 100)
    record = members.merge(session, high, low, reason="same person", principal=SYSTEM)
    assert tier(session, low) == ("V3", 2_300 + 100)
    assert reasons(session, low)[-1] == ("V1", "V3", "merge")
    assert session.get(TierPeriod, high) is None
    members.unmerge(session, record.id, principal=SYSTEM)
    assert tier(session, high)[1] == 2_300 and tier(session, low)[1] == 100
    assert session.get(TierPeriod, high) is not None
    assert service.check(session) == []


def test_recompute_repairs_cached_growth(session: Session, programme_in_force: None) -> None:
    member_id = enrol(session, "13800138000")
    session.get(Member, member_id).growth_balance = 7  # type: ignore[union-attr]
    session.flush()
    [drift] = service.check(session)
    assert (drift.member_id, drift.cached, drift.expected) == (member_id, 7, 100)
    assert service.recompute(session) == 1
    assert service.check(session) == [] and tier(session, member_id)[1] == 100


# --- progress ------------------------------------------------------------------------------


def test_progress_says_what_reaches_the_next_level_and_keeps_this_one(
    session: Session, use: Use
) -> None:
    use(
        window="calendar_year",
        basis="spend",
        levels=[
            {"code": "V1", "name": "普通", "threshold": 0},
            {"code": "V2", "name": "银卡", "threshold": 1000, "retention": 500},
            {"code": "V3", "name": "金卡", "threshold": 3000, "retention": 2000},
            {"code": "V4", "name": "黑卡", "threshold": 5000, "retention": 4000},
        ],
    )
    member_id = enrol(session, "13800138000")
    ingest(session, order("A1", member_id, clock.now() - timedelta(days=1), 468_000))
    p = service.progress(session, member_id)
    assert (p.code, p.next_code, p.to_next, p.to_keep) == ("V3", "V4", 32_000, 0)
    assert p.reach_by == date(2026, 12, 31) and p.review_on == date(2027, 1, 1)
    assert p.sentence_en.startswith("spend ¥320.00 more to reach V4 黑卡 by 2026-12-31")
    assert "再消费320.00元可升级为V4 黑卡" in p.sentence_zh
