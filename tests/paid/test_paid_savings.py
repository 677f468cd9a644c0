"""The savings ledger and calculator against an example computed by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft, RefundLineDraft
from siyu.paid import savings, service
from siyu.points.models import PointsLot
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
    """Plan super: 199 yuan, member price 0.95, points ×2. The member buys the card, orders
    two lines (256.00 of 奶粉, 99.90 of 纸尿裤), then returns the second line.

    - member price, line 1: round(25600 / 0.95) - 25600 = 26947 - 25600 = 1347 fen
    - member price, line 2: round(9990 / 0.95) - 9990 = 10516 - 9990 = 526 fen
    - extra points: base 256 + 99 = 355 points, × (2 - 1) = 355 points = 355 fen at 100/yuan
    - refund of line 2: -526 fen; extra points stay
    saved 1347 + 355 = 1702 fen; fee 19900; net -18198."""
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
    assert before.saved_fen == 1_347 + 526 + 355

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
        ("member_price", 1_347),
        ("member_price", 526),
        ("extra_points", 355),
        ("member_price", -526),
    ]
    assert got.by_kind == {"member_price": 1_347, "coupon": 0, "freight": 0, "extra_points": 355}
    assert got.saved_fen == 1_702
    assert got.saved_this_month_fen == 1_702
    assert got.months == {"2026-11": 1_702}
    assert got.fee_fen == 19_900
    assert got.net_fen == -18_198
    assert got.zh == "已省¥17.02，会费¥199，还差¥181.98回本"
    assert got.en == "saved ¥17.02 on a ¥199 card: ¥181.98 to go"

    # the order sent again is a replay: no event, no second saving
    orders.ingest_orders(session, [_order(member_id)])
    assert savings.summary(session, member_id).saved_fen == 1_702


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
