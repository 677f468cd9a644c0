"""CLV routes: the last fit, the distribution, one member, running now."""

from __future__ import annotations

from clv_brand import build_brand
from fastapi.testclient import TestClient

from siyu.core.auth import Role
from siyu.core.db import Database


def test_before_any_run_the_routes_say_how_to_get_one(
    app_client: TestClient, admin: dict[str, str]
) -> None:
    response = app_client.get("/insight/clv", headers=admin)
    assert response.status_code == 404
    assert "POST /insight/clv/runs" in response.json()["error"]["message"]


def test_run_now_then_read_parameters_distribution_and_a_member(
    app_client: TestClient,
    clean_db: Database,
    make_key,
    admin: dict[str, str],  # type: ignore[no-untyped-def]
) -> None:
    brand = build_brand(clean_db, buyers=80)
    analyst = make_key(Role.analyst)

    # an operator reads CLV but does not run the fit
    assert app_client.post("/insight/clv/runs", headers=make_key(Role.operator)).status_code == 403

    created = app_client.post("/insight/clv/runs", json={"holdout_days": 60}, headers=analyst)
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["status"] == "done" and run["customers"] == 80
    assert set(run["params"]) == {"r", "alpha", "a", "b"}
    assert run["calibration"]["holdout_days"] == 60
    assert run["calibration"]["buckets"][0]["frequency"] == "0"

    last = app_client.get("/insight/clv", headers=analyst).json()
    assert last["run_id"] == run["run_id"] and last["params"] == run["params"]

    distribution = app_client.get("/insight/clv/distribution", headers=analyst).json()
    assert sum(d["members"] for d in distribution["deciles"]) == 80
    lows = [d["min_fen"] for d in distribution["deciles"]]
    assert lows == sorted(lows)
    assert 0.1 <= distribution["top_decile_share"] <= 1
    assert sum(distribution["p_alive_bands"]) == 80

    member = app_client.get(f"/insight/clv/members/{brand['buyer']}", headers=admin).json()
    assert 0 <= member["p_alive"] <= 1
    assert member["expected_purchases_90"] <= member["expected_purchases_365"]

    missing = app_client.get(f"/insight/clv/members/{brand['prospect']}", headers=admin)
    assert missing.status_code == 404
    assert "has no CLV" in missing.json()["error"]["message"]

    runs = app_client.get("/insight/clv/runs", headers=analyst).json()
    assert [r["run_id"] for r in runs] == [run["run_id"]]


def test_run_now_rejects_a_short_holdout(
    app_client: TestClient,
    make_key,  # type: ignore[no-untyped-def]
) -> None:
    response = app_client.post(
        "/insight/clv/runs", json={"holdout_days": 3}, headers=make_key(Role.analyst)
    )
    assert response.status_code == 422
