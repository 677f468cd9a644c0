"""Reactions of paid membership to domain events, in the publisher's transaction.

Savings of orders come on ``GrowthApplied``, after the points handler, so the order's points
lot (the base of the card's extra points) already exists.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from siyu.core.events import subscribe
from siyu.orders.service import RefundRecorded
from siyu.paid import savings
from siyu.tiers.service import GrowthApplied


@subscribe(GrowthApplied)
def record_savings(session: Session, event: GrowthApplied) -> None:
    savings.record_orders(session, event.orders)


@subscribe(RefundRecorded)
def reverse_savings(session: Session, event: RefundRecorded) -> None:
    savings.reverse_refund(session, event)
