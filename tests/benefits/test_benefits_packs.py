"""Benefit packs: by hand, and from the events and jobs they belong to."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.benefits import coupons, packs
from siyu.benefits.models import BenefitPack, Coupon, CouponTemplate, PackIssue
from siyu.benefits.packs import PackDraft
from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.errors import InvalidInput
from siyu.core.events import publish
from siyu.jobs import service as jobs
from siyu.members import service as members
from siyu.members.models import Member
from siyu.members.service import EnrolDraft
from siyu.points import service as points
from siyu.tiers import service as tiers
from siyu.tiers.service import TierChange, TiersChanged

MakeTemplate = Callable[..., CouponTemplate]


def make_pack(session: Session, code: str, trigger: str, **fields: Any) -> BenefitPack:
    fields.setdefault("contents", [{"template": "FREIGHT", "quantity": 1}])
    pack, _ = packs.create_pack(
        session, PackDraft(code=code, name=code, trigger=trigger, **fields), principal=SYSTEM
    )
    return pack


def coupons_of(session: Session, member_id: int) -> list[Coupon]:
    return list(session.scalars(select(Coupon).where(Coupon.member_id == member_id)))


@pytest.fixture
def freight(make_template: MakeTemplate) -> CouponTemplate:
    return make_template(
        "FREIGHT", name="运费券", kind="freight", threshold_fen=0, amount_off_fen=None
    )


def raise_tier(session: Session, member_id: int, code: str) -> None:
    tiers.grant_tier(
        session,
        member_id,
        code,
        ends_at=clock.now() + timedelta(days=365),
        reason="test",
        principal=SYSTEM,
    )


def test_a_pack_is_checked_before_it_is_stored(session: Session, freight: CouponTemplate) -> None:
    with pytest.raises(InvalidInput) as bad:
        packs.create_pack(
            session,
            PackDraft(
                code="p",
                name="p",
                trigger="sometimes",
                contents=[{"template": "NOPE"}, {"template": "FREIGHT", "quantity": 0}],
            ),
            principal=SYSTEM,
        )
    fields = {d["field"] for d in bad.value.details}
    assert fields == {"trigger", "contents[0].template", "contents[1].quantity"}
    pack = make_pack(session, "join_gift", "join")
    assert make_pack(session, "join_gift", "join").id == pack.id


def test_join_pack_listed_by_no_level_goes_to_every_new_member_of_a_bulk_enrolment(
    programme_in_force: None, session: Session, freight: CouponTemplate
) -> None:
    make_pack(
        session, "join_gift", "join", contents=[{"template": "FREIGHT", "quantity": 2}], points=50
    )
    results = members.enrol_many(session, [EnrolDraft(phone=f"1390000000{i}") for i in range(3)])
    for r in results:
        assert len(coupons_of(session, r.member_id)) == 2
        assert {c.source for c in coupons_of(session, r.member_id)} == {"pack"}
    assert session.scalar(select(func.count()).select_from(PackIssue)) == 3
    before = points.available(session, results[0].member_id)
    # the event seen twice gives nothing twice
    again = packs.join_packs(session, [(r.member_id, clock.now()) for r in results])
    assert again == 0
    assert session.scalar(select(func.count()).select_from(Coupon)) == 6
    assert points.available(session, results[0].member_id) == before
    assert before >= 50


def test_join_pack_listed_by_a_level_goes_only_to_members_on_it(
    clean_db: Database, list_packs: Callable[..., None], template_draft: Any
) -> None:
    list_packs(V2=["vip_join"])
    with clean_db.unit_of_work() as session:
        coupons.create_template(session, template_draft("FREIGHT"), principal=SYSTEM)
        make_pack(session, "vip_join", "join")
        newcomer = members.enrol(session, EnrolDraft(phone="13900000001")).member_id
        assert coupons_of(session, newcomer) == []


def test_a_pack_short_of_stock_skips_coupons_but_never_fails_the_enrolment(
    session: Session, make_template: MakeTemplate
) -> None:
    make_template("ONE", stock=1)
    make_pack(session, "join_gift", "join", contents=[{"template": "ONE", "quantity": 1}])
    results = members.enrol_many(session, [EnrolDraft(phone=f"1390000000{i}") for i in range(3)])
    got = [len(coupons_of(session, r.member_id)) for r in results]
    assert sorted(got) == [0, 0, 1]
    assert session.scalar(select(func.count()).select_from(PackIssue)) == 3


def test_by_hand_with_a_key_and_a_reason(
    session: Session, freight: CouponTemplate, member_id: int
) -> None:
    make_pack(session, "sorry", "manual")
    first = packs.issue_by_hand(
        session, "sorry", [member_id], key="ticket-7", reason="late delivery", principal=SYSTEM
    )
    again = packs.issue_by_hand(
        session, "sorry", [member_id], key="ticket-7", reason="late delivery", principal=SYSTEM
    )
    assert first.issued == [member_id] and again.replayed == [member_id]
    assert len(coupons_of(session, member_id)) == 1


def test_tier_upgrade_packs_come_with_the_upgrade_once(
    clean_db: Database, list_packs: Callable[..., None], template_draft: Any
) -> None:
    list_packs(V3=["upgrade_v3"])
    with clean_db.unit_of_work() as session:
        coupons.create_template(session, template_draft("FREIGHT"), principal=SYSTEM)
        make_pack(session, "upgrade_v3", "tier_upgrade", points=100)
        member_id = members.enrol(session, EnrolDraft(phone="13900000001")).member_id
        raise_tier(session, member_id, "V2")
        assert coupons_of(session, member_id) == []  # V2 does not list it
        raise_tier(session, member_id, "V3")
        assert len(coupons_of(session, member_id)) == 1
        # the same change published again (a retry) gives nothing more
        change = TierChange(member_id, "V2", "V3", "upgrade", clock.now())
        publish(session, TiersChanged((change,)))
        assert len(coupons_of(session, member_id)) == 1
        [(issue, code)] = packs.issues_of_member(session, member_id)
        assert code == "upgrade_v3" and issue.period == "V3@2026-11-23" and issue.points == 100


def test_a_downgrade_or_a_join_gives_no_upgrade_pack(
    clean_db: Database, list_packs: Callable[..., None], template_draft: Any
) -> None:
    list_packs(V1=["upgrade_any"], V2=["upgrade_any"])
    with clean_db.unit_of_work() as session:
        coupons.create_template(session, template_draft("FREIGHT"), principal=SYSTEM)
        make_pack(session, "upgrade_any", "tier_upgrade")
        member_id = members.enrol(session, EnrolDraft(phone="13900000001")).member_id
        publish(session, TiersChanged((TierChange(member_id, None, "V1", "join", clock.now()),)))
        publish(session, TiersChanged((TierChange(member_id, "V3", "V2", "review", clock.now()),)))
        assert coupons_of(session, member_id) == []


def test_birthday_job_gives_the_pack_to_members_whose_level_lists_it_once(
    clean_db: Database, list_packs: Callable[..., None], template_draft: Any
) -> None:
    list_packs()  # the example: V2 and up list birthday_gift
    with clean_db.unit_of_work() as s:
        coupons.create_template(s, template_draft("BDAY", valid_days=30), principal=SYSTEM)
        make_pack(s, "birthday_gift", "birthday", contents=[{"template": "BDAY", "quantity": 1}])
        born = date(1990, 11, 23)
        v2 = members.enrol(s, EnrolDraft(phone="13900000001", birthday=born)).member_id
        v1 = members.enrol(s, EnrolDraft(phone="13900000002", birthday=born)).member_id
        other_day = members.enrol(
            s, EnrolDraft(phone="13900000003", birthday=date(1990, 11, 24))
        ).member_id
        raise_tier(s, v2, "V2")
        raise_tier(s, other_day, "V2")
    first = jobs.run(clean_db, "benefits.birthday_packs", date(2026, 11, 23))
    assert first.result == {"members": 2, "packs": 1}
    with clean_db.unit_of_work() as s:
        assert [len(coupons_of(s, m)) for m in (v2, v1, other_day)] == [1, 0, 0]
        # a re-run of the day's work (after a failure) finds the facts and gives nothing
        assert packs.birthday_batch(s, date(2026, 11, 23)) == (2, 0, v1)
    assert jobs.run(clean_db, "benefits.birthday_packs", date(2026, 11, 23)).status == "skipped"


def test_monthly_job_runs_on_the_first_once_per_month(
    clean_db: Database, list_packs: Callable[..., None], template_draft: Any
) -> None:
    list_packs()  # V3 and up list monthly_freight
    with clean_db.unit_of_work() as s:
        coupons.create_template(
            s,
            template_draft(
                "FREIGHT", kind="freight", threshold_fen=0, amount_off_fen=None, valid_days=31
            ),
            principal=SYSTEM,
        )
        make_pack(s, "monthly_freight", "monthly")
        v3 = members.enrol(s, EnrolDraft(phone="13900000001")).member_id
        v1 = members.enrol(s, EnrolDraft(phone="13900000002")).member_id
        raise_tier(s, v3, "V3")
    assert jobs.run(clean_db, "benefits.monthly_packs", date(2026, 11, 24)).result == {
        "members": 0,
        "packs": 0,
    }
    assert jobs.run(clean_db, "benefits.monthly_packs", date(2026, 12, 1)).result == {
        "members": 1,
        "packs": 1,
    }
    with clean_db.unit_of_work() as s:
        assert packs.monthly_batch(s, date(2026, 12, 1))[1] == 0
        assert [len(coupons_of(s, m)) for m in (v3, v1)] == [1, 0]
        assert s.scalar(select(Member.tier_code).where(Member.id == v3)) == "V3"
