"""The demo brand's paid members: every KPI has a figure and paid members spend more."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from siyu.core import clock
from siyu.core.db import Database
from siyu.demo.generator import generate_brand
from siyu.demo.paid import create_paid_members
from siyu.paid import kpis as paid_kpis
from siyu.paid.models import Payment, Subscription

SEED = 11
MEMBERS = 300


@pytest.fixture
def brand(clean_db: Database, fixed_clock: clock.FixedClock) -> Database:
    generate_brand(clean_db, members=MEMBERS, seed=SEED, as_of=fixed_clock.now())
    return clean_db


def _states(db: Database) -> dict[str, int]:
    with db.unit_of_work() as s:
        rows = s.execute(select(Subscription.state, func.count()).group_by(Subscription.state))
        return {state: n for state, n in rows}


def test_demo_brand_has_paid_members_who_spend_more(brand: Database) -> None:
    states = _states(brand)
    assert states.get("active", 0) > 0 and states.get("expired", 0) > 0
    with brand.unit_of_work() as s:
        renewals = s.scalar(select(func.count()).where(Payment.kind == "renewal"))
        k = paid_kpis.kpis(s)
        months = paid_kpis.kpis_by_month(s, 13)
    assert renewals and renewals > 0
    assert k.paid_members > 0 and 0 < k.penetration < 1
    assert k.gmv_multiple > 1
    assert k.gmv_per_paid_fen > k.gmv_per_free_fen
    assert sum(m.renewals_due for m in months) > 0
    assert sum(m.churned for m in months) > 0
    assert sum(m.fee_revenue_fen for m in months) > 0
    # paid members use the card's coupons: usage, benefit cost and ROI have figures
    assert k.card_coupons_issued > 0 and 0 < k.benefit_usage <= 1
    assert k.coupon_cost_fen > 0 and k.savings_cost_fen > 0
    assert k.benefit_cost_fen == k.coupon_cost_fen + k.savings_cost_fen
    assert sum(m.card_coupons_used for m in months) > 0 and k.roi > 0


def test_card_coupons_are_the_cards_own(brand: Database) -> None:
    """Every coupon used from a card pack is a freight coupon of the plan's monthly pack,
    issued for the card's month, used on its own member's order."""
    from siyu.benefits.models import Coupon
    from siyu.orders.models import Order
    from siyu.paid import savings

    with brand.unit_of_work() as s:
        rows = s.execute(
            savings.card_coupons(Coupon.issue_key, Coupon.member_id, Order.member_id)
            .join(Order, Order.id == Coupon.order_id)
            .where(Coupon.state == "used")
        ).all()
    assert rows and all(key.startswith("pack:monthly_freight:") for key, _, _ in rows)
    assert all(":sub:" in key and coupon_of == buyer for key, coupon_of, buyer in rows)


def test_selling_again_changes_nothing(brand: Database, fixed_clock: clock.FixedClock) -> None:
    before = _states(brand)
    with brand.unit_of_work() as s:
        count = s.scalar(select(func.count()).select_from(Payment))
    again = create_paid_members(brand, seed=SEED, as_of=fixed_clock.now())
    assert (again.bought, again.trials, again.orders) == (0, 0, 0)
    assert _states(brand) == before
    with brand.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == count
