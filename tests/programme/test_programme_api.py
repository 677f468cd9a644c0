"""The programme API over HTTP: JSON and YAML bodies, roles, status codes."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import yaml
from fastapi.testclient import TestClient

from siyu.core.auth import Role

Headers = dict[str, str]
EXAMPLE = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
YAML = {"Content-Type": "application/yaml"}


def as_json(document: dict[str, Any]) -> dict[str, Any]:
    """YAML reads times as datetimes; JSON sends them as ISO strings."""
    return json.loads(json.dumps(document, default=lambda v: v.isoformat()))


def test_apply_yaml_then_read_it_back(app_client: TestClient, admin: Headers) -> None:
    # when an admin applies the example as YAML
    created = app_client.post("/programme?note=launch", content=EXAMPLE, headers=admin | YAML)
    assert created.status_code == 201, created.text
    version = created.json()["version"]
    assert created.json()["status"] == "created" and version["note"] == "launch"
    # then it is in force and in the history, and the same body again changes nothing
    current = app_client.get("/programme", headers=admin).json()
    assert current["id"] == version["id"]
    assert current["document"]["tiers"]["levels"][0]["name"] == "新手妈妈"
    again = app_client.post("/programme", content=EXAMPLE, headers=admin | YAML)
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    history = app_client.get("/programme/history", headers=admin).json()
    assert [h["id"] for h in history] == [version["id"]]
    before = app_client.get("/programme?at=2020-01-01T00:00:00Z", headers=admin)
    assert before.status_code == 404 and before.json()["error"]["code"] == "no_programme"


def test_validate_and_diff_take_json(
    app_client: TestClient, admin: Headers, doc: dict[str, Any]
) -> None:
    doc = as_json(doc)
    app_client.post("/programme", json=doc, headers=admin).raise_for_status()
    doc["tiers"]["levels"][2]["threshold"] = 100
    doc["points"]["earn"]["category_multipliers"]["家电"] = -1
    report = app_client.post("/programme:validate", json=doc, headers=admin).json()
    assert report["valid"] is False
    assert {p["field"] for p in report["problems"]} == {
        "tiers.levels[2].threshold",
        "tiers.levels[2].retention",
        "points.earn.category_multipliers.家电",
    }
    invalid = app_client.post("/programme:diff", json=doc, headers=admin)
    assert invalid.status_code == 422
    assert invalid.json()["error"]["code"] == "invalid_programme"
    doc = as_json(yaml.safe_load(EXAMPLE))
    doc["growth"]["signup_bonus"] = 200
    diff = app_client.post("/programme:diff", json=doc, headers=admin).json()
    assert diff["changes"] == [
        {"path": "growth.signup_bonus", "kind": "changed", "old": 100, "new": 200}
    ]


def test_roles_backdating_and_bad_bodies(app_client: TestClient, make_key, doc) -> None:  # type: ignore[no-untyped-def]
    doc = as_json(doc)
    operator, analyst = make_key(Role.operator), make_key(Role.analyst)
    assert app_client.post("/programme", json=doc, headers=analyst).status_code == 403
    ok = app_client.post("/programme:validate", json=doc, headers=analyst)
    assert ok.status_code == 200 and ok.json() == {"valid": True, "problems": []}
    assert app_client.post("/programme", json=doc, headers=operator).status_code == 201
    doc["growth"]["signup_bonus"] = 300
    late = "/programme?effective_from=2026-01-01T00:00:00Z"
    refused = app_client.post(late, json=doc, headers=operator)
    assert refused.status_code == 409
    assert app_client.post(late + "&backdate=true", json=doc, headers=operator).status_code == 201
    broken = app_client.post("/programme:validate", content="a: [", headers=operator | YAML)
    assert broken.status_code == 422
    assert broken.json()["error"]["details"][0]["field"] == "document"
