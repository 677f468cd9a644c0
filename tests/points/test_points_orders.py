"""Points of real orders: earned through ingestion (after growth, with the tier held when
paid), frozen through the return window, reversed exactly by refunds, following merges."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.errors import Conflict
from siyu.members import service as members
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft, RefundLineDraft
from siyu.points import service
from siyu.points.models import PointsEntry, PointsLot

Enrol = Callable[..., int]
Cached = Callable[[int], tuple[int, int, int]]


def order(member_id: int, external_id: str = "T1", **overrides: Any) -> OrderDraft:
    """256.00 of milk powder and 99.90 of nappies, 10.00 freight, paid yesterday."""
    fields: dict[str, Any] = {
        "channel": "tmall",
        "external_id": external_id,
        "paid_at": clock.now() - timedelta(days=1),
        "lines": [LineDraft("SKU-1", "奶粉", 2, 25_600), LineDraft("SKU-9", "纸尿裤", 1, 9_990)],
        "freight_fen": 1_000,
        "store_code": "S001",
        "member_id": member_id,
    }
    fields.update(overrides)
    return OrderDraft(**fields)


def refund(external_id: str, order_id: str = "T1", **fields: Any) -> RefundDraft:
    return RefundDraft(
        channel="tmall",
        external_id=external_id,
        order_channel="tmall",
        order_external_id=order_id,
        refunded_at=clock.now(),
        **fields,
    )


def ingest(session: Session, draft: OrderDraft) -> int:
    [result] = orders.ingest_orders(session, [draft])
    assert result.status == "created", result.problems
    assert result.order_id is not None
    return result.order_id


def test_an_order_earns_per_line_frozen_through_the_return_window(
    session: Session, programme: None, enrol: Enrol, cached: Cached
) -> None:
    member = enrol()
    order_id = ingest(session, order(member))
    lot = session.scalar(select(PointsLot).where(PointsLot.fact == f"order:{order_id}"))
    assert lot is not None
    assert lot.points == 256 + 99  # freight earns nothing; 99.90 rounds down
    assert lot.lines == [
        {"line_no": 1, "amount_fen": 25_600, "points": 256},
        {"line_no": 2, "amount_fen": 9_990, "points": 99},
    ]
    assert lot.frozen and lot.available_at == lot.earned_at + timedelta(days=7)
    assert cached(member) == (355, 355, 0)
    assert service.available(session, member) == 0
    with pytest.raises(Conflict):
        service.spend(session, member, 1, fact="mall:1", reason="too early")
    # the same order again earns nothing more
    orders.ingest_orders(session, [order(member)])
    assert cached(member) == (355, 355, 0)
    assert service.available(session, member, at=clock.now() + timedelta(days=7)) == 355


def test_no_programme_no_points(session: Session, enrol: Enrol, cached: Cached) -> None:
    member = enrol()
    ingest(session, order(member))
    assert cached(member) == (0, 0, 0)


def test_partial_refunds_reverse_exactly_what_the_lines_earned(
    session: Session, programme: None, enrol: Enrol, cached: Cached
) -> None:
    member = enrol()
    ingest(session, order(member))
    orders.create_refund(session, refund("R1", lines=[RefundLineDraft(1, 1, 12_800)]))
    assert cached(member) == (355 - 128, 355 - 128, 0)
    orders.create_refund(session, refund("R2", lines=[RefundLineDraft(1, 1, 12_800)]))
    assert cached(member) == (99, 99, 0)
    orders.create_refund(session, refund("R2", lines=[RefundLineDraft(1, 1, 12_800)]))  # replay
    assert cached(member) == (99, 99, 0)
    orders.create_refund(session, refund("R3"))  # the rest: nappies and freight
    assert cached(member) == (0, 0, 0)
    assert service.check(session) == []


@pytest.fixture(params=["debt", "allow_negative"])
def policy(request: Any, apply_programme: Callable[..., None], doc: dict[str, Any]) -> str:
    """The example without a return window, with each negative balance policy."""
    doc["points"]["frozen_days"] = 0
    doc["points"]["negative_balance"] = request.param
    apply_programme(doc)
    return request.param  # type: ignore[no-any-return]


def test_a_refund_after_spending_follows_the_negative_balance_policy(
    policy: str, session: Session, enrol: Enrol, cached: Cached
) -> None:
    member = enrol()
    ingest(session, order(member))
    service.spend(session, member, 300, fact="mall:1", reason="a stroller")
    orders.create_refund(session, refund("R1"))  # takes back 355, only 55 left
    if policy == "debt":
        assert cached(member) == (0, 0, 300)
    else:
        assert cached(member) == (-300, 0, 0)
    # later points settle the shortfall first
    service.grant(session, member, 500, fact="gift:1", reason="r")
    assert cached(member) == (200, 0, 0)
    assert service.available(session, member) == 200
    assert service.check(session) == []


def test_a_refund_takes_from_other_lots_before_a_shortfall(
    session: Session, programme: None, enrol: Enrol, cached: Cached
) -> None:
    member = enrol()
    order_id = ingest(session, order(member, paid_at=clock.now() - timedelta(days=10)))
    gift = service.grant(session, member, 100, fact="gift:1", reason="r")
    service.spend(session, member, 300, fact="mall:1", reason="a stroller")  # order lot first
    orders.create_refund(session, refund("R1"))  # 355: 55 from the order, 100 from the gift
    assert gift is not None
    session.refresh(gift)
    assert gift.remaining == 0
    assert cached(member) == (0, 0, 200)
    entries = session.scalars(
        select(PointsEntry).where(PointsEntry.fact == "refund:1").order_by(PointsEntry.seq)
    ).all()
    assert [(e.points, e.debt) for e in entries] == [(-55, 0), (-100, 0), (0, 200)]
    assert order_id


def test_points_follow_a_merge_and_an_unmerge(
    session: Session, programme: None, enrol: Enrol, cached: Cached
) -> None:
    a = enrol("13800138001")
    b = enrol("13800138002")
    service.grant(session, a, 100, fact="g:a", reason="r")
    service.grant(session, b, 40, fact="g:b", reason="r")
    service.check_in(session, a)
    service.check_in(session, b)  # both checked in today: check-ins stay put
    merge = members.merge(session, a, b, reason="same person", principal=SYSTEM)
    assert cached(b) == (150, 0, 0) and cached(a) == (0, 0, 0)
    members.unmerge(session, merge.id, principal=SYSTEM)
    assert cached(a) == (105, 0, 0) and cached(b) == (45, 0, 0)
    assert service.check(session) == []
