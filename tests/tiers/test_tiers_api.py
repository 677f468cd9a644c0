"""The tier and growth routes, end to end through the app."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from tiers_helpers import enrol, ingest, order

from siyu.core import clock
from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.stores import service as stores


def test_a_member_reads_tier_progress_history_and_growth(
    app_client: TestClient, clean_db: Database, programme_in_force: None, admin: dict[str, str]
) -> None:
    with clean_db.unit_of_work() as s:
        member_id = enrol(s, "13800138000")
        ingest(s, order("A1", member_id, clock.now() - timedelta(days=1), 210_000))
    tier = app_client.get(f"/members/{member_id}/tier", headers=admin)
    assert tier.status_code == 200, tier.text
    body = tier.json()
    assert (body["code"], body["name"], body["growth_balance"]) == ("V3", "品质妈妈", 2_300)
    assert body["benefits"]["discount_rate"] == "0.98"
    progress = body["progress"]
    assert (progress["unit"], progress["to_next"], progress["to_keep"]) == ("growth", 2_700, 0)
    assert "to reach V4 金牌妈妈" in progress["sentence_en"]
    assert "可升级为V4 金牌妈妈" in progress["sentence_zh"]

    history = app_client.get(f"/members/{member_id}/tier/history", headers=admin).json()
    assert [(h["from_code"], h["to_code"], h["reason"]) for h in history] == [
        ("V1", "V3", "upgrade"),
        (None, "V1", "join"),
    ]
    first = app_client.get(f"/members/{member_id}/growth?limit=2", headers=admin).json()
    assert [e["kind"] for e in first["items"]] == ["bonus", "earn"]
    rest = app_client.get(
        f"/members/{member_id}/growth?limit=2&cursor={first['next_cursor']}", headers=admin
    ).json()
    assert [e["fact"] for e in rest["items"]] == [f"signup:{member_id}"]
    assert rest["next_cursor"] is None


def test_operators_adjust_growth_with_a_reason_and_a_key(
    app_client: TestClient,
    clean_db: Database,
    programme_in_force: None,
    make_key: Callable[..., dict[str, str]],
) -> None:
    with clean_db.unit_of_work() as s:
        member_id = enrol(s, "13800138000")
    operator = make_key(Role.operator)
    url = f"/members/{member_id}/growth/adjustments"
    body = {"growth": 450, "reason": "投诉补偿", "key": "ticket-88"}
    made = app_client.post(url, json=body, headers=operator)
    assert made.status_code == 201, made.text
    again = app_client.post(url, json=body, headers=operator)
    assert again.status_code == 201 and again.json()["id"] == made.json()["id"]
    tier = app_client.get(f"/members/{member_id}/tier", headers=operator).json()
    assert (tier["code"], tier["growth_balance"]) == ("V2", 550)
    clash = app_client.post(url, json=body | {"growth": 1}, headers=operator)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "adjustment_conflict"
    no_reason = app_client.post(url, json={"growth": 5, "key": "k2"}, headers=operator)
    assert no_reason.status_code == 422
    analyst = make_key(Role.analyst)
    assert app_client.post(url, json=body, headers=analyst).status_code == 403


def test_operators_grant_a_tier_and_guides_read_only_their_members(
    app_client: TestClient,
    clean_db: Database,
    programme_in_force: None,
    make_key: Callable[..., dict[str, str]],
) -> None:
    with clean_db.unit_of_work() as s:
        store = stores.create_store(s, code="S001", name="旗舰店")
        guide = stores.create_staff(s, code="G1", name="小李", role="guide", store_id=store.id)
        member_id = enrol(s, "13800138000")
    operator = make_key(Role.operator)
    ends_at = (clock.now() + timedelta(days=30)).isoformat()
    granted = app_client.post(
        f"/members/{member_id}/tier/grants",
        json={"code": "V5", "ends_at": ends_at, "reason": "KOC store owner"},
        headers=operator,
    )
    assert granted.status_code == 201, granted.text
    assert (granted.json()["tier_code"], granted.json()["held_code"]) == ("V5", "V1")
    tier = app_client.get(f"/members/{member_id}/tier", headers=operator).json()
    assert tier["code"] == "V5" and tier["progress"]["floor_code"] == "V5"
    bad = app_client.post(
        f"/members/{member_id}/tier/grants",
        json={"code": "V9", "ends_at": ends_at, "reason": "x"},
        headers=operator,
    )
    assert bad.status_code == 422 and "V9" in bad.json()["error"]["message"]
    guide_key = make_key(Role.guide, staff_id=guide.id)
    assert app_client.get(f"/members/{member_id}/tier", headers=guide_key).status_code == 404
    revoked = app_client.post(
        f"/tier-grants/{granted.json()['id']}/revoke", json={"reason": "ended"}, headers=operator
    )
    assert revoked.status_code == 200 and revoked.json()["closed_at"] is not None
    tier = app_client.get(f"/members/{member_id}/tier", headers=operator).json()
    assert tier["code"] == "V1"
