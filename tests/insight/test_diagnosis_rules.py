"""The diagnosis checks as pure functions: each one firing, passing and (where it can)
lacking data, without a database."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from siyu.insight import diagnosis_rules as rules
from siyu.insight.diagnosis_rules import Inputs, Outcome, ProgrammeFacts, Snapshot

HEALTHY = Snapshot(
    new_members=1_000,
    join_conversion=0.60,
    buyers=5_000,
    member_order_value_fen=100_000,
    purchase_frequency=2.5,
    price_per_order_fen=40_000,
    first_buyers=800,
    second_purchase_conversion=0.45,
    one_time_buyer_share=0.55,
    points_issued=1_000_000,
    points_redeemed=300_000,
    redemption_rate=0.30,
    liability_points_start=2_000_000,
    liability_points=2_100_000,
    members=10_000,
    tier_distribution={"V1": 4_000, "V2": 3_000, "V3": 2_000, "V4": 990, "V5": 10},
    paid_renewals_due=200,
    paid_renewal_rate=0.55,
)
GOOD_PROGRAMME = ProgrammeFacts(
    tier_codes=["V1", "V2", "V3", "V4", "V5"],
    tiers_without_benefits=[],
    join_gift_items=3,
    redeemable_rewards=6,
    first_purchase_offers=["入会券 welcome"],
    repeat_purchase_offers=["积分活动 member_day"],
)


def inputs(
    current: Snapshot = HEALTHY,
    last_year: Snapshot = HEALTHY,
    programme: ProgrammeFacts = GOOD_PROGRAMME,
    previous: Snapshot | None = None,
) -> Inputs:
    return Inputs(current, last_year, previous or last_year, programme)


def test_a_healthy_brand_passes_every_check() -> None:
    findings = rules.diagnose(inputs(last_year=replace(HEALTHY, points_redeemed=250_000)))
    assert {f.code: f.outcome for f in findings} == {
        check.__name__: Outcome.passed for check in rules.CHECKS
    }
    for finding in findings:
        assert finding.evidence.zh and finding.evidence.en
        assert finding.remedy.zh and finding.remedy.en


def test_redemption_near_zero_fires() -> None:
    now = replace(HEALTHY, points_redeemed=1_000, redemption_rate=0.001)
    finding = rules.points_redemption(inputs(now))
    assert finding.outcome is Outcome.fired
    assert "0.1%" in finding.evidence.en


def test_nothing_redeemable_fires_even_when_points_were_spent_as_cash() -> None:
    programme = replace(GOOD_PROGRAMME, redeemable_rewards=0)
    finding = rules.points_redemption(inputs(programme=programme))
    assert finding.outcome is Outcome.fired
    assert finding.figures["redeemable_rewards"] == 0


def test_no_points_issued_is_no_data_for_redemption() -> None:
    now = replace(HEALTHY, points_issued=0, points_redeemed=0, redemption_rate=0.0)
    assert rules.points_redemption(inputs(now)).outcome is Outcome.no_data


def test_tiers_without_benefits_fire() -> None:
    programme = replace(GOOD_PROGRAMME, tiers_without_benefits=["V2", "V3", "V4", "V5"])
    finding = rules.tier_benefits(inputs(programme=programme))
    assert finding.outcome is Outcome.fired
    assert finding.severity is rules.Severity.high  # no level gives anything
    some = replace(GOOD_PROGRAMME, tiers_without_benefits=["V2"])
    assert rules.tier_benefits(inputs(programme=some)).severity is rules.Severity.medium


def test_a_single_join_gift_fires_and_two_pass() -> None:
    single = replace(GOOD_PROGRAMME, join_gift_items=1)
    assert rules.join_gift(inputs(programme=single)).outcome is Outcome.fired
    none = rules.join_gift(inputs(programme=replace(GOOD_PROGRAMME, join_gift_items=0)))
    assert none.fired and none.severity is rules.Severity.high
    two = replace(GOOD_PROGRAMME, join_gift_items=2)
    assert rules.join_gift(inputs(programme=two)).outcome is Outcome.passed


def test_order_value_down_is_decomposed_into_frequency_and_price() -> None:
    # the case study: member order value down 29% from lower frequency and price per order
    now = replace(
        HEALTHY, member_order_value_fen=71_000, purchase_frequency=2.0, price_per_order_fen=35_500
    )
    finding = rules.member_order_value(inputs(now))
    assert finding.outcome is Outcome.fired
    assert finding.severity is rules.Severity.high
    assert round(finding.figures["change"], 2) == -0.29  # type: ignore[arg-type]
    assert round(finding.figures["frequency_change"], 2) == -0.20  # type: ignore[arg-type]
    assert round(finding.figures["price_per_order_change"], 4) == -0.1125  # type: ignore[arg-type]
    assert "-29.0%" in finding.evidence.en and "-20.0%" in finding.evidence.zh


def test_order_value_slightly_down_passes_and_no_buyers_last_year_is_no_data() -> None:
    now = replace(HEALTHY, member_order_value_fen=95_000)
    assert rules.member_order_value(inputs(now)).outcome is Outcome.passed
    empty = Snapshot()
    assert rules.member_order_value(inputs(last_year=empty)).outcome is Outcome.no_data


def test_joins_up_with_conversion_down_fires() -> None:
    now = replace(HEALTHY, new_members=1_500, join_conversion=0.45)
    finding = rules.join_conversion(inputs(now))
    assert finding.outcome is Outcome.fired
    assert "+50.0%" in finding.evidence.en


def test_conversion_down_with_fewer_joins_passes() -> None:
    # fewer joins and a lower conversion is a different problem, not recruitment inflation
    now = replace(HEALTHY, new_members=900, join_conversion=0.45)
    assert rules.join_conversion(inputs(now)).outcome is Outcome.passed
    first_year = rules.join_conversion(inputs(last_year=Snapshot()))
    assert first_year.outcome is Outcome.no_data


def test_one_time_buyers_rising_fires() -> None:
    now = replace(HEALTHY, one_time_buyer_share=0.65)
    assert rules.one_time_buyers(inputs(now)).outcome is Outcome.fired
    steady = replace(HEALTHY, one_time_buyer_share=0.56)
    assert rules.one_time_buyers(inputs(steady)).outcome is Outcome.passed


def test_no_repeat_offer_fires_and_neither_is_severe() -> None:
    no_repeat = replace(GOOD_PROGRAMME, repeat_purchase_offers=[])
    finding = rules.purchase_strategy(inputs(programme=no_repeat))
    assert finding.fired and finding.severity is rules.Severity.medium
    neither = replace(no_repeat, first_purchase_offers=[])
    assert rules.purchase_strategy(inputs(programme=neither)).severity is rules.Severity.high


def test_members_stuck_at_the_bottom_or_nobody_at_the_top_fire() -> None:
    stuck = replace(HEALTHY, tier_distribution={"V1": 8_000, "V2": 1_500, "V5": 500})
    assert rules.tier_ladder(inputs(stuck)).outcome is Outcome.fired
    no_top = replace(HEALTHY, tier_distribution={"V1": 4_000, "V2": 4_000, "V3": 2_000})
    finding = rules.tier_ladder(inputs(no_top))
    assert finding.fired and finding.figures["top"] == 0


def test_liability_growing_faster_than_redemption_fires() -> None:
    now = replace(HEALTHY, liability_points_start=1_000_000, liability_points=1_500_000)
    # liability +50%, redemption +20% against last year
    last = replace(HEALTHY, points_redeemed=250_000)
    assert rules.points_liability(inputs(now, last)).outcome is Outcome.fired
    # the same growth while redemption doubled: passes
    last = replace(HEALTHY, points_redeemed=100_000)
    assert rules.points_liability(inputs(now, last)).outcome is Outcome.passed


def test_liability_from_nothing_is_no_data() -> None:
    now = replace(HEALTHY, liability_points_start=0)
    assert rules.points_liability(inputs(now)).outcome is Outcome.no_data


def test_renewal_rate_falling_fires_against_last_year_or_the_previous_period() -> None:
    now = replace(HEALTHY, paid_renewal_rate=0.40)
    assert rules.paid_renewal(inputs(now)).outcome is Outcome.fired
    # no card a year ago: compared with the previous period instead
    finding = rules.paid_renewal(
        inputs(now, last_year=Snapshot(), previous=replace(HEALTHY, paid_renewal_rate=0.41))
    )
    assert finding.outcome is Outcome.passed
    assert "previous period" in finding.evidence.en


def test_too_few_renewals_is_no_data() -> None:
    now = replace(HEALTHY, paid_renewals_due=3, paid_renewal_rate=0.0)
    assert rules.paid_renewal(inputs(now)).outcome is Outcome.no_data


def test_fired_findings_come_first_most_severe_first() -> None:
    programme = replace(GOOD_PROGRAMME, join_gift_items=1, redeemable_rewards=0)
    findings = rules.diagnose(inputs(programme=programme))
    assert [f.code for f in findings[:2]] == ["points_redemption", "join_gift"]
    assert all(not f.fired for f in findings[2:])


rates = st.floats(min_value=0, max_value=1, allow_nan=False)


@given(value_then=st.integers(1, 10**7), value_now=st.integers(0, 10**7))
def test_order_value_fires_exactly_when_down_ten_percent_or_more(
    value_then: int, value_now: int
) -> None:
    now = replace(HEALTHY, member_order_value_fen=value_now)
    then = replace(HEALTHY, member_order_value_fen=value_then)
    finding = rules.member_order_value(inputs(now, then))
    assert finding.fired == ((value_now - value_then) / value_then <= -0.10)


@given(now_rate=rates, then_rate=rates)
def test_conversion_check_never_fires_when_joins_did_not_rise(
    now_rate: float, then_rate: float
) -> None:
    now = replace(HEALTHY, join_conversion=now_rate)
    then = replace(HEALTHY, join_conversion=then_rate)
    assert rules.join_conversion(inputs(now, then)).outcome is Outcome.passed
