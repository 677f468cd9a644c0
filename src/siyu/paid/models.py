"""Subscriptions and the fee's own ledger. The fee is revenue of its own, never an order:
``paid_payments`` holds every purchase, renewal and refund, keyed by the payment provider's
transaction id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, BigId, UTCDateTime


class Subscription(Base):
    """One term of a member's paid membership. ``terms`` is the plan as it was when bought:
    a plan changed later does not change what existing subscribers hold."""

    __tablename__ = "paid_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    plan_code: Mapped[str] = mapped_column(String(50))
    terms: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(10))
    auto_renew: Mapped[bool] = mapped_column(Boolean, default=True)
    trial_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Periods are counted from the anchor (the first paid instant) so month ends never drift.
    anchor_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    periods_paid: Mapped[int] = mapped_column(Integer, default=0)
    current_period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    current_period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    grace_days: Mapped[int] = mapped_column(Integer, default=0)
    grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The period end last reminded of (trial ending, renewal due), so a re-run sends no twin.
    reminded_end_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_paid_subscriptions_member", "member_id", "id"),
        Index("ix_paid_subscriptions_state_end", "state", "current_period_end"),
        CheckConstraint(
            "state IN ('trial', 'active', 'grace', 'expired', 'cancelled', 'refunded')",
            name="state_known",
        ),
        CheckConstraint("current_period_end > current_period_start", name="period_forward"),
    )


class Payment(Base):
    """A fee paid or refunded, as the payment provider reported it (once per transaction)."""

    __tablename__ = "paid_payments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    txn_id: Mapped[str] = mapped_column(String(128), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("paid_subscriptions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    plan_code: Mapped[str] = mapped_column(String(50))
    amount_fen: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refund_of_id: Mapped[int | None] = mapped_column(ForeignKey("paid_payments.id"), index=True)
    refunded_fen: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("kind IN ('purchase', 'renewal', 'refund')", name="kind_known"),
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        CheckConstraint("refunded_fen >= 0 AND refunded_fen <= amount_fen", name="refund_within"),
    )


class Saving(Base):
    """One saving a paid member got from the card, per order line or order: the member
    price, extra points (valued at the programme's cash rate), and negative entries when a
    refund takes a line back. Append-only; ``fact`` makes each saving happen once. Savings
    from the card's coupons are read from the coupons themselves (see ``paid.savings``)."""

    __tablename__ = "paid_savings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    subscription_id: Mapped[int] = mapped_column(ForeignKey("paid_subscriptions.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(15))
    amount_fen: Mapped[int] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    fact: Mapped[str] = mapped_column(String(120), unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_paid_savings_member_at", "member_id", "at"),
        Index("ix_paid_savings_at", "at"),  # the month's benefit cost (KPIs)
        CheckConstraint(
            "kind IN ('member_price', 'coupon', 'freight', 'extra_points')", name="kind_known"
        ),
    )
