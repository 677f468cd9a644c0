"""Reactions of the points package to domain events, in the publisher's transaction.

Orders earn through ``GrowthApplied`` (tiers), not ``OrdersIngested``: points of an order
use the tier the member held when it was paid, which the tiers handler reports.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from siyu.core.events import subscribe
from siyu.members.service import MembersEnrolled, MembersMerged, MembersUnmerged
from siyu.orders.service import RefundRecorded
from siyu.points import service
from siyu.tiers.service import GrowthApplied


@subscribe(MembersEnrolled)
def signup_points(session: Session, event: MembersEnrolled) -> None:
    service.signup_points(session, event.members)


@subscribe(RefundRecorded)
def reverse_refund(session: Session, event: RefundRecorded) -> None:
    service.reverse_refund(
        session,
        refund_id=event.refund_id,
        order_id=event.order_id,
        refunded_at=event.refunded_at,
        lines=[(x.line_no, x.amount_fen) for x in event.lines],
    )


@subscribe(MembersMerged)
def recompute_after_merge(session: Session, event: MembersMerged) -> None:
    service.after_merge(session, event.from_member_id, event.into_member_id)


@subscribe(MembersUnmerged)
def recompute_after_unmerge(session: Session, event: MembersUnmerged) -> None:
    service.after_merge(session, event.from_member_id, event.into_member_id)


@subscribe(GrowthApplied)
def earn_on_orders(session: Session, event: GrowthApplied) -> None:
    """Points of a chunk of new orders, with the tier held when each was paid."""
    service.earn_orders(
        session, event.orders, event.tier_at_order, programme_at_order=event.programme_at_order
    )
