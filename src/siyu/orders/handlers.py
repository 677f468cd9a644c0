"""Reactions of the orders package to events of the packages below it.

``member_metrics`` is derived data (``info={"merge": "derived"}``): the generic member merge
does not move its rows, it moves orders and refunds, and these handlers rebuild the metrics
of both members from them in the merge's own transaction.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from siyu.core.events import subscribe
from siyu.members.service import MembersMerged, MembersUnmerged
from siyu.orders import service


@subscribe(MembersMerged)
def recompute_after_merge(session: Session, event: MembersMerged) -> None:
    _recompute(session, event.from_member_id, event.into_member_id)


@subscribe(MembersUnmerged)
def recompute_after_unmerge(session: Session, event: MembersUnmerged) -> None:
    _recompute(session, event.from_member_id, event.into_member_id)


def _recompute(session: Session, *member_ids: int) -> None:
    service.realign_refund_members(session, list(member_ids))
    service.recompute_metrics(session, list(member_ids))
