"""Paid membership KPIs for a brand-local month: penetration, trial conversion, renewal rate,
churn, benefit usage, paid vs free members' GMV and frequency (the multiple), fee revenue,
benefit cost and ROI per card.

Every figure is one aggregate statement over the whole brand and over every month asked
for at once (``kpis_of_months``); no member is loaded into Python, so the report costs the
same few queries at 300 members or 20 million, for one month or a year of them.

Subscriptions change state in place, so "held a card at an instant" is read from what does
not change: a paid period (a purchase or renewal payment covers ``[period_start,
period_end)``), a trial (from ``trial_started_at`` until it turned paid or ended), and grace
(between the last period's end and ``ended_at`` / ``grace_until``).

Card coupons are known exactly: the card's packs are issued with the card's own periods
(``sub:<id>:<n>`` each month, ``sub:<id>:renewal:<payment>`` for a renewal gift), which no
tier or manual pack uses, even when the plan names the same pack as a tier. Issued counts
the coupons those pack issues gave in the month (``pack_issues.coupons``); used counts
those of them used so far (a cohort, so the rate is never above 1).

Benefit cost is what the card gave away in the month: its coupons used (their recorded
discount) plus the savings ledger (member price and extra points at the cash rate, less
what refunds took back). Fee revenue against it is the ROI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    CTE,
    Integer,
    Select,
    Subquery,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from siyu.benefits.models import BenefitPack, Coupon, PackIssue
from siyu.core import clock
from siyu.core.db import UTCDateTime
from siyu.members.models import Member
from siyu.orders.models import Order
from siyu.paid import savings
from siyu.paid.models import Payment, Saving, Subscription

PAID_KINDS = ("purchase", "renewal")


@dataclass(frozen=True)
class PaidKpis:
    month: str  # YYYY-MM, brand-local
    at: datetime  # the instant "holding a card" is read at: month end, or now if sooner
    active_members: int
    paid_members: int
    penetration: float
    trials_started: int
    trials_converted: int
    trial_conversion: float
    renewals_due: int
    renewed: int
    renewal_rate: float
    churned: int
    churn_rate: float
    card_coupons_issued: int
    card_coupons_used: int
    benefit_usage: float
    paid_buyers_gmv_fen: int
    paid_orders: int
    free_gmv_fen: int
    free_orders: int
    free_members: int
    gmv_per_paid_fen: int
    gmv_per_free_fen: int
    orders_per_paid: float
    orders_per_free: float
    gmv_multiple: float
    frequency_multiple: float
    fee_revenue_fen: int
    coupon_cost_fen: int  # the card's coupons used in the month
    savings_cost_fen: int  # member price and extra points, net of refunds (savings ledger)
    benefit_cost_fen: int
    revenue_per_card_fen: int
    cost_per_card_fen: int
    roi: float


def _ratio(a: float, b: float, digits: int = 4) -> float:
    return round(a / b, digits) if b else 0.0


def month_bounds(month: date, tz: str) -> tuple[datetime, datetime]:
    """The UTC instants of the brand-local month's first moment and the next month's."""
    zone = ZoneInfo(tz)
    first = month.replace(day=1)
    after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return (
        clock.as_utc(datetime.combine(first, time(), zone)),
        clock.as_utc(datetime.combine(after, time(), zone)),
    )


def _months(bounds: Sequence[tuple[datetime, datetime]], ats: Sequence[datetime]) -> CTE:
    """The months as a relation ``(idx, starts, ends, at)``: literal rows joined by UNION ALL,
    which both databases read (SQLite names no columns of a VALUES list)."""
    rows = [
        select(
            literal(idx, Integer).label("idx"),
            literal(start, UTCDateTime()).label("starts"),
            literal(end, UTCDateTime()).label("ends"),
            literal(at, UTCDateTime()).label("at"),
        )
        for idx, ((start, end), at) in enumerate(zip(bounds, ats, strict=True))
    ]
    return (union_all(*rows) if len(rows) > 1 else rows[0]).cte("months")


def _holding(months: CTE, earliest: datetime, latest: datetime) -> Subquery:
    """``(idx, member_id)``: members holding a card at each month's instant ``at``, when a
    paid period, a trial or grace covers it. ``earliest`` and ``latest`` bound the instants,
    so rows that cover none of them are passed over before they meet the months."""
    at = months.c.at
    paid = (
        select(months.c.idx, Payment.member_id)
        .select_from(Payment)
        .join(Subscription, Subscription.id == Payment.subscription_id)
        .join(months, and_(Payment.period_start <= at, Payment.period_end > at))
        .where(
            Payment.kind.in_(PAID_KINDS),
            Payment.period_start <= latest,
            Payment.period_end > earliest,
            ~and_(
                Subscription.state == "refunded",
                Subscription.ended_at.is_not(None),
                Subscription.ended_at <= at,
            ),
        )
    )
    trial = (
        select(months.c.idx, Subscription.member_id)
        .select_from(Subscription)
        .join(
            months,
            and_(
                Subscription.trial_started_at.is_not(None),
                Subscription.trial_started_at <= at,
                or_(
                    and_(Subscription.anchor_at.is_not(None), Subscription.anchor_at > at),
                    and_(
                        Subscription.anchor_at.is_(None),
                        Subscription.current_period_end > at,
                        or_(Subscription.ended_at.is_(None), Subscription.ended_at > at),
                    ),
                ),
            ),
        )
        .where(Subscription.trial_started_at <= latest)
    )
    grace = (
        select(months.c.idx, Subscription.member_id)
        .select_from(Subscription)
        .join(
            months,
            and_(
                Subscription.current_period_end <= at,
                func.coalesce(Subscription.ended_at, Subscription.grace_until) > at,
            ),
        )
        .where(
            Subscription.anchor_at.is_not(None),
            Subscription.state.in_(("grace", "expired")),
            Subscription.current_period_end <= latest,
            func.coalesce(Subscription.ended_at, Subscription.grace_until) > earliest,
        )
    )
    return paid.union(trial, grace).subquery("holding")


def kpis(session: Session, *, month: date | None = None, tz: str = "Asia/Shanghai") -> PaidKpis:
    """The KPIs of one brand-local month (default: the current one)."""
    month = (month or clock.local_date(clock.now(), tz)).replace(day=1)
    return kpis_of_months(session, [month], tz=tz)[month]


def kpis_of_months(
    session: Session,
    months: Sequence[date],
    *,
    tz: str,
    members_orders: Mapping[date, tuple[int, int]] | None = None,
) -> dict[date, PaidKpis]:
    """The KPIs of several brand-local months (any day of the month names it), each exactly
    what ``kpis`` gives for it alone, read in one round of statements for all of them: a report
    over a year costs the same dozen statements as one month, not a dozen per month.

    Events (trials, periods ending, churn, pack issues, coupons, savings, fees) are counted
    in one pass of their table each, put in their month by a CASE over the months' UTC
    bounds (no timezone function, which SQLite lacks). Card holders are read at each
    month's instant from the months as a small relation. Orders, the one large table, are
    read twice:

    - each month's members' orders, one range of the ``paid_at`` index per month (a union
      of ranges, not a group by a month computed from each order: SQLite would sort every
      order of the span to group them), with nothing looked up per order;
    - from the few members who hold a card or left, their orders of the month through the
      (member, paid_at) index: the active members' GMV is the first less the orders of
      members who left, and the card holders' is read from the holders themselves, so no
      order is checked against a list of members.

    ``members_orders``: each month's members' orders (net GMV in fen, count: every order
    with a member, paid in the month by ``month_bounds``) when the caller has already read
    them elsewhere (the nightly KPIs sum them from the order book, in a fraction of the
    time the ranges of the live index take); the first read above is then skipped.
    """
    firsts = sorted({m.replace(day=1) for m in months})
    if not firsts:
        return {}
    now = clock.now()
    bounds = [month_bounds(m, tz) for m in firsts]
    ats = [min(end, now) if start <= now else end for start, end in bounds]

    def grouped(query: Select[Any], column: Any) -> dict[int, tuple[int, ...]]:
        """``{month index: the query's figures}`` over its rows whose ``column`` falls in
        one of the months."""
        month = case(*((and_(column >= s, column < e), i) for i, (s, e) in enumerate(bounds)))
        query = query.add_columns(month).where(
            column >= bounds[0][0], column < bounds[-1][1], month.is_not(None)
        )
        return {
            int(row[-1]): tuple(int(v or 0) for v in row[:-1])
            for row in session.execute(query.group_by(month))
        }

    # members who left (frozen, closed, merged) are few and indexed: active members are
    # all members less them, and a month's orders of active members are its members'
    # orders less theirs
    left = select(Member.id).where(Member.status != "active")
    active_members = session.scalar(select(func.count()).select_from(Member)) - session.scalar(
        select(func.count()).select_from(left.subquery())
    )

    # Trials started in the month, and of those, how many bought afterwards (the cohort).
    bought = exists().where(
        Payment.member_id == Subscription.member_id,
        Payment.kind == "purchase",
        Payment.at >= Subscription.trial_started_at,
    )
    trials = grouped(
        select(func.count(), func.sum(_flag(bought))).select_from(Subscription),
        Subscription.trial_started_at,
    )

    # A period ending in the month is due; renewed when the member has a renewal starting
    # where it ended (the same subscription extended, or a late charge paid within grace
    # that started a new one at that end). A charge after the lapse is a win-back instead.
    nxt = aliased(Payment)
    renewed_flag = exists().where(
        nxt.member_id == Payment.member_id,
        nxt.kind == "renewal",
        nxt.period_start == Payment.period_end,
    )
    renewals = grouped(
        select(func.count(), func.sum(_flag(renewed_flag))).where(
            Payment.kind.in_(PAID_KINDS), Payment.refunded_fen == 0
        ),
        Payment.period_end,
    )
    churned = grouped(
        select(func.count()).where(
            Subscription.anchor_at.is_not(None), Subscription.state == "expired"
        ),
        Subscription.ended_at,
    )

    # Card coupons: issued by the card's pack issues of the month, and of those, used.
    issued = grouped(
        select(func.sum(PackIssue.coupons)).where(
            PackIssue.pack_id.in_(select(BenefitPack.id)),  # the (pack, issued_at) index
            PackIssue.period.startswith("sub:"),
        ),
        PackIssue.issued_at,
    )
    used = grouped(
        savings.card_coupons(func.count()).where(Coupon.state == "used"), PackIssue.issued_at
    )
    coupon_cost = grouped(
        savings.card_coupons(func.sum(Coupon.discount_fen)).where(Coupon.state == "used"),
        Coupon.used_at,
    )
    ledger_cost = grouped(select(func.sum(Saving.amount_fen)), Saving.at)
    fee = case((Payment.kind == "refund", -Payment.amount_fen), else_=Payment.amount_fen)
    fees = grouped(select(func.sum(fee)), Payment.at)

    # GMV (paid less refunded) and orders of the month, split by holding a card at its `at`
    net = Order.amount_fen - Order.refunded_fen
    by_idx = (
        {idx: members_orders.get(month, (0, 0)) for idx, month in enumerate(firsts)}
        if members_orders is not None
        else _members_orders(session, bounds)
    )
    left_orders = grouped(
        # each one's orders of the span, by the (member, paid_at) index
        select(func.sum(net), func.count()).where(Order.member_id.in_(left)),
        Order.paid_at,
    )
    # the active card holders of each month, with their orders of the month (if any)
    span = _months(bounds, ats)
    holding = _holding(span, min(ats), max(ats))
    holders = {
        int(idx): (int(paid), int(gmv or 0), int(n))
        for idx, paid, gmv, n in session.execute(
            select(
                holding.c.idx,
                func.count(func.distinct(holding.c.member_id)),
                func.sum(net),
                func.count(Order.id),
            )
            .select_from(holding)
            .join(span, span.c.idx == holding.c.idx)
            .outerjoin(
                Order,
                and_(
                    Order.member_id == holding.c.member_id,
                    Order.paid_at >= span.c.starts,
                    Order.paid_at < span.c.ends,
                ),
            )
            .where(holding.c.member_id.not_in(left))
            .group_by(holding.c.idx)
        )
    }

    found: dict[date, PaidKpis] = {}
    active = int(active_members or 0)
    for idx, month in enumerate(firsts):
        gmv, orders = by_idx[idx]
        left_gmv, left_count = left_orders.get(idx, (0, 0))
        paid, paid_gmv, paid_orders = holders.get(idx, (0, 0, 0))
        found[month] = _month_kpis(
            month,
            at=ats[idx],
            active=active,
            paid=paid,
            trials=trials.get(idx, (0, 0)),
            renewals=renewals.get(idx, (0, 0)),
            churned=churned.get(idx, (0,))[0],
            issued=issued.get(idx, (0,))[0],
            used=used.get(idx, (0,))[0],
            coupon_cost=coupon_cost.get(idx, (0,))[0],
            ledger_cost=ledger_cost.get(idx, (0,))[0],
            fees=fees.get(idx, (0,))[0],
            all_gmv=gmv - left_gmv,
            all_orders=orders - left_count,
            paid_gmv=paid_gmv,
            paid_orders=paid_orders,
        )
    return {month: found[month.replace(day=1)] for month in months}


def _members_orders(
    session: Session, bounds: Sequence[tuple[datetime, datetime]]
) -> dict[int, tuple[int, int]]:
    """Each month's members' orders, net GMV and count: one range of the ``paid_at`` index
    per month (see ``kpis_of_months``)."""
    net = Order.amount_fen - Order.refunded_fen
    return {
        idx: (int(gmv or 0), int(n))
        for idx, gmv, n in session.execute(
            union_all(
                *(
                    select(literal(idx).label("idx"), func.sum(net), func.count()).where(
                        Order.paid_at >= start,
                        Order.paid_at < end,
                        Order.member_id.is_not(None),
                    )
                    for idx, (start, end) in enumerate(bounds)
                )
            )
        )
    }


def _month_kpis(
    month: date,
    *,
    at: datetime,
    active: int,
    paid: int,
    trials: tuple[int, ...],
    renewals: tuple[int, ...],
    churned: int,
    issued: int,
    used: int,
    coupon_cost: int,
    ledger_cost: int,
    fees: int,
    all_gmv: int,
    all_orders: int,
    paid_gmv: int,
    paid_orders: int,
) -> PaidKpis:
    """The month's ratios and per-card figures from its counts and sums."""
    trials_started, trials_converted = trials
    renewals_due, renewed = renewals
    free_gmv, free_orders = all_gmv - paid_gmv, all_orders - paid_orders
    free = active - paid
    cost = coupon_cost + ledger_cost
    gmv_paid = paid_gmv // paid if paid else 0
    gmv_free = free_gmv // free if free else 0
    freq_paid = _ratio(paid_orders, paid)
    freq_free = _ratio(free_orders, free)
    return PaidKpis(
        month=f"{month:%Y-%m}",
        at=at,
        active_members=active,
        paid_members=paid,
        penetration=_ratio(paid, active),
        trials_started=trials_started,
        trials_converted=trials_converted,
        trial_conversion=_ratio(trials_converted, trials_started),
        renewals_due=renewals_due,
        renewed=renewed,
        renewal_rate=_ratio(renewed, renewals_due),
        churned=churned,
        churn_rate=_ratio(churned, paid + churned),
        card_coupons_issued=issued,
        card_coupons_used=used,
        benefit_usage=_ratio(used, issued),
        paid_buyers_gmv_fen=paid_gmv,
        paid_orders=paid_orders,
        free_gmv_fen=free_gmv,
        free_orders=free_orders,
        free_members=free,
        gmv_per_paid_fen=gmv_paid,
        gmv_per_free_fen=gmv_free,
        orders_per_paid=freq_paid,
        orders_per_free=freq_free,
        gmv_multiple=_ratio(paid_gmv * free, free_gmv * paid, 2) if paid and free else 0.0,
        frequency_multiple=_ratio(freq_paid, freq_free, 2),
        fee_revenue_fen=fees,
        coupon_cost_fen=coupon_cost,
        savings_cost_fen=ledger_cost,
        benefit_cost_fen=cost,
        revenue_per_card_fen=fees // paid if paid else 0,
        cost_per_card_fen=cost // paid if paid else 0,
        roi=_ratio(fees, cost, 2),
    )


def kpis_by_month(
    session: Session, months: int = 12, *, tz: str = "Asia/Shanghai"
) -> list[PaidKpis]:
    """The last ``months`` brand-local months, oldest first, ending with the current one."""
    this = clock.local_date(clock.now(), tz).replace(day=1)
    index = this.year * 12 + this.month - 1
    firsts = [date(i // 12, i % 12 + 1, 1) for i in range(index - months + 1, index + 1)]
    found = kpis_of_months(session, firsts, tz=tz)
    return [found[m] for m in firsts]


def _flag(condition):  # type: ignore[no-untyped-def]
    """1 where the condition holds, else 0: a count by SUM on both databases."""
    return case((condition, 1), else_=0)
