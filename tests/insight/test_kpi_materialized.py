"""KPI reports materialized: the nightly job stores the standard periods and the cohort
table; the API, the CLI and the diagnosis answer the stored report with the time it was
computed, compute and store it when there is none, and recompute when asked fresh."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import make_url
from test_kpis import TZ, _order, brand  # noqa: F401  (brand: the fixture)
from typer.testing import CliRunner

from siyu import cli
from siyu.core import clock
from siyu.core.db import Database
from siyu.core.migrate import upgrade
from siyu.core.settings import get_settings
from siyu.insight import kpis
from siyu.insight.kpi_models import KpiReportRow
from siyu.insight.kpis import Period
from siyu.jobs import service as jobs
from siyu.orders import service as orders

DAY = date(2026, 11, 23)  # the fixed clock's brand-local day
LAST_30 = Period(date(2026, 10, 24), date(2026, 11, 22))


@pytest.fixture
def ids(brand: dict[str, int]) -> dict[str, int]:  # noqa: F811  (the fixture of test_kpis)
    return brand


def _rows(db: Database) -> list[KpiReportRow]:
    with db.unit_of_work() as session:
        return list(
            session.scalars(
                select(KpiReportRow).order_by(KpiReportRow.kind, KpiReportRow.period_start)
            )
        )


def _late_order(db: Database, member_id: int) -> None:
    """An order of five days ago arriving late: the stored reports do not know it."""
    with db.unit_of_work() as session:
        late = _order("late-0", clock.now() - timedelta(days=5), 1_000, member_id)
        assert orders.ingest_orders(session, [late])[0].status == "created"


def test_standard_periods_end_yesterday() -> None:
    assert kpis.standard_periods(DAY) == [
        Period(date(2026, 11, 16), date(2026, 11, 22)),
        LAST_30,
        Period(date(2026, 8, 25), date(2026, 11, 22)),
        Period(date(2026, 10, 1), date(2026, 10, 31)),
    ]
    # on the first of a month the last full month is the one just ended
    assert kpis.standard_periods(date(2026, 12, 1))[-1] == Period(
        date(2026, 11, 1), date(2026, 11, 30)
    )


def test_a_report_survives_storage_unchanged(clean_db: Database, ids: dict[str, int]) -> None:
    report = kpis.kpi_report(clean_db, LAST_30, tz=TZ)
    assert kpis.report_of_json(kpis.report_as_json(report)) == report
    kpis.store_reports(clean_db, [report])
    assert kpis.stored_report(clean_db, LAST_30, tz=TZ) == report
    assert kpis.stored_report(clean_db, LAST_30, tz="UTC") is None


def test_the_nightly_job_stores_the_standard_periods_and_cohorts(
    clean_db: Database, ids: dict[str, int]
) -> None:
    # when the nightly job runs
    outcome = jobs.run(clean_db, "insight.kpis", DAY, tz=TZ)

    # then the four standard periods and the cohort table are stored with their time
    assert outcome.status == "done", outcome.result
    rows = _rows(clean_db)
    assert [(r.kind, r.period_start, r.period_end) for r in rows] == [
        ("cohorts", date(2025, 12, 1), date(2026, 11, 30)),
        ("period", date(2026, 8, 25), date(2026, 11, 22)),
        ("period", date(2026, 10, 1), date(2026, 10, 31)),
        ("period", date(2026, 10, 24), date(2026, 11, 22)),
        ("period", date(2026, 11, 16), date(2026, 11, 22)),
    ]
    assert all(clock.as_utc(r.computed_at) == clock.now() and r.seconds > 0 for r in rows)
    # and each equals what computing it on its own gives
    for period in kpis.standard_periods(DAY)[1::2]:  # the 30 days and the month
        stored = kpis.stored_report(clean_db, period, tz=TZ)
        assert stored is not None
        alone = kpis.kpi_report(clean_db, period, tz=TZ)
        assert (stored.current, stored.previous, stored.last_year) == (
            alone.current,
            alone.previous,
            alone.last_year,
        )
    cohorts = kpis.cohorts_for(clean_db, tz=TZ)
    assert cohorts.cohorts == kpis.cohorts(clean_db, tz=TZ)
    assert cohorts.computed_at == clock.now()


def test_a_missing_period_is_computed_once_and_stored(
    clean_db: Database, ids: dict[str, int], fixed_clock: clock.FixedClock
) -> None:
    first = kpis.report_for(clean_db, LAST_30, tz=TZ)
    assert len(_rows(clean_db)) == 1
    # given data changes after the report was stored
    _late_order(clean_db, ids["E"])
    fixed_clock.advance(timedelta(minutes=10))
    # then the stored report is served, stamped with its time, until asked fresh
    again = kpis.report_for(clean_db, LAST_30, tz=TZ)
    assert again == first and again.computed_at == first.computed_at
    fresh = kpis.report_for(clean_db, LAST_30, tz=TZ, fresh=True)
    assert fresh.computed_at == first.computed_at + timedelta(minutes=10)
    assert fresh.current.member_revenue_fen == first.current.member_revenue_fen + 100_000
    assert kpis.report_for(clean_db, LAST_30, tz=TZ) == fresh  # replaced, not added
    assert len(_rows(clean_db)) == 1


def test_the_api_serves_the_stored_report_and_recomputes_when_fresh(
    clean_db: Database,
    ids: dict[str, int],
    app_client: TestClient,
    admin: dict[str, str],
    fixed_clock: clock.FixedClock,
) -> None:
    params = {"from": "2026-10-24", "to": "2026-11-22"}
    jobs.run(clean_db, "insight.kpis", DAY, tz=TZ)
    stored_at = clock.now().isoformat()
    _late_order(clean_db, ids["E"])
    fixed_clock.advance(timedelta(hours=2))

    served = app_client.get("/insight/kpis", params=params, headers=admin).json()
    assert served["computed_at"] == stored_at
    assert served["current"]["member_revenue_fen"] == 80_000  # the late order is not in it
    computed = kpis.kpi_report(clean_db, LAST_30, tz=TZ)
    stored = kpis.stored_report(clean_db, LAST_30, tz=TZ)
    assert stored is not None and served["current"] == kpis.report_as_json(stored)["current"]

    fresh = app_client.get("/insight/kpis", params={**params, "fresh": "true"}, headers=admin)
    body = fresh.json()
    assert body["computed_at"] == clock.now().isoformat()
    assert body["current"]["member_revenue_fen"] == 180_000
    assert body["current"] == kpis.report_as_json(computed)["current"]
    # the fresh report replaced the stored one
    again = app_client.get("/insight/kpis", params=params, headers=admin).json()
    assert again["computed_at"] == body["computed_at"]

    cohorts = app_client.get("/insight/cohorts", headers=admin).json()
    assert cohorts["computed_at"] == stored_at
    recent = app_client.get("/insight/cohorts", params={"fresh": "true"}, headers=admin)
    assert recent.json()["computed_at"] == clock.now().isoformat()


@pytest.fixture
def runner(clean_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_the_command_says_when_its_report_was_computed(
    clean_db: Database, ids: dict[str, int], runner: CliRunner, fixed_clock: clock.FixedClock
) -> None:
    period = ["insight", "kpis", "--from", "2026-10-24", "--to", "2026-11-22"]
    shown = runner.invoke(cli.app, period)
    assert shown.exit_code == 0, shown.output
    assert "computed at 2026-11-23 12:00:00 CST" in shown.output
    fixed_clock.advance(timedelta(minutes=30))
    again = runner.invoke(cli.app, period)
    assert "computed at 2026-11-23 12:00:00 CST" in again.output and "30 min ago" in again.output
    fresh = runner.invoke(cli.app, [*period, "--fresh"])
    assert fresh.exit_code == 0, fresh.output
    assert "computed at 2026-11-23 12:30:00 CST" in fresh.output
    with clean_db.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(KpiReportRow)) == 1


@pytest.fixture
def bare_database(db: Database, tmp_path: Path) -> Iterator[Database]:
    """A database of its own with no tables: a file on SQLite, a schema on PostgreSQL."""
    if db.dialect == "sqlite":
        fresh = Database(f"sqlite:///{tmp_path / 'migrate.db'}")
        yield fresh
        fresh.dispose()
        return
    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS kpi_migrate CASCADE"))
        conn.execute(text("CREATE SCHEMA kpi_migrate"))
    url = make_url(db.url).update_query_dict({"options": "-csearch_path=kpi_migrate"})
    fresh = Database(url.render_as_string(hide_password=False))
    yield fresh
    fresh.dispose()
    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA kpi_migrate CASCADE"))


def test_the_migration_adds_the_table_to_a_database_at_0016(bare_database: Database) -> None:
    # given a database at the revision before
    upgrade(bare_database, "0016_merge_insight")
    assert "insight_kpi_reports" not in inspect(bare_database.engine).get_table_names()
    # when it is upgraded
    upgrade(bare_database, "0017_kpi_reports")
    # then reports are stored and read back
    assert "insight_kpi_reports" in inspect(bare_database.engine).get_table_names()
    with bare_database.unit_of_work() as session:
        kpis._store(
            session,
            kind=kpis.COHORTS_KIND,
            start=date(2025, 12, 1),
            end=date(2026, 11, 30),
            tz=TZ,
            report={"cohorts": []},
            computed_at=clock.now(),
            seconds=0.5,
        )
    with bare_database.unit_of_work() as session:
        row = session.scalars(select(KpiReportRow)).one()
        assert (row.report, row.seconds) == ({"cohorts": []}, 0.5)
