"""The demo brand generator: plain data without a database, and a small brand loaded
through the real services (enrol_many, ingest_orders, create_refund)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from siyu.core import clock
from siyu.core.db import Database
from siyu.demo.generator import (
    WINDOW,
    DemoSummary,
    build_organisation,
    generate_brand,
    iter_people,
    plan_orders,
)
from siyu.members import rules as member_rules
from siyu.members.models import Member, MemberIdentity
from siyu.orders import rules as order_rules
from siyu.orders.models import MemberMetrics, Order, Refund
from siyu.orders.service import check_metrics
from siyu.stores.models import Staff, Store

SEED = 11
MEMBERS = 300


def _snapshot(db: Database) -> tuple[object, ...]:
    with db.unit_of_work() as s:
        first = s.execute(
            select(Member.name, Member.phone, Member.joined_at, Member.join_channel)
            .order_by(Member.id)
            .limit(20)
        ).all()
        orders = s.execute(select(func.count(Order.id), func.sum(Order.amount_fen))).one()
        refunds = s.scalar(select(func.sum(Refund.amount_fen)))
    return tuple(first), tuple(orders), refunds


@pytest.fixture
def brand(clean_db: Database, fixed_clock: clock.FixedClock) -> DemoSummary:
    return generate_brand(clean_db, members=MEMBERS, seed=SEED, as_of=fixed_clock.now())


# --- plain data ------------------------------------------------------------------------


def test_the_stream_is_deterministic_for_a_seed(fixed_clock: clock.FixedClock) -> None:
    as_of = fixed_clock.now()
    first = list(iter_people(SEED, 200, as_of))
    again = list(iter_people(SEED, 200, as_of))
    other = list(iter_people(SEED + 1, 200, as_of))
    assert first == again
    assert [p.phone for p in first] != [p.phone for p in other]
    assert plan_orders(first, seed=SEED, as_of=as_of) == plan_orders(again, seed=SEED, as_of=as_of)


def test_people_have_valid_unique_phones_and_ids(fixed_clock: clock.FixedClock) -> None:
    people = list(iter_people(SEED, 2_000, fixed_clock.now()))
    phones = [p.phone for p in people if p.phone]
    assert len(set(phones)) == len(phones)
    assert all(member_rules.normalize_phone(p) == p for p in phones)
    identities = [i for p in people for i in p.all_identities]
    assert len(set(identities)) == len(identities)
    assert any(p.phone is None for p in people), "some people are known by a platform id only"


def test_orders_are_valid_and_inside_the_window(fixed_clock: clock.FixedClock) -> None:
    as_of = fixed_clock.now()
    plan = plan_orders(list(iter_people(SEED, 500, as_of)), seed=SEED, as_of=as_of)
    assert plan.orders and plan.refunds and plan.guest_orders
    for order in plan.orders:
        assert order_rules.validate_order(order, as_of) == []
        assert as_of - WINDOW <= order.paid_at <= as_of
    categories = {line.category for o in plan.orders for line in o.lines}
    assert categories == {"奶粉", "纸尿裤", "辅食", "洗护", "玩具", "童装", "营养品", "孕妈用品"}
    keys = [(o.channel, o.external_id) for o in plan.orders]
    assert len(set(keys)) == len(keys)


def test_the_organisation_is_a_chain_of_about_fifty_stores(fixed_clock: clock.FixedClock) -> None:
    org = build_organisation(SEED, fixed_clock.now())
    assert 45 <= len(org.stores) <= 55
    assert {r.name for r in org.regions} == {"华东", "华南", "华北", "西南", "华中"}
    assert org.stores[0].name == "贝贝乐 上海徐汇店"
    for store in org.stores:
        assert 3 <= len(store.guide_codes) <= 6
    assert sum(s.role == "manager" for s in org.staff) == len(org.stores)


# --- loaded into the database ----------------------------------------------------------


def test_same_seed_same_brand_twice(
    clean_db: Database,
    fixed_clock: clock.FixedClock,
    empty_database: Callable[[Database], None],
) -> None:
    as_of = fixed_clock.now()
    first = generate_brand(clean_db, members=MEMBERS, seed=SEED, as_of=as_of)
    first_rows = _snapshot(clean_db)
    empty_database(clean_db)
    second = generate_brand(clean_db, members=MEMBERS, seed=SEED, as_of=as_of, chunk_size=70)
    assert second == first
    assert _snapshot(clean_db) == first_rows
    assert first.members == MEMBERS
    with clean_db.unit_of_work() as s:
        assert s.scalar(select(func.count(Store.id))) == first.stores
        assert s.scalar(select(func.count(Staff.id))) == first.staff
        assert s.scalar(select(func.count(Order.id))) == first.orders
        assert s.scalar(select(func.count(Refund.id))) == first.refunds
        assert s.scalar(select(func.count(MemberIdentity.id))) == first.identities


def test_spend_is_heterogeneous(clean_db: Database, brand: DemoSummary) -> None:
    with clean_db.unit_of_work() as s:
        rows = s.execute(select(MemberMetrics.order_count, MemberMetrics.spend_fen)).all()
    buyers = [r for r in rows if r.order_count > 0]
    assert len(buyers) < brand.members, "some members joined and never bought"
    once_or_twice = sum(r.order_count <= 2 for r in buyers)
    assert once_or_twice > len(buyers) / 2, "most members buy once or twice"
    spend = sorted(r.spend_fen for r in buyers)
    top_decile = spend[int(len(spend) * 0.9) :]
    assert statistics.mean(top_decile) >= 4 * statistics.median(spend)
    assert max(r.order_count for r in buyers) >= 20, "super users buy several times a month"


def test_people_have_several_identities(clean_db: Database, brand: DemoSummary) -> None:
    with clean_db.unit_of_work() as s:
        per_member = dict(
            s.execute(
                select(MemberIdentity.member_id, func.count()).group_by(MemberIdentity.member_id)
            ).all()
        )
        no_phone = s.scalar(select(func.count()).where(Member.phone.is_(None)))
        channels = set(s.scalars(select(Member.join_channel).distinct()))
    assert len(per_member) == brand.members
    assert sum(n > 1 for n in per_member.values()) > brand.members / 3
    assert max(per_member.values()) >= 3
    assert no_phone, "some members are known by a platform id only"
    assert channels == {"store", "mini_program", "tmall", "jd", "douyin"}


def test_guest_orders_and_refunds(clean_db: Database, brand: DemoSummary) -> None:
    with clean_db.unit_of_work() as s:
        store_orders = s.scalar(select(func.count()).where(Order.channel == "store"))
        guests = s.scalar(select(func.count()).where(Order.member_id.is_(None)))
        guest_channels = set(
            s.scalars(select(Order.channel).where(Order.member_id.is_(None)).distinct())
        )
        statuses = set(s.scalars(select(Order.status).where(Order.refunded_fen > 0).distinct()))
        without_store = s.scalar(
            select(func.count()).where(Order.channel == "store", Order.store_id.is_(None))
        )
        online_with_store = s.scalar(
            select(func.count()).where(Order.channel != "store", Order.store_id.is_not(None))
        )
    assert guests == brand.guest_orders > 0
    assert guest_channels == {"store"}
    assert 0.08 <= guests / store_orders <= 0.25
    assert 0.01 <= brand.refunds / brand.orders <= 0.06
    assert statuses == {"refunded", "partially_refunded"}
    assert without_store == 0
    assert online_with_store == 0


def test_metrics_match_the_orders(clean_db: Database, brand: DemoSummary) -> None:
    with clean_db.unit_of_work() as s:
        assert check_metrics(s) == []
        totals = s.execute(
            select(func.sum(MemberMetrics.order_count), func.sum(MemberMetrics.refund_count))
        ).one()
        member_refunds = s.scalar(
            select(func.count()).select_from(Refund).where(Refund.member_id.is_not(None))
        )
    assert totals[0] == brand.orders - brand.guest_orders
    assert totals[1] == member_refunds


def test_members_churn_when_the_child_grows_up(
    clean_db: Database, brand: DemoSummary, fixed_clock: clock.FixedClock
) -> None:
    with clean_db.unit_of_work() as s:
        rows = s.execute(
            select(Member.child_birthday, MemberMetrics.last_order_at).join(
                MemberMetrics, MemberMetrics.member_id == Member.id
            )
        ).all()
    assert rows
    for child_birthday, last_order_at in rows:
        five = datetime.combine(child_birthday, datetime.min.time(), tzinfo=clock.UTC)
        assert last_order_at <= five + timedelta(days=5 * 365 + 1)
    recent = fixed_clock.now() - timedelta(days=90)
    assert any(last >= recent for _, last in rows), "others are still active"


def test_the_demo_brand_runs_a_loyalty_programme(clean_db: Database, brand: DemoSummary) -> None:
    from siyu.benefits.models import BenefitPack, Coupon, CouponTemplate, PackIssue, Reward
    from siyu.points.models import PointsLot
    from siyu.tiers.models import TierHistory

    with clean_db.unit_of_work() as s:
        welcome = s.scalar(
            select(func.count())
            .select_from(Coupon)
            .join(CouponTemplate, Coupon.template_id == CouponTemplate.id)
            .where(CouponTemplate.code == "welcome_20")
        )
        upgrade_packs = s.scalar(
            select(func.count())
            .select_from(PackIssue)
            .join(BenefitPack, PackIssue.pack_id == BenefitPack.id)
            .where(BenefitPack.code == "vip_service")
        )
        upgrades = s.scalar(select(func.count()).where(TierHistory.reason == "upgrade"))
        lots = s.scalar(select(func.count()).select_from(PointsLot))
        rewards = s.scalar(select(func.count()).select_from(Reward))
    assert welcome == MEMBERS  # the join pack, once each
    assert upgrades and lots and rewards == 4
    assert upgrade_packs  # members who reached V5 or V6 got the upgrade pack
