"""Subscriptions through the services: trials, callbacks, renewals, refunds, the job."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import siyu.paid.jobs
from siyu.core import clock
from siyu.core.auth import Principal, Role
from siyu.core.db import Database
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.core.outbox import OutboxMessage
from siyu.jobs import service as jobs
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.paid import service
from siyu.paid.models import Payment

OPERATOR = Principal(key_id=0, name="test", role=Role.operator)
NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


def topics(session: Session, topic: str) -> list[OutboxMessage]:
    return list(session.scalars(select(OutboxMessage).where(OutboxMessage.topic == topic)))


def test_purchase_makes_a_year_and_a_repeat_returns_the_first(
    session: Session, member_id: int
) -> None:
    first = service.purchase_callback(session, "T1", member_id, "super", 19_900, NOW)
    again = service.purchase_callback(session, "T1", member_id, "super", 19_900, NOW)
    assert first.created and not again.created
    assert again.subscription.id == first.subscription.id
    sub = first.subscription
    assert (sub.state, sub.auto_renew) == ("active", True)
    assert sub.current_period_end == datetime(2027, 11, 23, 4, 0, tzinfo=UTC)
    assert len(service.payments_of(session, sub.id)) == 1


def test_purchase_with_other_content_or_a_wrong_amount_is_refused(
    session: Session, member_id: int
) -> None:
    service.purchase_callback(session, "T1", member_id, "super", 19_900, NOW)
    with pytest.raises(Conflict) as clash:
        service.purchase_callback(session, "T1", member_id, "super", 19_900, NOW + timedelta(1))
    assert "already recorded" in clash.value.message and "this callback says" in clash.value.message
    other = members.enrol(session, EnrolDraft(phone="13900139000")).member_id
    with pytest.raises(InvalidInput) as wrong:
        service.purchase_callback(session, "T2", other, "super", 9_900, NOW)
    assert "19900 fen (199 yuan)" in wrong.value.message
    with pytest.raises(Conflict, match="already holds"):
        service.purchase_callback(session, "T3", member_id, "super", 19_900, NOW)


def test_a_month_bought_on_31_january_renews_on_29_february_then_31_march(
    session: Session, apply_programme: Callable[..., None], example: dict
) -> None:
    example["paid"]["plans"][0].update(period="month", price=19)
    apply_programme(example)
    member_id = members.enrol(session, EnrolDraft(phone="13800138000")).member_id
    paid_at = datetime(2028, 1, 30, 18, 0, tzinfo=UTC)  # 31 January in Shanghai
    sub = service.purchase_callback(session, "P", member_id, "super", 1_900, paid_at).subscription
    ends = [sub.current_period_end]
    for n in range(2):
        service.renewal_callback(session, f"R{n}", member_id, 1_900, ends[-1] - timedelta(days=1))
        ends.append(sub.current_period_end)
    shanghai = [clock.local_date(e, "Asia/Shanghai") for e in ends]
    assert shanghai == [date(2028, 2, 29), date(2028, 3, 31), date(2028, 4, 30)]
    periods = [(p.period_start, p.period_end) for p in service.payments_of(session, sub.id)]
    assert all(a[1] == b[0] for a, b in pairwise(periods))


@pytest.fixture
def example() -> dict:
    from importlib import resources

    from siyu.programme import rules

    text = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    return rules.parse_text(text)[0]  # type: ignore[no-any-return]


def test_trial_is_once_per_person_across_merged_identities(
    session: Session, member_id: int
) -> None:
    other = members.enrol(session, EnrolDraft(phone="13900139000")).member_id
    trial = service.start_trial(session, other, "super")
    assert trial.state == "trial" and trial.current_period_end == NOW + timedelta(days=7)
    members.merge(session, other, member_id, reason="same person", principal=OPERATOR)
    with pytest.raises(Conflict, match="once per person"):
        service.start_trial(session, member_id, "super")


def test_a_trial_turns_paid_and_cannot_be_taken_twice(session: Session, member_id: int) -> None:
    trial = service.start_trial(session, member_id, "super")
    paid = service.purchase_callback(session, "T1", member_id, "super", 19_900, NOW)
    assert paid.subscription.id == trial.id and trial.state == "active"
    service.cancel(session, member_id, reason="too dear", principal=OPERATOR)
    with pytest.raises(Conflict):
        service.start_trial(session, member_id, "super")


def test_existing_subscribers_keep_their_terms_when_the_plan_changes(
    session: Session, member_id: int, apply_programme: Callable[..., None], example: dict
) -> None:
    service.purchase_callback(session, "T1", member_id, "super", 19_900, NOW - timedelta(1))
    session.commit()
    example["paid"]["plans"][0]["price"] = 299
    apply_programme(example, effective_from=NOW - timedelta(hours=1))
    renewed = service.renewal_callback(session, "R1", member_id, 19_900, NOW)
    assert renewed.subscription.terms["price"] == "199"
    newcomer = members.enrol(session, EnrolDraft(phone="13900139000")).member_id
    with pytest.raises(InvalidInput, match="29900 fen"):
        service.purchase_callback(session, "T2", newcomer, "super", 19_900, NOW)


def test_refunds_full_then_bounded_and_unknown_payments_are_not_found(
    session: Session, member_id: int
) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        service.refund_callback(session, "F0", "nope", 100, NOW)
    service.purchase_callback(session, "T1", member_id, "super", 19_900, NOW - timedelta(days=30))
    with pytest.raises(InvalidInput, match="at most"):
        service.refund_callback(session, "F1", "T1", 19_900, NOW)
    result = service.refund_callback(session, "F1", "T1", 15_000, NOW)
    assert result.subscription.state == "refunded"
    assert service.refund_callback(session, "F1", "T1", 15_000, NOW).created is False
    paid = session.scalar(select(Payment).where(Payment.txn_id == "T1"))
    assert paid is not None and paid.refunded_fen == 15_000


def test_the_job_reminds_then_graces_then_expires_and_reruns_change_nothing(
    clean_db: Database, fixed_clock: clock.FixedClock, programme_in_force: None
) -> None:
    with clean_db.unit_of_work() as s:
        member_id = members.enrol(s, EnrolDraft(phone="13800138000")).member_id
        trial_member = members.enrol(s, EnrolDraft(phone="13900139000")).member_id
        service.purchase_callback(s, "T1", member_id, "super", 19_900, NOW - timedelta(days=360))
        service.start_trial(s, trial_member, "super")

    def run(at: datetime) -> None:
        fixed_clock.set(at)
        day = clock.local_date(at, "Asia/Shanghai")
        jobs.run(clean_db, "paid.expire", day)
        siyu.paid.jobs.expire(clean_db, day)  # a re-run of the same day finds nothing new

    run(NOW)
    with clean_db.unit_of_work() as s:
        assert len(topics(s, "paid.renewal_due")) == 1
        assert topics(s, "paid.trial_ending") == []
    run(NOW + timedelta(days=6))
    run(NOW + timedelta(days=7))
    with clean_db.unit_of_work() as s:
        assert len(topics(s, "paid.trial_ending")) == 1
        assert service.current(s, trial_member).state == "expired"  # type: ignore[union-attr]
        assert service.current(s, member_id).state == "grace"  # type: ignore[union-attr]
    run(NOW + timedelta(days=13))
    with clean_db.unit_of_work() as s:
        sub = service.current(s, member_id)
        assert sub is not None and sub.state == "expired"
        assert len(topics(s, "paid.expired")) == 2
        # a renewal after expiry starts a new term from the payment
        late = NOW + timedelta(days=14)
        renewed = service.renewal_callback(s, "R-late", member_id, 19_900, late)
        assert renewed.subscription.id != sub.id
        assert renewed.subscription.current_period_start == late
