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
    with pytest.raises(Conflict, match="already a member") as twice:
        service.purchase_callback(session, "T3", member_id, "super", 19_900, NOW)
    assert twice.value.code == "already_subscribed" and "2027-11-23" in twice.value.message


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


# --- renewal callbacks after the period ------------------------------------------------------

YEAR_AGO = NOW - timedelta(days=365)  # the year bought then ends at NOW


def _bought_a_year_ago(session: Session, member_id: int) -> None:
    service.purchase_callback(session, "T1", member_id, "super", 19_900, YEAR_AGO)


def test_a_renewal_within_grace_extends_without_a_gap(
    clean_db: Database, fixed_clock: clock.FixedClock, programme_in_force: None
) -> None:
    with clean_db.unit_of_work() as s:
        member_id = members.enrol(s, EnrolDraft(phone="13800138000")).member_id
        _bought_a_year_ago(s, member_id)
    fixed_clock.set(NOW + timedelta(days=3))
    jobs.run(clean_db, "paid.expire", clock.local_date(clock.now(), "Asia/Shanghai"))
    with clean_db.unit_of_work() as s:
        sub = service.current(s, member_id)
        assert sub is not None and sub.state == "grace"
        renewed = service.renewal_callback(
            s, "R1", member_id, 19_900, NOW + timedelta(days=3)
        ).subscription
        assert renewed.id == sub.id and renewed.state == "active"
        assert renewed.grace_until is None
        periods = [(p.period_start, p.period_end) for p in service.payments_of(s, sub.id)]
        assert periods[1] == (NOW, datetime(2027, 11, 23, 4, 0, tzinfo=UTC))


def test_a_renewal_after_expiry_starts_a_new_term_and_savings_continue(
    clean_db: Database, fixed_clock: clock.FixedClock, programme_in_force: None
) -> None:
    """The daily job has not run: the subscription still says active, but the charge came
    after the 7 grace days; the old term expires at its lapse and a new one starts from the
    payment. Savings since joining cover both terms and both fees."""
    from siyu.orders import service as orders
    from siyu.orders.rules import LineDraft, OrderDraft
    from siyu.paid import savings

    with clean_db.unit_of_work() as s:
        member_id = members.enrol(s, EnrolDraft(phone="13800138000")).member_id
        _bought_a_year_ago(s, member_id)
        orders.ingest_orders(
            s,
            [
                OrderDraft(
                    channel="tmall",
                    external_id="O1",
                    paid_at=NOW - timedelta(days=30),
                    member_id=member_id,
                    lines=[LineDraft("SKU-9", "纸尿裤", 1, 9_990)],  # saves 526 at 0.95
                )
            ],
        )
    late = NOW + timedelta(days=20)
    fixed_clock.set(late)
    with clean_db.unit_of_work() as s:
        old = service.current(s, member_id)
        assert old is not None and old.state == "active"  # not moved by the job yet
        new = service.renewal_callback(s, "R-late", member_id, 19_900, late).subscription
        assert new.id != old.id and new.state == "active"
        assert (new.current_period_start, new.anchor_at) == (late, late)
        assert new.current_period_end == datetime(2027, 12, 13, 4, 0, tzinfo=UTC)
        assert old.state == "expired" and old.ended_at == NOW + timedelta(days=7)
        orders.ingest_orders(
            s,
            [
                OrderDraft(
                    channel="tmall",
                    external_id="O2",
                    paid_at=late,
                    member_id=member_id,
                    lines=[LineDraft("SKU-9", "纸尿裤", 1, 9_990)],
                )
            ],
        )
        got = savings.summary(s, member_id)
        assert got.subscription_id == new.id
        assert got.joined_at == YEAR_AGO
        assert got.by_kind["member_price"] == 2 * 526
        assert got.fee_fen == 2 * 19_900
        assert list(got.months) == ["2026-10", "2026-12"]
        # the job finds nothing more to expire, and a repeat of the charge changes nothing
        assert service.expire_batch(s, late) == 0
        again = service.renewal_callback(s, "R-late", member_id, 19_900, late)
        assert not again.created and again.subscription.id == new.id


def test_a_charge_paid_in_grace_arriving_after_expiry_leaves_no_gap(
    clean_db: Database, fixed_clock: clock.FixedClock, programme_in_force: None
) -> None:
    with clean_db.unit_of_work() as s:
        member_id = members.enrol(s, EnrolDraft(phone="13800138000")).member_id
        _bought_a_year_ago(s, member_id)
    fixed_clock.set(NOW + timedelta(days=10))
    with clean_db.unit_of_work() as s:
        while service.expire_batch(s, clock.now()):
            pass
    with clean_db.unit_of_work() as s:
        old = service.current(s, member_id)
        assert old is not None and old.state == "expired"
        paid_in_grace = NOW + timedelta(days=2)
        new = service.renewal_callback(s, "R1", member_id, 19_900, paid_in_grace).subscription
        assert new.id != old.id
        assert new.current_period_start == NOW  # where the old period ended
        assert new.current_period_end == datetime(2027, 11, 23, 4, 0, tzinfo=UTC)


def test_cancelled_before_its_end_is_not_renewed_and_a_purchase_after_a_lapse_is_new(
    session: Session, member_id: int, fixed_clock: clock.FixedClock
) -> None:
    _bought_a_year_ago(session, member_id)
    service.cancel(session, member_id, reason="moving", principal=OPERATOR)
    with pytest.raises(Conflict, match="cancelled") as refused:
        service.renewal_callback(session, "R1", member_id, 19_900, NOW - timedelta(days=1))
    assert refused.value.code == "subscription_state"
    fixed_clock.set(NOW + timedelta(days=1))
    bought = service.purchase_callback(session, "T2", member_id, "super", 19_900, clock.now())
    assert bought.created and bought.subscription.state == "active"
    old = session.scalar(select(Payment).where(Payment.txn_id == "T1"))
    assert old is not None
    first = session.get(type(bought.subscription), old.subscription_id)
    assert first is not None and (first.state, first.ended_at) == ("expired", NOW)
