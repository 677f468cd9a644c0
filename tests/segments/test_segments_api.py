"""Segment and tag-rule routes: CRUD, counts with their time, samples, exports, snapshots,
roles."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from segments_helpers import Brand

from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.stores import service as stores

SEGMENT = {
    "name": "孕妈奶粉客",
    "description": "孕妈 who bought milk powder recently",
    "tree": {
        "and": [
            {"tag": "孕妈"},
            {"behaviour": "bought_category", "category": "奶粉", "at_least": 2, "days": 90},
            {"field": "gender", "op": "eq", "value": "F"},
        ]
    },
}


@pytest.fixture
def analyst(make_key: Callable[..., dict[str, str]]) -> dict[str, str]:
    return make_key(Role.analyst)


def test_saved_segment_round_trip(
    client: TestClient, brand: Brand, analyst: dict[str, str]
) -> None:
    # create
    created = client.post("/segments", json=SEGMENT, headers=analyst)
    assert created.status_code == 201, created.text
    segment = created.json()
    assert segment["tree"]["and"][0] == {"field": "tags", "op": "has", "value": "孕妈"}
    sid = segment["id"]
    # the same name again is a conflict
    assert client.post("/segments", json=SEGMENT, headers=analyst).status_code == 409
    # count (the first count builds the profile snapshot) with its time
    counted = client.get(f"/segments/{sid}/count", headers=analyst).json()
    assert counted["members"] == 1 and counted["source"] == "profile"
    assert counted["data_as_of"].startswith("2026-11-23T04:00")
    live = client.get(f"/segments/{sid}/count?source=live", headers=analyst).json()
    assert live["members"] == 1 and live["source"] == "live"
    # sample: phones masked for an analyst
    sample = client.get(f"/segments/{sid}/sample?size=5", headers=analyst).json()
    assert [m["member_id"] for m in sample["members"]] == [brand["安"]]
    assert sample["members"][0]["phone"] == "138****0001"
    # update the tree
    patched = client.patch(
        f"/segments/{sid}",
        json={"tree": {"field": "gender", "op": "eq", "value": "F"}},
        headers=analyst,
    )
    assert patched.status_code == 200 and patched.json()["name"] == SEGMENT["name"]
    assert client.get(f"/segments/{sid}/count", headers=analyst).json()["members"] == 3
    assert [s["id"] for s in client.get("/segments", headers=analyst).json()] == [sid]
    # delete
    assert client.delete(f"/segments/{sid}", headers=analyst).status_code == 204
    assert client.get(f"/segments/{sid}", headers=analyst).status_code == 404


def test_bad_trees_get_every_problem_with_its_path(
    client: TestClient, brand: Brand, admin: dict[str, str]
) -> None:
    bad = {
        "name": "bad",
        "tree": {"and": [{"field": "tier", "op": "gt", "value": "V1"}, {"or": []}]},
    }
    answer = client.post("/segments", json=bad, headers=admin)
    assert answer.status_code == 422
    body = answer.json()["error"]
    assert body["code"] == "invalid_segment"
    assert [d["field"] for d in body["details"]] == ["tree.and[0].op", "tree.and[1].or"]
    assert client.get("/segments", headers=admin).json() == []  # nothing stored


def test_preview_counts_an_unsaved_tree(
    client: TestClient, brand: Brand, admin: dict[str, str]
) -> None:
    answer = client.post(
        "/segments/preview",
        json={"tree": {"behaviour": "joined_never_bought", "days": 30}, "sample": 3},
        headers=admin,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"]["members"] == 1
    assert body["members"][0]["member_id"] == brand["陈"]
    assert body["members"][0]["phone"] == "13800000003"  # admins see phones


def test_export_streams_csv(client: TestClient, brand: Brand, admin: dict[str, str]) -> None:
    sid = client.post("/segments", json=SEGMENT | {"tree": {"tag": "VIP"}}, headers=admin).json()[
        "id"
    ]
    answer = client.get(f"/segments/{sid}/export?format=csv", headers=admin)
    assert answer.status_code == 200
    assert answer.headers["content-disposition"].startswith(f'attachment; filename="segment-{sid}-')
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [int(r["member_id"]) for r in rows] == [brand["丁"]]
    parquet = client.get(f"/segments/{sid}/export?format=parquet", headers=admin)
    assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"


def test_snapshots_freeze_members_for_campaigns(
    client: TestClient, brand: Brand, admin: dict[str, str]
) -> None:
    tree = {"field": "order_count", "op": "gt", "value": 0}
    sid = client.post("/segments", json=SEGMENT | {"tree": tree}, headers=admin).json()["id"]
    taken = client.post(f"/segments/{sid}/snapshots", headers=admin)
    assert taken.status_code == 201, taken.text
    snap = taken.json()
    assert snap["member_count"] == 3 and snap["tree"] == tree
    listed = client.get(f"/segments/{sid}/snapshots", headers=admin).json()
    assert [s["id"] for s in listed] == [snap["id"]]
    page = client.get(
        f"/segments/{sid}/snapshots/{snap['id']}/members?limit=2", headers=admin
    ).json()
    assert len(page["member_ids"]) == 2 and page["next_after"] == page["member_ids"][-1]
    rest = client.get(
        f"/segments/{sid}/snapshots/{snap['id']}/members?after={page['next_after']}",
        headers=admin,
    ).json()
    assert set(page["member_ids"] + rest["member_ids"]) == brand.named("安", "白", "丁")
    assert rest["next_after"] is None
    assert client.get(f"/segments/{sid}/snapshots/999", headers=admin).status_code == 404


def test_tag_rules_and_the_profile_refresh(
    client: TestClient, brand: Brand, admin: dict[str, str]
) -> None:
    rule = {"name": "沉睡客", "tree": {"behaviour": "no_purchase_since", "days": 180}}
    created = client.post("/tags/rules", json=rule, headers=admin)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert created.json()["member_count"] is None  # not computed yet
    refreshed = client.post("/segments/profile/refresh", headers=admin).json()
    assert refreshed["rules"] == [
        {"rule_id": rid, "name": "沉睡客", "members": 3, "added": 3, "removed": 0}
    ]
    assert refreshed["profile"]["members"] == 5
    info = client.get("/segments/profile", headers=admin).json()
    assert info["members"] == 5 and info["data_as_of"].startswith("2026-11-23T04:00")
    members = client.get(f"/tags/rules/{rid}/members", headers=admin).json()
    assert set(members["member_ids"]) == brand.named("陈", "丁", "鄂")
    assert client.get(f"/tags/rules/{rid}", headers=admin).json()["member_count"] == 3
    # a segment can name the rule tag
    answer = client.post("/segments/preview", json={"tree": {"tag": "沉睡客"}}, headers=admin)
    assert answer.json()["count"]["members"] == 3
    renamed = client.patch(f"/tags/rules/{rid}", json={"name": "睡眠客"}, headers=admin)
    assert renamed.json()["name"] == "睡眠客"
    assert [r["name"] for r in client.get("/tags/rules", headers=admin).json()] == ["睡眠客"]
    assert client.delete(f"/tags/rules/{rid}", headers=admin).status_code == 204
    assert client.get(f"/tags/rules/{rid}", headers=admin).status_code == 404


def test_the_field_catalogue(client: TestClient, admin: dict[str, str]) -> None:
    body = client.get("/segments/fields", headers=admin).json()
    by_name = {f["name"]: f for f in body["fields"]}
    assert by_name["stage"]["values"][0] == "prospect"
    assert "has_any" in by_name["tags"]["operators"]
    assert "bought_category" in body["behaviours"]


@pytest.mark.parametrize("role", [Role.guide, Role.store_manager, Role.service])
def test_guides_and_stores_see_no_segments(
    client: TestClient,
    clean_db: Database,
    make_key: Callable[..., dict[str, str]],
    role: Role,
) -> None:
    scope: dict[str, Any] = {}
    if role in (Role.guide, Role.store_manager):
        with clean_db.unit_of_work() as s:
            store = stores.create_store(s, code="S9", name="九店")
            staff = stores.create_staff(s, code="G9", name="导购", role="guide", store_id=store.id)
            scope = {"staff_id": staff.id, "store_id": store.id}
    headers = make_key(role, **scope)
    assert client.get("/segments", headers=headers).status_code == 403
    assert (
        client.post("/segments/preview", json={"tree": {"tag": "x"}}, headers=headers).status_code
        == 403
    )
    assert client.get("/tags/rules", headers=headers).status_code == 403
