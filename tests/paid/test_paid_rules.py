"""Pure rules: periods, trials, refunds, states; and the plan section of the document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from itertools import pairwise
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from siyu.paid import rules, savings
from siyu.paid.rules import State
from siyu.programme import rules as programme_rules
from siyu.programme.rules import Plan


def example_programme() -> dict[str, Any]:
    text = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    raw, problems = programme_rules.parse_text(text)
    assert not problems
    return raw  # type: ignore[no-any-return]


def plan(**overrides: Any) -> Plan:
    fields: dict[str, Any] = {"code": "super", "name": "超级会员", "period": "year", "price": 199}
    fields.update(overrides)
    return Plan.model_validate(fields)


def at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 10, tzinfo=UTC)


def test_bought_on_31_january_renews_on_the_last_day_of_february_then_31_march() -> None:
    anchor = at(2028, 1, 31)
    assert rules.period_bounds(anchor, 0, "month") == (anchor, at(2028, 2, 29))
    assert rules.period_bounds(anchor, 1, "month") == (at(2028, 2, 29), at(2028, 3, 31))
    assert rules.period_bounds(at(2027, 1, 31), 0, "month")[1] == at(2027, 2, 28)


def test_a_year_bought_on_29_february_ends_on_28_february() -> None:
    assert rules.period_bounds(at(2028, 2, 29), 0, "year")[1] == at(2029, 2, 28)
    assert rules.period_bounds(at(2028, 2, 29), 3, "year")[1] == at(2032, 2, 29)
    assert rules.period_bounds(at(2026, 11, 30), 0, "quarter")[1] == at(2027, 2, 28)


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),  # noqa: DTZ001
    st.sampled_from(["month", "quarter", "year"]),
    st.integers(min_value=1, max_value=40),
)
def test_consecutive_periods_neither_overlap_nor_leave_gaps(
    anchor: datetime, period: str, count: int
) -> None:
    anchor = anchor.replace(tzinfo=UTC)
    bounds = [rules.period_bounds(anchor, k, period) for k in range(count)]
    assert bounds[0][0] == anchor
    for (start, end), (next_start, _) in pairwise(bounds):
        assert start < end
        assert end == next_start
    for k, (start, _) in enumerate(bounds):
        assert start.day == min(anchor.day, start.day) and (
            start.day == anchor.day or (start + timedelta(days=1)).day == 1
        ), k


def test_trial_once_and_only_when_the_plan_has_one() -> None:
    assert rules.trial_refusal(plan(trial_days=7), had_trial=False, holds_plan=False) is None
    assert "once per person" in str(
        rules.trial_refusal(plan(trial_days=7), had_trial=True, holds_plan=False)
    )
    assert "no trial" in str(rules.trial_refusal(plan(), had_trial=False, holds_plan=False))
    assert "already" in str(
        rules.trial_refusal(plan(trial_days=7), had_trial=False, holds_plan=True)
    )


def test_eligibility_by_tier_and_growth() -> None:
    gated = plan(eligibility={"min_tier": "V2", "min_growth": 100})
    ladder = ["V1", "V2", "V3"]
    assert rules.eligibility_refusal(gated, tier_code="V3", growth=100, ladder=ladder) is None
    assert "V2" in str(rules.eligibility_refusal(gated, tier_code="V1", growth=999, ladder=ladder))
    assert "growth" in str(
        rules.eligibility_refusal(gated, tier_code="V2", growth=5, ladder=ladder)
    )


def test_refund_full_within_window_pro_rata_after_less_used_benefits() -> None:
    p = plan(refund={"full_within_days": 7, "after": "pro_rata", "deduct_used_benefits": True})
    start, end = at(2026, 1, 1), at(2027, 1, 1)
    kw = {"amount_fen": 19_900, "paid_at": start, "period_start": start, "period_end": end}
    assert rules.refund_due(p, at=start + timedelta(days=7), **kw) == 19_900  # type: ignore[arg-type]
    half = rules.refund_due(p, at=at(2026, 7, 2), **kw)  # type: ignore[arg-type]
    assert half == 19_900 * 183 // 365
    assert rules.refund_due(p, at=at(2026, 7, 2), used_benefits_fen=5_000, **kw) == half - 5_000  # type: ignore[arg-type]
    assert rules.refund_due(p, at=at(2026, 12, 31), used_benefits_fen=9_000, **kw) == 0  # type: ignore[arg-type]
    none_after = plan(refund={"full_within_days": 7, "after": "none"})
    assert rules.refund_due(none_after, at=at(2026, 2, 1), **kw) == 0  # type: ignore[arg-type]


@given(st.integers(min_value=1, max_value=10_000_000), st.integers(min_value=0, max_value=400))
def test_a_refund_is_never_negative_nor_more_than_paid(amount: int, days: int) -> None:
    start = at(2026, 1, 1)
    due = rules.refund_due(
        plan(refund={"deduct_used_benefits": True}),
        amount_fen=amount,
        paid_at=start,
        period_start=start,
        period_end=at(2027, 1, 1),
        at=start + timedelta(days=days),
        used_benefits_fen=days * 7,
    )
    assert 0 <= due <= amount


def test_states_final_and_grace_only_when_it_would_renew() -> None:
    assert not rules.can_move(State.expired, State.active)
    assert not rules.can_move(State.refunded, State.cancelled)
    assert rules.can_move(State.grace, State.active)
    assert rules.after_period_end(State.active, grace_days=7, auto_renew=True) == State.grace
    assert rules.after_period_end(State.active, grace_days=7, auto_renew=False) == State.expired
    assert rules.after_period_end(State.trial, grace_days=7, auto_renew=True) == State.expired


# --- the document's paid section ------------------------------------------------------------


def test_the_example_has_the_super_membership() -> None:
    programme, problems = programme_rules.check(example_programme())
    assert problems == [] and programme is not None and programme.paid is not None
    super_ = programme.paid.plan("super")
    assert (super_.name, super_.period, programme_rules.fen(super_.price)) == (
        "超级会员",
        "year",
        19_900,
    )
    assert super_.trial_days == 7


def test_plan_problems_have_paths() -> None:
    doc = example_programme()
    first = doc["paid"]["plans"][0]
    doc["paid"]["plans"] = [
        first,
        {**first, "eligibility": {"min_tier": "V9"}},
        {**first, "code": "other", "price": 0},
    ]
    _, problems = programme_rules.check(doc)
    fields = {p.field: p.reason for p in problems}
    assert "appears twice" in fields["paid.plans[1].code"]
    assert "unknown tier 'V9'" in fields["paid.plans[1].eligibility.min_tier"]
    assert "paid.plans[2].price" in fields


# --- member prices by category and SKU ------------------------------------------------------


def test_the_sku_rate_beats_the_category_rate_beats_the_plan_rate() -> None:
    benefits = plan(
        benefits={
            "member_price_discount": "0.95",
            "member_price_by_category": {"奶粉": "0.97", "玩具": "0.9"},
            "member_price_by_sku": {"MILK-1": "0.99"},
        }
    ).benefits
    assert benefits.member_price_rate("MILK-1", "奶粉") == (Decimal("0.99"), "sku")
    assert benefits.member_price_rate("MILK-2", "奶粉") == (Decimal("0.97"), "category")
    assert benefits.member_price_rate("DIAPER", "纸尿裤") == (Decimal("0.95"), "plan")
    assert benefits.member_price_rate("DIAPER", None) == (Decimal("0.95"), "plan")


def test_member_price_rules_are_checked_with_their_paths() -> None:
    doc = example_programme()
    doc["paid"]["plans"][0]["benefits"].update(
        member_price_by_category={"奶粉": 0.97, "鞋子": 0.9, "玩具": 1.2},
        member_price_by_sku={"MILK-1": 0},
    )
    _, problems = programme_rules.check(doc)
    fields = {p.field: p.reason for p in problems}
    base = "paid.plans[0].benefits"
    assert "unknown category '鞋子'" in fields[f"{base}.member_price_by_category.鞋子"]
    assert f"{base}.member_price_by_category.玩具" in fields  # above 1
    assert f"{base}.member_price_by_sku.MILK-1" in fields  # 0 is no price
    assert f"{base}.member_price_by_category.奶粉" not in fields
    assert len(problems) == 3


def test_the_example_prices_formula_at_97() -> None:
    programme, problems = programme_rules.check(example_programme())
    assert problems == [] and programme is not None and programme.paid is not None
    benefits = programme.paid.plan("super").benefits
    assert benefits.member_price_rate("ANY", "奶粉") == (Decimal("0.97"), "category")


# --- renewals judged by when they were paid --------------------------------------------------

END = at(2027, 1, 1)


def decide(state: State, paid_at: datetime, **kw: Any) -> rules.RenewalDecision:
    lapse = rules.lapse_at(
        state,
        period_end=END,
        grace_days=kw.pop("grace_days", 7),
        auto_renew=kw.pop("auto_renew", True),
        **kw,
    )
    return rules.renewal_decision(state, paid_at=paid_at, period_end=END, lapse=lapse)


def test_a_renewal_in_the_period_or_within_grace_extends_without_a_gap() -> None:
    assert decide(State.active, END - timedelta(days=1)).action == "extend"
    assert decide(State.active, END + timedelta(days=6)).action == "extend"  # job not run yet
    grace_until = END + timedelta(days=7)
    assert decide(State.grace, END + timedelta(days=6), grace_until=grace_until).action == (
        "extend"
    )


def test_a_renewal_after_the_lapse_starts_a_new_term_from_the_payment() -> None:
    late = END + timedelta(days=8)
    assert decide(State.active, late) == rules.RenewalDecision("new_term", anchor=late)
    assert decide(State.active, END + timedelta(hours=1), auto_renew=False).anchor == (
        END + timedelta(hours=1)
    )
    ended = END + timedelta(days=7)
    expired = decide(State.expired, late, ended_at=ended)
    assert expired == rules.RenewalDecision("new_term", anchor=late)


def test_a_charge_paid_within_grace_that_arrives_after_expiry_continues_from_the_end() -> None:
    ended = END + timedelta(days=7)
    got = decide(State.expired, END + timedelta(days=3), ended_at=ended)
    assert got == rules.RenewalDecision("new_term", anchor=END)


def test_cancelled_refunded_and_trial_subscriptions_are_not_renewed() -> None:
    assert "cancelled" in str(decide(State.cancelled, END - timedelta(days=3)).reason)
    assert decide(State.cancelled, END + timedelta(days=3)).action == "new_term"
    assert decide(State.refunded, END, ended_at=END - timedelta(days=100)).action == "refused"
    assert decide(State.trial, END - timedelta(days=1)).action == "refused"


# --- exclusive rewards -----------------------------------------------------------------------


def test_exclusive_rewards_need_a_card_holding_benefits_of_a_named_plan() -> None:
    assert rules.exclusive_refusal(paid_only=False, plans=None, held_plan=None) is None
    assert rules.exclusive_refusal(paid_only=True, plans=None, held_plan="super") is None
    assert "no paid membership" in str(
        rules.exclusive_refusal(paid_only=True, plans=None, held_plan=None)
    )
    assert "members of gold" in str(
        rules.exclusive_refusal(paid_only=True, plans=["gold"], held_plan="super")
    )
    assert rules.exclusive_refusal(paid_only=True, plans=["gold"], held_plan="gold") is None


# --- the card's extra points on refunds ------------------------------------------------------


@given(
    st.integers(min_value=1, max_value=5_000),
    st.integers(min_value=1, max_value=5_000),
    st.lists(st.integers(min_value=0, max_value=1_000), min_size=1, max_size=6),
)
def test_extra_points_taken_back_in_parts_add_up_to_the_whole(
    base: int, extra: int, parts: list[int]
) -> None:
    """Taken back cumulatively (floor of the running proportion): never more than granted,
    never going down, and all of it once all the base points are reversed."""
    reversed_, taken = 0, 0
    for part in parts:
        reversed_ = min(base, reversed_ + part)
        now = savings.extra_points_back(extra, base, reversed_)
        assert taken <= now <= extra
        taken = now
    assert savings.extra_points_back(extra, base, base) == extra
    assert savings.extra_points_back(extra, base, 0) == 0
