"""The savings ledger of paid members and the calculator a member sees.

Every saving the card gives is recorded per order (``paid_savings``), so the sum a member is
shown can be explained line by line:

- member price: the line amount paid *is* the member price; what the line would have cost
  without the card is ``round(amount / rate)`` (half up), so the saving is that minus the
  amount. A rate of 1 gives no saving.
- extra points: ``floor(base points of the order × (multiplier − 1))``, granted on the
  points ledger (fact ``paid_points:<order>``) and valued at the programme's cash rate,
  ``floor(points × 100 / points_per_yuan)`` fen.
- member price rate: the line's SKU rate (``member_price_by_sku``), else its category's
  (``member_price_by_category``), else the plan's ``member_price_discount``; the entry
  records the rate and which rule gave it (``rate_from``).
- a refund takes the member-price saving of its lines back (negative entries), and the
  card's extra points in proportion to the base points the points ledger reversed
  (``floor(extra × reversed / base)``, cumulative), lowering the extra-points saving to
  match.
- coupons from the card (its cyclic and renewal packs): read from the coupons themselves, as
  coupons used whose pack issue has a card period (``sub:<id>:…``) (``coupon``, or
  ``freight`` for a freight coupon), at their recorded discount. Nothing is copied, so a
  coupon's saving can never disagree with the coupon.

The calculator covers the member, not one subscription: a member whose card lapsed and who
bought again keeps "saved since joining" from their first card, against every fee paid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.db import in_chunks, upsert_insert
from siyu.core.errors import NotFound
from siyu.orders.service import IngestedOrder, RefundRecorded
from siyu.paid import service
from siyu.paid.models import Payment, Saving, Subscription
from siyu.paid.rules import State
from siyu.programme.rules import Plan
from siyu.programme.service import Timeline

KINDS = ("member_price", "coupon", "freight", "extra_points")


# --- pure rules ------------------------------------------------------------------------------


def member_price_saving(amount_fen: int, rate: Decimal | None) -> int:
    """What a line paid at the member price saved: its price without the card, less the
    amount paid. ``round(amount / rate) - amount``, half up; no rate or 1: nothing."""
    if rate is None or rate >= 1 or amount_fen <= 0:
        return 0
    listed = (Decimal(amount_fen) / Decimal(rate)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(listed) - amount_fen


def extra_points(base_points: int, multiplier: Decimal) -> int:
    """The card's extra points on an order: ``floor(base × (multiplier − 1))``."""
    if multiplier <= 1 or base_points <= 0:
        return 0
    return int(Decimal(base_points) * (Decimal(multiplier) - 1))


def points_value_fen(points: int, points_per_yuan: int) -> int:
    """Points valued at the programme's cash rate, in fen (floor)."""
    return points * 100 // points_per_yuan


def yuan(amount_fen: int) -> str:
    """¥ figures as a member reads them: whole yuan without decimals, otherwise two."""
    sign = "-" if amount_fen < 0 else ""
    whole, cents = divmod(abs(amount_fen), 100)
    return f"{sign}{whole}" if cents == 0 else f"{sign}{whole}.{cents:02d}"


def sentences(saved_fen: int, fee_fen: int) -> tuple[str, str]:
    """The calculator in one line, zh-CN and English."""
    net = saved_fen - fee_fen
    if net >= 0:
        zh = f"已省¥{yuan(saved_fen)}，会费¥{yuan(fee_fen)}，净赚¥{yuan(net)}"
        en = f"saved ¥{yuan(saved_fen)} on a ¥{yuan(fee_fen)} card: ¥{yuan(net)} ahead"
    else:
        zh = f"已省¥{yuan(saved_fen)}，会费¥{yuan(fee_fen)}，还差¥{yuan(-net)}回本"
        en = f"saved ¥{yuan(saved_fen)} on a ¥{yuan(fee_fen)} card: ¥{yuan(-net)} to go"
    return zh, en


# --- which subscription covered an instant ---------------------------------------------------


def _covered(sub: Subscription, at: datetime) -> bool:
    """Whether the subscription gave its benefits at ``at`` (a trial counts)."""
    starts = [t for t in (sub.trial_started_at, sub.anchor_at) if t is not None]
    start = min(clock.as_utc(t) for t in starts) if starts else clock.as_utc(sub.created_at)
    if sub.ended_at is not None:
        end = sub.ended_at
    elif sub.state == State.grace and sub.grace_until is not None:
        end = sub.grace_until
    else:
        end = sub.current_period_end
    return start <= clock.as_utc(at) < clock.as_utc(end)


def _subscriptions_of(session: Session, member_ids: Sequence[int]) -> dict[int, list[Subscription]]:
    found: dict[int, list[Subscription]] = defaultdict(list)
    for chunk in in_chunks(sorted(set(member_ids))):
        for sub in session.scalars(select(Subscription).where(Subscription.member_id.in_(chunk))):
            found[sub.member_id].append(sub)
    return found


def _insert(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(upsert_insert(session, Saving).on_conflict_do_nothing(), rows)
        session.flush()


# --- recording -------------------------------------------------------------------------------


def record_orders(session: Session, orders: Sequence[IngestedOrder]) -> int:
    """Savings of a chunk of new orders of members holding the card when each was paid, in
    a constant number of statements: member prices per line, extra points per order.
    Idempotent per fact. Returns the savings entries written (or already there)."""
    from siyu.points import service as points  # points sits above paid: imported where used
    from siyu.points.models import PointsLot

    subs = _subscriptions_of(session, [o.member_id for o in orders])
    covered: list[tuple[IngestedOrder, Subscription, Plan]] = []
    for order in orders:
        for sub in subs.get(order.member_id, ()):
            if _covered(sub, order.paid_at):
                covered.append((order, sub, Plan.model_validate(sub.terms)))
                break
    if not covered:
        return 0
    lots: dict[str, int] = {}
    facts = [f"order:{o.order_id}" for o, _, plan in covered if plan.benefits.points_multiplier > 1]
    for chunk in in_chunks(facts):
        query = select(PointsLot.fact, PointsLot.points).where(PointsLot.fact.in_(chunk))
        lots.update((fact, pts) for fact, pts in session.execute(query))
    timeline = Timeline(session)
    rows: list[dict[str, Any]] = []
    grants: list[Any] = []
    for order, sub, plan in covered:
        paid_at = clock.as_utc(order.paid_at)
        for line in order.lines:
            rate, rate_from = plan.benefits.member_price_rate(line.sku, line.category)
            saved = member_price_saving(line.amount_fen, rate)
            if saved > 0:
                rows.append(
                    {
                        "member_id": order.member_id,
                        "subscription_id": sub.id,
                        "order_id": order.order_id,
                        "kind": "member_price",
                        "amount_fen": saved,
                        "detail": {
                            "line_no": line.line_no,
                            "sku": line.sku,
                            "category": line.category,
                            "paid_fen": line.amount_fen,
                            "list_fen": line.amount_fen + saved,
                            "rate": str(rate),
                            "rate_from": rate_from,  # sku | category | plan: the rule applied
                        },
                        "fact": f"member_price:{order.order_id}:{line.line_no}",
                        "at": paid_at,
                    }
                )
        base = lots.get(f"order:{order.order_id}", 0)
        extra = extra_points(base, plan.benefits.points_multiplier)
        doc = timeline.at(paid_at)
        cash = doc.points.cash_off if doc is not None else None
        if extra > 0:
            grants.append(
                points.Grant(
                    order.member_id, extra, f"paid_points:{order.order_id}", "paid membership"
                )
            )
            per_yuan = cash.points_per_yuan if cash is not None else None
            rows.append(
                {
                    "member_id": order.member_id,
                    "subscription_id": sub.id,
                    "order_id": order.order_id,
                    "kind": "extra_points",
                    "amount_fen": points_value_fen(extra, per_yuan) if per_yuan else 0,
                    "detail": {
                        "base_points": base,
                        "multiplier": str(plan.benefits.points_multiplier),
                        "points": extra,
                        "points_per_yuan": per_yuan,
                    },
                    "fact": f"extra_points:{order.order_id}",
                    "at": paid_at,
                }
            )
    if grants:  # granted when the order arrives, in one call for the chunk
        points.grant_many(session, sorted(grants, key=lambda g: g.member_id))
    _insert(session, rows)
    return len(rows)


def reverse_refund(session: Session, event: RefundRecorded) -> int:
    """What a refund takes back of the card's savings on its order: the member price of the
    refunded lines and the extra points in proportion. Returns the entries written."""
    return _reverse_member_price(session, event) + _take_back_extra_points(session, event)


def extra_points_back(extra: int, base: int, base_back: int) -> int:
    """The card's extra points taken back in all once ``base_back`` of the order's ``base``
    points were reversed: ``floor(extra × base_back / base)``, cumulative like the points
    ledger's own reversal, so partial refunds add up to exactly ``extra`` on a full one."""
    if extra <= 0 or base <= 0 or base_back <= 0:
        return 0
    return extra * min(base_back, base) // base


def _take_back_extra_points(session: Session, event: RefundRecorded) -> int:
    """Take back the card's extra points of the refunded lines (fact
    ``paid_points_back:<refund>`` on the points ledger) and lower the extra-points saving to
    match (fact ``refund:<refund>:extra_points``).

    The order's base points reversed so far are recomputed from the order's points lot
    (its per-line snapshot) and the lines' refunded totals, with the points ledger's own
    rule, so the proportion is the one the ledger applied. Points the member already spent
    cannot be taken back: what is short is recorded in the entry's detail and caught up by
    the order's next refund, and the saving is only lowered by the points actually taken."""
    from siyu.orders.models import OrderLine
    from siyu.points import rules as points_rules  # points sits above paid: imported here
    from siyu.points import service as points
    from siyu.points.models import PointsLot

    granted = session.scalar(
        select(Saving).where(
            Saving.order_id == event.order_id,
            Saving.kind == "extra_points",
            Saving.fact == f"extra_points:{event.order_id}",
        )
    )
    if granted is None:
        return 0
    extra = int(granted.detail["points"])
    lot = session.scalar(select(PointsLot).where(PointsLot.fact == f"order:{event.order_id}"))
    if lot is None or not lot.lines or extra <= 0:
        return 0
    refunded = dict(
        session.execute(
            select(OrderLine.line_no, OrderLine.refunded_fen).where(
                OrderLine.order_id == event.order_id
            )
        ).all()
    )
    base = sum(int(x["points"]) for x in lot.lines)
    base_back = sum(
        points_rules.reversal(
            int(x["points"]), int(x["amount_fen"]), 0, refunded.get(x["line_no"], 0)
        )
        for x in lot.lines
    )
    earlier = session.scalars(
        select(Saving).where(
            Saving.order_id == event.order_id,
            Saving.kind == "extra_points",
            Saving.amount_fen <= 0,
            Saving.fact != f"extra_points:{event.order_id}",
        )
    ).all()
    taken_before = sum(int(x.detail.get("points_taken", 0)) for x in earlier)
    due = extra_points_back(extra, base, base_back) - taken_before
    if due <= 0:
        return 0
    member_id = granted.member_id
    take = min(due, max(0, points.available(session, member_id)))
    if take > 0:
        points.spend(
            session,
            member_id,
            take,
            fact=f"paid_points_back:{event.refund_id}",
            reason=f"refund {event.refund_id}: the card's extra points of order {event.order_id}",
        )
    worth = granted.amount_fen  # the saving the extra points were recorded at
    lowered = worth * (taken_before + take) // extra - worth * taken_before // extra
    _insert(
        session,
        [
            {
                "member_id": member_id,
                "subscription_id": granted.subscription_id,
                "order_id": event.order_id,
                "kind": "extra_points",
                "amount_fen": -lowered,
                "detail": {
                    "refund_id": event.refund_id,
                    "base_points": base,
                    "base_points_reversed": base_back,
                    "extra_points": extra,
                    "points_due": due,
                    "points_taken": take,
                    "points_short": due - take,  # spent already; the next refund catches up
                },
                "fact": f"refund:{event.refund_id}:extra_points",
                "at": clock.as_utc(event.refunded_at),
            }
        ],
    )
    return 1


def _reverse_member_price(session: Session, event: RefundRecorded) -> int:
    """Take back the member-price saving of refunded lines (negative entries, fact
    ``refund:<refund>:<line>``), at most what the line saved."""
    recorded = list(
        session.scalars(
            select(Saving).where(Saving.order_id == event.order_id, Saving.kind == "member_price")
        )
    )
    if not recorded:
        return 0
    left: dict[int, int] = defaultdict(int)
    first: dict[int, Saving] = {}
    for saving in recorded:
        line_no = int(saving.detail["line_no"])
        left[line_no] += saving.amount_fen
        if saving.amount_fen > 0:
            first[line_no] = saving
    rows = []
    for line in event.lines:
        original = first.get(line.line_no)
        if original is None:
            continue
        rate = Decimal(original.detail["rate"])
        back = min(member_price_saving(line.amount_fen, rate), left[line.line_no])
        if back <= 0:
            continue
        rows.append(
            {
                "member_id": original.member_id,
                "subscription_id": original.subscription_id,
                "order_id": event.order_id,
                "kind": "member_price",
                "amount_fen": -back,
                "detail": {
                    "line_no": line.line_no,
                    "refund_id": event.refund_id,
                    "refunded_fen": line.amount_fen,
                    "rate": str(rate),
                },
                "fact": f"refund:{event.refund_id}:{line.line_no}",
                "at": clock.as_utc(event.refunded_at),
            }
        )
    _insert(session, rows)
    return len(rows)


# --- the calculator --------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    kind: str
    amount_fen: int
    at: datetime
    order_id: int | None
    fact: str
    detail: dict[str, Any]


@dataclass
class Summary:
    member_id: int
    subscription_id: int  # the latest subscription; the figures cover all of them
    plan_code: str
    joined_at: datetime
    month: str  # the brand-local month of "this month"
    saved_this_month_fen: int
    saved_fen: int
    fee_fen: int
    net_fen: int
    by_kind: dict[str, int]
    months: dict[str, int]  # "YYYY-MM" -> saved that month, oldest first
    lines: list[Line] = field(default_factory=list)
    zh: str = ""
    en: str = ""


def card_coupons(*columns: Any, member_id: int | None = None) -> Select[Any]:
    """``select(*columns)`` over the coupons a card's pack gave, joined to their pack issue:
    pack issues whose period is the card's (``sub:<id>:<n>`` monthly,
    ``sub:<id>:renewal:<payment>``), and the coupons issued for them (issue key ``<pack
    issue key>:<template>#<n>``). Exact: a tier or manual pack never has a ``sub:`` period,
    even when it is the same pack."""
    from siyu.benefits.models import Coupon, PackIssue  # benefits sits above paid

    query = (
        select(*columns)
        .select_from(Coupon)
        .join(
            PackIssue,
            (PackIssue.member_id == Coupon.member_id)
            & Coupon.issue_key.startswith(PackIssue.key.concat(":"), autoescape=False),
        )
        .where(Coupon.source == "pack", PackIssue.period.startswith("sub:"))
    )
    if member_id is not None:
        query = query.where(Coupon.member_id == member_id, PackIssue.member_id == member_id)
    return query


def coupon_lines(session: Session, member_id: int, *, at: datetime) -> list[Line]:
    """Coupons of the member's card packs (any of their subscriptions) used by ``at``."""
    from siyu.benefits.models import Coupon, CouponTemplate, PackIssue

    rows = session.execute(
        card_coupons(
            Coupon, PackIssue.period, CouponTemplate.kind, CouponTemplate.code, member_id=member_id
        )
        .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
        .where(Coupon.state == "used", Coupon.used_at <= at)
        .order_by(Coupon.used_at, Coupon.id)
    ).all()
    return [
        Line(
            kind="freight" if kind == "freight" else "coupon",
            amount_fen=coupon.discount_fen,
            at=clock.as_utc(coupon.used_at),
            order_id=coupon.order_id,
            fact=coupon.issue_key,
            detail={"coupon": coupon.code, "template": code, "pack_period": period},
        )
        for coupon, period, kind, code in rows
        if coupon.discount_fen > 0 and coupon.used_at is not None
    ]


def summary(
    session: Session, member_id: int, *, at: datetime | None = None, tz: str = "Asia/Shanghai"
) -> Summary:
    """What the member's cards saved them since they first joined (a trial or purchase),
    against every fee paid: a lapse and a new card later continue the same account."""
    at = clock.as_utc(at) if at is not None else clock.now()
    sub = service.current(session, member_id)
    if sub is None:
        raise NotFound(f"member {member_id} has no paid membership", field="member_id")
    recorded = session.scalars(
        select(Saving)
        .where(Saving.member_id == member_id, Saving.at <= at)
        .order_by(Saving.at, Saving.id)
    )
    lines = [
        Line(s.kind, s.amount_fen, clock.as_utc(s.at), s.order_id, s.fact, s.detail)
        for s in recorded
    ]
    lines = sorted(lines + coupon_lines(session, member_id, at=at), key=lambda x: x.at)
    paid, refunded = session.execute(
        select(
            func.coalesce(func.sum(Payment.amount_fen).filter(Payment.kind != "refund"), 0),
            func.coalesce(func.sum(Payment.amount_fen).filter(Payment.kind == "refund"), 0),
        ).where(Payment.member_id == member_id, Payment.at <= at)
    ).one()
    first_trial, first_paid = session.execute(
        select(func.min(Subscription.trial_started_at), func.min(Subscription.anchor_at)).where(
            Subscription.member_id == member_id
        )
    ).one()
    fee = int(paid) - int(refunded)
    zone = ZoneInfo(tz)

    def month_of(t: datetime) -> str:
        return clock.as_utc(t).astimezone(zone).strftime("%Y-%m")

    months: dict[str, int] = {}
    by_kind = dict.fromkeys(KINDS, 0)
    for line in lines:
        months[month_of(line.at)] = months.get(month_of(line.at), 0) + line.amount_fen
        by_kind[line.kind] += line.amount_fen
    saved = sum(by_kind.values())
    this_month = month_of(at)
    starts = [t for t in (first_trial, first_paid) if t is not None]
    zh, en = sentences(saved, fee)
    return Summary(
        member_id=member_id,
        subscription_id=sub.id,
        plan_code=sub.plan_code,
        joined_at=min(clock.as_utc(t) for t in starts) if starts else sub.created_at,
        month=this_month,
        saved_this_month_fen=months.get(this_month, 0),
        saved_fen=saved,
        fee_fen=fee,
        net_fen=saved - fee,
        by_kind=by_kind,
        months=dict(sorted(months.items())),
        lines=lines,
        zh=zh,
        en=en,
    )
