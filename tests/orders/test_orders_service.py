"""Orders, refunds and member metrics through the service layer, on a real database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from threading import Event
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.auth import SYSTEM, Principal, Role
from siyu.core.db import Database
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.core.outbox import OutboxMessage
from siyu.members import service as members
from siyu.members.models import Member
from siyu.members.service import EnrolDraft
from siyu.orders import service
from siyu.orders.models import MemberMetrics, Order, OrderLine, Refund
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft, RefundLineDraft
from siyu.stores import service as stores
from siyu.stores.models import Store

Make = Callable[..., OrderDraft]


def count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def metrics(session: Session, member_id: int) -> MemberMetrics | None:
    return session.get(MemberMetrics, member_id)


def refund_draft(external_id: str = "R1", **overrides: Any) -> RefundDraft:
    fields: dict[str, Any] = {
        "channel": "tmall",
        "external_id": external_id,
        "order_channel": "tmall",
        "order_external_id": "T1",
        "refunded_at": clock.now() - timedelta(hours=1),
    }
    fields.update(overrides)
    return RefundDraft(**fields)


# --- ingestion ---------------------------------------------------------------------------


def test_an_order_of_a_known_buyer_lands_with_lines_and_metrics(
    session: Session, member_id: int, order: Make
) -> None:
    # given a member known by phone
    # when their order arrives named by phone (spelled differently)
    [result] = service.ingest_orders(
        session, [order(buyer_identities=[("phone", "+86 138 0013 8000")])]
    )
    # then it is stored for the member, with lines numbered from 1, and metrics follow
    assert result.status == "created" and result.member_id == member_id
    view = service.get_order(session, result.order_id or 0)
    assert view.order.amount_fen == 25_600 + 9_990 + 1_000
    assert [(x.line_no, x.sku) for x in view.lines] == [(1, "SKU-1"), (2, "SKU-9")]
    m = metrics(session, member_id)
    assert m is not None and (m.order_count, m.spend_fen) == (1, 36_590)
    assert m.first_order_at == m.last_order_at == view.order.paid_at


def test_a_replay_changes_nothing(session: Session, member_id: int, order: Make) -> None:
    # given a stored order
    first = service.ingest_orders(session, [order(member_id=member_id)])[0]
    outbox_before = count(session, OutboxMessage)
    # when the same order is sent again, with paid_at in another offset
    from zoneinfo import ZoneInfo

    paid = order().paid_at.astimezone(ZoneInfo("Asia/Shanghai"))
    again = service.ingest_orders(session, [order(member_id=member_id, paid_at=paid)])[0]
    # then it is a duplicate naming the same order, and nothing was written
    assert again.status == "duplicate"
    assert (again.order_id, again.member_id) == (first.order_id, member_id)
    assert count(session, Order) == 1 and count(session, OrderLine) == 2
    assert count(session, OutboxMessage) == outbox_before
    m = metrics(session, member_id)
    assert m is not None and m.order_count == 1


def test_same_external_id_with_other_content_is_a_conflict_naming_both_versions(
    session: Session, store: Store, order: Make
) -> None:
    stored = service.ingest_orders(session, [order()])[0]
    changed = order(lines=[LineDraft("SKU-1", "奶粉", 3, 38_400)])
    [result] = service.ingest_orders(session, [changed])
    assert result.status == "rejected" and result.order_id is None
    assert result.conflict is not None and result.conflict["code"] == "order_conflict"
    assert result.conflict["stored"]["order_id"] == stored.order_id
    assert result.conflict["stored"]["amount"] == "365.90"
    assert result.conflict["new"]["amount"] == "394.00"
    assert result.conflict["new"]["lines"] == [
        {"sku": "SKU-1", "category": "奶粉", "quantity": 3, "amount": "384.00"}
    ]
    assert result.problems[0].field == "external_id"
    assert count(session, Order) == 1


def test_duplicates_inside_one_batch_are_handled_like_replays(
    session: Session, store: Store, order: Make
) -> None:
    results = service.ingest_orders(
        session,
        [order("A"), order("A"), order("A", freight_fen=0), order("B")],
    )
    assert [r.status for r in results] == ["created", "duplicate", "rejected", "created"]
    assert results[1].order_id == results[0].order_id
    assert results[2].conflict is not None
    assert results[2].conflict["stored"]["order_id"] == results[0].order_id
    assert count(session, Order) == 2


def test_an_unknown_buyer_is_a_guest_by_default(
    session: Session, store: Store, order: Make
) -> None:
    [result] = service.ingest_orders(
        session, [order(buyer_identities=[("phone", "13911112222"), ("tmall", "tm_9")])]
    )
    assert result.status == "created" and result.member_id is None
    stored = service.get_order(session, result.order_id or 0).order
    assert (stored.buyer_channel, stored.buyer_external_id) == ("phone", "13911112222")
    assert count(session, Member) == 0 and count(session, MemberMetrics) == 0


def test_an_unknown_buyer_is_enrolled_when_the_policy_says_so(
    session: Session, store: Store, order: Make
) -> None:
    results = service.ingest_orders(
        session,
        [
            order("A", buyer_identities=[("phone", "13911112222")]),
            order("B", buyer_identities=[("tmall", "tm_9")]),
            # joins the two people above: takes the member of its first identity
            order("C", buyer_identities=[("phone", "13911112222"), ("tmall", "tm_9")]),
            order("D", buyer_identities=[("phone", "13911112222")]),
        ],
        unknown_buyer="enrol",
    )
    assert all(r.status == "created" for r in results)
    a, b, c, d = (r.member_id for r in results)
    assert a is not None and b is not None and a != b
    assert c == a and d == a
    member = members.get(session, a)
    assert (member.join_channel, member.joined_at, member.store_id) == (
        "order",
        order().paid_at,
        store.id,
    )
    m = metrics(session, a)
    assert m is not None and m.order_count == 3


def test_orders_of_a_merged_member_go_to_the_survivor(
    session: Session, store: Store, order: Make
) -> None:
    old = members.enrol(session, EnrolDraft(identities=[("tmall", "tm_old")])).member_id
    new = members.enrol(session, EnrolDraft(phone="13700000000")).member_id
    members.merge(session, old, new, reason="same person", principal=SYSTEM)
    [by_id] = service.ingest_orders(session, [order("A", member_id=old)])
    [by_identity] = service.ingest_orders(
        session, [order("B", buyer_identities=[("tmall", "tm_old")])]
    )
    assert by_id.member_id == new and by_identity.member_id == new


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"member_id": 999_999}, "member_id", "no member"),
        ({"store_code": "NOPE"}, "store_code", "no store"),
        ({"store_code": None, "store_id": 999_999}, "store_id", "no store"),
        ({"guide_id": 999_999}, "guide_id", "no staff"),
        ({"paid_at": None}, "paid_at", "future"),
        ({"lines": [LineDraft("S", "C", 1, -100)]}, "lines[0].amount", "negative"),
        ({"lines": [LineDraft("S", "C", 1, 10**12)]}, "lines[0].amount", "absurd"),
        ({"lines": [LineDraft("S", "C", 0, 100)]}, "lines[0].quantity", "between"),
        ({"lines": []}, "lines", "at least one"),
        ({"channel": "ebay"}, "channel", "unknown channel"),
        ({"buyer_identities": [("phone", "12345")]}, "buyer_identities[0]", "mobile"),
    ],
)
def test_bad_orders_are_rejected_with_the_field_and_a_reason(
    session: Session, store: Store, order: Make, overrides: dict[str, Any], field: str, words: str
) -> None:
    if "paid_at" in overrides:
        overrides = {"paid_at": clock.now() + timedelta(days=2)}
    [result] = service.ingest_orders(session, [order(**overrides)])
    assert result.status == "rejected"
    assert any(p.field == field and words in p.reason for p in result.problems), result.problems
    assert count(session, Order) == 0


def test_every_problem_of_an_order_is_reported_at_once(
    session: Session, store: Store, order: Make
) -> None:
    bad = order(
        channel="ebay",
        paid_at=clock.now() + timedelta(days=1),
        lines=[LineDraft("", "C", 1, -1)],
        store_code="NOPE",
        member_id=424_242,
    )
    [result] = service.ingest_orders(session, [bad])
    assert {p.field for p in result.problems} == {
        "channel",
        "paid_at",
        "lines[0].sku",
        "lines[0].amount",
        "store_code",
        "member_id",
    }


def test_in_a_batch_good_orders_land_and_bad_ones_are_rejected(
    session: Session, store: Store, order: Make
) -> None:
    drafts = [order(f"T{i}") for i in range(10)]
    drafts[3] = order("T3", store_code="NOPE")
    drafts[7] = order("T7", paid_at=clock.now() + timedelta(days=3))
    results = service.ingest_orders(session, drafts, chunk_size=4)
    assert [r.index for r in results] == list(range(10))
    assert [r.status for r in results].count("created") == 8
    assert results[3].status == results[7].status == "rejected"
    assert count(session, Order) == 8
    # one outbox message per chunk, naming its orders
    messages = session.scalars(
        select(OutboxMessage).where(OutboxMessage.topic == "orders.ingested")
    )
    assert sorted(i for m in messages for i in m.payload["order_ids"]) == sorted(
        r.order_id for r in results if r.order_id
    )


def test_a_constraint_hit_redoes_the_chunk_row_by_row(
    session: Session, store: Store, order: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a stored order, and a lookup that (as under a race) does not see it
    service.ingest_orders(session, [order("A")])
    monkeypatch.setattr(service, "_existing_orders", lambda _session, _keys: {})
    # when a batch holds that order between two new ones
    results = service.ingest_orders(session, [order("B"), order("A"), order("C")])
    # then the new ones land and the clash is rejected with the database's reason
    assert [r.status for r in results] == ["created", "rejected", "created"]
    assert "database refused" in results[1].problems[0].reason
    assert count(session, Order) == 3


# --- reading -----------------------------------------------------------------------------


def test_a_members_orders_come_newest_first_in_stable_pages(
    session: Session, member_id: int, order: Make
) -> None:
    base = clock.now() - timedelta(days=30)
    service.ingest_orders(
        session,
        [
            order(f"T{i}", member_id=member_id, paid_at=base + timedelta(days=i % 3))
            for i in range(7)
        ],
    )
    seen: list[int] = []
    before = None
    while True:
        page = service.orders_of_member(session, member_id, before=before, limit=3)
        seen += [v.order.id for v in page]
        if len(page) < 3:
            break
        before = (page[-1].order.paid_at, page[-1].order.id)
    assert len(seen) == len(set(seen)) == 7
    paid = [session.get(Order, i).paid_at for i in seen]  # type: ignore[union-attr]
    assert paid == sorted(paid, reverse=True)


def test_guides_see_orders_of_their_own_members_only(
    session: Session, store: Store, order: Make
) -> None:
    guide = stores.create_staff(session, code="G1", name="小李", role="guide", store_id=store.id)
    mine = members.enrol(session, EnrolDraft(phone="13600000001", guide_id=guide.id)).member_id
    other = members.enrol(session, EnrolDraft(phone="13600000002")).member_id
    a, b, guest = service.ingest_orders(
        session, [order("A", member_id=mine), order("B", member_id=other), order("C")]
    )
    who = Principal(key_id=9, name="guide", role=Role.guide, staff_id=guide.id)
    assert service.get_order(session, a.order_id or 0, principal=who).order.member_id == mine
    for hidden in (b, guest):
        with pytest.raises(NotFound):
            service.get_order(session, hidden.order_id or 0, principal=who)


# --- refunds -----------------------------------------------------------------------------


def test_a_refund_without_lines_returns_everything_and_a_replay_changes_nothing(
    session: Session, member_id: int, order: Make
) -> None:
    service.ingest_orders(session, [order(member_id=member_id)])
    refund = service.create_refund(session, refund_draft())
    assert refund.amount_fen == 36_590
    stored = session.scalar(select(Order))
    assert stored is not None and (stored.status, stored.refunded_fen) == ("refunded", 36_590)
    again = service.record_refund(session, refund_draft())
    assert not again.created and again.refund.id == refund.id
    assert count(session, Refund) == 1
    m = metrics(session, member_id)
    assert m is not None and (m.refund_fen, m.refund_count) == (36_590, 1)


def test_a_refund_of_lines_takes_quantity_and_amount_from_those_lines(
    session: Session, member_id: int, order: Make
) -> None:
    service.ingest_orders(session, [order(member_id=member_id)])
    outcome = service.record_refund(
        session, refund_draft(lines=[RefundLineDraft(line_no=1, quantity=1, amount_fen=12_800)])
    )
    assert outcome.created and outcome.refund.amount_fen == 12_800
    assert outcome.order.status == "partially_refunded"
    line = session.scalar(select(OrderLine).where(OrderLine.line_no == 1))
    assert line is not None and (line.refunded_quantity, line.refunded_fen) == (1, 12_800)
    # the rest of the order, freight included, goes back with a refund without lines
    rest = service.create_refund(session, refund_draft("R2"))
    assert rest.amount_fen == 36_590 - 12_800
    assert outcome.order.status == "refunded"


@pytest.mark.parametrize(
    ("lines", "field", "words"),
    [
        ([RefundLineDraft(1, 1, 30_000)], "lines[0].amount", "more than remains"),
        ([RefundLineDraft(1, 3, 100)], "lines[0].quantity", "more than remains"),
        ([RefundLineDraft(5, 1, 100)], "lines[0].line_no", "no line 5"),
    ],
)
def test_a_refund_larger_than_what_remains_is_refused(
    session: Session,
    store: Store,
    order: Make,
    lines: list[RefundLineDraft],
    field: str,
    words: str,
) -> None:
    service.ingest_orders(session, [order()])
    with pytest.raises(InvalidInput) as caught:
        service.create_refund(session, refund_draft(lines=lines))
    problems = caught.value.details
    assert any(p["field"] == field and words in p["reason"] for p in problems), problems
    assert count(session, Refund) == 0


def test_a_refund_of_an_already_refunded_order_is_refused(
    session: Session, store: Store, order: Make
) -> None:
    service.ingest_orders(session, [order("T1"), order("T2")])
    service.create_refund(session, refund_draft("R1"))
    with pytest.raises(InvalidInput, match="already fully refunded"):
        service.create_refund(session, refund_draft("R2"))
    # a whole-order refund that names another amount is refused, not guessed at
    with pytest.raises(InvalidInput, match="not what remains"):
        service.create_refund(session, refund_draft("R3", order_external_id="T2", amount_fen=1))


def test_a_refund_with_a_known_id_and_other_content_is_a_conflict(
    session: Session, store: Store, order: Make
) -> None:
    service.ingest_orders(session, [order()])
    service.create_refund(session, refund_draft(lines=[RefundLineDraft(1, 1, 100)]))
    with pytest.raises(Conflict) as caught:
        service.create_refund(session, refund_draft(lines=[RefundLineDraft(1, 1, 200)]))
    assert caught.value.code == "refund_conflict"
    assert caught.value.details["stored"]["lines"][0]["amount"] == "1.00"
    assert caught.value.details["new"]["lines"][0]["amount"] == "2.00"


def test_a_refund_of_an_unknown_order_says_so(session: Session) -> None:
    with pytest.raises(NotFound, match="send the order before"):
        service.create_refund(session, refund_draft(order_external_id="NOPE"))


# --- metrics -----------------------------------------------------------------------------


def _mixed_history(session: Session, order: Make) -> tuple[int, int]:
    a = members.enrol(session, EnrolDraft(phone="13500000001")).member_id
    b = members.enrol(session, EnrolDraft(phone="13500000002")).member_id
    base = clock.now() - timedelta(days=100)
    service.ingest_orders(
        session,
        [
            order(f"T{i}", member_id=(a, b)[i % 2], paid_at=base + timedelta(days=7 * i))
            for i in range(9)
        ]
        + [order("G1")],
    )
    service.create_refund(session, refund_draft("R1", order_external_id="T0"))
    service.create_refund(
        session, refund_draft("R2", order_external_id="T3", lines=[RefundLineDraft(2, 1, 500)])
    )
    service.create_refund(session, refund_draft("R3", order_external_id="G1"))
    return a, b


def test_cached_metrics_equal_a_recomputation(session: Session, store: Store, order: Make) -> None:
    a, b = _mixed_history(session, order)
    cached = {m: vars_of(metrics(session, m)) for m in (a, b)}
    assert service.check_metrics(session) == []
    assert service.recompute_metrics(session) == 2
    assert {m: vars_of(metrics(session, m)) for m in (a, b)} == cached
    assert cached[a]["order_count"] == 5 and cached[a]["refund_count"] == 1
    assert cached[b]["refund_fen"] == 500


def vars_of(m: MemberMetrics | None) -> dict[str, Any]:
    assert m is not None
    return {name: getattr(m, name) for name in service.METRIC_FIELDS}


def test_drift_is_reported_and_repaired(session: Session, store: Store, order: Make) -> None:
    a, b = _mixed_history(session, order)
    session.execute(update(MemberMetrics).where(MemberMetrics.member_id == a).values(spend_fen=1))
    session.execute(update(MemberMetrics).where(MemberMetrics.member_id == b).values(order_count=0))
    drifts = service.check_metrics(session)
    assert {(d.member_id, d.fields) for d in drifts} == {(a, ("spend_fen",)), (b, ("order_count",))}
    service.recompute_metrics(session, [a])
    assert [d.member_id for d in service.check_metrics(session)] == [b]
    service.recompute_metrics(session)
    assert service.check_metrics(session) == []


def test_metrics_follow_a_member_merge_and_unmerge(
    session: Session, store: Store, order: Make
) -> None:
    a, b = _mixed_history(session, order)
    before = {m: vars_of(metrics(session, m)) for m in (a, b)}
    # when a is merged into b
    merge = members.merge(session, a, b, reason="same mother", principal=SYSTEM)
    # then b holds the orders and metrics of both, and a has none
    assert metrics(session, a) is None
    merged = vars_of(metrics(session, b))
    assert merged["order_count"] == 9
    assert merged["spend_fen"] == before[a]["spend_fen"] + before[b]["spend_fen"]
    assert merged["first_order_at"] == before[a]["first_order_at"]
    # and a refund made while merged counts for the survivor
    service.create_refund(session, refund_draft("R9", order_external_id="T2"))
    assert service.check_metrics(session) == []
    # when the merge is undone, everything goes home, the refund with its order
    members.unmerge(session, merge.id, principal=SYSTEM)
    assert service.check_metrics(session) == []
    a_after = vars_of(metrics(session, a))
    assert a_after["order_count"] == 5
    assert a_after["refund_count"] == before[a]["refund_count"] + 1
    r9 = session.scalar(select(Refund).where(Refund.external_id == "R9"))
    assert r9 is not None and r9.member_id == a


# --- concurrency (real connections) ------------------------------------------------------


def _race(first: Callable[[Event], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """Run ``first`` in a thread (it sets the event once it wrote, then holds its transaction
    open a moment) and ``second`` as soon as that write happened, on another connection;
    return both outcomes, exceptions included."""
    wrote = threading.Event()
    outcomes: dict[str, Any] = {}

    def run(name: str, action: Callable[[], Any]) -> None:
        try:
            outcomes[name] = action()
        except Exception as exc:  # handed to the test
            outcomes[name] = exc
        finally:
            wrote.set()

    a = threading.Thread(target=run, args=("first", lambda: first(wrote)))
    a.start()
    wrote.wait(30)
    b = threading.Thread(target=run, args=("second", second))
    b.start()
    a.join(60)
    b.join(60)
    return outcomes["first"], outcomes["second"]


def test_one_order_sent_twice_at_once_is_stored_once(clean_db: Database, order: Make) -> None:
    with clean_db.unit_of_work() as s:
        stores.create_store(s, code="S001", name="旗舰店")

    def first(wrote: Event) -> Any:
        with clean_db.unit_of_work() as s:
            result = service.ingest_orders(s, [order("RACE")])[0]
            wrote.set()
            time.sleep(0.3)  # keep the transaction open while the other one arrives
            return result

    def second() -> Any:
        with clean_db.unit_of_work() as s:
            return service.ingest_orders(s, [order("RACE")])[0]

    a, b = _race(first, second)
    assert (a.status, b.status) == ("created", "duplicate"), (a, b)
    assert b.order_id == a.order_id


def test_two_refunds_of_the_rest_at_once_cannot_both_succeed(
    clean_db: Database, order: Make
) -> None:
    with clean_db.unit_of_work() as s:
        stores.create_store(s, code="S001", name="旗舰店")
        service.ingest_orders(s, [order()])

    def first(wrote: Event) -> Any:
        with clean_db.unit_of_work() as s:
            refund = service.create_refund(s, refund_draft("R1"))
            wrote.set()
            time.sleep(0.3)
            return refund.amount_fen

    def second() -> Any:
        with clean_db.unit_of_work() as s:
            return service.create_refund(s, refund_draft("R2")).amount_fen

    a, b = _race(first, second)
    assert a == 36_590
    assert isinstance(b, InvalidInput) and "already fully refunded" in b.message
    with clean_db.unit_of_work() as s:
        assert count(s, Refund) == 1
