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
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

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


@dataclass(frozen=True)
class RenewalDecision:
    """What a renewal charge does to the member's latest subscription.

    - ``extend``: the next period of the same subscription, from where the last one ended
      (paid before the benefits lapsed: in the period or within grace);
    - ``new_term``: a new subscription anchored at ``anchor`` (the payment; or, when the
      charge was paid within grace but the subscription was already expired when the
      callback came, the old period's end, so there is no gap);
    - ``refused``: ``reason`` says why (cancelled before the period ended, refunded).
    """

    action: Literal["extend", "new_term", "refused"]
    anchor: datetime | None = None
    reason: str | None = None


def lapse_at(
    state: State,
    *,
    period_end: datetime,
    grace_days: int,
    auto_renew: bool,
    grace_until: datetime | None = None,
    ended_at: datetime | None = None,
) -> datetime:
    """The instant the subscription's benefits end (or ended) when no renewal comes: the
    period's end, plus the grace days when it would have renewed. Read from the terms, not
    from the state alone, so a charge is judged the same whether or not the daily job has
    moved the subscription yet."""
    if ended_at is not None and state in (State.expired, State.refunded):
        return ended_at
    if grace_until is not None:
        return grace_until
    if state in (State.active, State.grace) and auto_renew and grace_days > 0:
        return period_end + grace_days * DAY
    return period_end


def renewal_decision(
    state: State,
    *,
    paid_at: datetime,
    period_end: datetime,
    lapse: datetime,
) -> RenewalDecision:
    """How a renewal charge paid at ``paid_at`` applies (see ``RenewalDecision``)."""
    if state == State.refunded:
        return RenewalDecision(
            "refused", reason="the subscription was refunded; a new card is a purchase callback"
        )
    if state == State.trial:
        return RenewalDecision(
            "refused", reason="a trial is not renewed; a trial turns paid by a purchase callback"
        )
    if state == State.cancelled and paid_at < period_end:
        return RenewalDecision(
            "refused",
            reason=f"the member cancelled; benefits last until {period_end.isoformat()} and "
            "nothing renews (refund this charge, or buy again after that)",
        )
    if paid_at < lapse:
        if state in (State.active, State.grace):
            return RenewalDecision("extend")
        return RenewalDecision("new_term", anchor=period_end)  # expired meanwhile: no gap
    return RenewalDecision("new_term", anchor=paid_at)


def exclusive_refusal(
    *, paid_only: bool, plans: list[str] | None, held_plan: str | None
) -> str | None:
    """Why a member may not see or take a reward exclusive to paid members (付费会员专享),
    or None when they may. ``held_plan`` is the plan of the membership holding benefits now
    (a trial counts, as it does for every other benefit), or None."""
    if not paid_only:
        return None
    if held_plan is None:
        return "this reward is for paid members; the member holds no paid membership now"
    if plans and held_plan not in plans:
        return (
            f"this reward is for members of {', '.join(plans)}; "
            f"the member's paid membership is '{held_plan}'"
        )
    return None
