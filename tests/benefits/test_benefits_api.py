"""The benefits API over HTTP: status codes, error bodies, roles and scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.points import service as points
from siyu.stores import service as stores

Headers = dict[str, str]


@pytest.fixture
def brand(programme_in_force: None, clean_db: Database) -> dict[str, int]:
    """A store, a guide of it, the guide's member (2,000 points, an order T1) and another."""
    from siyu.core import clock
    from siyu.orders.rules import LineDraft, OrderDraft

    with clean_db.unit_of_work() as s:
        store = stores.create_store(s, code="S001", name="旗舰店")
        guide = stores.create_staff(s, code="G1", name="小李", role="guide", store_id=store.id)
        mine = members.enrol(
            s, EnrolDraft(phone="13800138000", guide_id=guide.id, store_id=store.id)
        ).member_id
        other = members.enrol(s, EnrolDraft(phone="13900000000")).member_id
        points.grant(s, mine, 2_000 - points.available(s, mine), fact="test:mine", reason="t")
        [placed] = orders.ingest_orders(
            s,
            [
                OrderDraft(
                    channel="tmall",
                    external_id="T1",
                    paid_at=clock.now(),
                    lines=[LineDraft("SKU-1", "奶粉", 2, 25_600)],
                    member_id=mine,
                )
            ],
        )
        return {
            "store": store.id,
            "guide": guide.id,
            "member": mine,
            "other": other,
            "order": placed.order_id or 0,
        }


def template(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": "FULL200-20",
        "name": "满200减20",
        "kind": "amount_off",
        "threshold_fen": 20_000,
        "amount_off_fen": 2_000,
        "valid_days": 7,
        "stock": 100,
    }
    body.update(fields)
    return body


def test_templates_issue_and_redeem(
    app_client: TestClient, brand: dict[str, int], make_key: Callable[..., Headers]
) -> None:
    operator, service = make_key(Role.operator), make_key(Role.service)
    created = app_client.post("/coupon-templates", json=template(), headers=operator)
    assert created.status_code == 201, created.text
    assert created.json()["stock_left"] == 100
    again = app_client.post("/coupon-templates", json=template(), headers=operator)
    assert again.status_code == 200
    taken = app_client.post("/coupon-templates", json=template(stock=5), headers=operator)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "template_exists"
    bad = app_client.post(
        "/coupon-templates", json=template(code="X", kind="percent_off"), headers=operator
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_coupon_template"
    assert app_client.post("/coupon-templates", json=template(), headers=service).status_code == 403
    template_id = created.json()["id"]
    assert app_client.get(f"/coupon-templates/{template_id}", headers=service).status_code == 200
    assert len(app_client.get("/coupon-templates", headers=service).json()) == 1

    body = {
        "template_id": template_id,
        "member_ids": [brand["member"], brand["other"]],
        "key": "nov-vip",
        "reason": "VIP care",
    }
    issued = app_client.post("/coupons/issue", json=body, headers=operator)
    assert issued.status_code == 200, issued.text
    assert issued.json()["created"] == 2
    replay = app_client.post("/coupons/issue", json=body, headers=operator)
    assert {m["status"] for m in replay.json()["members"]} == {"replayed"}
    code = issued.json()["members"][0]["codes"][0]

    usable = app_client.get(
        f"/members/{brand['member']}/coupons", params={"state": "usable"}, headers=service
    )
    assert [c["code"] for c in usable.json()["items"]] == [code]

    redeemed = app_client.post(
        f"/coupons/{code}/redeem", json={"channel": "tmall", "external_id": "T1"}, headers=service
    )
    assert redeemed.status_code == 201, redeemed.text
    assert redeemed.json()["discount_fen"] == 2_000 and redeemed.json()["state"] == "used"
    assert (
        app_client.post(
            f"/coupons/{code}/redeem", json={"order_id": brand["order"]}, headers=service
        ).status_code
        == 200
    )
    other_code = issued.json()["members"][1]["codes"][0]
    wrong = app_client.post(
        f"/coupons/{other_code}/redeem", json={"order_id": brand["order"]}, headers=service
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "coupon_wrong_member"
    detail = app_client.get(f"/coupons/{code}", headers=operator).json()
    assert [e["kind"] for e in detail["history"]] == ["issued", "redeemed"]


def test_guides_read_only_their_members(
    app_client: TestClient, brand: dict[str, int], make_key: Callable[..., Headers]
) -> None:
    guide = make_key(Role.guide, staff_id=brand["guide"])
    assert app_client.get(f"/members/{brand['member']}/coupons", headers=guide).status_code == 200
    assert app_client.get(f"/members/{brand['other']}/coupons", headers=guide).status_code == 404
    assert app_client.get(f"/members/{brand['member']}/mall", headers=guide).status_code == 200
    assert app_client.get(f"/members/{brand['other']}/mall", headers=guide).status_code == 404
    post = app_client.post(
        f"/members/{brand['member']}/mall/redemptions",
        json={"reward_id": 1, "key": "k"},
        headers=guide,
    )
    assert post.status_code == 403


def test_packs_over_http(
    app_client: TestClient, brand: dict[str, int], make_key: Callable[..., Headers]
) -> None:
    operator = make_key(Role.operator)
    app_client.post("/coupon-templates", json=template(), headers=operator)
    pack = {
        "code": "sorry",
        "name": "致歉礼包",
        "trigger": "manual",
        "contents": [{"template": "FULL200-20", "quantity": 2}],
        "points": 100,
    }
    assert app_client.post("/benefit-packs", json=pack, headers=operator).status_code == 201
    assert app_client.post("/benefit-packs", json=pack, headers=operator).status_code == 200
    assert [p["code"] for p in app_client.get("/benefit-packs", headers=operator).json()] == [
        "sorry"
    ]
    body = {"member_ids": [brand["member"]], "key": "t-1", "reason": "late delivery"}
    given = app_client.post("/benefit-packs/sorry/issue", json=body, headers=operator)
    assert given.status_code == 200, given.text
    assert given.json()["issued"] == [brand["member"]] and given.json()["coupons"] == 2
    again = app_client.post("/benefit-packs/sorry/issue", json=body, headers=operator)
    assert again.json()["replayed"] == [brand["member"]]
    missing = app_client.post("/benefit-packs/nope/issue", json=body, headers=operator)
    assert missing.status_code == 404


def test_mall_redeem_and_fulfil(
    app_client: TestClient, brand: dict[str, int], make_key: Callable[..., Headers]
) -> None:
    operator, service = make_key(Role.operator), make_key(Role.service)
    reward = {
        "code": "CUP",
        "name": "吸管杯",
        "kind": "gift",
        "points_price": 500,
        "stock": 10,
        "per_member_limit": 2,
    }
    created = app_client.post("/rewards", json=reward, headers=operator)
    assert created.status_code == 201, created.text
    reward_id = created.json()["id"]
    app_client.post(
        "/rewards", json=reward | {"code": "BIG", "points_price": 5_000}, headers=operator
    )
    patched = app_client.patch(f"/rewards/{reward_id}", json={"stock": 12}, headers=operator)
    assert patched.status_code == 200 and patched.json()["stock_left"] == 12

    shown = app_client.get(f"/members/{brand['member']}/mall", headers=service).json()
    assert shown["available_points"] == 2_000
    assert {i["reward"]["code"]: i["affordable"] for i in shown["items"]} == {
        "CUP": True,
        "BIG": False,
    }
    affordable = app_client.get(
        f"/members/{brand['member']}/mall", params={"affordable": True}, headers=service
    ).json()
    assert [i["reward"]["code"] for i in affordable["items"]] == ["CUP"]

    url = f"/members/{brand['member']}/mall/redemptions"
    body = {"reward_id": reward_id, "key": "r-1"}
    taken = app_client.post(url, json=body, headers=service)
    assert taken.status_code == 201, taken.text
    assert app_client.post(url, json=body, headers=service).status_code == 200
    poor = app_client.post(
        f"/members/{brand['other']}/mall/redemptions", json=body, headers=service
    )
    assert poor.status_code == 409 and poor.json()["error"]["code"] == "insufficient_points"
    redemption_id = taken.json()["id"]
    queue = app_client.get("/redemptions", params={"state": "ordered"}, headers=operator).json()
    assert [r["id"] for r in queue] == [redemption_id]
    shipped = app_client.post(
        f"/redemptions/{redemption_id}/ship", json={"tracking_no": "SF1"}, headers=operator
    )
    assert shipped.json()["state"] == "shipped"
    cancelled = app_client.post(
        f"/redemptions/{redemption_id}/cancel", json={"reason": "lost"}, headers=operator
    )
    assert cancelled.json()["state"] == "cancelled" and cancelled.json()["points_returned"] == 500
    late = app_client.post(f"/redemptions/{redemption_id}/deliver", headers=operator)
    assert late.status_code == 409 and late.json()["error"]["code"] == "redemption_state"
    listed = app_client.get(url, headers=service).json()
    assert [r["state"] for r in listed] == ["cancelled"]
