"""Programme KPIs (会员经营指标) for any brand-local period, beside the previous period of the
same length and the same period last year.

Every figure is a set-based aggregate computed by the analytics engine (DuckDB, over the
order book and the live database); no order and no member passes through Python. The counted
purchases are members' orders that were not refunded in full, valued at what was paid less
what was refunded (``facts.purchases`` counts the same way). Definitions, with the exact
formulas, are in ``docs/kpis.md``.

Figures that look forward from an event (join conversion: a purchase within 30 days of
joining; 1st → 2nd conversion: a second purchase) count only what happened by the period's
end, so a period and the same period last year are measured alike.

Paid membership figures reuse ``siyu.paid.kpis`` month by month over the period.

Reports are materialized (``kpi_models``): ``report_for`` and ``cohorts_for`` serve the
stored report of a period with the time it was computed, and compute and store it when
there is none (or when asked ``fresh``); the nightly ``insight.kpis`` job stores the
standard periods. ``kpi_report`` and ``cohorts`` always compute. On SQLite the DuckDB part
runs in a child process (``isolation``); the programme and the paid figures, read through
SQLAlchemy, are read here.
"""

from __future__ import annotations

import time as timer
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import ibis
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.db import Database, upsert_insert
from siyu.core.errors import Problem, invalid
from siyu.insight import orderbook
from siyu.insight.engine import Analytics, analytics_file, sql_text
from siyu.insight.facts import EXCLUDED_STATUSES
from siyu.insight.isolation import run_isolated
from siyu.insight.kpi_models import KpiReportRow
from siyu.jobs.service import job
from siyu.members import service as member_service
from siyu.paid import kpis as paid_kpis
from siyu.programme import service as programme_service
from siyu.programme.rules import Programme

JOIN_CONVERSION_DAYS = 30  # a new member "converts" by buying within this many days
MAX_PERIOD_DAYS = 3 * 366
COHORT_MONTHS = 12
REDEEMED_KINDS = ("spend", "cancel")  # a cancelled redemption gives its points back
ISSUED_KINDS = ("earn",)
NO_TIER = "—"  # the tier distribution's key for members without a tier


# --- periods -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Brand-local days ``start`` to ``end``, both included."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> Period:
        """The period of the same length just before this one."""
        return Period(self.start - timedelta(days=self.days), self.start - timedelta(days=1))

    def last_year(self) -> Period:
        """The same dates a year earlier (29 February becomes 28 February)."""
        return Period(_year_back(self.start), _year_back(self.end))

    def bounds(self, tz: str) -> tuple[datetime, datetime]:
        """The UTC instants of the first moment of ``start`` and of the day after ``end``."""
        zone = ZoneInfo(tz)
        return (
            clock.as_utc(datetime.combine(self.start, time(), zone)),
            clock.as_utc(datetime.combine(self.end + timedelta(days=1), time(), zone)),
        )

    def label(self) -> str:
        return f"{self.start:%Y-%m-%d} … {self.end:%Y-%m-%d}"


def _year_back(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28)


def period_of(start: date | None, end: date | None, *, today: date, days: int = 30) -> Period:
    """The period a caller asked for: by default ``days`` days ending today (or ending at
    ``end``). Bad input is refused with what to change."""
    end = end or today
    start = start or end - timedelta(days=days - 1)
    problems: list[Problem] = []
    if start > today:
        problems.append(Problem("from", f"{start} is in the future (today is {today})"))
    elif start > end:
        problems.append(Problem("from", f"{start} is after to {end}; swap them"))
    elif (end - start).days + 1 > MAX_PERIOD_DAYS:
        problems.append(Problem("from", f"a period is at most {MAX_PERIOD_DAYS} days"))
    if end > today:
        problems.append(Problem("to", f"{end} is in the future (today is {today})"))
    if problems:
        raise invalid(problems)
    return Period(start, end)


# --- figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierMove:
    from_code: str
    to_code: str
    members: int
    direction: str  # up | down


@dataclass(frozen=True)
class PaidFigures:
    """Paid membership over the period, from ``siyu.paid.kpis`` month by month: renewals
    summed over the months; members, penetration and the multiple of the last month."""

    months: list[str]
    paid_members: int
    penetration: float
    renewals_due: int
    renewed: int
    renewal_rate: float
    trials_started: int
    trials_converted: int
    fee_revenue_fen: int
    benefit_cost_fen: int
    gmv_multiple: float


@dataclass(frozen=True)
class Figures:
    """The KPIs of one period (see ``docs/kpis.md`` for each formula)."""

    period: Period
    members: int
    new_members: int
    revenue_fen: int
    member_revenue_fen: int
    member_sales_share: float
    new_members_converted: int
    join_conversion: float
    buyers: int
    member_orders: int
    member_order_value_fen: int
    price_per_order_fen: int
    purchase_frequency: float
    repeat_buyers: int
    repurchase_rate: float
    first_buyers: int
    second_buyers: int
    second_purchase_conversion: float
    one_time_buyers: int
    one_time_buyer_share: float
    points_issued: int
    points_redeemed: int
    points_expired: int
    redemption_rate: float
    liability_points_start: int
    liability_points: int
    liability_fen: int
    tier_distribution: dict[str, int]
    tier_moves: list[TierMove]
    tier_upgrades: int
    tier_downgrades: int
    paid: PaidFigures | None = None


@dataclass(frozen=True)
class Change:
    """A figure against a comparison: the difference and the relative change (None when the
    comparison is zero)."""

    value: float
    against: float
    delta: float
    pct: float | None


# The figures the comparison tables show, in order, with their Chinese and English names.
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("members", "会员数", "members"),
    ("new_members", "新会员", "new members"),
    ("revenue_fen", "全部销售额(元)", "all revenue (yuan)"),
    ("member_revenue_fen", "会员销售额(元)", "member revenue (yuan)"),
    ("member_sales_share", "会销比", "member sales share"),
    ("join_conversion", "入会转化率", "join conversion"),
    ("buyers", "购买会员", "member buyers"),
    ("member_orders", "会员订单", "member orders"),
    ("member_order_value_fen", "会员客单价(元)", "member order value (yuan)"),
    ("price_per_order_fen", "笔单价(元)", "price per order (yuan)"),
    ("purchase_frequency", "购买频次", "purchase frequency"),
    ("repurchase_rate", "复购率", "repurchase rate"),
    ("second_purchase_conversion", "首购→复购转化", "1st → 2nd purchase"),
    ("one_time_buyer_share", "一次性购买占比", "one-time buyer share"),
    ("points_issued", "积分发放", "points issued"),
    ("points_redeemed", "积分兑换", "points redeemed"),
    ("points_expired", "积分过期", "points expired"),
    ("redemption_rate", "积分兑换率", "redemption rate"),
    ("liability_points", "未兑积分", "outstanding points"),
    ("liability_fen", "积分负债(元)", "points liability (yuan)"),
    ("tier_upgrades", "升级人次", "tier upgrades"),
    ("tier_downgrades", "降级人次", "tier downgrades"),
)
RATES = frozenset(
    {
        "member_sales_share",
        "join_conversion",
        "repurchase_rate",
        "second_purchase_conversion",
        "one_time_buyer_share",
        "redemption_rate",
    }
)


@dataclass(frozen=True)
class KpiReport:
    current: Figures
    previous: Figures
    last_year: Figures
    computed_at: datetime
    tz: str
    tier_order: list[str] = field(default_factory=list)
    seconds: float = 0.0  # how long the computation took

    def change(self, name: str, against: str = "last_year") -> Change:
        now = float(getattr(self.current, name))
        then = float(getattr(getattr(self, against), name))
        return Change(now, then, now - then, (now - then) / then if then else None)


def _ratio(a: float, b: float, digits: int = 4) -> float:
    return round(a / b, digits) if b else 0.0


def _int(value: object) -> int:
    return int(value or 0)  # type: ignore[call-overload]


# --- the queries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sources:
    """What the periods read, each read once (SQL relations in DuckDB): a report is twelve
    periods (four, each with its previous period and last year), and each figure is one
    pass over one of these that sums every period at once (``_per_period``).

    Everything is read from the order book (``orderbook``), and only while it is held, so
    what the figures need of it is reduced there, one grouping each: the
    periods' orders and the points ledger summed by part (``_part``: what lies between two
    consecutive period bounds is summed once, whatever the periods it is in) and each
    buyer's purchases counted per period. Each buyer's first two purchases and the tier
    history are kept by the book itself, up to date; the figures copy the rows before the
    last period's end, and the counted members."""

    members: str  # counted members: (id, joined_at)
    sales: str  # the periods' orders per part: ("at", revenue, member_revenue, orders, spend)
    buyers: str  # each buyer's counted purchases in each period: (member_id, n0, n1, …)
    firsts: str  # each buyer's first two purchase instants: (member_id, first_at, second_at)
    entries: str  # points per part and kind before the last period's end: ("at", kind, points)
    history: str  # tier changes up to the last period's end, with their next (``next_at``)


def _stamp(at: datetime) -> str:
    """An instant as a DuckDB literal, comparable with the instants read (naive UTC)."""
    return f"TIMESTAMP '{clock.as_utc(at).replace(tzinfo=None).isoformat()}'"


def _keep(engine: Analytics, name: str, query: str | ibis.Table) -> str:
    """Compute ``query`` (SQL or Ibis) once into a DuckDB temporary table, for what is read
    more than once or must outlive the order book's block."""
    sql = query if isinstance(query, str) else engine.backend.compile(query)
    engine.sql(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
    return name


def _relation(engine: Analytics, expr: ibis.Table) -> str:
    return f"({engine.backend.compile(expr)})"


def _cuts(bounds: Iterable[tuple[datetime, datetime]]) -> list[datetime]:
    """Every period's start and end, once each, in time order."""
    return sorted({at for pair in bounds for at in pair})


def _part(column: str, cuts: Sequence[datetime]) -> str:
    """The part of time an instant falls in: how many of the ``cuts`` are at or before
    it (null stays null). For a cut ``c``, ``column < c`` exactly when ``part(column) <
    part(c)``, and ``part(c)`` is its position among the cuts plus one (``_at_part``), so
    a figure's filters written against the bounds hold unchanged over parts: rows summed
    per part (a few dozen groups) answer every period, instead of each row being tested
    against each period's bounds."""
    whens = " ".join(f"WHEN {column} < {_stamp(at)} THEN {i}" for i, at in enumerate(cuts))
    return f"CASE WHEN {column} IS NULL THEN NULL {whens} ELSE {len(cuts)} END"


def _at_part(cuts: Sequence[datetime]) -> Callable[[datetime], str]:
    """A bound written as its part (see ``_part``), for ``_per_period`` over parts."""
    position = {at: i + 1 for i, at in enumerate(cuts)}
    return lambda at: str(position[at])


def _sources(
    engine: Analytics, periods: Sequence[Period], tz: str, book: orderbook.Book
) -> _Sources:
    bounds = [p.bounds(tz) for p in periods]
    first, last = min(b[0] for b in bounds), max(b[1] for b in bounds)
    orders = _relation(engine, book.orders)
    # the periods' orders: within the span (which the book's zone maps skip to), and
    # within a period (the span of a year's comparisons has months in none)
    cover = " OR ".join(
        f"paid_at >= {_stamp(start)} AND paid_at < {_stamp(end)}" for start, end in _cover(bounds)
    )
    in_periods = (
        f"{orders} AS o WHERE paid_at >= {_stamp(first)} AND paid_at < {_stamp(last)} AND ({cover})"
    )
    cuts = _cuts(bounds)
    sales = _keep(
        engine,
        "kpi_sales",
        f'SELECT {_part("paid_at", cuts)} AS "at", sum(net_fen) AS revenue, '
        "sum(net_fen) FILTER (WHERE member_id IS NOT NULL) AS member_revenue, "
        "count(*) FILTER (WHERE counted) AS orders, "
        f"sum(net_fen) FILTER (WHERE counted) AS spend FROM {in_periods} GROUP BY 1",
    )
    # one grouping of the periods' purchases by buyer, counting each period's at once
    counts = ", ".join(
        f"count(*) FILTER (WHERE paid_at >= {_stamp(s)} AND paid_at < {_stamp(e)}) AS n{i}"
        for i, (s, e) in enumerate(bounds)
    )
    buyers = _keep(
        engine,
        "kpi_buyers",
        f"SELECT member_id, {counts} FROM {in_periods} AND counted GROUP BY member_id",
    )
    members = _keep(engine, "kpi_members", _counted_members(book.members))
    before = f"< {_stamp(last)}"
    at_part = _part('"at"', cuts)
    return _Sources(
        members=members,
        sales=sales,
        buyers=buyers,
        # (a first purchase after the last period's end is in no period, and a second one
        # after it counts in none)
        firsts=_keep(
            engine,
            "kpi_firsts",
            f"SELECT member_id, first_at, second_at FROM {_relation(engine, book.firsts)} "
            f"AS f WHERE first_at {before}",
        ),
        entries=_keep(
            engine,
            "kpi_entries",
            f'SELECT {at_part} AS "at", kind, sum(points) AS points '
            f'FROM {_relation(engine, book.points)} AS p WHERE "at" {before} GROUP BY ALL',
        ),
        history=_keep(
            engine,
            "kpi_tier_history",
            'SELECT id, member_id, "at", from_code, to_code, next_at FROM '
            f'{_relation(engine, book.tiers)} AS h WHERE "at" {before}',
        ),
    )


def _counted_members(members: ibis.Table) -> ibis.Table:
    """The members the figures count (``(id, joined_at)``), of the book's members."""
    return members.filter(~members.status.isin(EXCLUDED_STATUSES)).select("id", "joined_at")


def _cover(bounds: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """The fewest disjoint intervals that cover the periods (overlapping or adjacent ones
    merged), in time order."""
    out: list[tuple[datetime, datetime]] = []
    for start, end in sorted(bounds):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _per_period(
    engine: Analytics,
    source: str,
    bounds: Sequence[tuple[datetime, datetime]],
    figures: dict[str, str],
    *,
    stamp: Callable[[datetime], str] = _stamp,
) -> list[dict[str, int]]:
    """Each period's figures in one pass over ``source`` (SQL): ``figures`` maps a name to
    an aggregate in which ``{start}`` and ``{end}`` stand for a period's bounds (written
    by ``stamp``: instants, or parts for a source summed by part, ``_at_part``) and ``{i}``
    for its number, so a row is read once for all the periods instead of being joined to
    each period it falls in."""
    return _per_period_by(engine, source, bounds, figures, stamp=stamp)[()]  # one row


def _per_period_by(
    engine: Analytics,
    source: str,
    bounds: Sequence[tuple[datetime, datetime]],
    figures: dict[str, str],
    keys: Sequence[str] = (),
    *,
    stamp: Callable[[datetime], str] = _stamp,
) -> dict[tuple[Any, ...], list[dict[str, int]]]:
    """``_per_period`` for each group of ``keys`` (columns of ``source``)."""
    columns = [
        f"{aggregate.format(start=stamp(start), end=stamp(end), i=i)} AS {name}_{i}"
        for i, (start, end) in enumerate(bounds)
        for name, aggregate in figures.items()
    ]
    grouped = f" GROUP BY {', '.join(keys)}" if keys else ""
    cursor = engine.sql(f"SELECT {', '.join([*keys, *columns])} FROM {source}{grouped}")
    names = [d[0] for d in cursor.description]
    out: dict[tuple[Any, ...], list[dict[str, int]]] = {}
    for row in cursor.fetchall():
        values = dict(zip(names, row, strict=True))
        out[row[: len(keys)]] = [
            {name: _int(values[f"{name}_{i}"]) for name in figures} for i in range(len(bounds))
        ]
    return out


def _during(column: str) -> str:
    """``column`` within a period, its bounds left to ``_per_period``."""
    return f"{column} >= {{start}} AND {column} < {{end}}"


def _kinds(kinds: Iterable[str]) -> str:
    return f"({', '.join(sql_text(k) for k in kinds)})"


def _all_figures(
    engine: Analytics,
    periods: Sequence[Period],
    *,
    tz: str,
    programme: Programme,
    sources: _Sources,
) -> list[Figures]:
    """Every period's figures but the paid ones (read through SQLAlchemy by the caller):
    each group of figures is one pass over one source that sums every period at once, not
    one query per period: a nightly computation is twelve periods."""
    bounds = [p.bounds(tz) for p in periods]
    first, last = _stamp(min(b[0] for b in bounds)), _stamp(max(b[1] for b in bounds))
    m = _per_period(
        engine,
        sources.members,
        bounds,
        {
            # members at the end: joined before it
            "members": "count(*) FILTER (WHERE joined_at < {end})",
            "new_members": f"count(*) FILTER (WHERE {_during('joined_at')})",
        },
    )
    # Join conversion: new members of the period whose first purchase came within 30 days
    # of joining, and before the period's end.
    conv = _per_period(
        engine,
        f"{sources.members} AS m JOIN {sources.firsts} AS f ON f.member_id = m.id "
        f"WHERE joined_at >= {first} AND joined_at < {last}",
        bounds,
        {
            "converted": f"count(*) FILTER (WHERE {_during('joined_at')} "
            "AND first_at < {end} AND epoch(first_at) - epoch(joined_at) "
            f"<= {JOIN_CONVERSION_DAYS * 86_400})"
        },
    )
    parts = _at_part(_cuts(bounds))
    at_in = _during('"at"')
    revenue = _per_period(
        engine,
        sources.sales,
        bounds,
        {
            name: f"sum({name}) FILTER (WHERE {at_in})"
            for name in ("revenue", "member_revenue", "orders", "spend")
        },
        stamp=parts,
    )
    # buyers of each period (a counted purchase in it), and those with two or more
    b = _per_period(
        engine,
        sources.buyers,
        bounds,
        {
            "buyers": "count(*) FILTER (WHERE n{i} >= 1)",
            "repeat": "count(*) FILTER (WHERE n{i} >= 2)",
        },
    )
    # members whose first purchase was in the period, and of them those whose second
    # came before its end
    f = _per_period(
        engine,
        f"{sources.firsts} WHERE first_at >= {first} AND first_at < {last}",
        bounds,
        {
            "first_buyers": f"count(*) FILTER (WHERE {_during('first_at')})",
            "second": f"count(*) FILTER (WHERE {_during('first_at')} AND second_at < {{end}})",
        },
    )
    p = _per_period(
        engine,
        sources.entries,
        bounds,
        {
            "issued": f"sum(points) FILTER (WHERE {at_in} AND kind IN {_kinds(ISSUED_KINDS)})",
            "redeemed": f"sum(points) FILTER (WHERE {at_in} AND kind IN {_kinds(REDEEMED_KINDS)})",
            "expired": f"sum(points) FILTER (WHERE {at_in} AND kind = 'expire')",
            "liability_start": 'sum(points) FILTER (WHERE "at" < {start})',
            "liability": 'sum(points) FILTER (WHERE "at" < {end})',
        },
        stamp=parts,
    )

    tiers = _tiers(
        engine,
        sources,
        programme,
        bounds=bounds,
        members=[mi["members"] for mi in m],
    )
    cash_rate = programme.points.cash_off.points_per_yuan if programme.points.cash_off else 100
    out: list[Figures] = []
    for i, period in enumerate(periods):
        mi, ri, bi, fi, pi = m[i], revenue[i], b[i], f[i], p[i]
        distribution, moves = tiers[i]
        member_revenue = ri["member_revenue"]
        all_revenue = ri["revenue"]
        buyers = bi["buyers"]
        member_orders = ri["orders"]
        spend = ri["spend"]
        new_members = mi["new_members"]
        new_members_converted = conv[i]["converted"]
        issued = pi["issued"]
        redeemed = -pi["redeemed"]
        liability = pi["liability"]
        first_buyers = fi["first_buyers"]
        second = fi["second"]
        repeat = bi["repeat"]
        out.append(
            Figures(
                period=period,
                members=mi["members"],
                new_members=new_members,
                revenue_fen=all_revenue,
                member_revenue_fen=member_revenue,
                member_sales_share=_ratio(member_revenue, all_revenue),
                new_members_converted=new_members_converted,
                join_conversion=_ratio(new_members_converted, new_members),
                buyers=buyers,
                member_orders=member_orders,
                member_order_value_fen=spend // buyers if buyers else 0,
                price_per_order_fen=spend // member_orders if member_orders else 0,
                purchase_frequency=_ratio(member_orders, buyers, 3),
                repeat_buyers=repeat,
                repurchase_rate=_ratio(repeat, buyers),
                first_buyers=first_buyers,
                second_buyers=second,
                second_purchase_conversion=_ratio(second, first_buyers),
                one_time_buyers=first_buyers - second,
                one_time_buyer_share=_ratio(first_buyers - second, first_buyers),
                points_issued=issued,
                points_redeemed=redeemed,
                points_expired=-pi["expired"],
                redemption_rate=_ratio(redeemed, issued),
                liability_points_start=pi["liability_start"],
                liability_points=liability,
                liability_fen=liability * 100 // int(cash_rate),
                tier_distribution=distribution,
                tier_moves=moves,
                tier_upgrades=sum(x.members for x in moves if x.direction == "up"),
                tier_downgrades=sum(x.members for x in moves if x.direction == "down"),
            )
        )
    return out


def _tiers(
    engine: Analytics,
    sources: _Sources,
    programme: Programme,
    *,
    bounds: Sequence[tuple[datetime, datetime]],
    members: Sequence[int],
) -> list[tuple[dict[str, int], list[TierMove]]]:
    """Per period: members by tier at its end (each counted member's last tier change
    before it) and the moves between tiers during it, upgrades and downgrades by the
    ladder. ``members``: each period's members at the end; those without a tier (no
    change before the end) are the rest, so only members with a tier history are read."""
    # A change is a member's tier at a period's end when it came before the end and the
    # member's next change (by time, then id: the book's ``next_at``) did not; counted for
    # members at the end. Empty codes are left out with the members who have none.
    placed = _per_period_by(
        engine,
        f"""{sources.history} AS h
        JOIN {sources.members} AS m ON m.id = h.member_id
        WHERE to_code <> ''""",
        bounds,
        {
            "n": 'count(*) FILTER (WHERE "at" < {end} AND (next_at IS NULL OR next_at >= {end}) '
            "AND joined_at < {end})"
        },
        ["to_code"],
    )
    counts = [
        {code: n[i]["n"] for (code,), n in placed.items() if n[i]["n"]} for i in range(len(bounds))
    ]
    moved = _per_period_by(
        engine,
        f"{sources.history} WHERE from_code IS NOT NULL",
        bounds,
        {"n": "count(*) FILTER (WHERE " + _during('"at"') + ")"},
        ["from_code", "to_code"],
    )
    order = [level.code for level in programme.tiers.levels]
    rank = {code: i for i, code in enumerate(order)}
    out: list[tuple[dict[str, int], list[TierMove]]] = []
    for i in range(len(bounds)):
        found = dict(counts[i])
        distribution = {code: found.pop(code, 0) for code in order}
        distribution.update(sorted(found.items()))  # codes no longer on the ladder
        without = members[i] - sum(counts[i].values())
        if without:
            distribution[NO_TIER] = without
        moves = [
            TierMove(
                from_code,
                to_code,
                n[i]["n"],
                "up" if rank.get(to_code, -1) > rank.get(from_code, -1) else "down",
            )
            for (from_code, to_code), n in moved.items()
            if n[i]["n"] and from_code != to_code
        ]
        moves.sort(
            key=lambda x: (
                rank.get(x.from_code, 99),
                rank.get(x.to_code, 99),
                x.from_code,
                x.to_code or "",
            )
        )
        out.append((distribution, moves))
    return out


def _months(period: Period) -> list[date]:
    first = period.start.replace(day=1)
    out: list[date] = []
    while first <= period.end:
        out.append(first)
        first = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return out


def _paid_months(periods: Iterable[Period], tz: str, now: datetime) -> list[date]:
    """The months the periods touch that have begun by ``now``."""
    touched = {month for period in periods for month in _months(period)}
    return sorted(m for m in touched if paid_kpis.month_bounds(m, tz)[0] <= now)


def _paid(period: Period, of_month: dict[date, paid_kpis.PaidKpis]) -> PaidFigures | None:
    """Paid membership over the months the period touches (``siyu.paid.kpis``, every month
    of a computation read at once: ``_paid_months``)."""
    months = [of_month[m] for m in _months(period) if m in of_month]
    if not months:
        return None
    due = sum(k.renewals_due for k in months)
    renewed = sum(k.renewed for k in months)
    last = months[-1]
    return PaidFigures(
        months=[k.month for k in months],
        paid_members=last.paid_members,
        penetration=last.penetration,
        renewals_due=due,
        renewed=renewed,
        renewal_rate=_ratio(renewed, due),
        trials_started=sum(k.trials_started for k in months),
        trials_converted=sum(k.trials_converted for k in months),
        fee_revenue_fen=sum(k.fee_revenue_fen for k in months),
        benefit_cost_fen=sum(k.benefit_cost_fen for k in months),
        gmv_multiple=last.gmv_multiple,
    )


@dataclass(frozen=True)
class _FiguresJob:
    """What the DuckDB part of reports needs, picklable for the child process (SQLite);
    with ``cohorts``, the cohort table's counts too, from the same read of the orders;
    ``paid_months``: the months the paid figures cover, whose members' orders are summed
    from the book too (``_members_orders``)."""

    periods: tuple[Period, ...]
    tz: str
    programme: Programme
    book: orderbook.Place
    cohorts: _CohortJob | None = None
    paid_months: tuple[date, ...] = ()


@dataclass(frozen=True)
class _Computed:
    figures: list[Figures]  # paid aside
    cohorts: _CohortCounts | None
    members_orders: dict[date, tuple[int, int]]  # of ``paid_months``: net GMV, orders


def _members_orders(
    engine: Analytics, orders: ibis.Table, months: Sequence[date], tz: str
) -> dict[date, tuple[int, int]]:
    """Each month's members' orders out of the book, as ``paid.kpis.kpis_of_months`` sums
    them from the live ``paid_at`` index (every order with a member paid in the month: net
    GMV and count), one grouping for all the months."""
    if not months:
        return {}
    bounds = [paid_kpis.month_bounds(m, tz) for m in months]
    which = " ".join(
        f"WHEN paid_at >= {_stamp(start)} AND paid_at < {_stamp(end)} THEN {i}"
        for i, (start, end) in enumerate(bounds)
    )
    rows = engine.sql(
        f"SELECT idx, sum(net_fen), count(*) FROM (SELECT CASE {which} END AS idx, net_fen "
        f"FROM {_relation(engine, orders)} AS o WHERE member_id IS NOT NULL "
        f"AND paid_at >= {_stamp(bounds[0][0])} AND paid_at < {_stamp(bounds[-1][1])}) AS o "
        "WHERE idx IS NOT NULL GROUP BY idx"
    ).fetchall()
    found = {int(idx): (int(gmv or 0), int(n)) for idx, gmv, n in rows}
    return {m: found.get(i, (0, 0)) for i, m in enumerate(months)}


def _figures_of(engine: Analytics, work: _FiguresJob) -> _Computed:
    """Every period's figures (paid aside), over one read of the sources."""
    with orderbook.book(engine, work.book) as held:
        sources = _sources(engine, work.periods, work.tz, held)
        counts = (
            _cohort_counts(engine, work.cohorts, held, sources.members) if work.cohorts else None
        )
        members_orders = _members_orders(engine, held.orders, work.paid_months, work.tz)
    figures = _all_figures(
        engine, work.periods, tz=work.tz, programme=work.programme, sources=sources
    )
    return _Computed(figures, counts, members_orders)


def _compute(
    db: Database, periods: Sequence[Period], *, tz: str, cohort_months: int | None = None
) -> tuple[list[KpiReport], CohortTable | None]:
    """Reports of ``periods`` (and, with ``cohort_months``, the cohort table), in one
    DuckDB computation; the paid figures are read through SQLAlchemy, here, after it."""
    began = timer.perf_counter()
    now = clock.now()
    triples = [(p, p.previous(), p.last_year()) for p in periods]
    flat = tuple(p for triple in triples for p in triple)
    book = orderbook.Place(analytics_file(db, "orders"), now)
    cohort_job = _cohort_job(tz, cohort_months, book) if cohort_months else None
    with db.unit_of_work() as session:
        programme = programme_service.programme_at(session, now)
    months = _paid_months(flat, tz, now) if programme.paid else []
    # Not while the DuckDB work runs: on SQLite that work's child process reads the live
    # file with DuckDB's own SQLite, and a query of the application's SQLite running at
    # the same time once died of SIGBUS (its shared-memory index unmapped under it).
    work = _FiguresJob(flat, tz, programme, book, cohort_job, tuple(months))
    computed = run_isolated(db, _figures_of, work)
    with db.unit_of_work() as session:
        of_month = (
            paid_kpis.kpis_of_months(session, months, tz=tz, members_orders=computed.members_orders)
            if months
            else {}
        )
    paid = [_paid(p, of_month) if programme.paid else None for p in flat]
    figures = [replace(f, paid=x) for f, x in zip(computed.figures, paid, strict=True)]
    seconds = round(timer.perf_counter() - began, 3)
    reports = [
        KpiReport(
            current=figures[3 * i],
            previous=figures[3 * i + 1],
            last_year=figures[3 * i + 2],
            computed_at=now,
            tz=tz,
            tier_order=[level.code for level in programme.tiers.levels],
            seconds=seconds,
        )
        for i in range(len(periods))
    ]
    table = None
    if cohort_job is not None and computed.cohorts is not None:
        table = CohortTable(_cohort_rows(cohort_job, computed.cohorts), now, seconds)
    return reports, table


def kpi_reports(db: Database, periods: Sequence[Period], *, tz: str) -> list[KpiReport]:
    """Each period's KPIs beside its previous period and the same period last year,
    computed together (one read of the sources, one DuckDB process)."""
    return _compute(db, periods, tz=tz)[0]


def kpi_report(db: Database, period: Period, *, tz: str) -> KpiReport:
    """The period's KPIs beside the previous period and the same period last year,
    computed now (``report_for`` serves the stored report when there is one)."""
    return kpi_reports(db, [period], tz=tz)[0]


# --- cohorts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    """Members who joined in one brand-local month, and the share of them who bought in each
    month since (0: the join month). Months not yet reached are None."""

    month: str
    members: int
    buyers: list[int]
    retention: list[float | None]


@dataclass(frozen=True)
class _CohortJob:
    offset: int  # the zone's UTC offset now, seconds
    since_at: datetime  # the first moment of the first join month
    now: datetime
    book: orderbook.Place
    first_index: int  # the first join month, counted from year 0
    this_index: int  # the current month
    months: int


# members per join month; buyers per (join month, months since joining)
_CohortCounts = tuple[dict[int, int], dict[tuple[int, int], int]]


def _cohort_job(tz: str, months: int, book: orderbook.Place) -> _CohortJob:
    if not 1 <= months <= 36:
        raise invalid([Problem("months", "between 1 and 36")])
    now = book.now
    today = clock.local_date(now, tz)
    offset = int(now.astimezone(ZoneInfo(tz)).utcoffset().total_seconds())  # type: ignore[union-attr]
    this_index = today.year * 12 + today.month - 1
    first_index = this_index - months + 1
    first_month = date(first_index // 12, first_index % 12 + 1, 1)
    since_at = clock.as_utc(datetime.combine(first_month, time(), ZoneInfo(tz)))
    return _CohortJob(offset, since_at, now, book, first_index, this_index, months)


def _cohort_counts(
    engine: Analytics, work: _CohortJob, held: orderbook.Book, members: str | None = None
) -> _CohortCounts:
    """Members per join month, and buyers per (join month, months since joining); months
    are counted from year 0 (``year * 12 + month - 1``). ``held``: the order book, held;
    ``members``: the counted members ``(id, joined_at)`` when the caller has read them.

    One grouping of the window's purchases by member gives the months each bought in, as
    bits (bit k: the k-th month of the window), instead of a distinct (member, month) set."""

    def month_index(column: str) -> str:
        local = f"({column} + to_seconds({work.offset}))"
        return f"(year({local}) * 12 + month({local}) - 1)"

    if members is None:
        members = _relation(engine, _counted_members(held.members))
    since, now = _stamp(work.since_at), _stamp(work.now)
    first = work.first_index
    bought_in = ", ".join(
        f"count(*) FILTER (WHERE (b.months & {1 << k}) <> 0) AS m{k}"
        for k in range(work.this_index - first + 1)
    )
    orders = _relation(engine, held.orders)
    rows = engine.sql(
        f"""
        WITH joined AS (
            SELECT id, {month_index("joined_at")} AS cohort FROM {members} AS m
            WHERE joined_at >= {since} AND joined_at <= {now}
        ), bought AS (
            SELECT member_id, bit_or(
                -- a month before the window's first (the zone's offset changed since)
                -- counts in no cell
                CASE WHEN month >= {first} THEN CAST(1 AS BIGINT) << (month - {first}) END
            ) AS months
            FROM (
                SELECT o.member_id, {month_index("o.paid_at")} AS month
                FROM {orders} AS o JOIN joined AS j ON o.member_id = j.id
                WHERE o.counted AND o.paid_at >= {since} AND o.paid_at <= {now}
            ) AS p
            GROUP BY member_id
        )
        SELECT j.cohort, count(*) AS members, {bought_in}
        FROM joined AS j LEFT JOIN bought AS b ON b.member_id = j.id GROUP BY j.cohort
        """
    ).fetchall()
    size_rows = {int(cohort): int(size) for cohort, size, *_ in rows}
    buyer_rows = {
        (int(cohort), first + k - int(cohort)): int(n)
        for cohort, _, *bought in rows
        for k, n in enumerate(bought)
        if n
    }
    return size_rows, buyer_rows


def _cohorts_of(engine: Analytics, work: _CohortJob) -> _CohortCounts:
    with orderbook.book(engine, work.book) as held:
        return _cohort_counts(engine, work, held)


def _cohort_rows(work: _CohortJob, counts: _CohortCounts) -> list[Cohort]:
    size_rows, buyer_rows = counts
    out: list[Cohort] = []
    for index in range(work.first_index, work.this_index + 1):
        size = size_rows.get(index, 0)
        reached = work.this_index - index + 1
        buyers = [buyer_rows.get((index, k), 0) for k in range(reached)]
        out.append(
            Cohort(
                month=f"{index // 12:04d}-{index % 12 + 1:02d}",
                members=size,
                buyers=buyers,
                retention=[_ratio(n, size) if size else None for n in buyers]
                + [None] * (work.months - reached),
            )
        )
    return out


def cohorts(db: Database, *, tz: str, months: int = COHORT_MONTHS) -> list[Cohort]:
    """The cohort retention table: the last ``months`` join months × months since joining.

    Months are brand-local at the zone's current UTC offset (exact for zones without
    daylight saving, such as China's)."""
    now = clock.now()
    work = _cohort_job(tz, months, orderbook.Place(analytics_file(db, "orders"), now))
    return _cohort_rows(work, run_isolated(db, _cohorts_of, work))


def show(name: str, value: float) -> str:
    """A figure for people: rates in percent, fen as yuan, counts with separators."""
    if name in RATES:
        return f"{value * 100:.1f}%"
    if name.endswith("_fen"):
        return f"{value / 100:,.2f}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def figures_rows(report: KpiReport) -> Iterable[tuple[str, str, str, Change, Change]]:
    """(name, 中文, English, against the previous period, against last year) for tables."""
    for name, zh, en in HEADLINE:
        yield name, zh, en, report.change(name, "previous"), report.change(name, "last_year")


# --- materialized reports ------------------------------------------------------------------

PERIOD_KIND = "period"
COHORTS_KIND = "cohorts"


def _plain(value: Any) -> Any:
    """A report's value as JSON: dates and instants as ISO text, the rest as is."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def report_as_json(report: KpiReport) -> dict[str, Any]:
    """A report as JSON-ready data (what ``insight_kpi_reports.report`` holds)."""
    return _plain(asdict(report))  # type: ignore[no-any-return]


def _figures_of_json(data: dict[str, Any]) -> Figures:
    values = dict(data)
    values["period"] = Period(
        date.fromisoformat(data["period"]["start"]), date.fromisoformat(data["period"]["end"])
    )
    values["tier_moves"] = [TierMove(**m) for m in data["tier_moves"]]
    values["paid"] = PaidFigures(**data["paid"]) if data.get("paid") else None
    return Figures(**values)


def report_of_json(data: dict[str, Any]) -> KpiReport:
    """The report that ``report_as_json`` wrote, equal to the one it was written from."""
    return KpiReport(
        current=_figures_of_json(data["current"]),
        previous=_figures_of_json(data["previous"]),
        last_year=_figures_of_json(data["last_year"]),
        computed_at=clock.as_utc(datetime.fromisoformat(data["computed_at"])),
        tz=data["tz"],
        tier_order=list(data["tier_order"]),
        seconds=float(data.get("seconds", 0.0)),
    )


def _store(
    session: Session,
    *,
    kind: str,
    start: date,
    end: date,
    tz: str,
    report: dict[str, Any],
    computed_at: datetime,
    seconds: float,
) -> None:
    """Keep a report, replacing the one of the same key (two requests computing the same
    period at once both succeed; the later one stays)."""
    table = KpiReportRow.__table__
    stmt = upsert_insert(session, table).values(
        kind=kind,
        period_start=start,
        period_end=end,
        timezone=tz,
        report=report,
        computed_at=computed_at,
        seconds=seconds,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind", "period_start", "period_end", "timezone"],
        set_={c: stmt.excluded[c] for c in ("report", "computed_at", "seconds")},
    )
    session.execute(stmt)


def _stored(session: Session, *, kind: str, start: date, end: date, tz: str) -> KpiReportRow | None:
    return session.scalar(
        select(KpiReportRow).where(
            KpiReportRow.kind == kind,
            KpiReportRow.period_start == start,
            KpiReportRow.period_end == end,
            KpiReportRow.timezone == tz,
        )
    )


def store_reports(db: Database, reports: Sequence[KpiReport]) -> None:
    """Keep computed reports in ``insight_kpi_reports``, one transaction."""
    with db.unit_of_work() as session:
        for report in reports:
            period = report.current.period
            _store(
                session,
                kind=PERIOD_KIND,
                start=period.start,
                end=period.end,
                tz=report.tz,
                report=report_as_json(report),
                computed_at=report.computed_at,
                seconds=report.seconds,
            )


def stored_report(db: Database, period: Period, *, tz: str) -> KpiReport | None:
    """The stored report of exactly this period in this zone, if one was computed."""
    with db.unit_of_work() as session:
        row = _stored(session, kind=PERIOD_KIND, start=period.start, end=period.end, tz=tz)
        return report_of_json(row.report) if row is not None else None


def report_for(db: Database, period: Period, *, tz: str, fresh: bool = False) -> KpiReport:
    """The period's report: the stored one (its ``computed_at`` says when), or computed and
    stored now when there is none or ``fresh`` is asked."""
    if not fresh:
        found = stored_report(db, period, tz=tz)
        if found is not None:
            return found
    report = kpi_report(db, period, tz=tz)
    store_reports(db, [report])
    return report


@dataclass(frozen=True)
class CohortTable:
    """A cohort retention table with the time it was computed."""

    cohorts: list[Cohort]
    computed_at: datetime
    seconds: float


def _cohort_key(tz: str, months: int) -> tuple[date, date]:
    """The first join month's first day and the current month's last day: a table is kept
    per window of join months, replaced each time it is recomputed within its month."""
    today = clock.local_date(clock.now(), tz)
    index = today.year * 12 + today.month - 1 - months + 1
    first = date(index // 12, index % 12 + 1, 1)
    month_end = date(today.year + today.month // 12, today.month % 12 + 1, 1) - timedelta(days=1)
    return first, month_end


def cohorts_for(
    db: Database, *, tz: str, months: int = COHORT_MONTHS, fresh: bool = False
) -> CohortTable:
    """The cohort table of the current window of join months: stored, or computed and
    stored now (as ``report_for``)."""
    if not 1 <= months <= 36:
        raise invalid([Problem("months", "between 1 and 36")])
    start, end = _cohort_key(tz, months)
    if not fresh:
        with db.unit_of_work() as session:
            row = _stored(session, kind=COHORTS_KIND, start=start, end=end, tz=tz)
            if row is not None:
                return CohortTable(
                    [Cohort(**c) for c in row.report["cohorts"]],
                    clock.as_utc(row.computed_at),
                    row.seconds,
                )
    began = timer.perf_counter()
    now = clock.now()
    table = CohortTable(
        cohorts(db, tz=tz, months=months), now, round(timer.perf_counter() - began, 3)
    )
    store_cohorts(db, table, tz=tz, months=months)
    return table


def store_cohorts(db: Database, table: CohortTable, *, tz: str, months: int) -> None:
    """Keep a cohort table as the current window's (``cohorts_for`` serves it)."""
    start, end = _cohort_key(tz, months)
    with db.unit_of_work() as session:
        _store(
            session,
            kind=COHORTS_KIND,
            start=start,
            end=end,
            tz=tz,
            report={"cohorts": [asdict(c) for c in table.cohorts]},
            computed_at=table.computed_at,
            seconds=table.seconds,
        )


def standard_periods(day: date) -> list[Period]:
    """What the nightly job stores for the night of ``day``: the last 7, 30 and 90 days
    ending the day before, and the last full month."""
    yesterday = day - timedelta(days=1)
    month_end = day.replace(day=1) - timedelta(days=1)
    return [
        *(Period(yesterday - timedelta(days=n - 1), yesterday) for n in (7, 30, 90)),
        Period(month_end.replace(day=1), month_end),
    ]


@job("insight.kpis", "KPIs: the standard periods and the cohort table, stored", order=65)
def kpis_job(db: Database, day: date) -> dict[str, Any]:
    """After the insight refresh: recompute and store the standard periods' reports (one
    computation) and the cohort table, so the API and the console answer from them."""
    from siyu.core.settings import get_settings

    tz = get_settings().timezone
    with db.unit_of_work() as session:
        day_end = datetime.combine(day + timedelta(days=1), time(), ZoneInfo(tz))
        programme = programme_service.in_force(session, min(day_end, clock.now()))
    if programme is None:
        # Nothing to measure against yet (the tier distribution needs a ladder): a brand
        # that has not applied its programme is not a failing job.
        return {"skipped": "no programme in force; apply one with `siyu programme apply`"}
    with db.unit_of_work() as session:
        # the order book's members follow the member changes (a job may write: a request
        # computing a report may not, and the book then reads the members whole)
        member_service.ensure_changes_state(session)
    reports, table = _compute(db, standard_periods(day), tz=tz, cohort_months=COHORT_MONTHS)
    assert table is not None
    store_reports(db, reports)
    store_cohorts(db, table, tz=tz, months=COHORT_MONTHS)
    return {
        "periods": [r.current.period.label() for r in reports],
        "cohort_months": len(table.cohorts),
        "seconds": reports[0].seconds if reports else 0.0,
    }
