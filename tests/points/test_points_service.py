"""Points services on a real database: grant, spend, cancel, events, check-ins,
reservations, adjustments, recompute. Given / when / then."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.audit import AuditEntry
from siyu.core.auth import SYSTEM
from siyu.core.errors import Conflict, InvalidInput
from siyu.points import service
from siyu.points.models import PointsEntry, PointsLot

Enrol = Callable[..., int]
Cached = Callable[[int], tuple[int, int, int]]


def test_grant_makes_a_lot_expiring_at_year_end_and_is_idempotent(
    session: Session, programme: None, enrol: Enrol, cached: Cached
) -> None:
    member = enrol()
    lot = service.grant(session, member, 300, fact="gift:1", reason="welcome gift")
    assert lot is not None and lot.points == lot.remaining == 300
    # year_end 12/31, earned 2026-11-23: last day 2026-12-31 (Shanghai), gone at midnight
    assert lot.expires_at == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    again = service.grant(session, member, 300, fact="gift:1", reason="welcome gift")
    assert again is not None and again.id == lot.id
    assert cached(member) == (300, 0, 0)
    assert service.grant(session, member, 0, fact="gift:2", reason="nothing") is None
    assert service.available(session, member) == 300


def test_spend_takes_the_oldest_expiring_lots_first(
    session: Session, programme: None, enrol: Enrol, cached: Cached, fixed_clock: Any
) -> None:
    member = enrol()
    late = service.grant(session, member, 100, fact="g:late", reason="r")
    fixed_clock.set(datetime(2025, 12, 1, tzinfo=UTC))
    early = service.grant(session, member, 100, fact="g:early", reason="r")  # expires 2025-12-31
    fixed_clock.set(datetime(2025, 12, 2, tzinfo=UTC))
    spent = service.spend(session, member, 150, fact="mall:1", reason="a gift")
    assert early is not None and late is not None
    assert spent.lots == ((early.id, 100), (late.id, 50))
    assert spent.points == 150 and spent.balance_after == 50
    assert service.spend(session, member, 150, fact="mall:1", reason="a gift") == spent
    assert cached(member) == (50, 0, 0)


def test_spend_beyond_the_available_points_is_refused_with_the_amount(
    session: Session, programme: None, enrol: Enrol
) -> None:
    member = enrol()
    service.grant(session, member, 80, fact="g:1", reason="r")
    with pytest.raises(Conflict) as caught:
        service.spend(session, member, 100, fact="mall:1", reason="a gift")
    assert caught.value.code == "insufficient_points"
    assert "80 points available" in caught.value.message
    with pytest.raises(InvalidInput):
        service.spend(session, member, 0, fact="mall:2", reason="nothing")


def test_cancel_spend_gives_points_back_to_their_lots_or_a_new_lot_when_expired(
    session: Session, programme: None, enrol: Enrol, cached: Cached, fixed_clock: Any
) -> None:
    member = enrol()
    fixed_clock.set(datetime(2025, 12, 20, tzinfo=UTC))
    old = service.grant(session, member, 100, fact="g:old", reason="r")  # expires 2025-12-31
    fixed_clock.set(datetime(2026, 1, 10, tzinfo=UTC))
    new = service.grant(session, member, 100, fact="g:new", reason="r")  # expires 2026-12-31
    fixed_clock.set(datetime(2025, 12, 21, tzinfo=UTC))
    service.spend(session, member, 50, fact="mall:1", reason="gift")
    assert old is not None and new is not None
    session.refresh(old)
    assert old.remaining == 50
    # when: cancelled after the old lot's expiry
    fixed_clock.set(datetime(2026, 2, 1, tzinfo=UTC))
    given = service.cancel_spend(session, "mall:1", fact="cancel:mall:1")
    assert given == 50
    assert service.cancel_spend(session, "mall:1", fact="cancel:mall:1") == 50
    session.refresh(old)
    assert old.remaining == 50  # not back into an expired lot
    lot = session.scalar(select(PointsLot).where(PointsLot.fact == "cancel:mall:1"))
    assert lot is not None and lot.remaining == 50
    assert cached(member) == (200, 0, 0)
    assert service.check(session) == []


def test_cancel_spend_into_live_lots(
    session: Session, programme: None, enrol: Enrol, cached: Cached
) -> None:
    member = enrol()
    lot = service.grant(session, member, 100, fact="g:1", reason="r")
    service.spend(session, member, 60, fact="mall:1", reason="gift")
    assert service.cancel_spend(session, "mall:1", fact="undo:1") == 60
    assert lot is not None
    session.refresh(lot)
    assert lot.remaining == 100
    assert cached(member) == (100, 0, 0)


def test_no_programme_grants_points_that_never_expire(
    session: Session, enrol: Enrol, cached: Cached
) -> None:
    member = enrol()
    lot = service.grant(session, member, 10, fact="g:1", reason="r")
    assert lot is not None and lot.expires_at is None


def test_signup_points_on_enrolment(
    session: Session, programme_in_force: None, enrol: Enrol, cached: Cached
) -> None:
    member = enrol()
    assert cached(member) == (100, 0, 0)
    lot = session.scalar(select(PointsLot).where(PointsLot.fact == f"signup:{member}"))
    assert lot is not None and lot.source == "signup"


def test_events_respect_their_limits(
    session: Session, programme: None, enrol: Enrol, cached: Cached, fixed_clock: Any
) -> None:
    member = enrol()
    first = service.award_event(session, member, "profile_completion", key="profile")
    assert first.points == 50
    again = service.award_event(session, member, "profile_completion", key="profile")
    assert again.lot_id == first.lot_id
    other = service.award_event(session, member, "profile_completion", key="profile-2")
    assert other.points == 0 and other.reason is not None  # per_member_limit 1
    reviews = [service.award_event(session, member, "review", key=f"r{i}") for i in range(4)]
    assert [r.points for r in reviews] == [10, 10, 10, 0]  # per_day_limit 3
    fixed_clock.advance(timedelta(days=1))
    assert service.award_event(session, member, "review", key="r9").points == 10
    assert cached(member)[0] == 50 + 40
    with pytest.raises(InvalidInput):
        service.award_event(session, member, "dancing", key="x")


def test_check_in_once_a_day_with_streak_bonus(
    session: Session, programme: None, enrol: Enrol, cached: Cached, fixed_clock: Any
) -> None:
    member = enrol()
    results = []
    for _ in range(7):
        results.append(service.check_in(session, member))
        fixed_clock.advance(timedelta(days=1))
    assert [r.streak for r in results] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.points for r in results] == [5] * 6 + [25]  # day 7: +20
    fixed_clock.advance(timedelta(days=-1))
    repeat = service.check_in(session, member)
    assert repeat.created is False and repeat.points == 25 and repeat.bonus == 20
    fixed_clock.advance(timedelta(days=2))  # a day missed
    assert service.check_in(session, member).streak == 1
    assert cached(member)[0] == 5 * 6 + 25 + 5
    state = service.check_in_state(session, member)
    assert state.checked_in_today and state.streak == 1


def test_check_in_days_are_brand_local(
    session: Session, programme: None, enrol: Enrol, fixed_clock: Any
) -> None:
    member = enrol()
    fixed_clock.set(datetime(2026, 11, 23, 15, 30, tzinfo=UTC))  # 23:30 in Shanghai
    assert service.check_in(session, member).day == date(2026, 11, 23)
    fixed_clock.set(datetime(2026, 11, 23, 16, 30, tzinfo=UTC))  # 00:30 the next day
    second = service.check_in(session, member)
    assert second.day == date(2026, 11, 24) and second.streak == 2


def test_reservations_hold_then_confirm_or_release(
    session: Session, programme: None, enrol: Enrol, cached: Cached, fixed_clock: Any
) -> None:
    member = enrol()
    service.grant(session, member, 500, fact="g:1", reason="r")
    service.reserve(session, member, 300, key="checkout:1")
    assert service.available(session, member) == 200
    with pytest.raises(Conflict):
        service.reserve(session, member, 300, key="checkout:2")
    spent = service.confirm(session, "checkout:1")
    assert spent.points == 300 and service.confirm(session, "checkout:1") == spent
    assert cached(member)[0] == 200
    service.reserve(session, member, 100, key="checkout:3")
    assert service.release(session, "checkout:3").status == "released"
    assert service.available(session, member) == 200
    with pytest.raises(Conflict):
        service.confirm(session, "checkout:3")
    # a hold that ran out no longer holds, and cannot be confirmed
    service.reserve(session, member, 100, key="checkout:4")
    fixed_clock.advance(timedelta(minutes=16))
    assert service.available(session, member) == 200
    with pytest.raises(Conflict) as caught:
        service.confirm(session, "checkout:4")
    assert caught.value.code == "reservation_expired"


def test_cash_off_quote_caps_and_steps(session: Session, programme: None, enrol: Enrol) -> None:
    member = enrol()
    service.grant(session, member, 5_000, fact="g:1", reason="r")
    quote = service.cash_off_quote(session, member, 12_345)  # 123.45 yuan, cap 50%: 61.72
    assert quote.points == 6_100 - 1_100 and quote.cash_fen == 5_000  # limited by 5,000
    quote = service.cash_off_quote(session, member, 5_050)  # cap 25.25 yuan: 2,525 -> 2,500
    assert quote.points == 2_500 and quote.cash_fen == 2_500
    with pytest.raises(Conflict):
        service.reserve_cash_off(session, member, 2_600, 5_050, key="c:1")
    with pytest.raises(InvalidInput):
        service.reserve_cash_off(session, member, 250, 5_050, key="c:1")
    assert service.reserve_cash_off(session, member, 2_500, 5_050, key="c:1").points == 2_500


def test_adjustments_need_a_reason_and_are_audited(
    session: Session, programme: None, enrol: Enrol, cached: Cached
) -> None:
    member = enrol()
    up = service.adjust(session, member, 200, reason="complaint", principal=SYSTEM, key="a1")
    assert up.created and up.balance_after == 200
    assert (
        service.adjust(session, member, 200, reason="complaint", principal=SYSTEM, key="a1").created
        is False
    )
    down = service.adjust(session, member, -50, reason="mistake", principal=SYSTEM, key="a2")
    assert down.balance_after == 150
    with pytest.raises(Conflict):
        service.adjust(session, member, -500, reason="too much", principal=SYSTEM, key="a3")
    with pytest.raises(InvalidInput):
        service.adjust(session, member, 5, reason=" ", principal=SYSTEM, key="a4")
    audits = session.scalar(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "points.adjust")
    )
    assert audits == 2
    assert cached(member) == (150, 0, 0)


def test_expiring_lists_dates_and_points(
    session: Session, programme: None, enrol: Enrol, fixed_clock: Any
) -> None:
    member = enrol()
    service.grant(session, member, 100, fact="g:1", reason="r")
    fixed_clock.set(datetime(2027, 1, 5, tzinfo=UTC))
    service.grant(session, member, 40, fact="g:2", reason="r")
    fixed_clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    shown = service.expiring(session, member)
    assert shown.next_date == date(2026, 12, 31) and shown.next_points == 100
    assert shown.dates == [(date(2026, 12, 31), 100), (date(2027, 12, 31), 40)]


def test_recompute_repairs_drift(
    session: Session, programme: None, enrol: Enrol, cached: Cached
) -> None:
    from sqlalchemy import update

    from siyu.members.models import Member

    member = enrol()
    service.grant(session, member, 70, fact="g:1", reason="r")
    session.execute(update(Member).where(Member.id == member).values(points_balance=5))
    [drift] = service.check(session)
    assert drift.member_id == member and drift.balance == (5, 70)
    assert service.recompute(session, [member]) == 1
    assert service.check(session) == [] and cached(member) == (70, 0, 0)
    assert service.recompute(session) >= 1


def test_entries_page_newest_first(
    session: Session, programme: None, enrol: Enrol, fixed_clock: Any
) -> None:
    member = enrol()
    for i in range(5):
        service.grant(session, member, 10 + i, fact=f"g:{i}", reason="r")
        fixed_clock.advance(timedelta(minutes=1))
    first = service.entries(session, member, limit=3)
    assert [e.points for e in first] == [14, 13, 12]
    rest = service.entries(session, member, before=(first[-1].at, first[-1].id), limit=3)
    assert [e.points for e in rest] == [11, 10]
    assert session.scalar(select(func.count()).select_from(PointsEntry)) == 5
    _ = clock


def test_grant_many_grants_each_fact_once(session: Session, programme_in_force: None) -> None:
    from siyu.members import service as members_service
    from siyu.members.service import EnrolDraft
    from siyu.points import service as points_service

    ids = [
        members_service.enrol(session, EnrolDraft(phone=f"1390000000{i}")).member_id
        for i in range(3)
    ]
    before = {m: points_service.available(session, m) for m in ids}
    grants = [points_service.Grant(m, 50, f"pack:test:{m}", "test pack") for m in ids]
    assert points_service.grant_many(session, grants) == 150
    assert points_service.grant_many(session, grants) == 0  # a replay grants nothing
    assert {m: points_service.available(session, m) - before[m] for m in ids} == dict.fromkeys(
        ids, 50
    )
