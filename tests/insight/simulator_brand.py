"""A small brand for the simulator's tests, built day by day through the services users
call and the daily jobs, as the live engine would have seen it: members join, orders and
refunds arrive on the day they happen, the review (保级) and expiry jobs run every day (or
the review job only on the days a schedule allows, as a brand whose server was down)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from siyu.core import clock
from siyu.core.db import Database
from siyu.jobs import service as jobs
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft, RefundLineDraft
from siyu.points import jobs as points_jobs
from siyu.points.models import PointsLot
from siyu.tiers import jobs as tier_jobs
from siyu.tiers.models import TierGrant, TierPeriod

TZ = ZoneInfo("Asia/Shanghai")
CATEGORIES = ("奶粉", "纸尿裤", "营养品", "孕妈用品")
FIRST_DAY = date(2025, 1, 1)


def example_programme() -> dict[str, Any]:
    """A fresh copy of the example document (``programme/example.yaml``)."""
    from importlib import resources

    from siyu.programme import rules

    text = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    raw, problems = rules.parse_text(text)
    assert not problems, problems
    return raw  # type: ignore[no-any-return]


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), TZ).astimezone(clock.UTC)


def day_end_passed(at: datetime, day: date) -> bool:
    return local(day + timedelta(days=1), 0) >= at


def _next_jobs(db: Database, last_day: date) -> tuple[date, datetime]:
    """The next review day (or grant end) and the next lot expiry: the daily jobs have
    nothing to do before them (the test skips those days instead of running empty jobs)."""
    with db.engine.connect() as conn:
        due = conn.scalar(select(func.min(TierPeriod.review_on)))
        grant_ends = conn.scalar(
            select(func.min(TierGrant.ends_at)).where(TierGrant.closed_at.is_(None))
        )
        expiring = conn.scalar(
            select(func.min(PointsLot.expires_at)).where(PointsLot.remaining > 0)
        )
    if grant_ends is not None:  # the job ends a grant on the day after it (or that day)
        ends_on = clock.local_date(clock.as_utc(grant_ends), "Asia/Shanghai")
        due = min(due, ends_on) if due else ends_on
    far = local(last_day + timedelta(days=1), 0)
    return due or last_day + timedelta(days=1), clock.as_utc(expiring) if expiring else far


@dataclass
class Plan:
    """What happens on each day: joins, orders, refunds (built from a seed, no database)."""

    joins: dict[date, list[tuple[str, datetime, date | None]]] = field(default_factory=dict)
    orders: dict[date, list[tuple[str, OrderDraft]]] = field(default_factory=dict)
    refunds: dict[date, list[RefundDraft]] = field(default_factory=dict)


def plan(seed: int, people: int, last_day: date) -> Plan:
    """Some members spend a lot early and little later (they reach high levels and lose
    them at review), some spend steadily, some buy once; a few orders are refunded."""
    rnd = random.Random(seed)
    out = Plan()
    span = (last_day - FIRST_DAY).days
    for i in range(people):
        phone = f"139{seed:02d}{i:06d}"[:11]
        joined_day = FIRST_DAY + timedelta(days=rnd.randrange(0, span - 30))
        joined = local(joined_day, 9, rnd.randrange(60))
        birthday = date(1990, rnd.randint(1, 12), rnd.randint(1, 28)) if i % 3 else None
        out.joins.setdefault(joined_day, []).append((phone, joined, birthday))
        style = i % 4
        count = (rnd.randint(4, 10), rnd.randint(2, 5), 1, rnd.randint(8, 14))[style]
        for n in range(count):
            if style == 0:  # a burst in the first months, then quiet
                offset = rnd.randrange(0, 120)
            else:
                offset = rnd.randrange(0, max(1, (last_day - joined_day).days))
            day = joined_day + timedelta(days=offset)
            if day >= last_day:
                continue
            lines = [
                LineDraft(
                    f"SKU-{rnd.randint(1, 9)}",
                    rnd.choice(CATEGORIES),
                    2,
                    rnd.choice((8_800, 19_900, 45_000, 128_000, 260_000)),
                )
                for _ in range(rnd.randint(1, 2))
            ]
            paid = local(day, 10 + n % 8, rnd.randrange(60))
            draft = OrderDraft(
                channel="tmall",
                external_id=f"S{seed}-{i}-{n}",
                paid_at=paid,
                lines=lines,
                freight_fen=rnd.choice((0, 1_000)),
            )
            out.orders.setdefault(day, []).append((phone, draft))
            refund_day = day + timedelta(days=rnd.randint(0, 5))
            if rnd.random() < 0.12 and refund_day < last_day:
                whole = rnd.random() < 0.4
                refund = RefundDraft(
                    channel="tmall",
                    external_id=f"R{seed}-{i}-{n}",
                    order_channel="tmall",
                    order_external_id=draft.external_id,
                    refunded_at=max(local(refund_day, 20), paid + timedelta(minutes=1)),
                    lines=[] if whole else [RefundLineDraft(1, 1, lines[0].amount_fen // 2)],
                )
                out.refunds.setdefault(refund_day, []).append(refund)
    return out


OnDay = Callable[[date, dict[str, int]], None]
Schedule = Callable[[date], bool]


def build(
    db: Database,
    fixed: clock.FixedClock,
    seed: int = 7,
    people: int = 24,
    on_day: OnDay | None = None,
    review_days: Schedule | None = None,
) -> dict[str, Any]:
    """Run the plan day by day up to the fixed clock's day; the clock ends where it began.
    ``on_day(day, member ids by phone)`` runs after each day's business at 23:30 (an
    operator's hand: tier grants and revocations). ``review_days``: the days the tier
    review job runs, through the job runner so that its ledger records them (the first
    day too, if allowed: it opens the ledger); by default every day, run directly."""
    end = fixed.now()
    last_day = clock.local_date(end, "Asia/Shanghai")
    the_plan = plan(seed, people, last_day)
    ids: dict[str, int] = {}
    day = FIRST_DAY
    due, expiring = _next_jobs(db, last_day)
    while day <= last_day:
        joins = the_plan.joins.get(day, [])
        todays = the_plan.orders.get(day, [])
        refunds = the_plan.refunds.get(day, [])
        fixed.set(min(local(day, 23, 30), end))
        if review_days is None and day >= due:
            tier_jobs.review(db, day)
        elif review_days is not None and (day >= due or day == FIRST_DAY) and review_days(day):
            jobs.run(db, "tiers.review", day)
        if joins or todays or refunds:
            with db.unit_of_work() as session:
                for phone, joined, birthday in joins:
                    draft = EnrolDraft(phone=phone, joined_at=joined, birthday=birthday)
                    ids[phone] = members.enrol(session, draft).member_id
                drafts = []
                for phone, draft in sorted(todays, key=lambda x: x[1].paid_at):
                    draft.member_id = ids[phone]
                    drafts.append(draft)
                if drafts:
                    results = orders.ingest_orders(session, drafts)
                    assert {r.status for r in results} == {"created"}, results
                for refund in sorted(refunds, key=lambda r: r.refunded_at):
                    orders.create_refund(session, refund)
        if on_day is not None:
            on_day(day, ids)
        if day < last_day and day_end_passed(expiring, day):
            points_jobs.expire(db, day)  # today's lots are not due until the day ends
        if day >= due or day_end_passed(expiring, day) or joins or todays or refunds or on_day:
            due, expiring = _next_jobs(db, last_day)
        day += timedelta(days=1)
    fixed.set(end)
    return {"members": ids, "plan": the_plan}
