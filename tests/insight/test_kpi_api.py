"""The KPI, cohort and diagnosis routes and commands over the small KPI brand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_kpis import brand  # noqa: F401  (the fixture)
from typer.testing import CliRunner

from siyu import cli
from siyu.core.db import Database
from siyu.core.errors import InvalidInput
from siyu.core.settings import get_settings

PERIOD = {"from": "2026-10-25", "to": "2026-11-23"}


@pytest.fixture
def runner(clean_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.mark.usefixtures("brand")
def test_kpis_with_their_comparisons(app_client: TestClient, admin: dict[str, str]) -> None:
    got = app_client.get("/insight/kpis", params=PERIOD, headers=admin)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["current"]["period"] == {"start": "2026-10-25", "end": "2026-11-23"}
    assert body["last_year"]["period"] == {"start": "2025-10-25", "end": "2025-11-23"}
    assert body["current"]["member_revenue_fen"] == 80_000
    assert body["changes"]["member_revenue_fen"]["last_year"] == {
        "against": 10_000,
        "delta": 70_000,
        "pct": 7.0,
    }
    assert body["changes"]["buyers"]["previous"]["pct"] is None
    default = app_client.get("/insight/kpis", headers=admin).json()  # the last 30 days
    assert default["current"]["period"] == body["current"]["period"]


@pytest.mark.usefixtures("brand")
def test_bad_periods_and_roles_are_refused(app_client: TestClient, make_key) -> None:  # type: ignore[no-untyped-def]
    analyst = make_key("analyst")
    swapped = app_client.get(
        "/insight/kpis", params={"from": "2026-11-10", "to": "2026-11-01"}, headers=analyst
    )
    assert swapped.status_code == 422
    assert "swap them" in swapped.text
    garbled = app_client.get("/insight/kpis", params={"from": "yesterday"}, headers=analyst)
    assert garbled.status_code == 422
    assert app_client.get("/insight/kpis", headers=make_key("service")).status_code == 403
    assert app_client.get("/insight/diagnosis").status_code == 401


@pytest.mark.usefixtures("brand")
def test_cohorts_route(app_client: TestClient, admin: dict[str, str]) -> None:
    body = app_client.get("/insight/cohorts", params={"months": 3}, headers=admin).json()
    assert body["computed_at"] == "2026-11-23T04:00:00+00:00"
    rows = body["cohorts"]
    assert [r["month"] for r in rows] == ["2026-09", "2026-10", "2026-11"]
    assert rows[-1]["members"] == 2 and rows[-1]["retention"] == [0.5, None, None]


@pytest.mark.usefixtures("brand")
def test_diagnosis_route_as_data_and_html(app_client: TestClient, admin: dict[str, str]) -> None:
    body = app_client.get("/insight/diagnosis", headers=admin).json()
    assert body["from"] == "2025-11-24" and body["to"] == "2026-11-23"
    codes = {f["code"]: f for f in body["findings"]}
    assert len(codes) == 10
    assert codes["join_gift"]["outcome"] == "fired"  # the example has one join coupon
    assert codes["tier_benefits"]["outcome"] == "passed"
    assert codes["join_gift"]["remedy"]["zh"] and codes["join_gift"]["evidence"]["en"]
    page = app_client.get("/insight/diagnosis", params={"format": "html"}, headers=admin)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "会员体系诊断" in page.text and "Membership health diagnosis" in page.text
    assert "Microsoft YaHei" in page.text  # the CJK font stack
    assert 'id="join_gift"' in page.text


@pytest.mark.usefixtures("brand")
def test_commands(runner: CliRunner, tmp_path: Path) -> None:
    shown = runner.invoke(
        cli.app, ["insight", "kpis", "--from", "2026-10-25", "--to", "2026-11-23"]
    )
    assert shown.exit_code == 0, shown.output
    assert "会销比" in shown.output and "+700.0%" in shown.output
    cohorts = runner.invoke(cli.app, ["insight", "cohorts", "--months", "2"])
    assert cohorts.exit_code == 0, cohorts.output
    assert "2026-11" in cohorts.output and "50%" in cohorts.output
    report = tmp_path / "diagnosis.html"
    found = runner.invoke(cli.app, ["report", "diagnosis", "--html", str(report)])
    assert found.exit_code == 0, found.output
    assert "入会礼单一" in found.output and "checks found an issue" in found.output
    assert "会员体系诊断" in report.read_text("utf-8")
    bad = runner.invoke(cli.app, ["insight", "kpis", "--from", "2026-12-01"])
    assert isinstance(bad.exception, InvalidInput)  # `siyu` prints it and exits with 2
    assert "in the future" in str(bad.exception)
