"""API shapes for paid membership. Money is integer fen (``*_fen``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from siyu.paid.models import Payment, Subscription
from siyu.paid.savings import Summary
from siyu.programme.rules import Plan, fen

TxnId = Field(min_length=1, max_length=128, description="the payment provider's transaction id")


class PlanRead(BaseModel):
    code: str
    name: str
    period: str
    price_fen: int
    trial_days: int
    grace_days: int

    @classmethod
    def of(cls, plan: Plan) -> PlanRead:
        return cls(
            code=plan.code,
            name=plan.name,
            period=plan.period,
            price_fen=fen(plan.price),
            trial_days=plan.trial_days,
            grace_days=plan.grace_days,
        )


class PaymentRead(BaseModel):
    id: int
    txn_id: str
    kind: str
    amount_fen: int
    at: datetime
    period_start: datetime | None
    period_end: datetime | None
    refunded_fen: int

    @classmethod
    def of(cls, p: Payment) -> PaymentRead:
        return cls(
            id=p.id,
            txn_id=p.txn_id,
            kind=p.kind,
            amount_fen=p.amount_fen,
            at=p.at,
            period_start=p.period_start,
            period_end=p.period_end,
            refunded_fen=p.refunded_fen,
        )


class SubscriptionRead(BaseModel):
    id: int
    member_id: int
    plan_code: str
    plan_name: str
    price_fen: int = Field(description="the price the member renews at (their terms)")
    state: str
    trial: bool
    auto_renew: bool
    current_period_start: datetime
    current_period_end: datetime
    grace_until: datetime | None
    cancelled_at: datetime | None
    ended_at: datetime | None

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionRead:
        terms = Plan.model_validate(s.terms)
        return cls(
            id=s.id,
            member_id=s.member_id,
            plan_code=s.plan_code,
            plan_name=terms.name,
            price_fen=fen(terms.price),
            state=s.state,
            trial=s.state == "trial",
            auto_renew=s.auto_renew,
            current_period_start=s.current_period_start,
            current_period_end=s.current_period_end,
            grace_until=s.grace_until,
            cancelled_at=s.cancelled_at,
            ended_at=s.ended_at,
        )


class CallbackRead(BaseModel):
    subscription: SubscriptionRead
    payment: PaymentRead
    created: bool


class TrialCreate(BaseModel):
    plan_code: str = Field(min_length=1, max_length=50)


class PurchaseCallback(BaseModel):
    txn_id: str = TxnId
    member_id: int
    plan_code: str = Field(min_length=1, max_length=50)
    amount_fen: int = Field(gt=0)
    paid_at: datetime


class RenewalCallback(BaseModel):
    txn_id: str = TxnId
    member_id: int
    amount_fen: int = Field(gt=0)
    paid_at: datetime


class RefundCallback(BaseModel):
    txn_id: str = TxnId
    payment_txn_id: str = Field(min_length=1, max_length=128)
    amount_fen: int = Field(gt=0)
    refunded_at: datetime
    used_benefits_fen: int = Field(default=0, ge=0)


class CancelCreate(BaseModel):
    reason: str = Field(min_length=1, max_length=200)


class AutoRenewUpdate(BaseModel):
    auto_renew: bool


class SavingLineRead(BaseModel):
    kind: str = Field(description="member_price | coupon | freight | extra_points")
    amount_fen: int = Field(description="negative when a refund took a saving back")
    at: datetime
    order_id: int | None
    fact: str
    detail: dict[str, Any]


class SavingsRead(BaseModel):
    """What the card saved the member, against its fee, explained line by line."""

    member_id: int
    subscription_id: int
    plan_code: str
    joined_at: datetime
    month: str
    saved_this_month_fen: int
    saved_fen: int
    fee_fen: int
    net_fen: int
    by_kind: dict[str, int]
    months: dict[str, int] = Field(description="brand-local month (YYYY-MM) -> saved that month")
    sentence_zh: str
    sentence_en: str
    lines: list[SavingLineRead]

    @classmethod
    def of(cls, s: Summary) -> SavingsRead:
        return cls(
            member_id=s.member_id,
            subscription_id=s.subscription_id,
            plan_code=s.plan_code,
            joined_at=s.joined_at,
            month=s.month,
            saved_this_month_fen=s.saved_this_month_fen,
            saved_fen=s.saved_fen,
            fee_fen=s.fee_fen,
            net_fen=s.net_fen,
            by_kind=s.by_kind,
            months=s.months,
            sentence_zh=s.zh,
            sentence_en=s.en,
            lines=[
                SavingLineRead(
                    kind=x.kind,
                    amount_fen=x.amount_fen,
                    at=x.at,
                    order_id=x.order_id,
                    fact=x.fact,
                    detail=x.detail,
                )
                for x in s.lines
            ],
        )
