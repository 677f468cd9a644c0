"""The orders API over HTTP: status codes, error bodies, roles and scope."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from siyu.api.app import create_app
from siyu.core import clock
from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.core.settings import Settings
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.stores import service as stores

Headers = dict[str, str]


def paid(days: float = 1) -> str:
    return (clock.now() - timedelta(days=days)).isoformat()


def body(external_id: str = "T1", **overrides: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "channel": "tmall",
        "external_id": external_id,
        "paid_at": paid(),
        "buyer_identities": [{"channel": "phone", "external_id": "13800138000"}],
        "store_code": "S001",
        "freight": "10.00",
        "lines": [
            {"sku": "SKU-1", "category": "奶粉", "quantity": 2, "amount": "256.00"},
            {"sku": "SKU-9", "category": "纸尿裤", "quantity": 1, "amount": 99.9},
        ],
    }
    order.update(overrides)
    return order


@pytest.fixture
def brand(clean_db: Database) -> dict[str, int]:
    """A store, a guide of it, the guide's member (phone 13800138000) and another member."""
    with clean_db.unit_of_work() as s:
        store = stores.create_store(s, code="S001", name="旗舰店")
        guide = stores.create_staff(s, code="G1", name="小李", role="guide", store_id=store.id)
        mine = members.enrol(
            s, EnrolDraft(phone="13800138000", guide_id=guide.id, store_id=store.id)
        )
        other = members.enrol(s, EnrolDraft(phone="13900000000"))
        return {
            "store": store.id,
            "guide": guide.id,
            "member": mine.member_id,
            "other": other.member_id,
        }


def test_an_order_is_created_then_replayed_without_change(
    app_client: TestClient, admin: Headers, brand: dict[str, int]
) -> None:
    created = app_client.post("/orders", json=body(), headers=admin)
    assert created.status_code == 201, created.text
    order = created.json()["order"]
    assert created.json()["status"] == "created"
    assert (order["member_id"], order["amount"], order["store_id"]) == (
        brand["member"],
        "365.90",
        brand["store"],
    )
    assert [x["amount"] for x in order["lines"]] == ["256.00", "99.90"]

    again = app_client.post("/orders", json=body(), headers=admin)
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate" and again.json()["order"] == order


def test_same_external_id_with_other_content_is_409_with_both_versions(
    app_client: TestClient, admin: Headers, brand: dict[str, int]
) -> None:
    app_client.post("/orders", json=body(), headers=admin)
    response = app_client.post("/orders", json=body(freight="0"), headers=admin)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "order_conflict" and error["field"] == "external_id"
    assert error["details"]["stored"]["freight"] == "10.00"
    assert error["details"]["new"]["freight"] == "0.00"
    assert error["details"]["stored"]["order_id"] > 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"paid_at": "2030-01-01T00:00:00+08:00"}, "paid_at"),
        ({"store_code": "NOPE"}, "store_code"),
        ({"member_id": 987_654, "buyer_identities": []}, "member_id"),
        (
            {"lines": [{"sku": "S", "category": "C", "quantity": 1, "amount": "-5"}]},
            "lines[0].amount",
        ),
        (
            {"lines": [{"sku": "S", "category": "C", "quantity": 1, "amount": "99999999999"}]},
            "lines[0].amount",
        ),
    ],
)
def test_an_invalid_order_is_422_naming_the_field(
    app_client: TestClient,
    admin: Headers,
    brand: dict[str, int],
    change: dict[str, Any],
    field: str,
) -> None:
    response = app_client.post("/orders", json=body(**change), headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert field in [d["field"] for d in error["details"]]
    assert error["message"]


def test_missing_fields_and_wrong_types_are_all_reported(
    app_client: TestClient, admin: Headers, brand: dict[str, int]
) -> None:
    bad = body(paid_at="2026-11-11T20:00:00")  # no offset
    del bad["external_id"]
    bad["lines"][0]["quantity"] = "two"
    bad["lines"][1]["amount"] = "12.345"
    response = app_client.post("/orders", json=bad, headers=admin)
    assert response.status_code == 422
    fields = {d["field"] for d in response.json()["error"]["details"]}
    assert fields >= {"external_id", "paid_at", "lines[0].quantity", "lines[1].amount"}


def test_writing_needs_a_writing_role_and_reading_is_scoped(
    app_client: TestClient,
    admin: Headers,
    make_key: Callable[..., Headers],
    brand: dict[str, int],
) -> None:
    analyst = make_key(Role.analyst)
    assert app_client.post("/orders", json=body(), headers=analyst).status_code == 403
    service_key = make_key(Role.service)
    mine = app_client.post("/orders", json=body(), headers=service_key).json()["order"]
    other = app_client.post(
        "/orders",
        json=body("T2", member_id=brand["other"], buyer_identities=[]),
        headers=admin,
    ).json()["order"]
    guest = app_client.post(
        "/orders",
        json=body("T3", buyer_identities=[{"channel": "phone", "external_id": "13711112222"}]),
        headers=admin,
    ).json()["order"]

    # the analyst reads everything, phones masked
    seen = app_client.get(f"/orders/{guest['id']}", headers=analyst).json()
    assert seen["member_id"] is None and seen["buyer_external_id"] == "137****2222"
    # the guide reads the orders of their own members only
    guide = make_key(Role.guide, staff_id=brand["guide"])
    assert app_client.get(f"/orders/{mine['id']}", headers=guide).status_code == 200
    assert app_client.get(f"/orders/{other['id']}", headers=guide).status_code == 404
    listed = app_client.get(f"/members/{brand['member']}/orders", headers=guide)
    assert [o["id"] for o in listed.json()["items"]] == [mine["id"]]
    assert app_client.get(f"/members/{brand['other']}/orders", headers=guide).status_code == 404
    assert app_client.get("/orders/999999", headers=admin).status_code == 404


def test_a_members_orders_are_paged_with_a_cursor(
    app_client: TestClient, admin: Headers, brand: dict[str, int]
) -> None:
    orders = [body(f"T{i}", paid_at=paid(days=1 + i)) for i in range(5)]
    app_client.post("/orders:batch", json={"orders": orders}, headers=admin)
    url = f"/members/{brand['member']}/orders?limit=2"
    ids: list[str] = []
    cursor = None
    while True:
        page = app_client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=admin).json()
        ids += [o["external_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == ["T0", "T1", "T2", "T3", "T4"]
    bad = app_client.get(url + "&cursor=garbage", headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cursor"


def test_a_batch_lands_good_orders_and_reports_bad_ones(
    app_client: TestClient, admin: Headers, brand: dict[str, int]
) -> None:
    app_client.post("/orders", json=body("OLD"), headers=admin)
    orders: list[Any] = [body(f"B{i}") for i in range(6)]
    orders[1] = body("B1", store_code="NOPE")
    orders[2] = {"channel": "tmall", "external_id": "B2"}  # malformed: no lines, no paid_at
    orders[3] = body("OLD")  # a replay
    orders[4] = "not an order"
    response = app_client.post("/orders:batch", json={"orders": orders}, headers=admin)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["counts"] == {"created": 2, "duplicate": 1, "rejected": 3}
    statuses = [(r["index"], r["status"]) for r in result["results"]]
    assert statuses == [
        (0, "created"),
        (1, "rejected"),
        (2, "rejected"),
        (3, "duplicate"),
        (4, "rejected"),
        (5, "created"),
    ]
    assert result["results"][1]["problems"][0]["field"] == "store_code"
    assert {p["field"] for p in result["results"][2]["problems"]} >= {"paid_at", "lines"}
    assert app_client.get(f"/orders/{result['results'][5]['order_id']}", headers=admin).is_success


def test_a_batch_above_the_limit_is_refused_with_a_clear_message(
    app_client: TestClient, admin: Headers
) -> None:
    response = app_client.post("/orders:batch", json={"orders": [{}] * 10_001}, headers=admin)
    assert response.status_code == 413
    assert "at most 10,000" in response.json()["error"]["message"]


@pytest.fixture
def enrolling_client(clean_db: Database) -> Iterator[TestClient]:
    settings = Settings(database_url=clean_db.url, auto_migrate=False, unknown_buyer="enrol")
    with TestClient(create_app(settings, db=clean_db)) as client:
        yield client


def test_the_unknown_buyer_policy_comes_from_the_settings(
    app_client: TestClient,
    enrolling_client: TestClient,
    admin: Headers,
    brand: dict[str, int],
) -> None:
    stranger = [{"channel": "phone", "external_id": "13755556666"}]
    guest = app_client.post("/orders", json=body("G1", buyer_identities=stranger), headers=admin)
    assert guest.json()["order"]["member_id"] is None
    enrolled = enrolling_client.post(
        "/orders", json=body("G2", buyer_identities=stranger), headers=admin
    )
    member_id = enrolled.json()["order"]["member_id"]
    assert member_id is not None
    member = app_client.get(f"/members/{member_id}", headers=admin).json()
    assert member["join_channel"] == "order" and member["phone"] == "13755556666"


def test_refunds_over_http(app_client: TestClient, admin: Headers, brand: dict[str, int]) -> None:
    app_client.post("/orders", json=body(), headers=admin)
    refund = {
        "channel": "tmall",
        "external_id": "R1",
        "order_channel": "tmall",
        "order_external_id": "T1",
        "refunded_at": paid(days=0.5),
        "lines": [{"line_no": 1, "quantity": 1, "amount": "128.00"}],
    }
    created = app_client.post("/refunds", json=refund, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["order_status"] == "partially_refunded"
    assert created.json()["lines"] == [{"line_no": 1, "quantity": 1, "amount": "128.00"}]
    replay = app_client.post("/refunds", json=refund, headers=admin)
    assert replay.status_code == 200 and replay.json()["id"] == created.json()["id"]

    changed = refund | {"lines": [{"line_no": 1, "quantity": 1, "amount": "1.00"}]}
    conflict = app_client.post("/refunds", json=changed, headers=admin)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["details"]["stored"]["lines"][0]["amount"] == "128.00"

    too_much = refund | {
        "external_id": "R2",
        "lines": [{"line_no": 1, "quantity": 1, "amount": "200.00"}],
    }
    refused = app_client.post("/refunds", json=too_much, headers=admin)
    assert refused.status_code == 422
    assert "more than remains refundable" in refused.json()["error"]["message"]

    order = app_client.get(f"/orders/{created.json()['order_id']}", headers=admin).json()
    assert order["refunded"] == "128.00" and order["lines"][0]["refunded_quantity"] == 1
