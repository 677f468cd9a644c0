"""The points mall: what a member sees, redeeming, limits, fulfilment and cancelling."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from siyu.benefits import mall
from siyu.benefits.mall import RewardDraft
from siyu.benefits.models import CouponTemplate, Reward
from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.errors import Conflict, InvalidInput
from siyu.points import service as points
from siyu.tiers import service as tiers


def reward_draft(code: str = "CUP", **fields: Any) -> RewardDraft:
    values: dict[str, Any] = {
        "code": code,
        "name": "吸管杯",
        "kind": "gift",
        "points_price": 500,
        "stock": 10,
        "per_member_limit": 2,
    }
    values.update(fields)
    return RewardDraft(**values)


@pytest.fixture
def make_reward(session: Session) -> Callable[..., Reward]:
    def make(code: str = "CUP", **fields: Any) -> Reward:
        reward, _ = mall.create_reward(session, reward_draft(code, **fields), principal=SYSTEM)
        return reward

    return make


@pytest.fixture
def rich(programme_in_force: None, session: Session, member_id: int) -> int:
    """A member with 2,000 points to spend (signup points included)."""
    topping = 2_000 - points.available(session, member_id)
    points.grant(session, member_id, topping, fact="test:rich", reason="test")
    return member_id


def test_a_gift_is_redeemed_once_per_key(
    rich: int, session: Session, make_reward: Callable[..., Reward]
) -> None:
    cup = make_reward()
    first = mall.redeem(session, rich, cup.id, key="r1")
    again = mall.redeem(session, rich, cup.id, key="r1")
    assert first.created and not again.created
    assert again.redemption.id == first.redemption.id
    assert first.redemption.state == "ordered" and first.redemption.points_spent == 500
    assert points.available(session, rich) == 1_500
    assert session.get(Reward, cup.id).redeemed == 1  # type: ignore[union-attr]
    with pytest.raises(Conflict) as reused:
        mall.redeem(session, rich, cup.id, key="r1", quantity=2)
    assert reused.value.code == "redemption_key_reused"


def test_a_coupon_reward_issues_the_coupon(
    rich: int,
    session: Session,
    make_reward: Callable[..., Reward],
    make_template: Callable[..., CouponTemplate],
) -> None:
    make_template()
    voucher = make_reward("V20", kind="coupon", template_code="FULL200-20", points_price=300)
    redeemed = mall.redeem(session, rich, voucher.id, key="v1", quantity=2)
    assert redeemed.redemption.state == "issued"
    issued = mall.coupons_of(session, redeemed.redemption)
    assert len(issued) == 2 and {c.source for c in issued} == {"mall"}
    assert points.available(session, rich) == 1_400
    with pytest.raises(Conflict) as final:
        mall.cancel(session, redeemed.redemption.id, reason="changed mind", principal=SYSTEM)
    assert final.value.code == "redemption_state"


def test_refusals_change_nothing(
    rich: int, session: Session, make_reward: Callable[..., Reward]
) -> None:
    cup = make_reward(stock=3)
    mall.redeem(session, rich, cup.id, key="a", quantity=2)
    cases = [
        (cup.id, {"key": "b"}, "reward_limit"),
        (make_reward("BIG", points_price=5_000).id, {"key": "c"}, "insufficient_points"),
        (make_reward("TOP", min_tier_code="V3").id, {"key": "d"}, "reward_tier"),
        (
            make_reward("LATER", visible_from=clock.now() + timedelta(days=1)).id,
            {"key": "e"},
            "reward_unavailable",
        ),
        (make_reward("GONE", stock=0).id, {"key": "f"}, "out_of_stock"),
    ]
    for reward_id, kwargs, code in cases:
        with pytest.raises(Conflict) as refused:
            mall.redeem(session, rich, reward_id, **kwargs)
        assert refused.value.code == code
    assert points.available(session, rich) == 1_000


def test_the_mall_shows_what_the_member_may_take_and_can_afford(
    rich: int, session: Session, make_reward: Callable[..., Reward]
) -> None:
    make_reward("CUP")
    make_reward("BIG", points_price=5_000)
    make_reward("TOP", min_tier_code="V3")
    make_reward("PAUSED")
    mall.update_reward(session, make_reward("OLD").id, {"status": "paused"}, principal=SYSTEM)
    make_reward("ENDED", visible_until=clock.now() - timedelta(seconds=1))
    shown = mall.mall_of(session, rich)
    assert shown.available_points == 2_000
    assert {i.reward.code: i.affordable for i in shown.items} == {
        "CUP": True,
        "PAUSED": True,
        "BIG": False,
    }
    affordable = mall.mall_of(session, rich, affordable_only=True)
    assert {i.reward.code for i in affordable.items} == {"CUP", "PAUSED"}
    tiers.grant_tier(
        session, rich, "V3", ends_at=clock.now() + timedelta(days=30), reason="t", principal=SYSTEM
    )
    assert "TOP" in {i.reward.code for i in mall.mall_of(session, rich).items}


def test_fulfilment_and_cancel_gives_points_and_stock_back(
    rich: int, session: Session, make_reward: Callable[..., Reward]
) -> None:
    cup = make_reward()
    shipped = mall.redeem(session, rich, cup.id, key="s").redemption
    mall.ship(session, shipped.id, tracking_no="SF123", principal=SYSTEM)
    mall.deliver(session, shipped.id, principal=SYSTEM)
    assert shipped.state == "delivered" and shipped.tracking_no == "SF123"
    with pytest.raises(Conflict):
        mall.cancel(session, shipped.id, reason="late", principal=SYSTEM)

    lost = mall.redeem(session, rich, cup.id, key="l").redemption
    assert points.available(session, rich) == 1_000
    mall.ship(session, lost.id, principal=SYSTEM)
    with pytest.raises(InvalidInput):
        mall.cancel(session, lost.id, reason=" ", principal=SYSTEM)
    cancelled = mall.cancel(session, lost.id, reason="lost in transit", principal=SYSTEM)
    assert cancelled.state == "cancelled" and cancelled.points_returned == 500
    assert points.available(session, rich) == 1_500
    assert session.get(Reward, cup.id).redeemed == 1  # type: ignore[union-attr]
    again = mall.cancel(session, lost.id, reason="lost in transit", principal=SYSTEM)
    assert again.points_returned == 500 and points.available(session, rich) == 1_500
    # the cancelled one no longer counts against the limit of 2
    mall.redeem(session, rich, cup.id, key="n")


def test_reward_terms_are_checked(
    programme_in_force: None, session: Session, make_reward: Callable[..., Reward]
) -> None:
    with pytest.raises(InvalidInput) as bad:
        mall.create_reward(
            session,
            reward_draft("X", kind="coupon", min_tier_code="V9", points_price=-1),
            principal=SYSTEM,
        )
    assert {d["field"] for d in bad.value.details} == {"points_price", "min_tier_code", "template"}
    cup = make_reward(stock=5)
    assert make_reward(stock=5).id == cup.id
    with pytest.raises(Conflict):
        make_reward(stock=6)
    updated = mall.update_reward(session, cup.id, {"stock": 8}, principal=SYSTEM)
    assert updated.stock == 8


def test_paid_members_rewards_are_shown_and_given_only_to_card_holders(
    rich: int, session: Session, make_reward: Callable[..., Reward]
) -> None:
    """Given a reward for paid members (any plan) and one for a plan the member does not
    hold; when the member has no card, neither shows and redeeming is refused; with the
    card, the first shows (marked exclusive) and can be taken."""
    from siyu.paid import service as paid

    make_reward("CUP")
    vip = make_reward("VIP", paid_only=True)
    make_reward("GOLD", paid_only=True, paid_plans=["super"])
    assert {i.reward.code for i in mall.mall_of(session, rich).items} == {"CUP"}
    with pytest.raises(Conflict) as refused:
        mall.redeem(session, rich, vip.id, key="v0")
    assert refused.value.code == "reward_paid_only"
    assert "paid members" in refused.value.message and "付费会员专享" in refused.value.message

    paid.purchase_callback(session, "TX-1", rich, "super", 19_900, clock.now())
    shown = {i.reward.code: i.exclusive for i in mall.mall_of(session, rich).items}
    assert shown == {"CUP": False, "VIP": True, "GOLD": True}
    assert mall.redeem(session, rich, vip.id, key="v1").created
    assert points.available(session, rich) == 1_500

    paid.refund_callback(session, "RF-1", "TX-1", 19_900, clock.now())  # the card ends
    assert {i.reward.code for i in mall.mall_of(session, rich).items} == {"CUP"}
    with pytest.raises(Conflict, match="no paid membership"):
        mall.redeem(session, rich, vip.id, key="v2")


def test_paid_only_terms_are_checked(
    programme_in_force: None, session: Session, make_reward: Callable[..., Reward]
) -> None:
    with pytest.raises(InvalidInput) as bad:
        mall.create_reward(session, reward_draft("X", paid_plans=["nope"]), principal=SYSTEM)
    reasons = [d["reason"] for d in bad.value.details if d["field"] == "paid_plans"]
    assert any("'nope' is not a paid plan" in r and "super" in r for r in reasons)
    assert any("set paid_only" in r for r in reasons)
    cup = make_reward()
    with pytest.raises(InvalidInput):
        mall.update_reward(session, cup.id, {"paid_plans": []}, principal=SYSTEM)
    updated = mall.update_reward(
        session, cup.id, {"paid_only": True, "paid_plans": ["super"]}, principal=SYSTEM
    )
    assert (updated.paid_only, updated.paid_plans) == (True, ["super"])
