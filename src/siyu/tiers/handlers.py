"""Reactions of the tiers package to domain events, in the publisher's transaction.

Imported before points and benefits (``siyu.bootstrap.load_handlers``): points of an order
use the tier held when it was paid, which ``GrowthApplied`` reports."""

from __future__ import annotations

from sqlalchemy.orm import Session

from siyu.core.events import subscribe
from siyu.core.settings import get_settings
from siyu.members.service import MembersEnrolled, MembersMerged, MembersUnmerged
from siyu.orders.service import OrdersIngested, RefundRecorded
from siyu.tiers import service


def _tz() -> str:
    return get_settings().timezone


@subscribe(MembersEnrolled)
def first_level_on_enrolment(session: Session, event: MembersEnrolled) -> None:
    service.on_members_enrolled(session, event, tz=_tz())


@subscribe(OrdersIngested)
def growth_and_upgrades_of_orders(session: Session, event: OrdersIngested) -> None:
    service.on_orders_ingested(session, event, tz=_tz())


@subscribe(RefundRecorded)
def reverse_growth_of_refund(session: Session, event: RefundRecorded) -> None:
    service.on_refund_recorded(session, event)


@subscribe(MembersMerged)
def settle_after_merge(session: Session, event: MembersMerged) -> None:
    service.on_members_merged(session, event, tz=_tz())


@subscribe(MembersUnmerged)
def settle_after_unmerge(session: Session, event: MembersUnmerged) -> None:
    service.on_members_unmerged(session, event, tz=_tz())
