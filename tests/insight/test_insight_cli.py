"""``siyu insight …`` and the nightly job, on the test database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from insight_brand import SmallBrand
from typer.testing import CliRunner

from siyu import cli
from siyu.core.settings import get_settings
from siyu.jobs import service as jobs


@pytest.fixture
def runner(small_brand: SmallBrand, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", small_brand.db.url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_refresh_and_read_from_the_command_line(runner: CliRunner) -> None:
    ran = runner.invoke(cli.app, ["insight", "refresh"])
    assert ran.exit_code == 0, ran.output
    assert "super users" in ran.output and "11" in ran.output

    lifecycle = runner.invoke(cli.app, ["insight", "lifecycle"])
    assert lifecycle.exit_code == 0, lifecycle.output
    assert "潜客" in lifecycle.output and "2026-11" in lifecycle.output

    rfm = runner.invoke(cli.app, ["insight", "rfm"])
    assert rfm.exit_code == 0 and "重要价值" in rfm.output
    group = runner.invoke(cli.app, ["insight", "rfm", "--group", "important_value", "--limit", "1"])
    assert group.exit_code == 0 and "--after" in group.output

    supers = runner.invoke(cli.app, ["insight", "super-users"])
    assert supers.exit_code == 0, supers.output
    assert "2 of 11" in supers.output and "2025-09" in supers.output

    runs = runner.invoke(cli.app, ["insight", "runs"])
    assert runs.exit_code == 0 and "done" in runs.output

    nightly = runner.invoke(cli.app, ["insight", "refresh"])
    assert nightly.exit_code == 0 and "incremental" in nightly.output, nightly.output
    full = runner.invoke(cli.app, ["insight", "refresh", "--full"])
    assert full.exit_code == 0 and "full" in full.output, full.output


def test_the_nightly_job_refreshes_once_a_day(small_brand: SmallBrand) -> None:
    day = small_brand.now.date()
    first = jobs.run(small_brand.db, "insight.refresh", day)
    assert first.status == "done" and first.result["members"] == 11
    assert first.result["transitions"] == 11 and first.result["events"] == 0
    again = jobs.run(small_brand.db, "insight.refresh", day)
    assert again.status == "skipped"
    # a day before the last refresh is evaluated as of that refresh: nothing moves
    earlier = jobs.run(small_brand.db, "insight.refresh", day.replace(day=day.day - 1))
    assert earlier.status == "done" and earlier.result["transitions"] == 0
