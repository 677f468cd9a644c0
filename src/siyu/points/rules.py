"""Points (积分) rules: pure functions of the programme document and plain data.

No database, no clock: callers pass the instants and the brand's timezone. The service
applies exactly these functions (earn, expiry, allocation, reversal, settlement), and the
``Ledger`` below runs them over plain lots and entries so that property tests can check the
ledger's invariants without a database.

Decisions written down here once:

- **Earning is per order line**, rounded per line (``rounding`` of the document), so a
  refund of one line reverses exactly what that line earned. Freight earns nothing when
  ``freight_excluded`` (freight is not a line, so it never earns); lines of excluded
  categories earn nothing; an order whose goods (lines) total is below
  ``minimum_order_amount`` earns nothing.
- **Multipliers multiply**: tier × item × campaign. The item multiplier is the SKU's when
  the SKU has one, else the category's (the more specific rule wins). When several
  campaigns cover a line, the highest multiplier applies (campaigns do not stack).
- **Campaign times are instants**; a document time without an offset is brand-local.
- **Expiry is by brand-local day** and a lot expires at the *end* of its last day
  (``expires_at`` is the first instant after it). ``year_end`` clears on the first
  clearing day strictly after the earning day: points earned on 31 December itself
  survive until the next 31 December, so nobody earns points that vanish the same night.
- **Spending takes the oldest-expiring lots first** (lots that never expire last; ties by
  lot id, i.e. the earliest earned).
- **A refund reverses cumulatively per line**: after refunds totalling ``r`` of a line
  of amount ``a`` that earned ``p``, ``floor(p * r / a)`` have been taken back in all.
- **Refunds take from the order's own lot first**, then from the member's other lots
  (oldest-expiring first, frozen ones too), and only then is there a shortfall.
- **Shortfalls.** When a refund takes back more than the member still holds, the
  document decides: ``allow_negative`` lets the balance go below zero (an entry with no
  lot); ``debt`` keeps the balance at zero or more and records the rest as a debt (an
  entry of zero points carrying the debt). Points coming in later (earnings, grants)
  settle the negative part and the debt first.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from siyu.programme.rules import Campaign, CashOff, CheckIn, Expiry, FixedEvent, Programme

# --- earning on orders -------------------------------------------------------------------

ONE = Decimal(1)


class Line(NamedTuple):
    """An order line as earning reads it. Named tuples, not frozen dataclasses, here and
    below: one of each is made per line of every imported order."""

    line_no: int
    sku: str
    category: str
    amount_fen: int


class PaidLine(Protocol):
    """What ``earn_lines`` reads of a line: a ``Line``, or the orders package's own line
    of a new order (taken as it is, without a copy per line)."""

    @property
    def line_no(self) -> int: ...
    @property
    def sku(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def amount_fen(self) -> int: ...


class LineEarning(NamedTuple):
    """What one order line earned: the snapshot a refund reverses from."""

    line_no: int
    amount_fen: int
    points: int


def _local(at: datetime, tz: str) -> datetime:
    """A document time: with an offset it is that instant; without, it is brand-local."""
    return at.replace(tzinfo=ZoneInfo(tz)) if at.tzinfo is None else at


def campaign_applies(
    campaign: Campaign,
    *,
    at: datetime,
    category: str,
    tier: str | None,
    tz: str,
    any_category: bool = False,
) -> bool:
    """Whether a campaign covers a line of ``category`` paid at ``at`` by a member of
    ``tier`` (``any_category``: whatever the line's category)."""
    if not (_local(campaign.starts_at, tz) <= at < _local(campaign.ends_at, tz)):
        return False
    if not any_category and campaign.categories is not None and category not in campaign.categories:
        return False
    return campaign.tiers is None or tier in campaign.tiers


def tier_multiplier(programme: Programme, tier: str | None) -> Decimal:
    if tier is None:
        return Decimal(1)
    try:
        return programme.level(tier).benefits.points_multiplier
    except KeyError:  # a tier the ladder no longer has: no bonus rather than no points
        return Decimal(1)


def _round(value: Decimal, mode: str) -> int:
    return int(
        value.quantize(Decimal(1), rounding=ROUND_HALF_UP if mode == "half_up" else ROUND_DOWN)
    )


def earn_lines(
    programme: Programme,
    lines: Sequence[PaidLine],
    *,
    paid_at: datetime,
    tier: str | None,
    tz: str,
) -> list[LineEarning]:
    """The points each line of a paid order earns (zero for lines that earn nothing)."""
    rules = _earning(programme, tz)
    goods = 0
    for x in lines:
        goods += x.amount_fen
    if goods < rules.minimum_fen:
        return [LineEarning(x.line_no, x.amount_fen, 0) for x in lines]
    # Campaigns running at ``paid_at`` for this tier, once per order (``campaign_applies``
    # on any category, with the campaign's bounds taken once); categories per line.
    running = tuple(
        [
            i
            for i, (c, starts, ends) in enumerate(rules.campaigns)
            if starts <= paid_at < ends and (c.tiers is None or tier in c.tiers)
        ]
    )
    excluded, ratios = rules.excluded, rules.ratios
    up = rules.half_up
    out = []
    for x in lines:
        fen, category = x.amount_fen, x.category
        if category in excluded or fen <= 0:
            out.append(LineEarning(x.line_no, fen, 0))
            continue
        key = (tier, x.sku, category, running)
        ratio = ratios.get(key)
        if ratio is None:
            ratio = ratios[key] = _line_ratio(programme, rules, tier, x.sku, category, running)
        num, den = ratio
        if num <= 0:
            points = 0
        elif up:
            points = (2 * fen * num + 100 * den) // (200 * den)
        else:
            points = (fen * num) // (100 * den)
        out.append(LineEarning(x.line_no, fen, points))
    return out


class _Earning(NamedTuple):
    """A programme's earning rules as lookups (``earn_lines`` runs for every imported
    order): the same decisions, worked out once per programme and brand timezone."""

    programme: Programme
    minimum_fen: int
    half_up: bool
    excluded: Any
    # (campaign, its start, its end) as instants in UTC, in document order
    campaigns: tuple[tuple[Campaign, datetime, datetime], ...]
    # (tier, sku, category, running campaigns) -> the line's multiplier as a fraction
    ratios: dict[tuple[Any, ...], tuple[int, int]]


# Programmes are frozen (validated documents): keyed by their id and the timezone, holding
# the programme itself so that an id is never reused while it is here. Bounded: emptied
# when full (a handful of programme versions live in a process).
_EARNINGS: dict[tuple[int, str], _Earning] = {}
_RATIOS_MAX = 1 << 16


def _earning(programme: Programme, tz: str) -> _Earning:
    key = (id(programme), tz)
    found = _EARNINGS.get(key)
    if found is not None and found.programme is programme:
        if len(found.ratios) > _RATIOS_MAX:
            found.ratios.clear()
        return found
    if len(_EARNINGS) > 64:
        _EARNINGS.clear()
    earn = programme.points.earn
    found = _EARNINGS[key] = _Earning(
        programme,
        int(earn.minimum_order_amount * 100),
        earn.rounding == "half_up",
        earn.excluded_categories,
        tuple(
            (c, _bound(c.starts_at, tz), _bound(c.ends_at, tz)) for c in programme.points.campaigns
        ),
        {},
    )
    return found


def _bound(at: datetime, tz: str) -> datetime:
    """A campaign's start or end as ``campaign_applies`` compares it, in UTC where it can be:
    the same order, compared without asking a zone for its offset at every order."""
    local = _local(at, tz)
    try:
        return local.astimezone(UTC)
    except OverflowError:  # an instant at the edge of the calendar: compared as it is
        return local


def _line_ratio(
    programme: Programme,
    rules: _Earning,
    tier: str | None,
    sku: str,
    category: str,
    running: tuple[int, ...],
) -> tuple[int, int]:
    """tier x item x campaign for a line, as an exact fraction (see ``_points``)."""
    earn = programme.points.earn
    base = earn.per_yuan * tier_multiplier(programme, tier)
    item = earn.sku_multipliers.get(sku, earn.category_multipliers.get(category, ONE))
    campaigns = [rules.campaigns[i][0] for i in running]
    campaign = max(
        (c.multiplier for c in campaigns if c.categories is None or category in c.categories),
        default=ONE,
    )
    return (base * item * campaign).as_integer_ratio()


def _points(fen: int, multiplier: Decimal, half_up: bool) -> int:
    """``fen / 100 x multiplier`` rounded per the document, never below zero: the same as
    ``_round`` on the Decimal product, in integers (exact, and a few times faster; it runs
    for every line of every imported order)."""
    num, den = multiplier.as_integer_ratio()
    if num <= 0 or fen <= 0:
        return 0
    if half_up:
        return (2 * fen * num + 100 * den) // (200 * den)
    return (fen * num) // (100 * den)


# --- expiry and freezing -----------------------------------------------------------------


def _add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def last_day(expiry: Expiry, earned_on: date) -> date | None:
    """The last brand-local day on which points earned on ``earned_on`` can be spent."""
    if expiry.policy == "never":
        return None
    if expiry.policy == "rolling_months":
        assert expiry.months is not None
        return _add_months(earned_on, expiry.months)
    if expiry.policy == "end_of_month_after":
        assert expiry.months is not None
        month = _add_months(earned_on.replace(day=1), expiry.months)
        return month.replace(day=calendar.monthrange(month.year, month.month)[1])
    assert expiry.month is not None and expiry.day is not None
    clearing = date(earned_on.year, expiry.month, expiry.day)
    return clearing if clearing > earned_on else date(earned_on.year + 1, expiry.month, expiry.day)


def day_end(day: date, tz: str) -> datetime:
    """The first instant after a brand-local day (when its points are gone)."""
    return datetime.combine(day + timedelta(days=1), time(), ZoneInfo(tz))


def day_start(day: date, tz: str) -> datetime:
    return datetime.combine(day, time(), ZoneInfo(tz))


def expires_at(expiry: Expiry, earned_at: datetime, tz: str) -> datetime | None:
    last = last_day(expiry, earned_at.astimezone(ZoneInfo(tz)).date())
    return None if last is None else day_end(last, tz)


def expires_on(expires: datetime | None, tz: str) -> date | None:
    """The last day a lot can be spent, from its ``expires_at``."""
    if expires is None:
        return None
    return (expires - timedelta(microseconds=1)).astimezone(ZoneInfo(tz)).date()


# --- allocation, reversal, settlement ------------------------------------------------------


@dataclass
class LotState:
    id: int
    remaining: int
    expires_at: datetime | None


def spend_order(lots: Iterable[LotState]) -> list[LotState]:
    """Lots in the order they are spent: oldest-expiring first, never-expiring last."""
    return sorted(lots, key=_spend_key)


def _spend_key(lot: LotState) -> tuple[bool, float, int]:
    return (lot.expires_at is None, lot.expires_at.timestamp() if lot.expires_at else 0.0, lot.id)


def allocate(lots: Iterable[LotState], points: int) -> list[tuple[int, int]]:
    """``(lot id, points)`` taken for ``points``, oldest-expiring first; may cover less than
    asked when the lots hold less (the caller decides whether that is an error)."""
    taken: list[tuple[int, int]] = []
    left = points
    for lot in spend_order(lots):
        if left <= 0:
            break
        take = min(lot.remaining, left)
        if take > 0:
            taken.append((lot.id, take))
            left -= take
    return taken


def reversal(points: int, amount_fen: int, refunded_before: int, refunded_now: int) -> int:
    """Points to take back for a line when its refunded total goes from ``refunded_before``
    to ``refunded_now`` (cumulative, so parts add up to exactly what the line earned)."""
    if amount_fen <= 0 or points <= 0:
        return 0
    now = min(refunded_now, amount_fen)
    before = min(refunded_before, amount_fen)
    return points * now // amount_fen - points * before // amount_fen


class TakeBack(NamedTuple):
    """What a refund takes: ``(lot id, points)`` out of lots, and the points beyond them."""

    taken: list[tuple[int, int]]
    missing: int


def take_back(
    own: LotState | None, points: int, others: Callable[[], Iterable[LotState]]
) -> TakeBack:
    """Where a refund's ``points`` come from: the order's own lot first, then the member's
    other lots oldest-expiring first (frozen ones too), and only then a shortfall.
    ``others`` is asked for only when the own lot falls short (most refunds end there)."""
    taken = [(own.id, min(own.remaining, points))] if own is not None and own.remaining > 0 else []
    rest = points - sum(n for _, n in taken)
    if rest > 0:
        more = allocate([x for x in others() if own is None or x.id != own.id], rest)
        taken += more
        rest -= sum(n for _, n in more)
    return TakeBack(taken, rest)


@dataclass(frozen=True)
class Settlement:
    """What a new earning of ``points`` first pays: the negative balance (``hole``, no
    entry: the shortfall entry already counted) and the debt (a ``settle`` entry)."""

    hole: int
    debt: int

    @property
    def kept(self) -> int:
        return self.hole + self.debt


_SETTLES_NOTHING = Settlement(0, 0)


def settle(points: int, *, balance: int, debt: int) -> Settlement:
    if balance >= 0 and debt <= 0:  # the usual case: one shared answer, no new object
        return _SETTLES_NOTHING
    hole = min(points, max(0, -balance))
    return Settlement(hole, min(points - hole, max(0, debt)))


@dataclass(frozen=True)
class Shortfall:
    """A reversal's points beyond the lots: ``negative`` lowers the balance below zero,
    ``debt`` is owed instead (per ``negative_balance``)."""

    negative: int
    debt: int


def shortfall(missing: int, policy: str) -> Shortfall:
    if missing <= 0:
        return Shortfall(0, 0)
    return Shortfall(missing, 0) if policy == "allow_negative" else Shortfall(0, missing)


# --- cash off an order, check-in, event limits -------------------------------------------


@dataclass(frozen=True)
class Quote:
    """The most points that can go as cash off an order, and what they are worth."""

    points: int
    cash_fen: int
    max_cash_fen: int
    available: int
    points_per_yuan: int
    step: int


def cash_off(rules: CashOff, *, order_amount_fen: int, available: int) -> Quote:
    """At most ``cap_percent`` of the order, in multiples of ``step`` points, never more
    than the member can spend."""
    cap_fen = int(Decimal(order_amount_fen) * rules.cap_percent / 100)
    by_cap = cap_fen * rules.points_per_yuan // 100
    points = min(by_cap, max(0, available))
    points -= points % rules.step
    return Quote(
        points=points,
        cash_fen=cash_value_fen(rules, points),
        max_cash_fen=cap_fen,
        available=available,
        points_per_yuan=rules.points_per_yuan,
        step=rules.step,
    )


def cash_value_fen(rules: CashOff, points: int) -> int:
    return max(0, points) * 100 // rules.points_per_yuan


def cash_off_value(quote: Quote, points: int) -> int:
    """What ``points`` are worth as cash at the quote's rate."""
    return max(0, points) * 100 // quote.points_per_yuan


@dataclass(frozen=True)
class CheckInAward:
    streak: int
    points: int
    bonus: int


def check_in_award(
    rules: CheckIn, *, previous_streak: int | None, count_so_far: int
) -> CheckInAward:
    """Today's check-in: the streak continues from yesterday's (``previous_streak``, None
    when the member did not check in yesterday) and the bonus of the streak's exact length.
    Past ``per_member_limit`` check-ins a member still checks in but earns nothing."""
    streak = (previous_streak or 0) + 1
    bonus = sum(b.points for b in rules.streak_bonuses if b.days == streak)
    if rules.per_member_limit is not None and count_so_far >= rules.per_member_limit:
        return CheckInAward(streak, 0, 0)
    return CheckInAward(streak, rules.points + bonus, bonus)


def event_allowed(rules: FixedEvent, *, today: int, ever: int) -> bool:
    """Whether one more award fits the event's per-day and per-member limits."""
    if rules.per_day_limit is not None and today >= rules.per_day_limit:
        return False
    return rules.per_member_limit is None or ever < rules.per_member_limit


# --- a ledger in plain data, for the property tests --------------------------------------


@dataclass
class Lot:
    id: int
    points: int
    remaining: int
    expires_at: datetime | None
    order: str | None = None
    lines: dict[int, LineEarning] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    fact: str
    seq: int
    kind: str
    points: int
    debt: int = 0
    lot_id: int | None = None


class InsufficientPoints(Exception):
    def __init__(self, available: int) -> None:
        super().__init__(f"{available} points available")
        self.available = available


@dataclass
class Ledger:
    """One member's lots and entries, driven by the same functions as the service.

    Invariants (checked by the property tests): the balance is the sum of the entries; the
    lots hold ``max(balance, 0)`` (a negative balance means every lot is empty, because
    points coming in settle it first); the debt is the sum of the entries' debt and never
    negative; no lot goes negative; a fact applies once."""

    policy: str = "debt"
    lots: list[Lot] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    refunded: dict[tuple[str, int], int] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)  # facts done, even those that moved nothing

    @property
    def balance(self) -> int:
        return sum(e.points for e in self.entries)

    @property
    def debt(self) -> int:
        return sum(e.debt for e in self.entries)

    def _seen(self, fact: str) -> bool:
        return fact in self.applied

    def _live(self, at: datetime) -> list[LotState]:
        return [
            LotState(x.id, x.remaining, x.expires_at)
            for x in self.lots
            if x.remaining > 0 and (x.expires_at is None or x.expires_at > at)
        ]

    def available(self, at: datetime) -> int:
        return sum(x.remaining for x in self._live(at))

    def earn(
        self,
        fact: str,
        points: int,
        expires: datetime | None,
        *,
        order: str | None = None,
        lines: Mapping[int, LineEarning] | None = None,
    ) -> None:
        if self._seen(fact) or points <= 0:
            return
        self.applied.add(fact)
        s = settle(points, balance=self.balance, debt=self.debt)
        lot = Lot(len(self.lots) + 1, points, points - s.kept, expires, order, dict(lines or {}))
        self.lots.append(lot)
        self.entries.append(Entry(fact, 0, "earn", points, 0, lot.id))
        if s.debt:
            self.entries.append(Entry(fact, 1, "settle", -s.debt, -s.debt, lot.id))

    def spend(self, fact: str, points: int, at: datetime) -> None:
        if self._seen(fact):
            return
        live = self._live(at)
        have = sum(x.remaining for x in live)
        if points > have:
            raise InsufficientPoints(have)
        self.applied.add(fact)
        self._take(fact, "spend", allocate(live, points))

    def _take(self, fact: str, kind: str, taken: list[tuple[int, int]], seq: int = 0) -> int:
        by_id = {x.id: x for x in self.lots}
        for lot_id, n in taken:
            by_id[lot_id].remaining -= n
            self.entries.append(Entry(fact, seq, kind, -n, 0, lot_id))
            seq += 1
        return seq

    def expire(self, at: datetime) -> None:
        for lot in self.lots:
            if lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= at:
                fact = f"expire:{lot.id}"
                self.entries.append(Entry(fact, 0, "expire", -lot.remaining, 0, lot.id))
                lot.remaining = 0

    def refund(self, fact: str, order: str, lines: Mapping[int, int], at: datetime) -> None:
        """Refund ``lines`` (line no -> amount refunded now) of ``order``."""
        if self._seen(fact):
            return
        lot = next((x for x in self.lots if x.order == order), None)
        if lot is None:
            return
        self.applied.add(fact)
        points = 0
        for line_no, amount in lines.items():
            earned = lot.lines[line_no]
            before = self.refunded.get((order, line_no), 0)
            now = min(before + amount, earned.amount_fen)
            self.refunded[(order, line_no)] = now
            points += reversal(earned.points, earned.amount_fen, before, now)
        if points <= 0:
            return
        taken, missing = take_back(
            LotState(lot.id, lot.remaining, lot.expires_at),
            points,
            lambda: [LotState(x.id, x.remaining, x.expires_at) for x in self.lots if x.remaining],
        )
        seq = self._take(fact, "reverse", taken)
        short = shortfall(missing, self.policy)
        if short.negative or short.debt:
            self.entries.append(Entry(fact, seq, "reverse", -short.negative, short.debt))
