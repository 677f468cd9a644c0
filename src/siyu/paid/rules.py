"""Pure rules of paid membership: periods, trials, refunds and a subscription's states.

Periods are anchored on the day a subscription was bought: period ``k`` runs from the anchor
plus ``k`` periods to the anchor plus ``k + 1``, the day clamped to the month's end. One
bought on 31 January renews on 28 (or 29) February and then on 31 March, never drifting to
the 28th; consecutive periods share their boundary, so they neither overlap nor leave a gap.
The caller passes the anchor in the brand's timezone, so the day is the brand's day.

Everything here is plain data in, plain data out: no database, no clock.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from enum import StrEnum

from siyu.programme.rules import Plan

MONTHS = {"month": 1, "quarter": 3, "year": 12}
DAY = timedelta(days=1)


class State(StrEnum):
    trial = "trial"
    active = "active"
    grace = "grace"  # the period ended unpaid; benefits go on for the plan's grace days
    expired = "expired"
    cancelled = "cancelled"  # the member stopped it; benefits last to the period's end
    refunded = "refunded"


# Where each state may go. Expired and refunded are final: buying again starts a new
# subscription. A renewal after expiry is a new term of a new subscription for that reason.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.trial: frozenset({State.active, State.expired, State.cancelled}),
    State.active: frozenset(
        {State.active, State.grace, State.expired, State.cancelled, State.refunded}
    ),
    State.grace: frozenset({State.active, State.expired, State.cancelled, State.refunded}),
    State.cancelled: frozenset({State.expired, State.refunded}),
    State.expired: frozenset(),
    State.refunded: frozenset(),
}

HOLDING = frozenset({State.trial, State.active, State.grace, State.cancelled})


def can_move(current: State, to: State) -> bool:
    return to in TRANSITIONS[current]


def add_months(at: datetime, months: int) -> datetime:
    """``at`` moved by whole months on its own wall clock, the day clamped to the month end."""
    index = at.year * 12 + at.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def period_bounds(anchor: datetime, index: int, period: str) -> tuple[datetime, datetime]:
    """Period ``index`` (0 is the first) of a subscription anchored at ``anchor``."""
    months = MONTHS[period]
    return add_months(anchor, index * months), add_months(anchor, (index + 1) * months)


def trial_refusal(plan: Plan, *, had_trial: bool, holds_plan: bool) -> str | None:
    """Why a member may not start this plan's trial, or None when they may."""
    if plan.trial_days == 0:
        return f"the plan '{plan.code}' has no trial"
    if had_trial:
        return "a trial is once per person, and this member (or an identity merged into it) had one"
    if holds_plan:
        return "the member already holds a paid membership"
    return None


def eligibility_refusal(
    plan: Plan, *, tier_code: str | None, growth: int, ladder: list[str]
) -> str | None:
    """Why a member may not take the plan (tier or growth too low), or None."""
    gate = plan.eligibility
    if gate.min_tier is not None:
        rank = ladder.index(tier_code) if tier_code in ladder else -1
        if rank < ladder.index(gate.min_tier):
            held = tier_code or "without a tier"
            return f"the plan '{plan.code}' needs tier {gate.min_tier} or above; member: {held}"
    if gate.min_growth is not None and growth < gate.min_growth:
        return f"the plan '{plan.code}' needs growth {gate.min_growth}; the member has {growth}"
    return None


def refund_due(
    plan: Plan,
    *,
    amount_fen: int,
    paid_at: datetime,
    period_start: datetime,
    period_end: datetime,
    at: datetime,
    used_benefits_fen: int = 0,
) -> int:
    """The most a payment may be refunded at ``at``: all of it within the full-refund window,
    then the unused days' share (or nothing), less benefits used when the plan says so."""
    if at - paid_at <= plan.refund.full_within_days * DAY:
        due = amount_fen
    elif plan.refund.after == "none":
        due = 0
    else:
        total = (period_end - period_start).total_seconds()
        unused = (period_end - max(at, period_start)).total_seconds()
        due = amount_fen * max(0, int(unused // 86400)) // max(1, round(total / 86400))
    if plan.refund.deduct_used_benefits:
        due -= used_benefits_fen
    return max(0, min(due, amount_fen))


def after_period_end(state: State, *, grace_days: int, auto_renew: bool) -> State:
    """What a subscription becomes when its period ends unpaid: grace when it would have
    renewed and the plan grants grace days, otherwise expired. Grace ending is expiry."""
    if state == State.active and auto_renew and grace_days > 0:
        return State.grace
    return State.expired
