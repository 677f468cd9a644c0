"""The card's cyclic pack on each monthly anniversary, and the renewal gift."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.benefits import coupons, packs
from siyu.benefits.coupons import TemplateDraft
from siyu.benefits.models import Coupon, PackIssue
from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.paid import jobs, savings, service

TZ = "Asia/Shanghai"


def _packs(session: Session) -> None:
    coupons.create_template(
        session,
        TemplateDraft(
            code="FREIGHT", name="免运费", kind="freight", validity="relative", valid_days=30
        ),
        principal=SYSTEM,
    )
    coupons.create_template(
        session,
        TemplateDraft(
            code="OFF20", name="20元券", kind="amount_off", amount_off_fen=2_000,
            validity="relative", valid_days=30,
        ),
        principal=SYSTEM,
    )  # fmt: skip
    for code in ("monthly_freight", "birthday_gift"):
        packs.create_pack(
            session,
            packs.PackDraft(
                code=code,
                name=code,
                trigger="manual",
                contents=[{"template": "FREIGHT", "quantity": 4}, {"template": "OFF20"}],
            ),
            principal=SYSTEM,
        )


def test_anniversary_is_anchored_and_clamped() -> None:
    anchor = datetime(2026, 1, 31, 10, tzinfo=ZoneInfo(TZ))
    assert jobs._anniversary(anchor, date(2026, 1, 31)) == 0
    assert jobs._anniversary(anchor, date(2026, 2, 28)) == 1
    assert jobs._anniversary(anchor, date(2026, 3, 31)) == 2
    assert jobs._anniversary(anchor, date(2026, 3, 28)) is None
    assert jobs._anniversary(anchor, date(2025, 12, 31)) is None


def test_cyclic_pack_twice_is_once_and_renewal_gift(
    clean_db: Database, programme_in_force: None
) -> None:
    now = clock.now()  # 2026-11-23 12:00 in Shanghai
    with clean_db.unit_of_work() as s:
        _packs(s)
        member = members.enrol(s, EnrolDraft(phone="13800138000")).member_id
        other = members.enrol(s, EnrolDraft(phone="13800138001")).member_id
        service.purchase_callback(s, "TX-1", member, "super", 19_900, now - timedelta(days=61))
        service.purchase_callback(s, "TX-2", other, "super", 19_900, now - timedelta(days=5))
    day = clock.local_date(now, TZ)  # member bought on 23 September: month 2 starts today
    first = jobs.cyclic_benefits(clean_db, day)
    again = jobs.cyclic_benefits(clean_db, day)
    assert first == {"packs": 1, "gifts": 0}
    assert again == {"packs": 0, "gifts": 0}
    with clean_db.unit_of_work() as s:
        keys = list(s.scalars(select(PackIssue.key)))
        assert keys == [f"pack:monthly_freight:{member}:sub:{_sub(s, member)}:2"]
        assert s.scalar(select(func.count()).select_from(Coupon)) == 5

        sub = service.current(s, member)
        assert sub is not None
        service.renewal_callback(s, "TX-3", member, 19_900, now)
    assert jobs.cyclic_benefits(clean_db, day) == {"packs": 0, "gifts": 1}
    assert jobs.cyclic_benefits(clean_db, day) == {"packs": 0, "gifts": 0}
    with clean_db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(PackIssue)) == 2
        # a coupon of the card used on an order is a saving of the card (read from the coupon)
        coupon = s.scalars(select(Coupon).where(Coupon.member_id == member)).first()
        assert coupon is not None
        coupon.state, coupon.used_at, coupon.discount_fen = "used", now, 1_000
        s.flush()
        got = savings.summary(s, member, tz=TZ)
        assert got.by_kind["freight"] == 1_000
        assert got.fee_fen == 39_800


def _sub(session: Session, member_id: int) -> int:
    sub = service.current(session, member_id)
    assert sub is not None
    return sub.id
