"""The savings ledger and calculator against an example computed by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from importlib import resources

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft, RefundLineDraft
from siyu.paid import savings, service
from siyu.points import service as points
from siyu.points.models import PointsEntry, PointsLot
from siyu.programme import rules as programme_rules
from siyu.stores import service as stores


def _order(member_id: int) -> OrderDraft:
    return OrderDraft(
        channel="tmall",
        external_id="T1",
        paid_at=clock.now() - timedelta(days=1),
        lines=[LineDraft("SKU-1", "奶粉", 2, 25_600), LineDraft("SKU-9", "纸尿裤", 1, 9_990)],
        freight_fen=1_000,
        store_code="S001",
        member_id=member_id,
    )


def test_member_price_saving_is_the_list_price_less_the_price_paid() -> None:
    assert savings.member_price_saving(25_600, Decimal("0.95")) == 1_347  # 26_947.37 -> 26_947
    assert savings.member_price_saving(9_990, Decimal("0.95")) == 526  # 10_515.79 -> 10_516
    assert savings.member_price_saving(9_990, Decimal(1)) == 0
    assert savings.member_price_saving(9_990, None) == 0


def test_extra_points_and_their_cash_value() -> None:
    assert savings.extra_points(355, Decimal(2)) == 355
    assert savings.extra_points(355, Decimal("1.5")) == 177
    assert savings.extra_points(355, Decimal(1)) == 0
    assert savings.points_value_fen(355, 100) == 355


def test_sentences() -> None:
    assert savings.sentences(35_600, 19_900) == (
        "已省¥356，会费¥199，净赚¥157",
        "saved ¥356 on a ¥199 card: ¥157 ahead",
    )
    assert savings.sentences(1_702, 19_900) == (
        "已省¥17.02，会费¥199，还差¥181.98回本",
        "saved ¥17.02 on a ¥199 card: ¥181.98 to go",
    )


def test_hand_computed_example_end_to_end(session: Session, member_id: int) -> None:
    """Plan super: 199 yuan, member price 0.95 with 奶粉 at 0.97, points ×2. The member buys
    the card, orders two lines (256.00 of 奶粉, 99.90 of 纸尿裤), then returns the second.

    - member price, line 1 (奶粉, its category's rate): round(25600 / 0.97) - 25600
      = 26392 - 25600 = 792 fen
    - member price, line 2 (纸尿裤, the plan's rate): round(9990 / 0.95) - 9990
      = 10516 - 9990 = 526 fen
    - extra points: base 256 + 99 = 355 points, × (2 - 1) = 355 points = 355 fen at 100/yuan
    - refund of line 2: -526 fen of member price; the points ledger takes back its 99 base
      points, so the card takes back floor(355 × 99 / 355) = 99 extra points: -99 fen
    saved 792 + 355 - 99 = 1048 fen; fee 19900; net -18852."""
    now = clock.now()
    service.purchase_callback(session, "TX-1", member_id, "super", 19_900, now - timedelta(days=2))
    stores.create_store(session, code="S001", name="旗舰店")
    [result] = orders.ingest_orders(
        session,
        [_order(member_id)],
    )
    order_id = result.order_id
    assert order_id is not None
    base = session.scalar(select(PointsLot.points).where(PointsLot.fact == f"order:{order_id}"))
    assert base == 355
    extra = session.scalar(
        select(PointsLot.points).where(PointsLot.fact == f"paid_points:{order_id}")
    )
    assert extra == 355

    before = savings.summary(session, member_id)
    assert before.saved_fen == 792 + 526 + 355
    rates = {x.detail["line_no"]: (x.detail["rate"], x.detail["rate_from"]) for x in before.lines
             if x.kind == "member_price"}  # fmt: skip
    assert rates == {1: ("0.97", "category"), 2: ("0.95", "plan")}
    balance = points.available(session, member_id)

    orders.create_refund(
        session,
        RefundDraft(
            channel="tmall",
            external_id="R1",
            order_channel="tmall",
            order_external_id="T1",
            refunded_at=now,
            lines=[RefundLineDraft(2, 1, 9_990)],
        ),
    )
    got = savings.summary(session, member_id)
    assert [(x.kind, x.amount_fen) for x in got.lines] == [
        ("member_price", 792),
        ("member_price", 526),
        ("extra_points", 355),
        ("member_price", -526),
        ("extra_points", -99),
    ]
    assert got.lines[-1].detail["points_taken"] == 99
    assert got.by_kind == {"member_price": 792, "coupon": 0, "freight": 0, "extra_points": 256}
    assert got.saved_fen == 1_048
    assert got.saved_this_month_fen == 1_048
    assert got.months == {"2026-11": 1_048}
    assert got.fee_fen == 19_900
    assert got.net_fen == -18_852
    assert got.zh == "已省¥10.48，会费¥199，还差¥188.52回本"
    assert got.en == "saved ¥10.48 on a ¥199 card: ¥188.52 to go"
    # the points ledger took the 99 extra points back (the base points are still frozen)
    taken = session.scalar(
        select(func.sum(PointsEntry.points)).where(PointsEntry.fact == "paid_points_back:1")
    )
    assert taken == -99 and points.available(session, member_id) == balance - 99

    # the order sent again is a replay: no event, no second saving
    orders.ingest_orders(session, [_order(member_id)])
    assert savings.summary(session, member_id).saved_fen == 1_048


def _refund(session: Session, key: str, line_no: int, amount_fen: int, quantity: int = 0) -> None:
    orders.create_refund(
        session,
        RefundDraft(
            channel="tmall",
            external_id=key,
            order_channel="tmall",
            order_external_id="T1",
            refunded_at=clock.now(),
            lines=[RefundLineDraft(line_no, quantity, amount_fen)],
        ),
    )


def test_partial_refunds_take_extra_points_back_cumulatively(
    session: Session, member_id: int
) -> None:
    """Line 1 (256.00, 256 base points) refunded in three parts: the extra points taken back
    are floor(355 × reversed base / 355) in all after each part, as the points ledger rounds
    its own reversal, so the parts add up to what a single refund would take."""
    service.purchase_callback(
        session, "TX-1", member_id, "super", 19_900, clock.now() - timedelta(days=2)
    )
    stores.create_store(session, code="S001", name="旗舰店")
    orders.ingest_orders(session, [_order(member_id)])
    for key, amount in (("R1", 10_000), ("R2", 5_550), ("R3", 10_050)):
        _refund(session, key, 1, amount)
    # reversed base after each part: floor(256 × 10000 / 25600) = 100, then 155, then 256
    backs = session.execute(
        select(PointsEntry.fact, func.sum(PointsEntry.points))
        .where(PointsEntry.fact.like("paid_points_back:%"))
        .group_by(PointsEntry.fact)
        .order_by(PointsEntry.fact)
    ).all()
    assert [(f, -n) for f, n in backs] == [
        ("paid_points_back:1", 100),
        ("paid_points_back:2", 55),
        ("paid_points_back:3", 101),
    ]
    got = savings.summary(session, member_id)
    assert got.by_kind["extra_points"] == 355 - 256
    assert got.by_kind["member_price"] == 526  # line 1's 792 all taken back
    # the line is refunded in full: nothing more to take back on the other line's refund
    _refund(session, "R4", 2, 9_990, quantity=1)
    assert savings.summary(session, member_id).by_kind == {
        "member_price": 0,
        "coupon": 0,
        "freight": 0,
        "extra_points": 0,
    }


def test_extra_points_already_spent_are_taken_back_when_there_are_points_again(
    session: Session, member_id: int
) -> None:
    """The member spent the extra points before the refund: what cannot be taken back now
    is recorded as short and taken by the order's next refund."""
    service.purchase_callback(
        session, "TX-1", member_id, "super", 19_900, clock.now() - timedelta(days=2)
    )
    stores.create_store(session, code="S001", name="旗舰店")
    orders.ingest_orders(session, [_order(member_id)])
    spendable = points.available(session, member_id)  # 100 signup + 355 extra
    points.spend(session, member_id, spendable - 40, fact="mall:1", reason="a gift")
    _refund(session, "R1", 2, 9_990, quantity=1)  # 99 extra points due, 40 there
    first = savings.summary(session, member_id).lines[-1]
    assert (first.amount_fen, first.detail["points_taken"], first.detail["points_short"]) == (
        -40,
        40,
        59,
    )
    points.grant(session, member_id, 500, fact="gift:1", reason="a gift")
    _refund(session, "R2", 1, 12_800)  # half of line 1: 128 base more, 227 in all
    second = savings.summary(session, member_id).lines[-1]
    assert second.detail["points_taken"] == 227 - 40
    assert savings.summary(session, member_id).by_kind["extra_points"] == 355 - 227


def test_orders_without_the_card_save_nothing(session: Session, member_id: int) -> None:
    stores.create_store(session, code="S001", name="旗舰店")
    orders.ingest_orders(
        session,
        [
            OrderDraft(
                channel="tmall",
                external_id="T0",
                paid_at=clock.now() - timedelta(days=3),
                lines=[LineDraft("SKU-1", "奶粉", 2, 25_600)],
                freight_fen=0,
                store_code="S001",
                member_id=member_id,
            )
        ],
    )
    service.purchase_callback(session, "TX-1", member_id, "super", 19_900, clock.now())
    got = savings.summary(session, member_id)
    assert got.saved_fen == 0 and got.lines == []
    assert got.en == "saved ¥0 on a ¥199 card: ¥199 to go"


def test_savings_route(
    app_client: TestClient,
    make_key: Callable[..., dict[str, str]],
    clean_db: Database,
    programme_in_force: None,
) -> None:
    with clean_db.unit_of_work() as s:
        member = members.enrol(s, EnrolDraft(phone="13800138000")).member_id
        service.purchase_callback(s, "TX-1", member, "super", 19_900, clock.now())
    got = app_client.get(f"/members/{member}/subscription/savings", headers=make_key(Role.operator))
    assert got.status_code == 200, got.text
    assert got.json()["fee_fen"] == 19_900
    assert got.json()["sentence_zh"] == "已省¥0，会费¥199，还差¥199回本"
    assert app_client.get(f"/members/{member}/subscription/savings").status_code == 401


def test_a_subscription_keeps_the_member_prices_it_was_bought_with(
    clean_db: Database, apply_programme: Callable[..., None]
) -> None:
    """Bought while the plan priced everything at 0.95; the plan then gains 奶粉 at 0.90:
    the subscriber's 奶粉 line is still saved at 0.95 (their terms), a newcomer's at 0.90."""
    doc = programme_rules.parse_text(
        resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    )[0]
    benefits = doc["paid"]["plans"][0]["benefits"]
    benefits["member_price_by_category"] = {}
    apply_programme(doc)
    now = clock.now()
    with clean_db.unit_of_work() as s:
        old = members.enrol(s, EnrolDraft(phone="13800138000")).member_id
        service.purchase_callback(s, "TX-1", old, "super", 19_900, now - timedelta(days=2))
    benefits["member_price_by_category"] = {"奶粉": 0.9}
    apply_programme(doc, effective_from=now - timedelta(days=1))
    with clean_db.unit_of_work() as s:
        new = members.enrol(s, EnrolDraft(phone="13900139000")).member_id
        service.purchase_callback(s, "TX-2", new, "super", 19_900, now - timedelta(hours=2))
        for member, key in ((old, "O-old"), (new, "O-new")):
            orders.ingest_orders(
                s,
                [
                    OrderDraft(
                        channel="tmall",
                        external_id=key,
                        paid_at=now - timedelta(hours=1),
                        member_id=member,
                        lines=[LineDraft("SKU-1", "奶粉", 1, 25_600)],
                    )
                ],
            )
        kept = savings.summary(s, old).by_kind["member_price"]
        changed = savings.summary(s, new).by_kind["member_price"]
    assert kept == 1_347  # round(25600 / 0.95) - 25600
    assert changed == 2_844  # round(25600 / 0.90) - 25600
