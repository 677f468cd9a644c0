"""Reactions of the benefits package to domain events, in the publisher's transaction.

- ``MembersEnrolled``: join packs, one set of statements for a whole bulk enrolment.
- ``TiersChanged``: tier-upgrade packs for upgrades (a join is not an upgrade here: the
  join pack covers it).
- ``RefundRecorded``: coupons used on the refunded order come back (see
  ``rules.returned_by_refund``).

Coupons, pack issues and redemptions carry ``member_id`` and follow merges through the
generic member merge; nothing is derived, so nothing is rebuilt.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from siyu.benefits import coupons, packs, rules
from siyu.core.events import subscribe
from siyu.core.settings import get_settings
from siyu.members.service import MembersEnrolled
from siyu.orders.service import RefundRecorded
from siyu.tiers.service import TiersChanged


@subscribe(MembersEnrolled)
def join_packs(session: Session, event: MembersEnrolled) -> None:
    packs.join_packs(session, event.members, tz=get_settings().timezone)


@subscribe(TiersChanged)
def upgrade_packs(session: Session, event: TiersChanged) -> None:
    upgrades = [
        (c.member_id, c.to_code, c.at)
        for c in event.changes
        if rules.gets_upgrade_pack(c.reason, up=c.is_upgrade)
    ]
    if upgrades:
        packs.upgrade_packs(session, upgrades, tz=get_settings().timezone)


@subscribe(RefundRecorded)
def return_coupons(session: Session, event: RefundRecorded) -> None:
    coupons.return_for_refund(session, order_id=event.order_id, refund_id=event.refund_id)
