"""Pure rules of growth value (成长值) and tiers (等级): plain data in, plain data out.

What the ladder is measured on
------------------------------
Every threshold and retention mark is compared with the member's value **in the review
window**, on the ladder's basis:

- ``growth``: the sum of growth entries (earned, bonus, reversed, adjusted) in the window;
- ``spend``: net spend in fen (order lines, not freight, minus refunded lines) in the window;
- ``order_count``: orders paid in the window, minus orders fully refunded in it.

The window that counts at an instant ``t`` is the one of the document's review rule that
ends at ``t``: the 12 months before ``t`` (``rolling_12_months``), the N days before ``t``
(``days_since_change``), or the calendar year so far (``calendar_year``, brand-local). Each
ledger movement is dated with its business time (an order's ``paid_at``, a refund's
``refunded_at``), so the value at an instant does not depend on how orders were chunked in
an import, or in which transaction they arrived.

Upgrades are immediate: after each order (in ``paid_at`` order) the member moves to the
highest level whose threshold the value reaches, if that is above the level held. Reviews
(保级) happen at the end of each period: a calendar year, or 12 months / N days after the
tier last changed or was last reviewed. A member below their level's retention mark drops
one level, or to the level whose mark they meet (``downgrade: to_qualifying``); never below
an active manual grant. With ``hold_through_next_period`` a level reached is first reviewed
at the end of the *next* period.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import NamedTuple
from zoneinfo import ZoneInfo

from siyu.core.clock import UTC, as_utc
from siyu.core.money import fen_to_yuan
from siyu.programme.rules import Basis, GrowthBonus, Programme, TierLevel, TierReview, Tiers, fen

REASONS = ("join", "upgrade", "review", "grant", "grant_end", "merge", "adjust")
KINDS = ("earn", "bonus", "reverse", "adjust")


# --- growth of orders and refunds ---------------------------------------------------------


def line_growth(per_yuan: Decimal, line_fen: int) -> int:
    """Growth a line earns: per_yuan x yuan paid, rounded down (exact, no float)."""
    if line_fen <= 0:
        return 0
    return int((Decimal(per_yuan) * line_fen) // 100)


def order_growth(per_yuan: Decimal, line_fens: Sequence[int]) -> list[int]:
    """Growth per line; the order earns their sum. Per line, not per order, so a refund of
    some lines takes back exactly what those lines earned (freight earns nothing).

    ``line_growth`` in integers (the rate as an exact fraction, taken once per order): the
    same numbers, without Decimal arithmetic on every line of every imported order."""
    num, den = Decimal(per_yuan).as_integer_ratio()
    if num < 0:  # not a document's rate; Decimal's division truncates, keep its answer
        return [line_growth(per_yuan, f) for f in line_fens]
    den *= 100
    return [f * num // den if f > 0 else 0 for f in line_fens]


def line_reversal(growth: int, line_fen: int, refunded_before: int, refunded_after: int) -> int:
    """Growth a refund of one line takes back (a positive number).

    Cumulative, so a line refunded in several parts gives back exactly what it earned:
    ``floor(growth x refunded / line_fen)`` after the refund, minus the same before it."""
    if line_fen <= 0 or growth == 0:
        return 0
    before = min(max(refunded_before, 0), line_fen)
    after = min(max(refunded_after, 0), line_fen)
    return growth * after // line_fen - growth * before // line_fen


class RefundGrowth(NamedTuple):
    """What a refund takes off the ladder's measures: growth and net spend (positive
    numbers), and the order (-1) when the refund leaves the order wholly refunded."""

    growth: int
    spend_fen: int
    orders: int


def refund_growth(per_yuan: Decimal, lines: Iterable[tuple[int, int, int]]) -> RefundGrowth:
    """A refund over an order's lines ``(amount, refunded before, refunded after)``, every
    line of the order: each line gives back what it earned (``line_reversal``) and its
    refunded amount; the order stops counting when this refund completes it, so an order
    refunded in parts is uncounted exactly once."""
    growth = spend = 0
    whole_after = whole_before = True
    total = 0
    for amount, before, after in lines:
        total += amount
        growth += line_reversal(line_growth(per_yuan, amount), amount, before, after)
        spend += after - before
        whole_after = whole_after and after >= amount
        whole_before = whole_before and before >= amount
    whole = total > 0
    orders = -1 if whole and whole_after and not whole_before else 0
    return RefundGrowth(growth, spend, orders)


# --- bonus events ------------------------------------------------------------------------------


def bonus_rule(programme: Programme, event: str) -> GrowthBonus | None:
    """The document's growth bonus for ``event`` (None: the document has none)."""
    return next((r for r in programme.growth.bonus_events if r.event == event), None)


def first_order_bonus(programme: Programme, *, had_one: bool) -> int:
    """Growth the first-order bonus adds to a member's first earning order: once per
    member (``had_one``: a first-order bonus is in their ledger already), never negative."""
    rule = bonus_rule(programme, "first_order")
    if rule is None or had_one:
        return 0
    return max(0, rule.growth)


def bonus_growth(programme: Programme, event: str, *, granted_before: int) -> int:
    """Growth one more ``event`` earns a member who has had it ``granted_before`` times: 0
    when the document has no such event or the member reached its ``per_member_limit``."""
    rule = bonus_rule(programme, event)
    if rule is None or rule.growth <= 0:
        return 0
    if rule.per_member_limit is not None and granted_before >= rule.per_member_limit:
        return 0
    return rule.growth


# --- the ladder ----------------------------------------------------------------------------


def mark(tiers: Tiers, value: Decimal) -> int:
    """A document mark (threshold or retention) in the units values are counted in: fen
    for spend, whole growth or orders otherwise."""
    return fen(value) if tiers.basis == "spend" else int(value)


class _Ladder(NamedTuple):
    """A programme's ladder as lookups: rank by code and the thresholds in counting units."""

    tiers: Tiers
    ranks: dict[str | None, int]
    thresholds: list[int]


# Programmes are frozen (validated documents), so their ladder is worked out once. Keyed
# by id, holding the ``Tiers`` itself so an id is never reused while cached; a handful of
# programme versions live in a process.
_ladders: dict[int, _Ladder] = {}


def _ladder(programme: Programme) -> _Ladder:
    tiers = programme.tiers
    found = _ladders.get(id(tiers))
    if found is not None and found.tiers is tiers:
        return found
    if len(_ladders) > 256:
        _ladders.clear()
    ranks: dict[str | None, int] = {}
    for i, level in enumerate(tiers.levels):
        ranks.setdefault(level.code, i)
    found = _Ladder(tiers, ranks, [mark(tiers, level.threshold) for level in tiers.levels])
    _ladders[id(tiers)] = found
    return found


def rank(programme: Programme, code: str | None) -> int:
    """The position of a level on the ladder; -1 for none or a code the ladder lacks."""
    return _ladder(programme).ranks.get(code, -1)


def qualifying_level(programme: Programme, value: int) -> TierLevel:
    """The highest level whose threshold the value reaches (the first level at worst)."""
    levels = programme.tiers.levels
    best = 0
    for i, threshold in enumerate(_ladder(programme).thresholds):
        if value >= threshold:
            best = i
    return levels[best]


def higher(programme: Programme, a: str | None, b: str | None) -> str | None:
    return a if rank(programme, a) >= rank(programme, b) else b


def join_level(programme: Programme) -> str:
    """The level a new member starts on: what their signup growth reaches on thresholds
    (the first level, in practice)."""
    signup = Movement(datetime.min.replace(tzinfo=UTC), programme.growth.signup_bonus)
    return qualifying_level(programme, measure(programme.tiers.basis, [signup])).code


def upgrade_to(programme: Programme, current: str | None, value: int) -> str | None:
    """After a movement that is not an order (a bonus, an adjustment, a merge): the level
    the window's ``value`` reaches if it is above ``current``, else None (never down)."""
    target = qualifying_level(programme, value).code
    return target if rank(programme, target) > rank(programme, current) else None


class Movement(NamedTuple):
    """A ledger movement as the ladder counts it (a named tuple: the tier climb reads
    thousands per import chunk)."""

    at: datetime
    growth: int = 0
    spend_fen: int = 0
    orders: int = 0


def measure(basis: Basis, movements: Iterable[Movement]) -> int:
    if basis == "growth":
        return sum(m.growth for m in movements)
    if basis == "spend":
        return sum(m.spend_fen for m in movements)
    return sum(m.orders for m in movements)


# --- calendar --------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later (or earlier); the 31st becomes the month's last day."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    # ``calendar.monthrange`` without the weekday it also works out (the climb asks once
    # per imported order)
    last = 29 if month == 1 and calendar.isleap(year) else _MONTH_DAYS[month]
    return date(year, month + 1, min(day.day, last))


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def day_start(day: date, tz: str) -> datetime:
    """The instant a brand-local day begins, in UTC."""
    return datetime.combine(day, time(0), ZoneInfo(tz)).astimezone(UTC)


def window_start(review: TierReview, at: datetime, tz: str) -> datetime:
    """Where the review window that ends at ``at`` begins."""
    local = as_utc(at).astimezone(ZoneInfo(tz))
    if review.window == "calendar_year":
        # The instant itself on 1 January belongs to the new year.
        return day_start(date(local.year, 1, 1), tz)
    if review.window == "days_since_change":
        return as_utc(at) - timedelta(days=review.days or 0)
    shifted = add_months(local.date(), -12)
    return datetime.combine(shifted, local.timetz()).astimezone(UTC)


def review_window(review: TierReview, day: date, tz: str) -> tuple[datetime, datetime]:
    """The window a review on brand-local ``day`` looks at: [start, day's midnight)."""
    end = day_start(day, tz)
    if review.window == "calendar_year":
        return day_start(date(day.year - 1, 1, 1), tz), end
    return window_start(review, end, tz), end


def next_review_on(review: TierReview, period_start: date) -> date:
    """The day a period that began on ``period_start`` ends and is reviewed."""
    if review.window == "calendar_year":
        return date(period_start.year + 1, 1, 1)
    if review.window == "days_since_change":
        return period_start + timedelta(days=review.days or 1)
    return add_months(period_start, 12)


def latest_review_on(review: TierReview, review_on: date, day: date) -> date:
    """The review a run of the review job on ``day`` does for a member due on
    ``review_on``: the latest period that has ended by ``day``, not each one missed while
    the job did not run."""
    while (nxt := next_review_on(review, review_on)) <= day:
        review_on = nxt
    return review_on


def review_after(review: TierReview, review_on: date, day: date) -> date:
    """``review_on`` moved on, a period at a time, past ``day``: after a late run of the
    review job, the next review a change or a kept level sets may have come already."""
    while review_on <= day:
        review_on = next_review_on(review, review_on)
    return review_on


def first_review_on(tiers: Tiers, start: date, *, reached: bool) -> date:
    """The first review of a level held from ``start``. A level *reached* (join, upgrade,
    grant) under ``hold_through_next_period`` lasts through the next period as well."""
    first = next_review_on(tiers.review, start)
    if reached and tiers.hold_through_next_period:
        return next_review_on(tiers.review, first)
    return first


def period_after(
    programme: Programme, change_at: datetime, from_code: str | None, to_code: str, tz: str
) -> tuple[date, date]:
    """The review period a tier change opens: it starts on the change's brand-local day and
    is first reviewed per ``first_review_on`` (a level reached up the ladder is *reached*)."""
    start = as_utc(change_at).astimezone(ZoneInfo(tz)).date()
    reached = rank(programme, to_code) > rank(programme, from_code)
    return start, first_review_on(programme.tiers, start, reached=reached)


# --- immediate upgrades over a member's orders ------------------------------------------------


class CountedOrder(NamedTuple):
    """An order as the ladder counts it, with the programme in force when it was paid
    (None: no programme, so it earns nothing and moves no tier). A named tuple: an import
    chunk makes one per order."""

    order_id: int
    paid_at: datetime
    growth: int
    spend_fen: int
    programme: Programme | None
    bonus: int = 0  # first_order bonus granted with this order


@dataclass(frozen=True)
class Change:
    at: datetime
    from_code: str | None
    to_code: str
    reason: str


@dataclass
class Climb:
    tier_at_order: dict[int, str | None] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    final_code: str | None = None


def climb(
    current: str | None,
    prior: Sequence[Movement],
    orders: Sequence[CountedOrder],
    tz: str,
) -> Climb:
    """Count a member's new orders one by one in ``paid_at`` order: which tier the member
    held when each was paid (before it counted), and the upgrades it caused.

    ``prior`` are the movements already in the ledger (at least those of the windows of
    these orders). The value at each order is the window's value at its ``paid_at``, built
    from ``prior`` and the orders before it, so splitting a sorted stream of orders into
    chunks gives the same answer as one pass."""
    result = Climb(final_code=current)
    # Window values by prefix sums and binary search, not by adding up the window at each
    # order: a super user's year holds hundreds of movements, and summing the window anew
    # after each of their orders made a chunk quadratic in their orders.
    before = _Timeline(sorted(prior, key=_movement_at))
    counted = _Timeline([])
    held = current
    tier_at_order = result.tier_at_order
    # Each order's instant in UTC once, with its key (``(paid_at, order_id)``).
    keyed = [((as_utc(o.paid_at), o.order_id), o) for o in orders]
    keyed.sort(key=_first)
    ladder: _Ladder | None = None
    ladder_of: Programme | None = None
    for (at, order_id), order in keyed:
        tier_at_order[order_id] = held
        programme = order.programme
        if programme is None:
            continue
        counted.append(Movement(at, order.growth + order.bonus, order.spend_fen, 1))
        if programme is not ladder_of:  # a chunk's orders share one or two programmes
            ladder, ladder_of = _ladder(programme), programme
        assert ladder is not None
        ranks, thresholds = ladder.ranks, ladder.thresholds
        if held is not None and ranks.get(held, -1) == len(thresholds) - 1:
            continue  # already at the top: nothing to climb to, no window to add up
        tiers = ladder.tiers
        start = window_start(tiers.review, at, tz)
        basis = tiers.basis
        # The orders counted so far are all at or before ``at`` (they come sorted).
        value = before.total(basis, start, at) + counted.total(basis, start, None)
        # ``qualifying_level`` on the ladder's thresholds
        best = 0
        for i, threshold in enumerate(thresholds):
            if value >= threshold:
                best = i
        target = tiers.levels[best].code
        if ranks.get(target, -1) > ranks.get(held, -1):
            reason = "join" if held is None else "upgrade"
            result.changes.append(Change(at, held, target, reason))
            held = target
    result.final_code = held
    return result


_movement_at = attrgetter("at")
_first = itemgetter(0)

_FIELD_OF_BASIS = {"growth": "growth", "spend": "spend_fen", "order_count": "orders"}


class _Timeline:
    """Movements sorted by time, with running totals per basis: the value of any window
    [start, end] is two binary searches and a subtraction."""

    def __init__(self, movements: list[Movement]) -> None:
        self.movements = movements
        self.ats = [m.at for m in movements]
        self.sums: dict[str, list[int]] = {}

    def append(self, movement: Movement) -> None:
        self.movements.append(movement)
        self.ats.append(movement.at)
        for basis, sums in self.sums.items():
            sums.append(sums[-1] + getattr(movement, _FIELD_OF_BASIS[basis]))

    def total(self, basis: str, start: datetime, end: datetime | None) -> int:
        sums = self.sums.get(basis)
        if sums is None:
            name = _FIELD_OF_BASIS[basis]
            sums = [0]
            for m in self.movements:
                sums.append(sums[-1] + getattr(m, name))
            self.sums[basis] = sums
        low = bisect_left(self.ats, start)
        high = len(self.ats) if end is None else bisect_right(self.ats, end)
        return sums[high] - sums[low] if high > low else 0


# --- review (保级) ---------------------------------------------------------------------------


def review_decision(
    programme: Programme, code: str | None, value: int, *, floor: str | None = None
) -> str:
    """The level a member holds after a review with ``value`` in the closed window.

    Meets the level's retention mark (or the level has none): kept. Otherwise one level
    down, or (``to_qualifying``) down to the highest lower level whose mark is met (a level
    without a retention mark is always met). Never below ``floor`` (an active grant), and a
    review never raises a member."""
    tiers = programme.tiers
    levels = tiers.levels
    i = rank(programme, code)
    if i < 0:
        decided = qualifying_level(programme, value).code
        return higher(programme, decided, floor) or decided
    level = levels[i]
    if level.retention is None or value >= mark(tiers, level.retention) or i == 0:
        return level.code
    if tiers.downgrade == "one_level":
        decided = levels[i - 1].code
    else:
        decided = levels[0].code
        for j in range(i - 1, -1, -1):
            keep = levels[j].retention
            if keep is None or value >= mark(tiers, keep):
                decided = levels[j].code
                break
    if floor is not None and rank(programme, floor) >= 0:
        capped = levels[min(rank(programme, floor), i)].code
        return higher(programme, decided, capped) or decided
    return decided


# --- manual grants (授予) ---------------------------------------------------------------------


def granted_level(programme: Programme, current: str | None, code: str) -> str | None:
    """A grant applies at once when the granted level is above the one held (history
    ``grant``); below or at it, it is only a floor. None: no change now."""
    return code if rank(programme, code) > rank(programme, current) else None


def floor(
    programme: Programme, grants: Iterable[tuple[str, datetime]]
) -> tuple[str | None, datetime | None]:
    """The floor of a member's active grants ``(code, ends_at)``: the highest-ranked one,
    with its end (the first of equals). Codes the ladder lacks are no floor."""
    best: tuple[str | None, datetime | None] = (None, None)
    for code, ends_at in grants:
        if rank(programme, code) > rank(programme, best[0]):
            best = (code, ends_at)
    return best


def grant_end_level(
    programme: Programme,
    current: str | None,
    value: int,
    ending: Sequence[tuple[str, str | None]],
    floor_code: str | None,
) -> str | None:
    """The level after grants ``(granted code, code held when granted)`` end, on ``value``
    in the window ending then; None when the member stays where they are.

    Back to the higher of the level held before each grant (as a review would judge it on
    ``value``: a grant shielded it from reviews, and its end must not leave an unearned
    level in place), what ``value`` earns on thresholds, and ``floor_code`` (another grant
    still active). Never up, and nothing changes for a member who earned a level above
    every ending grant meanwhile."""
    if current is None or not ending:
        return None
    if rank(programme, current) > max(rank(programme, code) for code, _ in ending):
        return None
    held = [review_decision(programme, before, value) for _, before in ending if before]
    decided = settle(programme, value, floor_code, *held)
    return decided if rank(programme, decided) < rank(programme, current) else None


def settle(programme: Programme, value: int, *also: str | None) -> str:
    """The level a value earns outright (thresholds, as for an upgrade), or ``also`` if
    that is higher: after a merge (the target's own level) or a grant's end (the level held
    before the grant, and any other active grant)."""
    decided = qualifying_level(programme, value).code
    for other in also:
        decided = higher(programme, decided, other) or decided
    return decided


# --- progress --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where a member stands on the ladder, in the basis's units (growth, fen, orders)."""

    code: str | None
    name: str | None
    basis: Basis
    value: int  # in the window ending now
    next_code: str | None
    next_name: str | None
    threshold: int | None  # of the next level
    to_next: int | None
    reach_by: date | None
    retention: int | None  # of the current level
    kept_value: int  # earned so far in the window the next review looks at
    to_keep: int | None
    review_on: date | None
    floor_code: str | None
    floor_until: datetime | None
    sentence_en: str
    sentence_zh: str


def _amount_en(basis: Basis, n: int) -> str:
    if basis == "spend":
        return f"spend ¥{fen_to_yuan(n):,} more"
    if basis == "order_count":
        return f"place {n} more order{'s' if n != 1 else ''}"
    return f"earn {n:,} more growth"


def _amount_zh(basis: Basis, n: int) -> str:
    if basis == "spend":
        return f"再消费{fen_to_yuan(n)}元"
    if basis == "order_count":
        return f"再下{n}单"
    return f"再获得{n}成长值"


def progress(
    programme: Programme,
    code: str | None,
    *,
    value: int,
    kept_value: int,
    review_on: date | None,
    floor_code: str | None = None,
    floor_until: datetime | None = None,
) -> Progress:
    """What it takes to reach the next level by the end of the current period, and to keep
    the current one at the next review, with a sentence in English and in Chinese:
    'spend ¥320.00 more to reach V4 by 2026-12-31; spend ¥180.00 more to keep V3'."""
    tiers = programme.tiers
    basis = tiers.basis
    i = rank(programme, code)
    level = tiers.levels[i] if i >= 0 else None
    nxt = tiers.levels[i + 1] if i + 1 < len(tiers.levels) else None
    reach_by = review_on - timedelta(days=1) if review_on is not None else None
    threshold = mark(tiers, nxt.threshold) if nxt is not None else None
    to_next = max(0, threshold - value) if threshold is not None else None
    retention = (
        mark(tiers, level.retention) if level is not None and level.retention is not None else None
    )
    to_keep = max(0, retention - kept_value) if retention is not None else None
    floored = floor_code is not None and rank(programme, floor_code) >= i >= 0

    en: list[str] = []
    zh: list[str] = []
    if level is None:
        en.append("no tier yet")
        zh.append("尚未获得等级")
    if nxt is not None and to_next is not None:
        label = f"{nxt.code} {nxt.name}"
        by_en = f" by {reach_by.isoformat()}" if reach_by else ""
        by_zh = f"在{reach_by.isoformat()}前" if reach_by else ""
        if to_next == 0:
            en.append(f"{label} is reached with the next order")
            zh.append(f"下一笔订单即可升级为{label}")
        else:
            en.append(f"{_amount_en(basis, to_next)} to reach {label}{by_en}")
            zh.append(f"{by_zh}{_amount_zh(basis, to_next)}可升级为{label}")
    elif level is not None:
        en.append(f"{level.code} {level.name} is the top level")
        zh.append(f"{level.code} {level.name}已是最高等级")
    if level is not None:
        label = f"{level.code} {level.name}"
        if floored and floor_until is not None:
            until = floor_until.date().isoformat()
            en.append(f"{label} is kept by a grant until {until}")
            zh.append(f"{label}由授予保留至{until}")
        elif to_keep is None or i == 0:
            en.append(f"{label} is kept without a mark")
            zh.append(f"{label}无需保级")
        elif to_keep == 0:
            en.append(f"{label} is kept at the review on {review_on}")
            zh.append(f"已达成{label}保级（{review_on}评定）")
        else:
            when = f" by the review on {review_on}" if review_on else ""
            en.append(f"{_amount_en(basis, to_keep)} to keep {label}{when}")
            zh.append(f"{_amount_zh(basis, to_keep)}可保住{label}")
    return Progress(
        code=level.code if level else None,
        name=level.name if level else None,
        basis=basis,
        value=value,
        next_code=nxt.code if nxt else None,
        next_name=nxt.name if nxt else None,
        threshold=threshold,
        to_next=to_next,
        reach_by=reach_by if nxt is not None else None,
        retention=retention,
        kept_value=kept_value,
        to_keep=to_keep,
        review_on=review_on,
        floor_code=floor_code,
        floor_until=floor_until,
        sentence_en="; ".join(en),
        sentence_zh="；".join(zh),
    )
