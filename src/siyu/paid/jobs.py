"""The daily job of paid membership: grace, expiry and reminders (see ``siyu.jobs.service``).

Idempotent on its own: a subscription moved is no longer selected, and a reminder records
the period end it was sent for, so a re-run after a failure finishes the rest.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.errors import NotFound
from siyu.core.settings import get_settings
from siyu.jobs.service import job
from siyu.paid import rules, service
from siyu.paid.models import Payment, Subscription
from siyu.paid.rules import State
from siyu.programme.rules import Plan

# Renewals are looked back on this far, so a day the job did not run is caught up; the pack
# key (one gift per renewal payment) makes looking at one twice harmless.
GIFT_LOOKBACK = timedelta(days=7)


def day_end(day: date, tz: str) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), ZoneInfo(tz)).astimezone(clock.UTC)


@job("paid.expire", "Paid membership: grace, expiry, trial and renewal reminders", order=25)
def expire(db: Database, day: date) -> dict[str, int]:
    cutoff = min(day_end(day, get_settings().timezone), clock.now())
    counts = {"moved": 0, "reminded": 0}
    for name, step in (("moved", service.expire_batch), ("reminded", service.remind_batch)):
        while True:
            with db.unit_of_work() as session:
                done = step(session, cutoff)
            counts[name] += done
            if done < service.BATCH:
                break
    return counts


@job(
    "paid.cyclic_benefits",
    "Paid membership: the card's monthly pack on each monthly anniversary, renewal gifts",
    order=45,
)
def cyclic_benefits(db: Database, day: date) -> dict[str, int]:
    """Idempotent by the pack key: ``sub:<id>:<n>`` for the n-th month of a subscription and
    ``sub:<id>:renewal:<payment>`` for a renewal's gift, so a re-run gives nothing twice."""
    tz = get_settings().timezone
    counts = {"packs": 0, "gifts": 0}
    after = 0
    while True:
        with db.unit_of_work() as session:
            seen, last = monthly_batch(session, day, after=after, tz=tz)
        counts["packs"] += seen
        if last is None:
            break
        after = last
    after = 0
    while True:
        with db.unit_of_work() as session:
            seen, last = renewal_gift_batch(session, day, after=after, tz=tz)
        counts["gifts"] += seen
        if last is None:
            break
        after = last
    return counts


def _anniversary(anchor: datetime, day: date) -> int | None:
    """Which month of the subscription starts on ``day`` (0: the first), or None. Anchored on
    the start day and clamped to the month's end: bought on 31 January, the next months
    start on 28/29 February and 31 March."""
    n = (day.year * 12 + day.month) - (anchor.year * 12 + anchor.month)
    if n < 0 or rules.add_months(anchor, n).date() != day:
        return None
    return n


def _issue(session: Session, by_pack: dict[str, dict[int, str]], *, tz: str) -> int:
    from siyu.benefits import packs  # benefits sits above paid: imported where used

    issued = 0
    for code, periods in sorted(by_pack.items()):
        try:
            pack = packs.get_pack(session, code)
        except NotFound:
            continue  # a plan naming a pack not created yet gives nothing until it exists
        issued += len(packs.issue_pack(session, pack, list(periods), period=periods, tz=tz).issued)
    return issued


def monthly_batch(session: Session, day: date, *, after: int, tz: str) -> tuple[int, int | None]:
    """The cyclic pack of subscriptions (ids above ``after``, up to ``BATCH``) whose monthly
    anniversary is ``day``, while they hold benefits. Returns (packs issued, last id seen or
    None at the end)."""
    start = datetime.combine(day, time(), ZoneInfo(tz)).astimezone(clock.UTC)
    subs = list(
        session.scalars(
            select(Subscription)
            .where(
                Subscription.id > after,
                Subscription.state.in_(
                    [
                        State.trial.value,
                        State.active.value,
                        State.grace.value,
                        State.cancelled.value,
                    ]
                ),
                Subscription.current_period_end > start,
            )
            .order_by(Subscription.id)
            .limit(service.BATCH)
        )
    )
    by_pack: dict[str, dict[int, str]] = {}
    for sub in subs:
        pack = Plan.model_validate(sub.terms).benefits.cyclic_pack
        first = sub.trial_started_at or sub.anchor_at
        if pack is None or first is None:
            continue
        n = _anniversary(clock.as_utc(first).astimezone(ZoneInfo(tz)), day)
        if n is not None:
            by_pack.setdefault(pack, {})[sub.member_id] = f"sub:{sub.id}:{n}"
    issued = _issue(session, by_pack, tz=tz)
    return issued, (subs[-1].id if len(subs) == service.BATCH else None)


def renewal_gift_batch(
    session: Session, day: date, *, after: int, tz: str
) -> tuple[int, int | None]:
    """The renewal gift pack for renewals paid by the end of ``day`` (looking back
    ``GIFT_LOOKBACK``), keyed by the payment; refunded renewals give nothing."""
    end = day_end(day, tz)
    rows = session.execute(
        select(Payment.id, Subscription.id, Subscription.member_id, Subscription.terms)
        .join(Subscription, Subscription.id == Payment.subscription_id)
        .where(
            Payment.id > after,
            Payment.kind == "renewal",
            Payment.refunded_fen == 0,
            Payment.at < end,
            Payment.at >= end - GIFT_LOOKBACK,
        )
        .order_by(Payment.id)
        .limit(service.BATCH)
    ).all()
    by_pack: dict[str, dict[int, str]] = {}
    for payment_id, sub_id, member_id, terms in rows:
        pack = Plan.model_validate(terms).benefits.renewal_gift_pack
        if pack is not None:
            by_pack.setdefault(pack, {})[member_id] = f"sub:{sub_id}:renewal:{payment_id}"
    issued = _issue(session, by_pack, tz=tz)
    return issued, (rows[-1][0] if len(rows) == service.BATCH else None)
