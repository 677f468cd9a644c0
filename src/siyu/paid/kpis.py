"""Paid membership KPIs for a brand-local month: penetration, trial conversion, renewal rate,
churn, benefit usage, paid vs free members' GMV and frequency (the multiple), fee revenue,
benefit cost and ROI per card.

Every figure is one aggregate statement over the whole brand; no member is loaded into
Python, so the report costs the same few queries at 300 members or 20 million.

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

from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from siyu.benefits.models import BenefitPack, Coupon, PackIssue
from siyu.core import clock
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


def _holding(at: datetime):  # type: ignore[no-untyped-def]
    """Members holding a card at ``at``: a paid period, a trial or grace covers it."""
    paid = (
        select(Payment.member_id)
        .join(Subscription, Subscription.id == Payment.subscription_id)
        .where(
            Payment.kind.in_(PAID_KINDS),
            Payment.period_start <= at,
            Payment.period_end > at,
            ~and_(
                Subscription.state == "refunded",
                Subscription.ended_at.is_not(None),
                Subscription.ended_at <= at,
            ),
        )
    )
    trial = select(Subscription.member_id).where(
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
    )
    grace = select(Subscription.member_id).where(
        Subscription.anchor_at.is_not(None),
        Subscription.state.in_(("grace", "expired")),
        Subscription.current_period_end <= at,
        func.coalesce(Subscription.ended_at, Subscription.grace_until) > at,
    )
    return paid.union(trial, grace).subquery("holding")


def kpis(session: Session, *, month: date | None = None, tz: str = "Asia/Shanghai") -> PaidKpis:
    """The KPIs of one brand-local month (default: the current one)."""
    now = clock.now()
    month = (month or clock.local_date(now, tz)).replace(day=1)
    start, end = month_bounds(month, tz)
    at = min(end, now) if start <= now else end
    holding = _holding(at)

    # members who left (frozen, closed, merged) are few and indexed: active members are
    # all members less them, and a month's orders of active members are its members'
    # orders less theirs, without a lookup of each order's member
    left = select(Member.id).where(Member.status != "active")
    active_members = session.scalar(select(func.count()).select_from(Member)) - session.scalar(
        select(func.count()).select_from(left.subquery())
    )
    paid_members = session.scalar(
        select(func.count(func.distinct(holding.c.member_id)))
        .select_from(holding)
        .join(Member, Member.id == holding.c.member_id)
        .where(Member.status == "active")
    )

    # Trials started in the month, and of those, how many bought afterwards (the cohort).
    bought = exists().where(
        Payment.member_id == Subscription.member_id,
        Payment.kind == "purchase",
        Payment.at >= Subscription.trial_started_at,
    )
    trials_started, trials_converted = session.execute(
        select(func.count(), func.coalesce(func.sum(_flag(bought)), 0)).where(
            Subscription.trial_started_at >= start, Subscription.trial_started_at < end
        )
    ).one()

    # A period ending in the month is due; renewed when the member has a renewal starting
    # where it ended (the same subscription extended, or a late charge paid within grace
    # that started a new one at that end). A charge after the lapse is a win-back instead.
    nxt = aliased(Payment)
    renewed_flag = exists().where(
        nxt.member_id == Payment.member_id,
        nxt.kind == "renewal",
        nxt.period_start == Payment.period_end,
    )
    renewals_due, renewed = session.execute(
        select(func.count(), func.coalesce(func.sum(_flag(renewed_flag)), 0)).where(
            Payment.kind.in_(PAID_KINDS),
            Payment.refunded_fen == 0,
            Payment.period_end >= start,
            Payment.period_end < end,
        )
    ).one()

    churned = session.scalar(
        select(func.count()).where(
            Subscription.anchor_at.is_not(None),
            Subscription.state == "expired",
            Subscription.ended_at >= start,
            Subscription.ended_at < end,
        )
    )

    # Card coupons: issued by the card's pack issues of the month, and of those, used.
    issued = session.scalar(
        select(func.coalesce(func.sum(PackIssue.coupons), 0)).where(
            PackIssue.pack_id.in_(select(BenefitPack.id)),  # the (pack, issued_at) index
            PackIssue.period.startswith("sub:"),
            PackIssue.issued_at >= start,
            PackIssue.issued_at < end,
        )
    )
    used = session.scalar(
        savings.card_coupons(func.count()).where(
            PackIssue.issued_at >= start, PackIssue.issued_at < end, Coupon.state == "used"
        )
    )
    coupon_cost = session.scalar(
        savings.card_coupons(func.coalesce(func.sum(Coupon.discount_fen), 0)).where(
            Coupon.state == "used", Coupon.used_at >= start, Coupon.used_at < end
        )
    )
    ledger_cost = session.scalar(
        select(func.coalesce(func.sum(Saving.amount_fen), 0)).where(
            Saving.at >= start, Saving.at < end
        )
    )
    benefit_cost = int(coupon_cost or 0) + int(ledger_cost or 0)

    # GMV (paid less refunded) and orders of the month, split by holding a card at `at`:
    # one pass over the month's orders (a month of a large brand is hundreds of thousands)
    net = Order.amount_fen - Order.refunded_fen
    carded = Order.member_id.in_(select(holding.c.member_id))
    all_gmv, all_orders, paid_gmv, paid_orders = (
        int(v)
        for v in session.execute(
            select(
                func.coalesce(func.sum(net), 0),
                func.count(),
                func.coalesce(func.sum(case((carded, net), else_=0)), 0),
                func.coalesce(func.sum(case((carded, 1), else_=0)), 0),
            ).where(
                Order.paid_at >= start,
                Order.paid_at < end,
                Order.member_id.is_not(None),
                Order.member_id.not_in(left),
            )
        ).one()
    )
    free_gmv, free_orders = all_gmv - paid_gmv, all_orders - paid_orders
    active = int(active_members or 0)
    paid = int(paid_members or 0)
    free = active - paid

    fees = session.scalar(
        select(
            func.coalesce(
                func.sum(
                    case((Payment.kind == "refund", -Payment.amount_fen), else_=Payment.amount_fen)
                ),
                0,
            )
        ).where(Payment.at >= start, Payment.at < end)
    )
    fees = int(fees or 0)
    cost = int(benefit_cost or 0)
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
        trials_started=int(trials_started),
        trials_converted=int(trials_converted),
        trial_conversion=_ratio(int(trials_converted), int(trials_started)),
        renewals_due=int(renewals_due),
        renewed=int(renewed),
        renewal_rate=_ratio(int(renewed), int(renewals_due)),
        churned=int(churned or 0),
        churn_rate=_ratio(int(churned or 0), paid + int(churned or 0)),
        card_coupons_issued=int(issued),
        card_coupons_used=int(used),
        benefit_usage=_ratio(int(used), int(issued)),
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
        coupon_cost_fen=int(coupon_cost or 0),
        savings_cost_fen=int(ledger_cost or 0),
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
    out: list[PaidKpis] = []
    for back in range(months - 1, -1, -1):
        index = this.year * 12 + this.month - 1 - back
        out.append(kpis(session, month=date(index // 12, index % 12 + 1, 1), tz=tz))
    return out


def _flag(condition):  # type: ignore[no-untyped-def]
    """1 where the condition holds, else 0: a count by SUM on both databases."""
    return case((condition, 1), else_=0)
