"""``siyu tiers`` commands on the test database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update
from tiers_helpers import enrol
from typer.testing import CliRunner

from siyu import cli
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.members.models import Member
from siyu.members.rules import member_no


@pytest.fixture
def runner(clean_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_show_grant_and_recompute(
    runner: CliRunner, clean_db: Database, programme_in_force: None
) -> None:
    with clean_db.unit_of_work() as s:
        member_id = enrol(s, "13800138000")
    shown = runner.invoke(cli.app, ["tiers", "show", member_no(member_id)])
    assert shown.exit_code == 0, shown.output
    assert "V1" in shown.output and "to reach V2" in shown.output

    granted = runner.invoke(
        cli.app,
        ["tiers", "grant", str(member_id), "V4", "--until", "2027-06-30", "--reason", "VIP"],
    )
    assert granted.exit_code == 0, granted.output
    assert "tier now V4" in granted.output
    bad = runner.invoke(
        cli.app, ["tiers", "grant", str(member_id), "V4", "--until", "30/06", "--reason", "x"]
    )
    assert bad.exception is not None and "2027-06-30" in str(bad.exception)

    assert runner.invoke(cli.app, ["tiers", "recompute", "--check"]).exit_code == 0
    with clean_db.unit_of_work() as s:
        s.execute(update(Member).values(growth_balance=1))
    drift = runner.invoke(cli.app, ["tiers", "recompute", "--check"])
    assert drift.exit_code == 1 and str(member_id) in drift.output
    fixed = runner.invoke(cli.app, ["tiers", "recompute"])
    assert fixed.exit_code == 0 and "1 repaired" in fixed.output
    assert runner.invoke(cli.app, ["tiers", "recompute", "--check"]).exit_code == 0
