"""Coupon templates and coupons through the services: issue, redeem, refund, expire."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.benefits import coupons
from siyu.benefits.coupons import TemplateDraft
from siyu.benefits.models import Coupon, CouponTemplate
from siyu.benefits.rules import CouponState
from siyu.core import clock
from siyu.core.audit import AuditEntry
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.jobs import service as jobs
from siyu.orders import service as orders
from siyu.orders.rules import RefundDraft, RefundLineDraft

MakeTemplate = Callable[..., CouponTemplate]
Draft = Callable[..., TemplateDraft]


def give(session: Session, template: CouponTemplate, *members: int, key: str = "k1") -> Coupon:
    result = coupons.issue(
        session, template.id, list(members), key=key, reason="test", principal=SYSTEM
    )
    return next(iter(result.created.values()))[0]


# --- templates -------------------------------------------------------------------------------


def test_a_template_is_created_once_and_its_code_is_kept(
    session: Session, template_draft: Draft
) -> None:
    first, created = coupons.create_template(session, template_draft(), principal=SYSTEM)
    again, created_again = coupons.create_template(session, template_draft(), principal=SYSTEM)
    assert created and not created_again and again.id == first.id
    with pytest.raises(Conflict) as taken:
        coupons.create_template(session, template_draft(amount_off_fen=3_000), principal=SYSTEM)
    assert taken.value.code == "template_exists"
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == 1


def test_a_bad_template_lists_every_problem(session: Session, template_draft: Draft) -> None:
    with pytest.raises(InvalidInput) as bad:
        coupons.create_template(
            session,
            template_draft("bad code!", kind="percent_off", percent_off_bp=None, valid_days=0),
            principal=SYSTEM,
        )
    fields = {d["field"] for d in bad.value.details}
    assert {"code", "percent_off_bp", "amount_off_fen", "valid_days"} <= fields


# --- issuing ---------------------------------------------------------------------------------


def test_bulk_issue_gives_each_member_a_unique_code_and_a_retry_gives_nothing_more(
    session: Session, make_template: MakeTemplate, enrol: Callable[..., int]
) -> None:
    template = make_template(stock=10)
    ids = [enrol() for _ in range(3)]
    first = coupons.issue(session, template.id, ids, key="nov", reason="vip", principal=SYSTEM)
    assert sorted(first.created) == ids and first.created_count == 3
    codes = {c.code for cs in first.created.values() for c in cs}
    assert len(codes) == 3
    coupon = first.created[ids[0]][0]
    assert coupon.state == "usable" and coupon.source == "manual"
    assert clock.as_utc(coupon.valid_until) == datetime.fromisoformat("2026-11-29T16:00:00+00:00")
    again = coupons.issue(session, template.id, ids, key="nov", reason="vip", principal=SYSTEM)
    assert again.created == {} and {c.code for cs in again.replayed.values() for c in cs} == codes
    assert session.get(CouponTemplate, template.id).issued == 3  # type: ignore[union-attr]
    assert coupons.history(session, coupon.id)[0].kind == "issued"


def test_per_member_limit_skips_members_who_hold_enough(
    session: Session, make_template: MakeTemplate, member_id: int, enrol: Callable[..., int]
) -> None:
    template = make_template(per_member_limit=2)
    coupons.issue(
        session, template.id, [member_id], key="a", reason="r", principal=SYSTEM, quantity=2
    )
    other = enrol()
    result = coupons.issue(
        session, template.id, [member_id, other], key="b", reason="r", principal=SYSTEM
    )
    assert list(result.created) == [other]
    assert "limit of 2" in result.skipped[member_id]


def test_stock_is_all_or_nothing_for_a_hand_issue(
    session: Session, make_template: MakeTemplate, enrol: Callable[..., int]
) -> None:
    template = make_template(stock=2)
    ids = [enrol() for _ in range(3)]
    with pytest.raises(Conflict) as out:
        coupons.issue(session, template.id, ids, key="x", reason="r", principal=SYSTEM)
    assert out.value.code == "out_of_stock" and "2 coupons left" in out.value.message
    assert session.scalar(select(func.count()).select_from(Coupon)) == 0
    coupons.issue(session, template.id, ids[:2], key="y", reason="r", principal=SYSTEM)
    assert session.get(CouponTemplate, template.id).issued == 2  # type: ignore[union-attr]


def test_issue_refuses_unknown_members_paused_and_ended_templates(
    session: Session, make_template: MakeTemplate, member_id: int
) -> None:
    template = make_template()
    with pytest.raises(NotFound):
        coupons.issue(session, template.id, [member_id, 999], key="k", reason="r", principal=SYSTEM)
    with pytest.raises(InvalidInput) as no_reason:
        coupons.issue(session, template.id, [member_id], key="k", reason=" ", principal=SYSTEM)
    assert no_reason.value.field == "reason"
    coupons.set_template_status(session, template.id, "paused", principal=SYSTEM)
    with pytest.raises(Conflict) as paused:
        coupons.issue(session, template.id, [member_id], key="k", reason="r", principal=SYSTEM)
    assert paused.value.code == "template_unavailable"
    ended = make_template(
        "OLD",
        validity="fixed",
        valid_days=None,
        valid_from=clock.now() - timedelta(days=10),
        valid_until=clock.now() - timedelta(days=1),
    )
    with pytest.raises(Conflict):
        coupons.issue(session, ended.id, [member_id], key="k", reason="r", principal=SYSTEM)


# --- redeeming -------------------------------------------------------------------------------


def test_redeeming_records_the_order_and_discount_once(
    session: Session, make_template: MakeTemplate, member_id: int, place_order: Callable[..., int]
) -> None:
    coupon = give(session, make_template(), member_id)
    order_id = place_order("T1", member_id)
    used = coupons.redeem(session, coupon.code.lower(), order_id=order_id)
    assert used.created and used.coupon.state == "used"
    assert used.coupon.order_id == order_id and used.coupon.discount_fen == 2_000
    again = coupons.redeem(session, coupon.code, channel="tmall", external_id="T1")
    assert not again.created and again.coupon.id == coupon.id
    other = place_order("T2", member_id)
    with pytest.raises(Conflict) as twice:
        coupons.redeem(session, coupon.code, order_id=other)
    assert twice.value.code == "coupon_used"
    assert [e.kind for e in coupons.history(session, coupon.id)] == ["issued", "redeemed"]


@pytest.mark.parametrize(
    ("template", "order", "code"),
    [
        ({}, {"member": "other"}, "coupon_wrong_member"),
        ({}, {"paid_at": timedelta(days=8)}, "coupon_expired"),
        ({"channels": ["store"]}, {}, "coupon_channel"),
        ({"categories": ["玩具"]}, {}, "coupon_no_eligible_lines"),
        ({"categories": ["纸尿裤"]}, {}, "coupon_threshold"),
        (
            {
                "validity": "fixed",
                "valid_days": None,
                "valid_from": timedelta(hours=2),
                "valid_until": timedelta(days=3),
            },
            {},
            "coupon_not_yet_valid",
        ),
    ],
)
def test_redeem_refuses_with_a_reason(
    session: Session,
    make_template: MakeTemplate,
    member_id: int,
    enrol: Callable[..., int],
    place_order: Callable[..., int],
    template: dict[str, object],
    order: dict[str, object],
    code: str,
) -> None:
    fields = {k: clock.now() + v if isinstance(v, timedelta) else v for k, v in template.items()}
    coupon = give(session, make_template(**fields), member_id)
    buyer = enrol() if order.get("member") == "other" else member_id
    overrides = {}
    if isinstance(order.get("paid_at"), timedelta):
        clock.set_clock(clock.FixedClock(clock.now() + order["paid_at"]))  # type: ignore[operator]
        overrides["paid_at"] = clock.now() - timedelta(minutes=1)
    try:
        order_id = place_order("T1", buyer, **overrides)
        with pytest.raises((InvalidInput, Conflict)) as refused:
            coupons.redeem(session, coupon.code, order_id=order_id)
    finally:
        clock.set_clock(clock.FixedClock(datetime.fromisoformat("2026-11-23T04:00:00+00:00")))
    assert refused.value.code == code
    assert session.get(Coupon, coupon.id).state == "usable"  # type: ignore[union-attr]


def test_redeem_needs_an_existing_order_and_coupon(
    session: Session, make_template: MakeTemplate, member_id: int, place_order: Callable[..., int]
) -> None:
    coupon = give(session, make_template(), member_id)
    with pytest.raises(NotFound):
        coupons.redeem(session, coupon.code, order_id=12345)
    with pytest.raises(NotFound):
        coupons.redeem(session, coupon.code, channel="jd", external_id="nope")
    with pytest.raises(InvalidInput):
        coupons.redeem(session, coupon.code)
    order_id = place_order("T1", member_id)
    with pytest.raises(NotFound):
        coupons.redeem(session, "ZZZZZZZZZZZZ", order_id=order_id)


# --- refunds -----------------------------------------------------------------------------------


def refund(
    external_id: str, order: str = "T1", lines: list[RefundLineDraft] | None = None
) -> RefundDraft:
    return RefundDraft(
        channel="tmall",
        external_id=external_id,
        order_channel="tmall",
        order_external_id=order,
        refunded_at=clock.now(),
        lines=lines or [],
    )


def test_a_full_refund_gives_the_coupon_back_with_history(
    session: Session, make_template: MakeTemplate, member_id: int, place_order: Callable[..., int]
) -> None:
    coupon = give(session, make_template(), member_id)
    order_id = place_order("T1", member_id)
    coupons.redeem(session, coupon.code, order_id=order_id)
    orders.create_refund(session, refund("R1"))
    session.refresh(coupon)
    assert coupon.state == "usable" and coupon.order_id is None and coupon.discount_fen == 0
    kinds = [(e.kind, e.order_id) for e in coupons.history(session, coupon.id)]
    assert kinds == [("issued", None), ("redeemed", order_id), ("returned", order_id)]
    again = place_order("T2", member_id)
    assert coupons.redeem(session, coupon.code, order_id=again).coupon.order_id == again


def test_a_partial_refund_keeps_the_coupon_until_the_threshold_is_lost(
    session: Session, make_template: MakeTemplate, member_id: int, place_order: Callable[..., int]
) -> None:
    coupon = give(session, make_template(), member_id)
    order_id = place_order("T1", member_id)
    coupons.redeem(session, coupon.code, order_id=order_id)
    orders.create_refund(session, refund("R1", lines=[RefundLineDraft(2, 1, 9_990)]))
    session.refresh(coupon)
    assert coupon.state == "used"  # 256.00 left, above the 200 threshold
    orders.create_refund(session, refund("R2", lines=[RefundLineDraft(1, 1, 12_800)]))
    session.refresh(coupon)
    assert coupon.state == "usable"  # 128.00 left


def test_a_refund_after_the_validity_returns_the_coupon_expired(
    session: Session,
    make_template: MakeTemplate,
    member_id: int,
    place_order: Callable[..., int],
    fixed_clock: clock.FixedClock,
) -> None:
    coupon = give(session, make_template(valid_days=1), member_id)
    place_order("T1", member_id)
    coupons.redeem(session, coupon.code, channel="tmall", external_id="T1")
    fixed_clock.advance(timedelta(days=3))
    orders.create_refund(session, refund("R1"))
    session.refresh(coupon)
    assert coupon.state == "expired"
    assert [e.kind for e in coupons.history(session, coupon.id)][-2:] == ["returned", "expired"]


# --- reading and expiry ------------------------------------------------------------------------


def test_members_coupons_by_state(
    session: Session,
    make_template: MakeTemplate,
    member_id: int,
    place_order: Callable[..., int],
    fixed_clock: clock.FixedClock,
) -> None:
    short = give(session, make_template("SHORT", valid_days=1), member_id)
    long = give(session, make_template("LONG", valid_days=30), member_id)
    used = give(session, make_template("USED", valid_days=30), member_id)
    coupons.redeem(session, used.code, order_id=place_order("T1", member_id))
    fixed_clock.advance(timedelta(days=2))

    def codes(state: CouponState | None) -> set[str]:
        return {c.code for c in coupons.coupons_of_member(session, member_id, state=state)}

    assert codes(CouponState.usable) == {long.code}
    assert codes(CouponState.expired) == {short.code}  # before the job marks it
    assert codes(CouponState.used) == {used.code}
    assert codes(None) == {short.code, long.code, used.code}


def test_expiry_job_run_twice_expires_once(
    clean_db: Database, fixed_clock: clock.FixedClock, template_draft: Draft
) -> None:
    from siyu.members import service as members
    from siyu.members.service import EnrolDraft

    with clean_db.unit_of_work() as s:
        member = members.enrol(s, EnrolDraft(phone="13800138000")).member_id
        short, _ = coupons.create_template(
            s, template_draft("SHORT", valid_days=1), principal=SYSTEM
        )
        long, _ = coupons.create_template(
            s, template_draft("LONG", valid_days=30), principal=SYSTEM
        )
        for t in (short, long):
            coupons.issue(s, t.id, [member], key="k", reason="r", principal=SYSTEM, quantity=3)
    fixed_clock.advance(timedelta(days=1))  # 24 November, 12:00 in Shanghai
    first = jobs.run(clean_db, "benefits.expire_coupons", date(2026, 11, 24))
    assert first.result == {"coupons": 3}
    assert jobs.run(clean_db, "benefits.expire_coupons", date(2026, 11, 24)).status == "skipped"
    # a failed-and-rerun job (or the next day's) finds nothing left to do
    with clean_db.unit_of_work() as s:
        assert coupons.expire_batch(s, cutoff=clock.now()) == 0
        states = dict(s.execute(select(Coupon.state, func.count()).group_by(Coupon.state)).all())
    assert states == {"expired": 3, "usable": 3}
