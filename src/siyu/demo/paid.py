"""The demo brand's paid members (超级会员): the plan ``super`` (199 yuan a year) sold through
the same payment callbacks the provider calls, so the paid KPIs have every figure.

Who buys: the members who already buy most often (the top of ``member_metrics`` by order
count), plus a few others picked by a hash of their id, as the sources' super users are.
What happens to them, decided per member by a seeded random generator: most bought within
the last year; some bought a year ago and renewed; some let it lapse (churn); some are on a
trial started today, and some of those turned paid at once. Paid members then buy more
(a few extra orders since they bought, one this month), so paid GMV is several times free.
Paid members holding the card get its monthly pack for the card's current month (issued on
that month's anniversary, keyed ``sub:<id>:<n>`` as the daily job keys it) and most use a
freight coupon of it on an order since, so benefit usage, benefit cost and ROI have figures.

Everything is keyed (transaction ids ``demo-paid:<member>:...``, order ids ``SUPER...``),
so running it again changes nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.benefits import coupons, packs
from siyu.benefits.models import BenefitPack, Coupon, CouponTemplate
from siyu.core import clock
from siyu.core.db import Database
from siyu.members.models import Member
from siyu.orders.models import MemberMetrics
from siyu.orders.rules import LineDraft, OrderDraft
from siyu.orders.service import ingest_orders
from siyu.paid import rules
from siyu.paid import service as paid
from siyu.paid.models import Subscription
from siyu.programme.rules import Plan

PLAN = "super"
PRICE_FEN = 19_900
BATCH = 5_000
SKUS = (
    ("SUPER-MILK", "奶粉", 32_800),
    ("SUPER-DIAPER", "纸尿裤", 15_900),
    ("SUPER-TOY", "玩具", 9_900),
)


@dataclass
class CardMonth:
    """The card's pack issued to a member for the current card month, and the order that
    uses one of its freight coupons (None: this member keeps the coupons for now)."""

    coupon_prefix: str  # the issue keys of the pack's coupons start with this
    order: OrderDraft | None


@dataclass
class PaidDemoSummary:
    bought: int = 0
    trials: int = 0
    converted: int = 0
    renewed: int = 0
    lapsed: int = 0
    orders: int = 0
    card_packs: int = 0
    card_coupons_used: int = 0


def pick_members(session: Session, *, seed: int, share: float) -> list[int]:
    """About ``share`` of the active members: four in five the most frequent buyers, the rest
    picked by a hash of the id (two statements whatever the brand's size)."""
    active = session.scalar(select(func.count()).where(Member.status == "active")) or 0
    wanted = round(active * share)
    if wanted <= 0:
        return []
    top = list(
        session.scalars(
            select(MemberMetrics.member_id)
            .join(Member, Member.id == MemberMetrics.member_id)
            .where(Member.status == "active", MemberMetrics.order_count > 0)
            .order_by(MemberMetrics.order_count.desc(), MemberMetrics.member_id)
            .limit(max(1, wanted * 4 // 5))
        )
    )
    others = list(
        session.scalars(
            select(Member.id)
            .where(Member.status == "active", (Member.id * 7_919 + seed) % 97 < 5)
            .order_by(Member.id)
            .limit(wanted)
        )
    )
    chosen = dict.fromkeys(top)
    for member_id in others:
        if len(chosen) >= wanted:
            break
        chosen.setdefault(member_id)
    return sorted(chosen)


def _extra_orders(
    rng: random.Random, member_id: int, since: datetime, as_of: datetime, month_start: datetime
) -> list[OrderDraft]:
    """What a paid member buys after buying the card: a few orders since, one this month."""
    out: list[OrderDraft] = []
    span = max(1.0, (as_of - since).total_seconds() - 3_600)
    moments = [since + timedelta(seconds=rng.uniform(60, span)) for _ in range(rng.randint(2, 4))]
    recent = max(month_start, since) + timedelta(minutes=5)
    if recent < as_of - timedelta(minutes=1):
        moments.append(recent + (as_of - recent) * rng.uniform(0.0, 0.9))
    for k, at in enumerate(sorted(moments)):
        sku, category, price = rng.choice(SKUS)
        quantity = rng.randint(1, 3)
        out.append(
            OrderDraft(
                channel="mini_program",
                external_id=f"SUPER{member_id:010d}{k:02d}",
                paid_at=at,
                member_id=member_id,
                lines=[LineDraft(sku, category, quantity, price * quantity)],
            )
        )
    return out


def _card_month(first: datetime, as_of: datetime, tz: str) -> tuple[int, datetime]:
    """The card's month running at ``as_of`` (n, and its start), counted from ``first`` on
    the brand's calendar as the daily job counts it (31 January: 28/29 February, 31 March)."""
    zone = ZoneInfo(tz)
    start = clock.as_utc(first).astimezone(zone)
    now = as_of.astimezone(zone)
    n = (now.year * 12 + now.month) - (start.year * 12 + start.month)
    while n > 0 and rules.add_months(start, n) > now:
        n -= 1
    return n, clock.as_utc(rules.add_months(start, n))


def _card_pack(
    session: Session,
    sub: Subscription,
    member_id: int,
    rng: random.Random,
    as_of: datetime,
    tz: str,
    known: dict[str, BenefitPack | None],
) -> CardMonth | None:
    """Issue the card's pack of the current card month (None: no pack, or the month started
    just now) and draw the order that uses one of its freight coupons."""
    code = Plan.model_validate(sub.terms).benefits.cyclic_pack
    first = sub.trial_started_at or sub.anchor_at
    if code is None or first is None:
        return None
    if code not in known:
        known[code] = session.scalar(select(BenefitPack).where(BenefitPack.code == code))
    pack = known[code]
    if pack is None:
        return None
    n, start = _card_month(first, as_of, tz)
    if start > as_of - timedelta(hours=1):
        return None
    period = f"sub:{sub.id}:{n}"
    packs.issue_pack(session, pack, [member_id], period=period, at=start, tz=tz)
    prefix = f"pack:{pack.code}:{member_id}:{period}:"
    if rng.random() >= 0.8:
        return CardMonth(prefix, None)  # one in five has not used the month's coupons yet
    sku, category, price = rng.choice(SKUS)
    at = start + (as_of - start) * rng.uniform(0.2, 0.9)
    order = OrderDraft(
        channel="mini_program",
        external_id=f"SUPER{member_id:010d}C",
        paid_at=at,
        member_id=member_id,
        lines=[LineDraft(sku, category, 1, price)],
        freight_fen=rng.choice((600, 800, 1_000, 1_200)),
    )
    return CardMonth(prefix, order)


def _sell(
    session: Session,
    member_id: int,
    rng: random.Random,
    as_of: datetime,
    month_start: datetime,
    summary: PaidDemoSummary,
    tz: str = "Asia/Shanghai",
    known_packs: dict[str, BenefitPack | None] | None = None,
) -> None:
    if session.scalar(select(Subscription.id).where(Subscription.member_id == member_id).limit(1)):
        return  # sold already (a second run)
    txn = f"demo-paid:{member_id}"
    roll = rng.random()
    if roll < 0.15:  # a trial started today; some turn paid at once
        paid.start_trial(session, member_id, PLAN)
        summary.trials += 1
        if rng.random() < 0.5:
            paid.purchase_callback(session, f"{txn}:buy", member_id, PLAN, PRICE_FEN, as_of)
            summary.converted += 1
            since = as_of
        else:
            return
    elif roll < 0.32:  # a year ago, renewed the day before the year ended
        bought = as_of - timedelta(days=365 + rng.randint(2, 40))
        first = paid.purchase_callback(session, f"{txn}:buy", member_id, PLAN, PRICE_FEN, bought)
        renew_at = first.subscription.current_period_end - timedelta(days=1)
        paid.renewal_callback(session, f"{txn}:renew", member_id, PRICE_FEN, renew_at)
        summary.renewed += 1
        since = bought
    elif roll < 0.42:  # a year ago, let it lapse
        bought = as_of - timedelta(days=365 + rng.randint(10, 60))
        result = paid.purchase_callback(session, f"{txn}:buy", member_id, PLAN, PRICE_FEN, bought)
        result.subscription.auto_renew = False
        summary.lapsed += 1
        return
    else:  # bought within the last year
        since = as_of - timedelta(days=rng.randint(1, 330), minutes=rng.randint(0, 600))
        paid.purchase_callback(session, f"{txn}:buy", member_id, PLAN, PRICE_FEN, since)
    summary.bought += 1
    drafts = _extra_orders(rng, member_id, since, as_of, month_start)
    sub = paid.current(session, member_id)
    assert sub is not None
    known = known_packs if known_packs is not None else {}
    card = _card_pack(session, sub, member_id, rng, as_of, tz, known)
    if card is not None:
        summary.card_packs += 1
        if card.order is not None:
            drafts.append(card.order)
    results = ingest_orders(session, drafts)
    summary.orders += len(drafts)
    if card is not None and card.order is not None and results[-1].order_id is not None:
        coupon = session.scalar(
            select(Coupon.code)
            .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
            .where(
                Coupon.member_id == member_id,
                Coupon.state == "usable",
                Coupon.issue_key.startswith(card.coupon_prefix, autoescape=True),
                CouponTemplate.kind == "freight",
            )
            .order_by(Coupon.id)
            .limit(1)
        )
        if coupon is not None:  # a brand's own pack may hold no freight coupon
            coupons.redeem(session, coupon, order_id=results[-1].order_id)
            summary.card_coupons_used += 1


def create_paid_members(
    target: Session | Database,
    *,
    seed: int,
    as_of: datetime | None = None,
    share: float = 0.08,
    tz: str = "Asia/Shanghai",
) -> PaidDemoSummary:
    """Sell the demo plan to about ``share`` of the active members (see the module's doc).
    Given a ``Database``, one unit of work per ``BATCH`` members; given a ``Session``, the
    caller's unit of work. ``as_of`` should be the clock's now."""
    as_of = clock.as_utc(as_of or clock.now())
    local = as_of.astimezone(ZoneInfo(tz))
    month_start = clock.as_utc(local.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    summary = PaidDemoSummary()

    def run(session: Session, chosen: list[int]) -> None:
        known: dict[str, BenefitPack | None] = {}
        for member_id in chosen:
            rng = random.Random(f"{seed}:{member_id}")
            _sell(session, member_id, rng, as_of, month_start, summary, tz, known)
        while paid.expire_batch(session, as_of):  # the lapsed ones move to expired
            pass

    if isinstance(target, Session):
        run(target, pick_members(target, seed=seed, share=share))
        return summary
    with target.unit_of_work() as session:
        chosen = pick_members(session, seed=seed, share=share)
    for start in range(0, len(chosen), BATCH):
        with target.unit_of_work() as session:
            run(session, chosen[start : start + BATCH])
    return summary
