"""``POST /programme/simulate`` and ``siyu insight simulate`` on a small brand built
through the services: JSON and YAML drafts, problems reported as ``programme validate``
reports them, roles, and the side-by-side table."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from simulator_brand import example_programme
from typer.testing import CliRunner

from siyu import cli
from siyu.core import clock
from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.insight.simulator import Figures, PackCost
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft

Headers = dict[str, str]
YAML = {"Content-Type": "application/yaml"}


def as_json(document: dict[str, Any]) -> dict[str, Any]:
    """YAML reads times as datetimes; JSON sends them as ISO strings."""
    return json.loads(json.dumps(document, default=lambda v: v.isoformat()))


@pytest.fixture
def shop(clean_db: Database, programme_in_force: None) -> Database:
    """Three members: one spends 6,000 yuan (V4 under the example), one 600 (V2), one
    nothing (V1)."""
    now = clock.now()
    with clean_db.unit_of_work() as s:
        for i, spend in enumerate((600_000, 60_000, 0)):
            joined = now - timedelta(days=100)
            member_id = members.enrol(
                s, EnrolDraft(phone=f"1380013800{i}", joined_at=joined)
            ).member_id
            if spend:
                draft = OrderDraft(
                    channel="tmall",
                    external_id=f"A{i}",
                    paid_at=now - timedelta(days=30),
                    member_id=member_id,
                    lines=[LineDraft("SKU-1", "奶粉", 1, spend)],
                )
                orders.ingest_orders(s, [draft])
    return clean_db


def higher_thresholds() -> dict[str, Any]:
    doc = example_programme()
    for level in doc["tiers"]["levels"][1:]:
        level["threshold"] *= 2
    return doc


def test_simulate_a_json_draft_side_by_side(
    app_client: TestClient, make_key: Callable[..., Headers], shop: Database
) -> None:
    analyst = make_key(Role.analyst)
    response = app_client.post(
        "/programme/simulate?usage_rate=0.5", json=as_json(higher_thresholds()), headers=analyst
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["members"] == 3 and body["orders"] == 2 and body["estimate"] is False
    assert body["baseline"]["tiers"] == {"V1": 1, "V2": 1, "V3": 0, "V4": 1, "V5": 0, "V6": 0}
    # Twice the thresholds: 600 yuan is V1 (500 → 1,000), 6,000 is V3 (5,000 → 10,000).
    assert body["draft"]["tiers"] == {"V1": 2, "V2": 0, "V3": 1, "V4": 0, "V5": 0, "V6": 0}
    rows = {(r["section"], r["metric"]): r for r in body["rows"]}
    assert rows[("tiers", "V1")] == {
        "section": "tiers",
        "metric": "V1",
        "baseline": 1,
        "draft": 2,
        "delta": 1,
        "unit": "members",
    }
    assert rows[("points", "points_orders")]["delta"] == 0
    assert body["levels"] == ["V1", "V2", "V3", "V4", "V5", "V6"]
    # One definition of a column: the API shows the simulator's figures field for field.
    assert list(body["baseline"]) == [f.name for f in fields(Figures)]
    for pack in body["baseline"]["benefit_packs"]:
        assert list(pack) == [f.name for f in fields(PackCost)]
    # Notes in Chinese and English, as the diagnosis answers its texts: {zh, en} each.
    assert all(list(note) == ["zh", "en"] for note in body["notes"])
    assert {
        "zh": "现行方案：等级 V3 列出的权益包“monthly_freight”不是启用中的自动发放权益包，"
        "未计入成本",
        "en": "in force: level V3 lists the pack 'monthly_freight', which is not an active "
        "automatic pack; it is not priced",
    } in body["notes"]
    assert {
        "zh": "草稿：等级 V2 列出的权益包“birthday_gift”不是启用中的自动发放权益包，未计入成本",
        "en": "draft: level V2 lists the pack 'birthday_gift', which is not an active "
        "automatic pack; it is not priced",
    } in body["notes"]


def test_simulate_a_yaml_draft_with_options(
    app_client: TestClient, admin: Headers, shop: Database
) -> None:
    text = yaml.safe_dump(as_json(higher_thresholds()), allow_unicode=True)
    to = (clock.now() - timedelta(days=60)).isoformat()
    response = app_client.post(
        "/programme/simulate", params={"to": to, "sample": 1}, content=text, headers=admin | YAML
    )
    assert response.status_code == 200, response.text
    body = response.json()
    # Sixty days ago everyone had joined and nobody had bought yet.
    assert body["orders"] == 0 and body["baseline"]["tiers"]["V1"] == 3
    # A sample of 1 is every member: not an estimate, in either language.
    assert body["estimate"] is False and body["notes"]
    assert not any(
        n["zh"].startswith("估算") or n["en"].startswith("estimate") for n in body["notes"]
    )
    assert body["end"].startswith(to[:19])


def test_an_invalid_draft_lists_every_problem_like_validate(
    app_client: TestClient, admin: Headers, shop: Database
) -> None:
    doc = as_json(example_programme())
    doc["tiers"]["levels"][2]["threshold"] = 100
    doc["points"]["earn"]["per_yuan"] = -1
    validated = app_client.post("/programme:validate", json=doc, headers=admin).json()
    response = app_client.post("/programme/simulate", json=doc, headers=admin)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_programme"
    assert error["details"] == validated["problems"] and len(error["details"]) >= 2
    broken = app_client.post("/programme/simulate", content="a: [", headers=admin | YAML)
    assert broken.status_code == 422 and broken.json()["error"]["field"] == "document"


def test_roles_and_bad_options(
    app_client: TestClient, make_key: Callable[..., Headers], shop: Database
) -> None:
    doc = as_json(example_programme())
    service = app_client.post("/programme/simulate", json=doc, headers=make_key(Role.service))
    assert service.status_code == 403
    operator = make_key(Role.operator)
    zero = app_client.post("/programme/simulate?sample=0", json=doc, headers=operator)
    assert zero.status_code == 422
    backwards = app_client.post(
        "/programme/simulate",
        params={"from": "2026-06-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        json=doc,
        headers=operator,
    )
    assert backwards.status_code == 422 and backwards.json()["error"]["field"] == "from"


@pytest.fixture
def runner(clean_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_prints_both_columns_and_the_delta(
    runner: CliRunner, shop: Database, tmp_path: Path
) -> None:
    draft = tmp_path / "draft.yaml"
    draft.write_text(yaml.safe_dump(as_json(higher_thresholds()), allow_unicode=True), "utf-8")
    shown = runner.invoke(cli.app, ["insight", "simulate", str(draft)], env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    # the table's words in Chinese first, English beside them
    for header in ("现行方案 in force", "草稿 draft", "差异 Δ", "积分 points"):
        assert header in shown.output
    # the figures by the simulator's names (``simulator.name_of``), as the console names them
    assert "其中：订单积分 of which for orders" in shown.output
    assert "符合 super 开通条件 Eligible for super" in shown.output
    # Each note in Chinese, the English beneath it, as ``siyu report diagnosis`` prints.
    zh = "现行方案：等级 V2 列出的权益包“birthday_gift”不是启用中的自动发放权益包，未计入成本"
    en = "in force: level V2 lists the pack 'birthday_gift', which is not an active automatic pack"
    assert f"说明 note: {zh}\n{' ' * 11}{en}; it is not priced\n" in shown.output

    as_json_out = runner.invoke(cli.app, ["insight", "simulate", str(draft), "--json"])
    assert as_json_out.exit_code == 0, as_json_out.output
    body = json.loads(as_json_out.output)
    assert body["draft"]["tiers"]["V1"] == 2 and body["baseline"]["tiers"]["V1"] == 1
    assert body["notes"][0] == {
        "zh": "现行方案：等级 V2 列出的权益包“birthday_gift”不是启用中的自动发放权益包，未计入成本",
        "en": "in force: level V2 lists the pack 'birthday_gift', which is not an active "
        "automatic pack; it is not priced",
    }

    bad = tmp_path / "bad.json"
    doc = as_json(example_programme())
    doc["tiers"]["levels"][2]["threshold"] = 100
    bad.write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    refused = runner.invoke(cli.app, ["insight", "simulate", str(bad)], env={"COLUMNS": "160"})
    assert refused.exit_code == 1
    assert "tiers.levels[2].threshold" in refused.output
