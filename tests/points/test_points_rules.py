"""Points rules without a database: earning, expiry, allocation, reversal, cash off,
check-in, and the ledger's invariants under any sequence of events (Hypothesis)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siyu.points import rules
from siyu.points.rules import Ledger, Line, LineEarning, LotState
from siyu.programme.rules import CashOff, CheckIn, Expiry, FixedEvent, Programme, StreakBonus

TZ = "Asia/Shanghai"


def programme(doc: dict[str, Any]) -> Programme:
    return Programme.model_validate(doc)


@pytest.fixture
def example(doc: dict[str, Any]) -> Programme:
    return programme(doc)


PAID = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)


def test_earn_per_line_with_tier_and_category_multipliers(example: Programme) -> None:
    lines = [
        Line(1, "SKU-1", "奶粉", 25_650),  # 256.50 yuan x 1.2 (V3) = 307.8 -> 307
        Line(2, "SKU-2", "营养品", 10_000),  # 100 x 1.2 x 1.5 = 180
    ]
    earned = rules.earn_lines(example, lines, paid_at=PAID, tier="V3", tz=TZ)
    assert [e.points for e in earned] == [307, 180]
    assert rules.earn_lines(example, lines, paid_at=PAID, tier=None, tz=TZ)[0].points == 256


@given(
    fen=st.integers(min_value=1, max_value=100_000_000),  # earn_lines skips lines of 0
    multiplier=st.decimals(min_value=-5, max_value=50, places=3, allow_nan=False),
    half_up=st.booleans(),
)
def test_points_of_a_line_in_integers_round_as_the_decimal_product(
    fen: int, multiplier: Decimal, half_up: bool
) -> None:
    by_decimal = max(
        0, rules._round(Decimal(fen) / 100 * multiplier, "half_up" if half_up else "down")
    )
    assert rules._points(fen, multiplier, half_up) == by_decimal


def test_rounding_minimum_exclusions_sku_and_campaigns(doc: dict[str, Any]) -> None:
    doc["points"]["earn"].update(
        rounding="half_up",
        minimum_order_amount=Decimal(50),
        excluded_categories=["玩具"],
        sku_multipliers={"SKU-X": Decimal(3)},
    )
    p = programme(doc)
    lines = [Line(1, "SKU-1", "奶粉", 4_050), Line(2, "SKU-2", "玩具", 5_000)]
    assert [e.points for e in rules.earn_lines(p, lines, paid_at=PAID, tier=None, tz=TZ)] == [
        41,  # 40.5 half up
        0,  # excluded category
    ]
    small = [Line(1, "SKU-1", "奶粉", 4_999)]
    assert rules.earn_lines(p, small, paid_at=PAID, tier=None, tz=TZ)[0].points == 0
    sku = [Line(1, "SKU-X", "营养品", 10_000)]  # the SKU's 3 wins over the category's 1.5
    assert rules.earn_lines(p, sku, paid_at=PAID, tier=None, tz=TZ)[0].points == 300
    member_day = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)  # 09:00 on 8 Dec in Shanghai
    day_lines = [Line(1, "SKU-1", "奶粉", 10_000)]
    assert rules.earn_lines(p, day_lines, paid_at=member_day, tier=None, tz=TZ)[0].points == 200
    before = datetime(2026, 12, 7, 15, 59, tzinfo=UTC)  # 23:59 on 7 Dec in Shanghai
    assert rules.earn_lines(p, day_lines, paid_at=before, tier=None, tz=TZ)[0].points == 100


def test_naive_campaign_times_are_brand_local(doc: dict[str, Any]) -> None:
    doc["points"]["campaigns"][0].update(
        starts_at="2026-12-08T00:00:00", ends_at="2026-12-09T00:00:00"
    )
    p = programme(doc)
    lines = [Line(1, "SKU-1", "奶粉", 10_000)]
    at = datetime(2026, 12, 7, 16, 30, tzinfo=UTC)  # 00:30 on 8 Dec in Shanghai
    assert rules.earn_lines(p, lines, paid_at=at, tier=None, tz=TZ)[0].points == 200


@pytest.mark.parametrize(
    ("expiry", "earned_on", "last"),
    [
        (Expiry(policy="never"), date(2026, 1, 31), None),
        (Expiry(policy="rolling_months", months=1), date(2026, 1, 31), date(2026, 2, 28)),
        (Expiry(policy="rolling_months", months=12), date(2026, 3, 5), date(2027, 3, 5)),
        (Expiry(policy="end_of_month_after", months=2), date(2026, 11, 15), date(2027, 1, 31)),
        (Expiry(policy="year_end", month=12, day=31), date(2026, 6, 1), date(2026, 12, 31)),
        (Expiry(policy="year_end", month=12, day=31), date(2026, 12, 31), date(2027, 12, 31)),
        (Expiry(policy="year_end", month=6, day=30), date(2026, 7, 1), date(2027, 6, 30)),
    ],
)
def test_last_day_per_policy(expiry: Expiry, earned_on: date, last: date | None) -> None:
    assert rules.last_day(expiry, earned_on) == last


def test_expiry_instant_is_the_end_of_the_brand_local_day() -> None:
    expiry = Expiry(policy="year_end", month=12, day=31)
    earned = datetime(2026, 12, 30, 17, 0, tzinfo=UTC)  # already 31 Dec in Shanghai
    end = rules.expires_at(expiry, earned, TZ)
    assert end == datetime(2027, 12, 31, 16, 0, tzinfo=UTC)
    assert rules.expires_on(end, TZ) == date(2027, 12, 31)


def test_allocate_oldest_expiring_first_never_expiring_last() -> None:
    soon = datetime(2026, 12, 1, tzinfo=UTC)
    later = datetime(2027, 1, 1, tzinfo=UTC)
    lots = [LotState(1, 50, None), LotState(2, 30, later), LotState(3, 20, soon)]
    assert rules.allocate(lots, 60) == [(3, 20), (2, 30), (1, 10)]
    assert rules.allocate(lots, 500) == [(3, 20), (2, 30), (1, 50)]


def test_partial_refunds_reverse_exactly_the_line() -> None:
    parts = [rules.reversal(99, 10_000, 0, 3_333), rules.reversal(99, 10_000, 3_333, 6_666)]
    parts.append(rules.reversal(99, 10_000, 6_666, 10_000))
    assert parts == [32, 33, 34] and sum(parts) == 99


@given(
    points=st.integers(0, 10_000),
    amount=st.integers(1, 1_000_000),
    cuts=st.lists(st.integers(0, 1_000_000), max_size=6),
)
def test_reversal_parts_add_up_to_what_the_line_earned(
    points: int, amount: int, cuts: list[int]
) -> None:
    marks = sorted({min(c, amount) for c in cuts} | {0, amount})
    total = sum(rules.reversal(points, amount, a, b) for a, b in pairwise(marks))
    assert total == points
    assert all(rules.reversal(points, amount, a, b) >= 0 for a, b in pairwise(marks))


def test_cash_off_cap_and_step() -> None:
    cash = CashOff(points_per_yuan=100, cap_percent=Decimal(50), step=100)
    quote = rules.cash_off(cash, order_amount_fen=10_000, available=9_999)
    assert (quote.points, quote.cash_fen, quote.max_cash_fen) == (5_000, 5_000, 5_000)
    assert rules.cash_off(cash, order_amount_fen=10_000, available=250).points == 200
    assert rules.cash_off(cash, order_amount_fen=10_000, available=-5).points == 0


def test_check_in_streak_bonus_and_limit() -> None:
    rule = CheckIn(points=5, streak_bonuses=[StreakBonus(days=7, points=20)], per_member_limit=3)
    assert rules.check_in_award(rule, previous_streak=None, count_so_far=0).streak == 1
    seventh = rules.check_in_award(rule, previous_streak=6, count_so_far=2)
    assert (seventh.streak, seventh.points, seventh.bonus) == (7, 25, 20)
    assert rules.check_in_award(rule, previous_streak=6, count_so_far=3).points == 0


def test_event_limits() -> None:
    rule = FixedEvent(points=10, per_day_limit=3, per_member_limit=5)
    assert rules.event_allowed(rule, today=2, ever=4)
    assert not rules.event_allowed(rule, today=3, ever=3)
    assert not rules.event_allowed(rule, today=0, ever=5)


def test_settlement_pays_the_negative_part_then_the_debt() -> None:
    assert rules.settle(100, balance=-30, debt=0) == rules.Settlement(30, 0)
    assert rules.settle(100, balance=0, debt=150) == rules.Settlement(0, 100)
    assert rules.settle(10, balance=5, debt=0).kept == 0


# --- the ledger under any sequence of events --------------------------------------------------

START = datetime(2026, 1, 1, tzinfo=UTC)

events = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), st.integers(1, 300), st.integers(0, 400)),
        st.tuples(st.just("order"), st.integers(0, 5), st.integers(0, 400)),
        st.tuples(st.just("spend"), st.integers(1, 400), st.integers(0, 3)),
        st.tuples(st.just("refund"), st.integers(0, 5), st.integers(0, 12_000)),
        st.tuples(st.just("expire"), st.integers(0, 400), st.just(0)),
    ),
    max_size=40,
)


def _check(ledger: Ledger) -> None:
    assert all(lot.remaining >= 0 for lot in ledger.lots)
    assert all(lot.remaining <= lot.points for lot in ledger.lots)
    assert sum(lot.remaining for lot in ledger.lots) == max(ledger.balance, 0)
    assert ledger.debt >= 0
    if ledger.policy == "debt":
        assert ledger.balance >= 0
    keys = [(e.fact, e.seq) for e in ledger.entries]
    assert len(keys) == len(set(keys))


@settings(max_examples=300, deadline=None)
@given(events=events, policy=st.sampled_from(["debt", "allow_negative"]))
def test_ledger_invariants_hold_for_any_sequence(
    events: list[tuple[str, int, int]], policy: str
) -> None:
    ledger = Ledger(policy=policy)
    clock = START
    for i, (kind, a, b) in enumerate(events):
        clock += timedelta(days=1)
        if kind == "earn":
            ledger.earn(f"g:{i}", a, clock + timedelta(days=b))
        elif kind == "order":
            lines = {
                1: LineEarning(1, 10_000, 100 + a * 7),
                2: LineEarning(2, 3_000, 31),
            }
            ledger.earn(
                f"order:{a}",
                sum(x.points for x in lines.values()),
                clock + timedelta(days=b),
                order=f"order:{a}",
                lines=lines,
            )
        elif kind == "spend":
            try:
                ledger.spend(f"s:{i}", a, clock)
            except rules.InsufficientPoints as exc:
                assert exc.available < a
        elif kind == "refund":
            before = ledger.balance
            ledger.refund(f"refund:{i}", f"order:{a}", {1: b, 2: b // 4}, clock)
            # the same refund again changes nothing
            snapshot = (list(ledger.entries), ledger.balance)
            ledger.refund(f"refund:{i}", f"order:{a}", {1: b, 2: b // 4}, clock)
            assert (list(ledger.entries), ledger.balance) == snapshot
            assert ledger.balance <= before
        else:
            ledger.expire(clock + timedelta(days=a))
        _check(ledger)


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.integers(1, 12_000), min_size=1, max_size=6),
    spent=st.integers(0, 500),
    policy=st.sampled_from(["debt", "allow_negative"]),
)
def test_refunding_an_order_in_any_parts_reverses_what_it_earned_once(
    parts: list[int], spent: int, policy: str
) -> None:
    ledger = Ledger(policy=policy)
    lines = {1: LineEarning(1, 10_000, 333), 2: LineEarning(2, 2_000, 0)}
    ledger.earn("order:1", 333, None, order="order:1", lines=lines)
    ledger.spend("s:1", min(spent, 333), START)
    for i, part in enumerate(parts):
        ledger.refund(f"refund:{i}", "order:1", {1: part}, START)
        ledger.refund(f"refund:{i}", "order:1", {1: part}, START)  # a replay
    reversed_ = -sum(e.points - e.debt for e in ledger.entries if e.fact.startswith("refund:"))
    refunded = min(sum(parts), 10_000)
    assert reversed_ == 333 * refunded // 10_000
    _check(ledger)


def test_a_refund_takes_from_its_own_lot_then_the_oldest_expiring_then_falls_short() -> None:
    soon, later = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    own = LotState(1, 300, later)
    others = [LotState(3, 500, None), LotState(2, 200, soon), LotState(1, 300, later)]
    asked: list[bool] = []

    def read() -> list[LotState]:
        asked.append(True)
        return others

    # The own lot covers it: the others are not even read.
    assert rules.take_back(own, 250, read) == rules.TakeBack([(1, 250)], 0)
    assert not asked
    # Beyond it: the lot expiring soonest, then the one that never expires; never the own
    # lot twice.
    assert rules.take_back(own, 600, read) == rules.TakeBack([(1, 300), (2, 200), (3, 100)], 0)
    assert rules.take_back(own, 1_200, read) == rules.TakeBack([(1, 300), (2, 200), (3, 500)], 200)
    assert rules.take_back(None, 100, lambda: []) == rules.TakeBack([], 100)
    assert rules.take_back(LotState(1, 0, later), 50, read).taken == [(2, 50)]


# ``doc`` is only read and updated with the same values by every example
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["SKU-1", "SKU-X", "SKU-2"]),
            st.sampled_from(["奶粉", "玩具", "营养品", "纸尿裤"]),
            st.integers(0, 50_000),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([None, "V1", "V2", "V3", "GONE"]),
    st.integers(-3 * 24 * 60, 40 * 24 * 60),
    st.booleans(),
)
def test_earning_is_the_documented_product_rounded_per_line(
    doc: dict[str, Any], raw: list[tuple[str, str, int]], tier: str | None, minutes: int, up: bool
) -> None:
    # given a programme with exclusions, SKU multipliers and campaigns, and any order
    doc["points"]["earn"].update(
        rounding="half_up" if up else "down",
        minimum_order_amount=Decimal(50),
        excluded_categories=["玩具"],
        sku_multipliers={"SKU-X": Decimal(3)},
    )
    p = programme(doc)
    lines = [Line(i, sku, category, fen) for i, (sku, category, fen) in enumerate(raw, start=1)]
    paid_at = PAID + timedelta(minutes=minutes)
    # when it earns
    earned = rules.earn_lines(p, lines, paid_at=paid_at, tier=tier, tz=TZ)
    # then each line earns fen / 100 x tier x item x the best running campaign, rounded
    earn = p.points.earn
    small = sum(x.amount_fen for x in lines) < int(earn.minimum_order_amount * 100)
    for x, e in zip(lines, earned, strict=True):
        if small or x.category in earn.excluded_categories or x.amount_fen <= 0:
            assert e.points == 0
            continue
        item = earn.sku_multipliers.get(x.sku, earn.category_multipliers.get(x.category, 1))
        campaign = max(
            (
                c.multiplier
                for c in p.points.campaigns
                if rules.campaign_applies(c, at=paid_at, category=x.category, tier=tier, tz=TZ)
            ),
            default=Decimal(1),
        )
        value = Decimal(x.amount_fen) / 100 * earn.per_yuan
        value *= rules.tier_multiplier(p, tier) * item * campaign
        assert e == LineEarning(x.line_no, x.amount_fen, max(0, rules._round(value, earn.rounding)))
