"""Pure rules of growth and tiers, without a database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st
from tiers_helpers import example_programme, programme

from siyu.programme.rules import Programme
from siyu.tiers import rules
from siyu.tiers.rules import CountedOrder, Movement

TZ = "Asia/Shanghai"
EXAMPLE = Programme.model_validate(example_programme())


def doc(**tiers: object) -> Programme:
    return Programme.model_validate(programme(**tiers))


# --- growth -------------------------------------------------------------------------------


def test_growth_is_per_line_rounded_down_and_freight_earns_nothing() -> None:
    assert rules.order_growth(Decimal(1), [25_600, 9_990]) == [256, 99]
    assert rules.line_growth(Decimal("1.5"), 9_990) == 149  # 149.85
    assert rules.line_growth(Decimal(1), 0) == 0


@given(
    st.decimals(min_value=0, max_value=100, places=3, allow_nan=False, allow_infinity=False),
    st.lists(st.integers(min_value=-100, max_value=10**10), max_size=6),
)
def test_an_orders_growth_is_each_lines_growth_whatever_the_rate(
    per_yuan: Decimal, line_fens: list[int]
) -> None:
    # The order's growth is worked out in integers; each line must earn exactly what
    # line_growth (Decimal arithmetic) says, or a refund would take back another amount.
    assert rules.order_growth(per_yuan, line_fens) == [
        rules.line_growth(per_yuan, f) for f in line_fens
    ]


@given(
    per_yuan=st.decimals(min_value=0, max_value=10, places=2),
    line_fen=st.integers(min_value=1, max_value=10_000_000),
    cuts=st.lists(st.integers(min_value=1, max_value=10_000_000), max_size=8),
)
def test_partial_refunds_in_any_split_add_up_to_the_full_reversal(
    per_yuan: Decimal, line_fen: int, cuts: list[int]
) -> None:
    earned = rules.line_growth(per_yuan, line_fen)
    points = sorted({c % line_fen for c in cuts if c % line_fen} | {line_fen})
    before = 0
    reversed_ = []
    for after in points:
        reversed_.append(rules.line_reversal(earned, line_fen, before, after))
        before = after
    assert all(r >= 0 for r in reversed_)
    assert sum(reversed_) == earned


@given(st.integers(min_value=0, max_value=50_000), st.integers(min_value=0, max_value=50_000))
def test_the_qualifying_level_is_monotonic_in_value(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert rules.rank(EXAMPLE, rules.qualifying_level(EXAMPLE, low).code) <= rules.rank(
        EXAMPLE, rules.qualifying_level(EXAMPLE, high).code
    )


def test_spend_marks_are_fen() -> None:
    spend = doc(basis="spend")
    assert rules.qualifying_level(spend, 49_999).code == "V1"
    assert rules.qualifying_level(spend, 50_000).code == "V2"


# --- immediate upgrades -------------------------------------------------------------------

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def test_climb_crosses_two_levels_at_once_and_reports_the_tier_before_each_order() -> None:
    orders = [
        CountedOrder(1, T0, 400, 40_000, EXAMPLE),
        CountedOrder(2, T0 + timedelta(days=1), 4_700, 470_000, EXAMPLE),
    ]
    climbed = rules.climb("V1", [Movement(T0 - timedelta(days=1), 100)], orders, TZ)
    assert climbed.tier_at_order == {1: "V1", 2: "V2"}
    assert [(c.from_code, c.to_code) for c in climbed.changes] == [("V1", "V2"), ("V2", "V4")]
    assert climbed.final_code == "V4"


def test_climb_counts_only_the_window_of_each_order() -> None:
    old = Movement(T0 - timedelta(days=400), 4_000)
    climbed = rules.climb("V1", [old], [CountedOrder(1, T0, 600, 0, EXAMPLE)], TZ)
    assert climbed.final_code == "V2"  # the 4,000 of 400 days ago is outside 12 months


@given(
    amounts=st.lists(st.integers(min_value=0, max_value=6_000), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=11), max_size=5),
)
def test_climb_does_not_depend_on_how_sorted_orders_are_chunked(
    amounts: list[int], cuts: list[int]
) -> None:
    orders = [
        CountedOrder(i + 1, T0 + timedelta(days=20 * i), g, g * 100, EXAMPLE)
        for i, g in enumerate(amounts)
    ]
    whole = rules.climb("V1", [], orders, TZ)
    bounds = sorted({c for c in cuts if c < len(orders)} | {0, len(orders)})
    current: str | None = "V1"
    prior: list[Movement] = []
    seen: dict[int, str | None] = {}
    for start, end in pairwise(bounds):
        part = rules.climb(current, prior, orders[start:end], TZ)
        seen.update(part.tier_at_order)
        current = part.final_code
        prior += [Movement(o.paid_at, o.growth, o.spend_fen, 1) for o in orders[start:end]]
    assert seen == whole.tier_at_order
    assert current == whole.final_code


def _climb_by_definition(
    current: str | None, prior: list[Movement], orders: list[CountedOrder]
) -> rules.Climb:
    """``climb`` as its docstring defines it: after each order, add up the window again."""
    result = rules.Climb(final_code=current)
    counted = list(prior)
    held = current
    for order in sorted(orders, key=lambda o: (o.paid_at, o.order_id)):
        result.tier_at_order[order.order_id] = held
        if order.programme is None:
            continue
        p = order.programme
        counted.append(Movement(order.paid_at, order.growth + order.bonus, order.spend_fen, 1))
        start = rules.window_start(p.tiers.review, order.paid_at, TZ)
        value = rules.measure(p.tiers.basis, [m for m in counted if start <= m.at <= order.paid_at])
        target = rules.qualifying_level(p, value).code
        if rules.rank(p, target) > rules.rank(p, held):
            result.changes.append(
                rules.Change(order.paid_at, held, target, "join" if held is None else "upgrade")
            )
            held = target
    result.final_code = held
    return result


SPEND = doc(basis="spend")
COUNT = doc(basis="order_count", window="days_since_change", days=30)


@given(
    prior=st.lists(
        st.tuples(
            st.integers(min_value=-500, max_value=30),  # days after T0, some after the orders
            st.integers(min_value=-3_000, max_value=6_000),
            st.integers(min_value=-1, max_value=1),
        ),
        max_size=15,
    ),
    orders=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=400),  # days after T0; ties on purpose
            st.integers(min_value=0, max_value=6_000),
            st.integers(min_value=0, max_value=3),  # programme: example, spend, count, none
            st.integers(min_value=0, max_value=500),  # first-order bonus
        ),
        min_size=1,
        max_size=20,
    ),
    current=st.sampled_from([None, "V1", "V2", "V3", "V6"]),
)
def test_climb_by_running_totals_is_the_window_sum_after_each_order(
    prior: list[tuple[int, int, int]],
    orders: list[tuple[int, int, int, int]],
    current: str | None,
) -> None:
    programmes = [EXAMPLE, SPEND, COUNT, None]
    movements = [Movement(T0 + timedelta(days=d), g, g * 100, n) for d, g, n in prior]
    counted = [
        CountedOrder(i + 1, T0 + timedelta(days=d), g, g * 100, programmes[p], bonus)
        for i, (d, g, p, bonus) in enumerate(orders)
    ]
    fast = rules.climb(current, movements, counted, TZ)
    slow = _climb_by_definition(current, movements, counted)
    assert fast.tier_at_order == slow.tier_at_order
    assert fast.changes == slow.changes
    assert fast.final_code == slow.final_code


def test_orders_without_a_programme_earn_nothing_and_move_nothing() -> None:
    climbed = rules.climb(None, [], [CountedOrder(1, T0, 0, 0, None)], TZ)
    assert climbed.tier_at_order == {1: None} and climbed.changes == []


# --- windows and review dates -----------------------------------------------------------------


def test_windows_of_each_review_rule() -> None:
    at = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
    calendar_year = doc(window="calendar_year").tiers.review
    assert rules.window_start(calendar_year, at, TZ) == datetime(2025, 12, 31, 16, tzinfo=UTC)
    rolling = EXAMPLE.tiers.review
    assert rules.window_start(rolling, at, TZ) == datetime(2025, 11, 23, 4, tzinfo=UTC)
    days = doc(window="days_since_change", days=90).tiers.review
    assert rules.window_start(days, at, TZ) == at - timedelta(days=90)
    start, end = rules.review_window(calendar_year, date(2027, 1, 1), TZ)
    assert (start, end) == (
        datetime(2025, 12, 31, 16, tzinfo=UTC),
        datetime(2026, 12, 31, 16, tzinfo=UTC),
    )


def test_review_dates_and_the_hold_through_the_next_period() -> None:
    assert rules.next_review_on(EXAMPLE.tiers.review, date(2024, 2, 29)) == date(2025, 2, 28)
    assert rules.add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    year = doc(window="calendar_year", hold_through_next_period=True).tiers
    assert rules.first_review_on(year, date(2026, 6, 1), reached=True) == date(2028, 1, 1)
    assert rules.first_review_on(year, date(2026, 6, 1), reached=False) == date(2027, 1, 1)
    days = doc(window="days_since_change", days=90).tiers
    assert rules.first_review_on(days, date(2026, 1, 1), reached=True) == date(2026, 4, 1)


def test_a_late_review_run_reviews_the_latest_ended_period_and_sets_the_next_past_its_day() -> None:
    days = doc(window="days_since_change", days=30).tiers.review
    # due on 1 March, the job next ran on 15 April: the period ending 31 March is reviewed
    assert rules.latest_review_on(days, date(2026, 3, 1), date(2026, 4, 15)) == date(2026, 3, 31)
    assert rules.latest_review_on(days, date(2026, 3, 1), date(2026, 3, 1)) == date(2026, 3, 1)
    # and the next review is the first period end after the run's day
    assert rules.review_after(days, date(2026, 3, 31), date(2026, 4, 15)) == date(2026, 4, 30)
    assert rules.review_after(days, date(2026, 5, 1), date(2026, 4, 15)) == date(2026, 5, 1)


@given(st.integers(0, 800), st.integers(0, 800), st.sampled_from([1, 30, 365]))
def test_review_days_move_by_whole_periods(due: int, late: int, length: int) -> None:
    review = doc(window="days_since_change", days=length).tiers.review
    on, day = date(2025, 1, 1) + timedelta(days=due), date(2025, 1, 1) + timedelta(days=due + late)
    latest = rules.latest_review_on(review, on, day)
    assert on <= latest <= day and (latest - on).days % length == 0
    assert rules.next_review_on(review, latest) > day
    after = rules.review_after(review, on, day)
    assert after > day and (after - on).days % length == 0 and after - timedelta(length) <= day


# --- review decisions --------------------------------------------------------------------------


def test_review_keeps_drops_one_level_or_to_the_level_whose_mark_is_met() -> None:
    assert rules.review_decision(EXAMPLE, "V4", 3_000) == "V4"
    assert rules.review_decision(EXAMPLE, "V4", 2_999) == "V3"
    assert rules.review_decision(EXAMPLE, "V4", 0) == "V3"
    assert rules.review_decision(EXAMPLE, "V1", 0) == "V1"  # no retention mark
    qualifying = doc(downgrade="to_qualifying")
    assert rules.review_decision(qualifying, "V5", 1_500) == "V3"
    assert rules.review_decision(qualifying, "V5", 300) == "V2"
    assert rules.review_decision(qualifying, "V5", 0) == "V1"


def test_an_active_grant_is_a_floor_at_review_but_never_raises() -> None:
    assert rules.review_decision(EXAMPLE, "V4", 0, floor="V4") == "V4"
    assert rules.review_decision(EXAMPLE, "V4", 0, floor="V6") == "V4"
    assert rules.review_decision(doc(downgrade="to_qualifying"), "V5", 0, floor="V3") == "V3"


# --- progress ----------------------------------------------------------------------------------


def test_progress_sentences_in_english_and_chinese() -> None:
    p = rules.progress(EXAMPLE, "V3", value=4_680, kept_value=1_020, review_on=date(2027, 1, 1))
    assert (p.to_next, p.to_keep, p.reach_by) == (320, 180, date(2026, 12, 31))
    assert p.sentence_en == (
        "earn 320 more growth to reach V4 金牌妈妈 by 2026-12-31; "
        "earn 180 more growth to keep V3 品质妈妈 by the review on 2027-01-01"
    )
    assert p.sentence_zh == (
        "在2026-12-31前再获得320成长值可升级为V4 金牌妈妈；再获得180成长值可保住V3 品质妈妈"
    )
    top = rules.progress(EXAMPLE, "V6", value=30_000, kept_value=30_000, review_on=None)
    assert top.next_code is None and "top level" in top.sentence_en


# --- decisions the services and the simulator share --------------------------------------------


@given(
    st.lists(st.integers(min_value=1, max_value=50_000), min_size=1, max_size=4),
    st.integers(min_value=1, max_value=4),
)
def test_a_refund_in_parts_gives_back_the_growth_and_uncounts_the_order_once(
    amounts: list[int], parts: int
) -> None:
    """However an order's lines are refunded in parts, the parts give back exactly the
    growth and spend the lines earned, and exactly one part uncounts the order."""
    per_yuan = Decimal("1.5")
    refunded = [0] * len(amounts)
    growth = spend = orders = 0
    for part in range(1, parts + 1):
        after = [amount * part // parts for amount in amounts]
        step = rules.refund_growth(per_yuan, list(zip(amounts, refunded, after, strict=True)))
        growth, spend, orders = growth + step.growth, spend + step.spend_fen, orders + step.orders
        refunded = after
    assert growth == sum(rules.order_growth(per_yuan, amounts))
    assert spend == sum(amounts) and orders == -1


def test_a_partial_refund_keeps_the_order_counted() -> None:
    step = rules.refund_growth(Decimal(1), [(10_000, 0, 5_000), (2_000, 0, 0)])
    assert step == rules.RefundGrowth(50, 5_000, 0)
    assert rules.refund_growth(Decimal(1), [(0, 0, 0)]).orders == 0  # nothing to refund


def test_bonus_events_pay_once_per_limit_and_the_first_order_once() -> None:
    assert rules.bonus_growth(EXAMPLE, "profile_completion", granted_before=0) == 50
    assert rules.bonus_growth(EXAMPLE, "profile_completion", granted_before=1) == 0
    assert rules.bonus_growth(EXAMPLE, "review", granted_before=99) == 5  # no limit
    assert rules.bonus_growth(EXAMPLE, "no_such_event", granted_before=0) == 0
    assert rules.first_order_bonus(EXAMPLE, had_one=False) == 100
    assert rules.first_order_bonus(EXAMPLE, had_one=True) == 0
    none = Programme.model_validate(example_programme() | {"growth": {"per_yuan": 1}})
    assert rules.first_order_bonus(none, had_one=False) == 0
    assert rules.bonus_rule(none, "first_order") is None


def test_the_join_level_and_upgrades_outside_orders() -> None:
    assert rules.join_level(EXAMPLE) == "V1"
    generous = example_programme()
    generous["growth"]["signup_bonus"] = 600
    assert rules.join_level(Programme.model_validate(generous)) == "V2"
    assert rules.upgrade_to(EXAMPLE, "V2", 2_000) == "V3"
    assert rules.upgrade_to(EXAMPLE, "V3", 2_000) is None
    assert rules.upgrade_to(EXAMPLE, "V4", 0) is None  # never down
    assert rules.upgrade_to(EXAMPLE, None, 0) == "V1"


def test_a_change_opens_a_period_reviewed_per_the_document() -> None:
    at = datetime(2026, 3, 31, 17, tzinfo=UTC)  # 1 April, 01:00 in Shanghai
    held = doc(window="days_since_change", days=90, hold_through_next_period=True)
    assert rules.period_after(held, at, "V1", "V2", TZ) == (date(2026, 4, 1), date(2026, 9, 28))
    assert rules.period_after(held, at, "V3", "V2", TZ) == (date(2026, 4, 1), date(2026, 6, 30))


def test_grants_apply_above_the_level_held_and_floor_at_the_highest() -> None:
    ends = datetime(2027, 1, 1, tzinfo=UTC)
    assert rules.granted_level(EXAMPLE, "V2", "V4") == "V4"
    assert rules.granted_level(EXAMPLE, "V4", "V4") is None
    assert rules.granted_level(EXAMPLE, "V5", "V4") is None  # a floor only
    later = ends + timedelta(days=30)
    assert rules.floor(EXAMPLE, [("V3", ends), ("V5", later), ("V5", ends)]) == ("V5", later)
    assert rules.floor(EXAMPLE, [("X9", ends)]) == (None, None)
    assert rules.floor(EXAMPLE, []) == (None, None)


def test_a_grants_end_returns_to_what_the_member_holds_on_their_value() -> None:
    # Granted V5 while on V3; at the end the value keeps V3 (retention 1,200).
    assert rules.grant_end_level(EXAMPLE, "V5", 1_500, [("V5", "V3")], None) == "V3"
    # The value no longer keeps V3: one level down, as a review would judge it.
    assert rules.grant_end_level(EXAMPLE, "V5", 0, [("V5", "V3")], None) == "V2"
    # The value earns V4 on thresholds by now.
    assert rules.grant_end_level(EXAMPLE, "V5", 5_000, [("V5", "V3")], None) == "V4"
    # Another grant still running holds V4.
    assert rules.grant_end_level(EXAMPLE, "V5", 0, [("V5", "V3")], "V4") == "V4"
    # Earned above the grant meanwhile, or still at it on value: no change.
    assert rules.grant_end_level(EXAMPLE, "V6", 0, [("V5", "V3")], None) is None
    assert rules.grant_end_level(EXAMPLE, "V5", 10_000, [("V5", "V3")], None) is None
    assert rules.grant_end_level(EXAMPLE, None, 0, [("V5", "V3")], None) is None


# (days from year 3 to 9997: two years either way stays within the calendar's years)
@given(st.dates(min_value=date(3, 1, 1), max_value=date(9997, 12, 31)), st.integers(-24, 24))
def test_add_months_keeps_the_day_or_takes_the_months_last(day: date, months: int) -> None:
    import calendar

    # when a day is moved by some months
    moved = rules.add_months(day, months)
    # then it lands in that month, on the same day or the month's last
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    assert (moved.year, moved.month) == (year, month + 1)
    assert moved.day == min(day.day, calendar.monthrange(moved.year, moved.month)[1])
