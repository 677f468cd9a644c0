"""Pure rules: periods, trials, refunds, states; and the plan section of the document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from itertools import pairwise
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from siyu.paid import rules
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
