"""Paid membership in a transaction: trials, the payment provider's callbacks (purchase,
renewal, refund), auto-renew, cancellation, and the daily expiry and reminders.

Callbacks are idempotent on the provider's transaction id: the same transaction with the
same content answers the first result again, other content is a conflict naming both.
Purchases lock the member row first, so two purchase callbacks racing for one member leave
one subscription: the same transaction again answers the first result; another transaction
is refused with 409 ``already_subscribed`` ("already a member until …"), which a payment
provider integration turns into a refund of that charge. It is not queued as the next
period: a member charged twice by mistake expects the money back, not a second year.

Whether a subscription still gives its benefits is judged by its dates (period end, grace),
not only by its state, so callbacks do not depend on when the daily job last ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from siyu.core import audit, clock, outbox
from siyu.core.auth import Principal
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.members import service as members
from siyu.members.models import Member
from siyu.paid import rules
from siyu.paid.models import Payment, Subscription
from siyu.paid.rules import State
from siyu.programme import service as programme
from siyu.programme.rules import Plan, Programme, fen

BATCH = 5_000
RENEWAL_NOTICE = timedelta(days=7)
TRIAL_NOTICE = timedelta(days=1)


@dataclass(frozen=True)
class CallbackResult:
    subscription: Subscription
    payment: Payment
    created: bool  # False: a repeat of a transaction already recorded


# --- reading ---------------------------------------------------------------------------------


def plans(session: Session, at: datetime | None = None) -> list[Plan]:
    version = programme.in_force(session, at or clock.now())
    if version is None:
        return []
    doc = programme.programme_of(version)
    return list(doc.paid.plans) if doc.paid else []


def _programme(session: Session, at: datetime) -> Programme:
    return programme.programme_at(session, at)


def _plan(doc: Programme, code: str) -> Plan:
    known = [p.code for p in doc.paid.plans] if doc.paid else []
    if code not in known:
        raise NotFound(
            f"no paid plan '{code}' in the programme in force; plans: {', '.join(known) or 'none'}",
            field="plan_code",
        )
    assert doc.paid is not None
    return doc.paid.plan(code)


def current(session: Session, member_id: int) -> Subscription | None:
    """The member's latest subscription (held or ended), or None if they never had one."""
    return session.scalar(
        select(Subscription)
        .where(Subscription.member_id == member_id)
        .order_by(Subscription.id.desc())
        .limit(1)
    )


def get_for_member(
    session: Session, member_id: int, *, principal: Principal | None = None
) -> Subscription:
    members.get(session, member_id, principal=principal)
    found = current(session, member_id)
    if found is None:
        raise NotFound(f"member {member_id} has no paid membership", field="member_id")
    return found


def holding_plan(session: Session, member_id: int, at: datetime | None = None) -> str | None:
    """The plan of the member's paid membership if it gives its benefits at ``at`` (a trial,
    cancelled to its period's end, grace: yes; lapsed, refunded: no), else None."""
    sub = current(session, member_id)
    return sub.plan_code if _holds(sub, at or clock.now()) and sub is not None else None


def payments_of(session: Session, subscription_id: int) -> list[Payment]:
    return list(
        session.scalars(
            select(Payment).where(Payment.subscription_id == subscription_id).order_by(Payment.id)
        )
    )


def _terms(sub: Subscription) -> Plan:
    return Plan.model_validate(sub.terms)


def _lapse(sub: Subscription) -> datetime:
    """When the subscription's benefits end without a renewal (see ``rules.lapse_at``)."""
    return rules.lapse_at(
        State(sub.state),
        period_end=sub.current_period_end,
        grace_days=sub.grace_days,
        auto_renew=sub.auto_renew,
        grace_until=sub.grace_until,
        ended_at=sub.ended_at,
    )


def _holds(sub: Subscription | None, at: datetime) -> bool:
    """Whether the subscription gives its benefits at ``at``: judged by its dates, so the
    answer does not wait for the daily job to move it."""
    if sub is None or State(sub.state) not in rules.HOLDING:
        return False
    return clock.as_utc(at) < clock.as_utc(_lapse(sub))


def _close_lapsed(sub: Subscription, now: datetime) -> None:
    """Expire a subscription whose benefits lapsed before the daily job moved it."""
    if State(sub.state) in (State.expired, State.refunded):
        return
    lapse = _lapse(sub)
    sub.state, sub.ended_at, sub.updated_at = State.expired.value, lapse, now


# --- helpers ---------------------------------------------------------------------------------


def _lock_member(session: Session, member_id: int) -> Member:
    """The member row, locked on PostgreSQL (SQLite's transaction already holds the lock)."""
    query = select(Member).where(Member.id == member_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    member = session.scalar(query)
    if member is None:
        raise NotFound(f"no member with id {member_id}", field="member_id")
    if member.merged_into_id is not None:
        raise Conflict(
            f"member {member_id} was merged into {member.merged_into_id}; use that member",
            field="member_id",
            code="member_merged",
        )
    return member


def person_ids(session: Session, member_id: int) -> list[int]:
    """The member and every member merged into it (at any depth): one person after OneID."""
    ids = [member_id]
    frontier = [member_id]
    while frontier:
        frontier = list(
            session.scalars(select(Member.id).where(Member.merged_into_id.in_(frontier)))
        )
        ids += frontier
    return ids


def _had_trial(session: Session, member_id: int) -> bool:
    return (
        session.scalar(
            select(Subscription.id)
            .where(
                Subscription.member_id.in_(person_ids(session, member_id)),
                Subscription.trial_started_at.is_not(None),
            )
            .limit(1)
        )
        is not None
    )


def _check_eligible(doc: Programme, plan: Plan, member: Member) -> None:
    refusal = rules.eligibility_refusal(
        plan,
        tier_code=member.tier_code,
        growth=member.growth_balance,
        ladder=[lv.code for lv in doc.tiers.levels],
    )
    if refusal:
        raise InvalidInput(refusal, field="plan_code", code="not_eligible")


def _anchor_local(at: datetime, tz: str) -> datetime:
    return clock.as_utc(at).astimezone(ZoneInfo(tz))


def _bounds(sub: Subscription, index: int, tz: str) -> tuple[datetime, datetime]:
    assert sub.anchor_at is not None
    start, end = rules.period_bounds(_anchor_local(sub.anchor_at, tz), index, _terms(sub).period)
    return clock.as_utc(start), clock.as_utc(end)


def _move(sub: Subscription, to: State, at: datetime) -> None:
    if not rules.can_move(State(sub.state), to):
        raise Conflict(
            f"the subscription is {sub.state} and cannot become {to.value}",
            field="state",
            code="subscription_state",
        )
    sub.state = to.value
    sub.updated_at = at


def _replay(session: Session, txn_id: str, content: dict[str, Any]) -> CallbackResult | None:
    """The first result of a transaction id seen before; a conflict when its content differs."""
    first = session.scalar(select(Payment).where(Payment.txn_id == txn_id))
    if first is None:
        return None
    stored = {
        "kind": first.kind,
        "member_id": first.member_id,
        "plan_code": first.plan_code,
        "amount_fen": first.amount_fen,
        "at": clock.as_utc(first.at).isoformat(),
    }
    given = {k: content[k] for k in stored}
    if stored != given:
        raise Conflict(
            f"transaction '{txn_id}' was already recorded as {stored}; this callback says {given}",
            field="txn_id",
            code="txn_conflict",
        )
    sub = session.get(Subscription, first.subscription_id)
    assert sub is not None
    return CallbackResult(sub, first, created=False)


def _content(
    kind: str, member_id: int, plan_code: str, amount_fen: int, at: datetime
) -> dict[str, Any]:
    return {
        "kind": kind,
        "member_id": member_id,
        "plan_code": plan_code,
        "amount_fen": amount_fen,
        "at": clock.as_utc(at).isoformat(),
    }


# --- trial and purchase ----------------------------------------------------------------------


def start_trial(
    session: Session, member_id: int, plan_code: str, *, principal: Principal | None = None
) -> Subscription:
    """Start the plan's free trial: once per person ever, across merged identities."""
    now = clock.now()
    member = _lock_member(session, member_id)
    if principal is not None:
        members.check_scope(principal, member)
    doc = _programme(session, now)
    plan = _plan(doc, plan_code)
    held = current(session, member_id)
    refusal = rules.trial_refusal(
        plan, had_trial=_had_trial(session, member_id), holds_plan=_holds(held, now)
    )
    if refusal:
        raise Conflict(refusal, field="plan_code", code="trial_refused")
    if held is not None and State(held.state) in rules.HOLDING:
        _close_lapsed(held, now)  # it lapsed (or _holds would have refused the trial)
    _check_eligible(doc, plan, member)
    sub = Subscription(
        member_id=member_id,
        plan_code=plan.code,
        terms=plan.model_dump(mode="json"),
        state=State.trial.value,
        auto_renew=False,
        trial_started_at=now,
        current_period_start=now,
        current_period_end=now + timedelta(days=plan.trial_days),
        grace_days=plan.grace_days,
        created_at=now,
        updated_at=now,
    )
    session.add(sub)
    session.flush()
    outbox.emit(session, "paid.trial_started", {"member_id": member_id, "plan": plan.code})
    return sub


def purchase_callback(
    session: Session,
    txn_id: str,
    member_id: int,
    plan_code: str,
    amount_fen: int,
    paid_at: datetime,
    *,
    tz: str = "Asia/Shanghai",
) -> CallbackResult:
    """A purchase paid at the provider: a new subscription, or a trial turned paid."""
    content = _content("purchase", member_id, plan_code, amount_fen, paid_at)
    if (seen := _replay(session, txn_id, content)) is not None:
        return seen
    member = _lock_member(session, member_id)
    if (seen := _replay(session, txn_id, content)) is not None:  # raced in while we waited
        return seen
    doc = _programme(session, paid_at)
    plan = _plan(doc, plan_code)
    if amount_fen != fen(plan.price):
        raise InvalidInput(
            f"the plan '{plan.code}' costs {fen(plan.price)} fen ({plan.price} yuan), "
            f"not {amount_fen} fen",
            field="amount_fen",
            code="wrong_amount",
        )
    held = current(session, member_id)
    now = clock.now()
    if _holds(held, paid_at) and held is not None and held.state != State.trial:
        raise Conflict(
            f"member {member_id} is already a member ('{held.plan_code}') until "
            f"{held.current_period_end.isoformat()}; this purchase ('{txn_id}') is not "
            "applied: refund it at the provider, and send renewals as renewal callbacks",
            field="member_id",
            code="already_subscribed",
        )
    _check_eligible(doc, plan, member)
    if held is not None and held.state == State.trial and held.plan_code == plan.code:
        sub = held  # the trial turns paid, from the moment of payment
        _move(sub, State.active, now)
        sub.terms = plan.model_dump(mode="json")
        sub.grace_days = plan.grace_days
        sub.auto_renew = True
    else:
        if held is not None and held.state == State.trial:
            held.state, held.ended_at, held.updated_at = State.expired.value, paid_at, now
        elif held is not None:
            _close_lapsed(held, now)
        sub = Subscription(
            member_id=member_id,
            plan_code=plan.code,
            terms=plan.model_dump(mode="json"),
            state=State.active.value,
            auto_renew=True,
            grace_days=plan.grace_days,
            current_period_start=paid_at,
            current_period_end=paid_at + timedelta(days=1),
            created_at=now,
            updated_at=now,
        )
        session.add(sub)
    sub.anchor_at = paid_at
    sub.periods_paid = 1
    sub.current_period_start, sub.current_period_end = _bounds(sub, 0, tz)
    sub.reminded_end_at = None
    session.flush()
    payment = _pay(session, txn_id, sub, "purchase", amount_fen, paid_at)
    outbox.emit(
        session,
        "paid.purchased",
        {"member_id": member_id, "plan": plan.code, "until": sub.current_period_end.isoformat()},
    )
    return CallbackResult(sub, payment, created=True)


def _pay(
    session: Session, txn_id: str, sub: Subscription, kind: str, amount_fen: int, at: datetime
) -> Payment:
    payment = Payment(
        txn_id=txn_id,
        member_id=sub.member_id,
        subscription_id=sub.id,
        kind=kind,
        plan_code=sub.plan_code,
        amount_fen=amount_fen,
        at=at,
        period_start=sub.current_period_start if kind != "refund" else None,
        period_end=sub.current_period_end if kind != "refund" else None,
        refunded_fen=0,
        created_at=clock.now(),
    )
    session.add(payment)
    session.flush()
    return payment


def renewal_callback(
    session: Session,
    txn_id: str,
    member_id: int,
    amount_fen: int,
    paid_at: datetime,
    *,
    tz: str = "Asia/Shanghai",
) -> CallbackResult:
    """A renewal charge, at the price the member bought at (their terms), judged by when it
    was paid (``rules.renewal_decision``), whether or not the daily job has moved the
    subscription yet:

    - paid before the benefits lapsed (in the period, or within grace): the next period of
      the same subscription, from where the last one ended: no gap, no overlap;
    - paid after they lapsed: a new subscription (same terms) anchored at the payment, and
      the old one expired at its lapse; "saved since joining" continues across the gap,
      as savings are the member's;
    - paid within grace but arriving after the job expired the subscription: a new
      subscription anchored at the old period's end, so there is still no gap;
    - a cancelled (before its end), refunded or trial subscription is not renewed (409)."""
    _lock_member(session, member_id)
    sub = current(session, member_id)
    plan_code = sub.plan_code if sub is not None else ""
    content = _content("renewal", member_id, plan_code, amount_fen, paid_at)
    if (seen := _replay(session, txn_id, content)) is not None:
        return seen
    if sub is None or (sub.anchor_at is None and sub.state != State.trial):
        raise NotFound(
            f"member {member_id} has no paid subscription to renew; send a purchase callback",
            field="member_id",
        )
    terms = _terms(sub)
    if amount_fen != fen(terms.price):
        raise InvalidInput(
            f"the member's plan '{terms.code}' renews at {fen(terms.price)} fen "
            f"({terms.price} yuan), not {amount_fen} fen",
            field="amount_fen",
            code="wrong_amount",
        )
    state = State(sub.state)
    lapse = _lapse(sub)
    decision = rules.renewal_decision(
        state, paid_at=paid_at, period_end=sub.current_period_end, lapse=lapse
    )
    if decision.action == "refused":
        raise Conflict(
            f"the member's subscription is {sub.state}: {decision.reason}",
            field="member_id",
            code="subscription_state",
        )
    now = clock.now()
    if decision.action == "extend":
        sub.current_period_start, sub.current_period_end = _bounds(sub, sub.periods_paid, tz)
        sub.periods_paid += 1
        _move(sub, State.active, now)
        sub.grace_until = None
    else:
        assert decision.anchor is not None
        _close_lapsed(sub, now)  # lapsed while the daily job had not run yet
        sub = Subscription(
            member_id=member_id,
            plan_code=sub.plan_code,
            terms=sub.terms,
            state=State.active.value,
            auto_renew=True,
            grace_days=sub.grace_days,
            anchor_at=decision.anchor,
            periods_paid=1,
            current_period_start=decision.anchor,
            current_period_end=decision.anchor + timedelta(days=1),
            created_at=now,
            updated_at=now,
        )
        session.add(sub)
        sub.current_period_start, sub.current_period_end = _bounds(sub, 0, tz)
    session.flush()
    payment = _pay(session, txn_id, sub, "renewal", amount_fen, paid_at)
    outbox.emit(
        session,
        "paid.renewed",
        {
            "member_id": member_id,
            "plan": sub.plan_code,
            "until": sub.current_period_end.isoformat(),
            "new_term": decision.action == "new_term",
        },
    )
    return CallbackResult(sub, payment, created=True)


def refund_callback(
    session: Session,
    txn_id: str,
    payment_txn_id: str,
    amount_fen: int,
    refunded_at: datetime,
    *,
    used_benefits_fen: int = 0,
) -> CallbackResult:
    """A refund of a payment: at most what the member's terms allow (full within the window,
    by unused days after, less benefits used when the terms say so). The subscription ends."""
    paid = session.scalar(select(Payment).where(Payment.txn_id == payment_txn_id))
    if paid is None or paid.kind == "refund":
        raise NotFound(
            f"no purchase or renewal with transaction id '{payment_txn_id}'",
            field="payment_txn_id",
        )
    content = _content("refund", paid.member_id, paid.plan_code, amount_fen, refunded_at)
    if (seen := _replay(session, txn_id, content)) is not None:
        return seen
    _lock_member(session, paid.member_id)
    session.refresh(paid)
    sub = session.get(Subscription, paid.subscription_id)
    assert sub is not None and paid.period_start is not None and paid.period_end is not None
    due = rules.refund_due(
        _terms(sub),
        amount_fen=paid.amount_fen,
        paid_at=paid.at,
        period_start=paid.period_start,
        period_end=paid.period_end,
        at=refunded_at,
        used_benefits_fen=used_benefits_fen,
    )
    left = min(due, paid.amount_fen - paid.refunded_fen)
    if amount_fen > left:
        raise InvalidInput(
            f"at most {left} fen of payment '{payment_txn_id}' may be refunded "
            f"({paid.amount_fen} fen paid, {paid.refunded_fen} fen refunded already); "
            f"not {amount_fen} fen",
            field="amount_fen",
            code="refund_too_large",
        )
    now = clock.now()
    if sub.state != State.refunded:
        _move(sub, State.refunded, now)
        sub.ended_at = refunded_at
        sub.auto_renew = False
    paid.refunded_fen += amount_fen
    payment = _pay(session, txn_id, sub, "refund", amount_fen, refunded_at)
    payment.refund_of_id = paid.id
    session.flush()
    outbox.emit(session, "paid.refunded", {"member_id": sub.member_id, "amount_fen": amount_fen})
    return CallbackResult(sub, payment, created=True)


# --- member choices --------------------------------------------------------------------------


def set_auto_renew(
    session: Session, member_id: int, on: bool, *, principal: Principal
) -> Subscription:
    sub = get_for_member(session, member_id, principal=principal)
    if sub.state not in (State.active, State.grace):
        raise Conflict(
            f"auto-renew applies to an active subscription; this one is {sub.state}",
            field="auto_renew",
            code="subscription_state",
        )
    if sub.auto_renew != on:
        sub.auto_renew = on
        sub.updated_at = clock.now()
        audit.record(
            session,
            actor=principal.actor,
            action="paid.auto_renew",
            target_type="member",
            target_id=member_id,
            detail={"subscription_id": sub.id, "auto_renew": on},
        )
        session.flush()
    return sub


def cancel(session: Session, member_id: int, *, reason: str, principal: Principal) -> Subscription:
    """Stop the subscription: no more renewals; benefits last to the end of the period.
    Money back is the provider's refund callback. Cancelling twice changes nothing."""
    if not reason.strip():
        raise InvalidInput("say why the subscription is cancelled", field="reason")
    sub = get_for_member(session, member_id, principal=principal)
    if sub.state == State.cancelled:
        return sub
    now = clock.now()
    _move(sub, State.cancelled, now)
    sub.auto_renew = False
    sub.cancelled_at = now
    audit.record(
        session,
        actor=principal.actor,
        action="paid.cancel",
        target_type="member",
        target_id=member_id,
        detail={"subscription_id": sub.id, "reason": reason},
    )
    outbox.emit(session, "paid.cancelled", {"member_id": member_id, "plan": sub.plan_code})
    session.flush()
    return sub


# --- the daily job ---------------------------------------------------------------------------


def expire_batch(session: Session, cutoff: datetime) -> int:
    """Move up to ``BATCH`` subscriptions whose period (or grace) ended by ``cutoff``: active
    with auto-renew into grace, the rest to expired. What moved is no longer selected."""
    due = list(
        session.scalars(
            select(Subscription)
            .where(
                or_(
                    Subscription.state.in_(
                        [State.trial.value, State.active.value, State.cancelled.value]
                    )
                    & (Subscription.current_period_end <= cutoff),
                    (Subscription.state == State.grace.value)
                    & (Subscription.grace_until <= cutoff),
                )
            )
            .order_by(Subscription.id)
            .limit(BATCH)
        )
    )
    now = clock.now()
    for sub in due:
        to = (
            State.expired
            if sub.state == State.grace
            else rules.after_period_end(
                State(sub.state), grace_days=sub.grace_days, auto_renew=sub.auto_renew
            )
        )
        sub.state, sub.updated_at = to.value, now
        if to == State.grace:
            sub.grace_until = sub.current_period_end + timedelta(days=sub.grace_days)
        else:
            sub.ended_at = sub.grace_until or sub.current_period_end
            outbox.emit(
                session,
                "paid.expired",
                {"member_id": sub.member_id, "plan": sub.plan_code, "subscription_id": sub.id},
                key=f"paid.expired:{sub.id}",
            )
    session.flush()
    return len(due)


def remind_batch(session: Session, cutoff: datetime) -> int:
    """Reminders for periods ending soon: ``paid.trial_ending`` a day before a trial ends,
    ``paid.renewal_due`` a week before a paid period ends. Once per period end."""
    due = list(
        session.scalars(
            select(Subscription)
            .where(
                or_(
                    (Subscription.state == State.trial.value)
                    & (Subscription.current_period_end <= cutoff + TRIAL_NOTICE),
                    (Subscription.state == State.active.value)
                    & (Subscription.current_period_end <= cutoff + RENEWAL_NOTICE),
                ),
                or_(
                    Subscription.reminded_end_at.is_(None),
                    Subscription.reminded_end_at != Subscription.current_period_end,
                ),
            )
            .order_by(Subscription.id)
            .limit(BATCH)
        )
    )
    for sub in due:
        topic = "paid.trial_ending" if sub.state == State.trial else "paid.renewal_due"
        outbox.emit(
            session,
            topic,
            {
                "member_id": sub.member_id,
                "plan": sub.plan_code,
                "ends_at": sub.current_period_end.isoformat(),
                "auto_renew": sub.auto_renew,
            },
            key=f"{topic}:{sub.id}:{sub.current_period_end.isoformat()}",
        )
        sub.reminded_end_at = sub.current_period_end
    session.flush()
    return len(due)
