"""The insight routes: refresh, then read lifecycle, matrix, RFM, super users, a member."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from insight_brand import SmallBrand

from siyu.core.auth import Role


def test_refresh_and_read_everything_through_the_api(
    small_brand: SmallBrand, app_client: TestClient, make_key: Callable[..., dict[str, str]]
) -> None:
    analyst = make_key(Role.analyst)
    before = app_client.get("/insight/lifecycle", headers=analyst)
    assert before.status_code == 404 and "refresh" in before.json()["error"]["message"]

    ran = app_client.post("/insight/refresh", headers=analyst)
    assert ran.status_code == 201, ran.text
    assert ran.json()["members"] == 11 and ran.json()["marks"]["silent_after_days"] == 90
    assert ran.json()["mode"] == "full" and ran.json()["written"] == 11

    stages = app_client.get("/insight/lifecycle", headers=analyst).json()
    by_stage = {s["key"]: s for s in stages["stages"]}
    assert by_stage["prospect"]["members"] == 4 and by_stage["prospect"]["name"] == "潜客"
    assert stages["computed_at"] and stages["marks"]["basis"] == "days"

    matrix = app_client.get("/insight/lifecycle/matrix?months=3", headers=analyst).json()
    assert matrix["months"][0]["month"] == "2026-11"

    rfm = app_client.get("/insight/rfm", headers=analyst).json()
    assert rfm["groups"][0]["key"] == "important_value"
    assert sum(g["members"] for g in rfm["groups"]) == 7

    page = app_client.get("/insight/rfm/important_value/members?limit=1", headers=analyst).json()
    assert len(page["items"]) == 1 and page["next_after"] is not None
    rest = app_client.get(
        f"/insight/rfm/important_value/members?after={page['next_after']}", headers=analyst
    ).json()
    assert rest["items"] and rest["items"][0]["member_id"] > page["items"][0]["member_id"]
    # each group's pages hold exactly the members the run counted in it: the group is
    # derived when read, on the run's scale; the counts are the run's own
    for group in rfm["groups"]:
        listed = app_client.get(
            f"/insight/rfm/{group['key']}/members?limit=1000", headers=analyst
        ).json()["items"]
        assert len(listed) == group["members"], group["key"]
        assert {item["rfm_group"] for item in listed} <= {group["key"]}
    unknown = app_client.get("/insight/rfm/vip/members", headers=analyst)
    assert unknown.status_code == 422 and "important_value" in unknown.json()["error"]["message"]

    supers = app_client.get("/insight/super-users", headers=analyst).json()
    assert supers["super_users"] == 2 and supers["value_multiple"] > 1
    signals = app_client.get("/insight/super-users/early-signals", headers=analyst).json()
    assert signals["lift_points"] == 100.0

    heavy = small_brand.members["super"]
    one = app_client.get(f"/insight/members/{heavy}", headers=analyst).json()
    assert one["stage"] == "active" and one["super_user"] is True
    assert one["rfm_group_name"] == "重要价值"
    # recency is computed when read, from the stored last purchase (30 days ago)
    assert one["recency_days"] == 30 and one["last_order_at"] is not None
    missing = app_client.get("/insight/members/999999", headers=analyst)
    assert missing.status_code == 404

    runs = app_client.get("/insight/runs", headers=analyst).json()
    assert runs[0]["status"] == "done" and runs[0]["detail"]["members"] == 11

    nightly = app_client.post("/insight/refresh", headers=analyst).json()
    assert (nightly["mode"], nightly["written"]) == ("incremental", 0)
    full = app_client.post("/insight/refresh?full=true", headers=analyst).json()
    assert (full["mode"], full["recomputed"], full["written"]) == ("full", 11, 0)


def test_only_admins_operators_and_analysts(
    small_brand: SmallBrand, app_client: TestClient, make_key: Callable[..., dict[str, str]]
) -> None:
    service = make_key(Role.service)
    assert app_client.post("/insight/refresh", headers=service).status_code == 403
    assert app_client.get("/insight/rfm", headers=service).status_code == 403
    assert app_client.get("/insight/rfm").status_code == 401
    operator = make_key(Role.operator)
    assert app_client.post("/insight/refresh", headers=operator).status_code == 201
    future = app_client.post(
        "/insight/refresh", params={"as_of": "2030-01-01T00:00:00Z"}, headers=operator
    )
    assert future.status_code == 422 and future.json()["error"]["field"] == "as_of"
