"""Coupon, pack and mall rules, without a database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from siyu.benefits import rules
from siyu.benefits.rules import (
    CouponFacts,
    CouponKind,
    CouponState,
    Line,
    OrderFacts,
    PackTrigger,
    RedemptionState,
    RewardFacts,
    RewardKind,
    Terms,
    Validity,
)

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
TZ = "Asia/Shanghai"

fen = st.integers(min_value=0, max_value=10_000_000)


def order(**overrides: object) -> OrderFacts:
    fields: dict[str, object] = {
        "order_id": 1,
        "member_id": 7,
        "channel": "tmall",
        "paid_at": NOW,
        "freight_fen": 1_000,
        "fully_refunded": False,
        "lines": (Line("奶粉", 25_600), Line("纸尿裤", 9_990)),
    }
    fields.update(overrides)
    return OrderFacts(**fields)  # type: ignore[arg-type]


def coupon(**overrides: object) -> CouponFacts:
    fields: dict[str, object] = {
        "member_id": 7,
        "state": CouponState.usable,
        "valid_from": NOW - timedelta(days=1),
        "valid_until": NOW + timedelta(days=1),
    }
    fields.update(overrides)
    return CouponFacts(**fields)  # type: ignore[arg-type]


FULL200 = Terms(CouponKind.amount_off, threshold_fen=20_000, amount_off_fen=2_000)


# --- discounts -----------------------------------------------------------------------------


@given(
    eligible=fen, freight=fen, bp=st.integers(1, 9_999), cap=st.none() | fen.map(lambda x: x + 1)
)
def test_percent_off_never_exceeds_the_eligible_amount_nor_the_cap(
    eligible: int, freight: int, bp: int, cap: int | None
) -> None:
    terms = Terms(CouponKind.percent_off, percent_off_bp=bp, cap_fen=cap)
    off = rules.discount_fen(terms, eligible=eligible, freight=freight)
    assert 0 <= off <= eligible
    if cap is not None:
        assert off <= cap
    assert off == min(eligible * bp // 10_000, cap if cap is not None else eligible)


@given(eligible=fen, freight=fen, amount=fen.map(lambda x: x + 1))
def test_amount_off_and_freight_never_exceed_what_they_apply_to(
    eligible: int, freight: int, amount: int
) -> None:
    off = rules.discount_fen(
        Terms(CouponKind.amount_off, amount_off_fen=amount), eligible=eligible, freight=freight
    )
    assert 0 <= off <= min(amount, eligible)
    capped = rules.discount_fen(
        Terms(CouponKind.freight, amount_off_fen=amount), eligible=eligible, freight=freight
    )
    assert capped == min(amount, freight)
    assert rules.discount_fen(Terms(CouponKind.freight), eligible=eligible, freight=freight) == (
        freight
    )
    assert rules.discount_fen(Terms(CouponKind.gift), eligible=eligible, freight=freight) == 0


def test_eligible_amount_counts_the_coupons_categories_less_refunds() -> None:
    lines = [Line("奶粉", 25_600, 5_000), Line("纸尿裤", 9_990)]
    assert rules.eligible_fen(lines, None, net=True) == 30_590
    assert rules.eligible_fen(lines, ["奶粉"], net=True) == 20_600
    assert rules.eligible_fen(lines, ["奶粉"], net=False) == 25_600
    assert rules.eligible_fen(lines, ["玩具"], net=True) == 0


# --- validity ------------------------------------------------------------------------------


def test_relative_validity_counts_the_day_of_issue_and_ends_at_local_midnight() -> None:
    start, end = rules.validity_window(
        validity=Validity.relative,
        issued_at=NOW,
        valid_from=None,
        valid_until=None,
        valid_days=7,
        tz=TZ,
    )
    assert start == NOW
    # issued Monday 23 November (Shanghai): good through Sunday 29 November 23:59:59
    assert end == datetime(2026, 11, 29, 16, 0, tzinfo=UTC)


def test_fixed_validity_is_the_templates_window() -> None:
    a, b = NOW, NOW + timedelta(days=30)
    assert rules.validity_window(
        validity=Validity.fixed, issued_at=NOW, valid_from=a, valid_until=b, valid_days=None, tz=TZ
    ) == (a, b)


def test_template_terms_are_checked_with_fields_to_fix() -> None:
    problems = rules.check_terms(
        Terms(CouponKind.percent_off, percent_off_bp=12_000, cap_fen=0, channels=()),
        validity=Validity.relative,
        valid_from=None,
        valid_until=None,
        valid_days=None,
        stock=-1,
        per_member_limit=0,
    )
    fields = {p.field for p in problems}
    assert fields == {
        "percent_off_bp",
        "cap_fen",
        "channels",
        "valid_days",
        "stock",
        "per_member_limit",
    }
    assert (
        rules.check_terms(
            FULL200,
            validity=Validity.fixed,
            valid_from=NOW,
            valid_until=NOW + timedelta(days=1),
            valid_days=None,
            stock=100,
            per_member_limit=1,
        )
        == []
    )
    over = rules.check_terms(
        Terms(CouponKind.amount_off, threshold_fen=1_000, amount_off_fen=2_000),
        validity=Validity.fixed,
        valid_from=NOW,
        valid_until=NOW,
        valid_days=None,
        stock=None,
        per_member_limit=None,
    )
    assert {p.field for p in over} == {"amount_off_fen", "valid_until"}


# --- redeeming -----------------------------------------------------------------------------


def test_a_valid_coupon_on_its_members_order_gives_its_discount() -> None:
    assert rules.check_redeem(coupon(), FULL200, order()) == (2_000, None)


def test_every_refusal_has_its_own_code() -> None:
    cases = [
        (coupon(state=CouponState.used), FULL200, order(), "coupon_used"),
        (coupon(state=CouponState.expired), FULL200, order(), "coupon_expired"),
        (coupon(), FULL200, order(member_id=8), "coupon_wrong_member"),
        (coupon(), FULL200, order(member_id=None), "coupon_wrong_member"),
        (coupon(), FULL200, order(fully_refunded=True), "order_refunded"),
        (coupon(valid_from=NOW + timedelta(seconds=1)), FULL200, order(), "coupon_not_yet_valid"),
        (coupon(valid_until=NOW), FULL200, order(), "coupon_expired"),
        (
            coupon(),
            Terms(CouponKind.amount_off, amount_off_fen=100, channels=("store",)),
            order(),
            "coupon_channel",
        ),
        (
            coupon(),
            Terms(CouponKind.amount_off, amount_off_fen=100, categories=("玩具",)),
            order(),
            "coupon_no_eligible_lines",
        ),
        (
            coupon(),
            Terms(
                CouponKind.amount_off,
                threshold_fen=30_000,
                amount_off_fen=100,
                categories=("奶粉",),
            ),
            order(),
            "coupon_threshold",
        ),
    ]
    for c, terms, o, code in cases:
        discount, refusal = rules.check_redeem(c, terms, o)
        assert discount == 0
        assert refusal is not None and refusal.code == code, (code, refusal)


def test_threshold_counts_only_eligible_lines_net_of_refunds() -> None:
    terms = Terms(CouponKind.percent_off, threshold_fen=20_000, percent_off_bp=1_000, cap_fen=1_500)
    discount, refusal = rules.check_redeem(coupon(), terms, order())
    assert refusal is None and discount == 1_500  # 10% of 355.90 is 35.59, capped at 15
    partly = order(lines=(Line("奶粉", 25_600, 10_000),))
    _, refusal = rules.check_redeem(coupon(), terms, partly)
    assert refusal is not None and refusal.code == "coupon_threshold"


def test_refund_returns_the_coupon_only_when_its_terms_are_no_longer_met() -> None:
    assert rules.returned_by_refund(FULL200, order(fully_refunded=True))
    assert not rules.returned_by_refund(FULL200, order(lines=(Line("奶粉", 25_600, 5_000),)))
    assert rules.returned_by_refund(FULL200, order(lines=(Line("奶粉", 25_600, 6_000),)))
    scoped = Terms(CouponKind.freight, categories=("纸尿裤",))
    refunded_scope = order(lines=(Line("奶粉", 25_600), Line("纸尿裤", 9_990, 9_990)))
    assert rules.returned_by_refund(scoped, refunded_scope)
    assert not rules.returned_by_refund(Terms(CouponKind.freight), refunded_scope)


def test_states_after_return_and_as_shown() -> None:
    assert rules.state_after_return(NOW + timedelta(1), NOW) is CouponState.usable
    assert rules.state_after_return(NOW, NOW) is CouponState.expired
    assert rules.shown_state(CouponState.usable, NOW, NOW) is CouponState.expired
    assert rules.shown_state(CouponState.used, NOW, NOW) is CouponState.used


@given(st.integers(0, 1_000), st.integers(0, 1_000), st.none() | st.integers(1, 1_000))
def test_allowance_never_passes_the_limit(wanted: int, held: int, limit: int | None) -> None:
    allowed = rules.allowance(wanted, held=held, per_member_limit=limit)
    assert 0 <= allowed <= wanted
    if limit is not None:
        assert held + allowed <= max(limit, held)


def test_codes_are_short_unambiguous_and_forgiving() -> None:
    codes = {rules.new_code() for _ in range(1_000)}
    assert len(codes) == 1_000
    for code in codes:
        assert len(code) == 12 and not set(code) & set("ILOU")
    assert rules.normalize_code(" abcd-ef0o-1il2 ") == "ABCDEF001112"


# --- packs ---------------------------------------------------------------------------------


def test_who_gets_a_pack() -> None:
    ladder = [("V1", []), ("V2", ["birthday_gift"]), ("V3", ["birthday_gift", "monthly_freight"])]
    listing = rules.levels_listing(ladder, "birthday_gift")
    assert listing == ["V2", "V3"]
    assert rules.gets_pack(PackTrigger.birthday, listing, "V3", "V1")
    assert not rules.gets_pack(PackTrigger.birthday, listing, "V1", "V1")
    assert not rules.gets_pack(PackTrigger.birthday, listing, None, "V1")
    assert rules.gets_pack(PackTrigger.join, [], None, "V1")  # listed by no level: everyone
    assert not rules.gets_pack(PackTrigger.monthly, [], "V3", "V1")
    assert rules.gets_pack(PackTrigger.join, ["V1"], None, "V1")  # no level yet: the first
    assert not rules.gets_pack(PackTrigger.manual, [], "V1", "V1")


def test_birthdays_on_29_february_are_kept_on_28_february_in_common_years() -> None:
    leapling = date(2020, 2, 29)
    assert rules.birthday_matches(leapling, date(2027, 2, 28))
    assert not rules.birthday_matches(leapling, date(2028, 2, 28))
    assert rules.birthday_matches(leapling, date(2028, 2, 29))
    assert rules.birthday_matches(date(1990, 11, 23), date(2026, 11, 23))
    assert rules.pack_key("birthday_gift", 7, "2026") == "pack:birthday_gift:7:2026"


# --- the mall ------------------------------------------------------------------------------


def reward(**overrides: object) -> RewardFacts:
    fields: dict[str, object] = {
        "kind": RewardKind.gift,
        "active": True,
        "points_price": 500,
        "stock": 10,
        "redeemed": 0,
        "per_member_limit": 2,
        "min_tier_code": "V2",
        "visible_from": NOW - timedelta(days=1),
        "visible_until": NOW + timedelta(days=1),
    }
    fields.update(overrides)
    return RewardFacts(**fields)  # type: ignore[arg-type]


LADDER = ["V1", "V2", "V3"]


def test_mall_checks_each_refusal() -> None:
    ok = {"quantity": 1, "held": 0, "ladder": LADDER, "tier_code": "V2", "now": NOW}
    assert rules.check_mall(reward(), **ok) is None  # type: ignore[arg-type]
    cases = [
        (reward(), {"quantity": 0}, "invalid_quantity"),
        (reward(active=False), {}, "reward_unavailable"),
        (reward(visible_from=NOW + timedelta(1)), {}, "reward_unavailable"),
        (reward(visible_until=NOW), {}, "reward_unavailable"),
        (reward(), {"tier_code": "V1"}, "reward_tier"),
        (reward(), {"tier_code": None}, "reward_tier"),
        (reward(min_tier_code="V9"), {"tier_code": "V3"}, "reward_tier"),
        (reward(redeemed=10), {}, "out_of_stock"),
        (reward(redeemed=9), {"quantity": 2}, "out_of_stock"),
        (reward(), {"held": 2}, "reward_limit"),
    ]
    for facts, changes, code in cases:
        refusal = rules.check_mall(facts, **(ok | changes))  # type: ignore[arg-type]
        assert refusal is not None and refusal.code == code, (code, refusal)
    assert rules.check_mall(reward(stock=None, per_member_limit=None), **ok | {"held": 99}) is None  # type: ignore[arg-type]


def test_fulfilment_moves() -> None:
    assert rules.can_move(RedemptionState.ordered, RedemptionState.shipped)
    assert rules.can_move(RedemptionState.shipped, RedemptionState.cancelled)
    assert not rules.can_move(RedemptionState.delivered, RedemptionState.cancelled)
    assert not rules.can_move(RedemptionState.issued, RedemptionState.cancelled)
    assert rules.tier_rank(LADDER, "V3") == 2 and rules.tier_rank(LADDER, None) == 0


def test_upgrade_packs_follow_any_move_up_but_a_join_once_a_day() -> None:
    for reason in ("upgrade", "adjust", "grant", "merge"):
        assert rules.gets_upgrade_pack(reason, up=True)
    assert not rules.gets_upgrade_pack("join", up=True)  # the join packs cover it
    assert not rules.gets_upgrade_pack("review", up=False)
    assert not rules.gets_upgrade_pack("grant_end", up=False)
    late = datetime(2026, 3, 9, 15, 59, tzinfo=UTC)  # 23:59 on 9 March in Shanghai
    tz = "Asia/Shanghai"
    assert rules.upgrade_period("V3", late, tz) == "V3@2026-03-09"
    assert rules.upgrade_period("V3", late + timedelta(minutes=1), tz) == "V3@2026-03-10"
