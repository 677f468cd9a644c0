"""Paid membership routes. The payment provider's callbacks come through the service role;
members' own choices (trial, cancel, auto-renew) through operators and the service role;
any role in scope reads a member's subscription."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from siyu.api.deps import AnyRole, SessionDep, require
from siyu.core.auth import Principal, Role
from siyu.core.settings import get_settings
from siyu.paid import savings, service
from siyu.paid.schemas import (
    AutoRenewUpdate,
    CallbackRead,
    CancelCreate,
    PaymentRead,
    PlanRead,
    PurchaseCallback,
    RefundCallback,
    RenewalCallback,
    SavingsRead,
    SubscriptionRead,
    TrialCreate,
)

router = APIRouter(tags=["paid"])

Provider = Annotated[Principal, Depends(require(Role.service))]
Desk = Annotated[Principal, Depends(require(Role.operator, Role.service))]


def _read(result: service.CallbackResult, response: Response) -> CallbackRead:
    if not result.created:
        response.status_code = 200
    return CallbackRead(
        subscription=SubscriptionRead.of(result.subscription),
        payment=PaymentRead.of(result.payment),
        created=result.created,
    )


@router.get("/paid/plans", response_model=list[PlanRead])
def plans(session: SessionDep, _: AnyRole) -> list[PlanRead]:
    return [PlanRead.of(p) for p in service.plans(session)]


@router.get("/members/{member_id}/subscription", response_model=SubscriptionRead)
def subscription(member_id: int, session: SessionDep, who: AnyRole) -> SubscriptionRead:
    return SubscriptionRead.of(service.get_for_member(session, member_id, principal=who))


@router.post(
    "/members/{member_id}/subscription/trial", response_model=SubscriptionRead, status_code=201
)
def trial(member_id: int, body: TrialCreate, session: SessionDep, who: Desk) -> SubscriptionRead:
    """Start the plan's free trial: once per person, ever."""
    return SubscriptionRead.of(
        service.start_trial(session, member_id, body.plan_code, principal=who)
    )


@router.post("/members/{member_id}/subscription/cancel", response_model=SubscriptionRead)
def cancel(member_id: int, body: CancelCreate, session: SessionDep, who: Desk) -> SubscriptionRead:
    return SubscriptionRead.of(
        service.cancel(session, member_id, reason=body.reason, principal=who)
    )


@router.post("/members/{member_id}/subscription/auto-renew", response_model=SubscriptionRead)
def auto_renew(
    member_id: int, body: AutoRenewUpdate, session: SessionDep, who: Desk
) -> SubscriptionRead:
    return SubscriptionRead.of(
        service.set_auto_renew(session, member_id, body.auto_renew, principal=who)
    )


@router.get("/members/{member_id}/subscription/payments", response_model=list[PaymentRead])
def payments(member_id: int, session: SessionDep, who: AnyRole) -> list[PaymentRead]:
    sub = service.get_for_member(session, member_id, principal=who)
    return [PaymentRead.of(p) for p in service.payments_of(session, sub.id)]


@router.post("/paid/callbacks/purchase", response_model=CallbackRead, status_code=201)
def purchase(
    body: PurchaseCallback, response: Response, session: SessionDep, _: Provider
) -> CallbackRead:
    """A purchase paid at the provider. The same transaction again answers 200 with the
    first result; the same id with other content is 409; a wrong amount is 422."""
    result = service.purchase_callback(
        session,
        body.txn_id,
        body.member_id,
        body.plan_code,
        body.amount_fen,
        body.paid_at,
        tz=get_settings().timezone,
    )
    return _read(result, response)


@router.post("/paid/callbacks/renewal", response_model=CallbackRead, status_code=201)
def renewal(
    body: RenewalCallback, response: Response, session: SessionDep, _: Provider
) -> CallbackRead:
    result = service.renewal_callback(
        session,
        body.txn_id,
        body.member_id,
        body.amount_fen,
        body.paid_at,
        tz=get_settings().timezone,
    )
    return _read(result, response)


@router.post("/paid/callbacks/refund", response_model=CallbackRead, status_code=201)
def refund(
    body: RefundCallback, response: Response, session: SessionDep, _: Provider
) -> CallbackRead:
    result = service.refund_callback(
        session,
        body.txn_id,
        body.payment_txn_id,
        body.amount_fen,
        body.refunded_at,
        used_benefits_fen=body.used_benefits_fen,
    )
    return _read(result, response)


@router.get("/members/{member_id}/subscription/savings", response_model=SavingsRead)
def subscription_savings(member_id: int, session: SessionDep, who: AnyRole) -> SavingsRead:
    """What the card saved the member (this month, since joining, by month, line by line)
    against the fee paid: the figure behind renewing."""
    service.get_for_member(session, member_id, principal=who)
    return SavingsRead.of(savings.summary(session, member_id, tz=get_settings().timezone))
