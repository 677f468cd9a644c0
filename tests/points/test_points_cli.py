"""``siyu points show | adjust | recompute``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from siyu import cli
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.members import service as members
from siyu.members.models import Member
from siyu.members.service import EnrolDraft
from siyu.points import service


@pytest.fixture
def runner(clean_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_show_adjust_and_recompute(
    runner: CliRunner,
    clean_db: Database,
    apply_programme: Callable[..., None],
    doc: dict[str, Any],
) -> None:
    apply_programme(doc)
    with clean_db.unit_of_work() as s:
        member = members.enrol(s, EnrolDraft(phone="13800138000")).member_id
        service.grant(s, member, 300, fact="gift:1", reason="welcome")

    shown = runner.invoke(cli.app, ["points", "show", "13800138000"])
    assert shown.exit_code == 0, shown.output
    assert "300" in shown.output and "2026-12-31" in shown.output

    adjusted = runner.invoke(
        cli.app, ["points", "adjust", "--reason", "typo", "--key", "k1", "--", str(member), "-50"]
    )
    assert adjusted.exit_code == 0, adjusted.output
    assert "balance 250" in adjusted.output
    again = runner.invoke(
        cli.app, ["points", "adjust", "--reason", "typo", "--key", "k1", "--", str(member), "-50"]
    )
    assert "nothing changed" in again.output

    assert runner.invoke(cli.app, ["points", "recompute", "--check"]).exit_code == 0
    with clean_db.unit_of_work() as s:
        s.execute(update(Member).where(Member.id == member).values(points_balance=1))
    drift = runner.invoke(cli.app, ["points", "recompute", "--check"])
    assert drift.exit_code == 1 and "1 → 250" in drift.output
    fixed = runner.invoke(cli.app, ["points", "recompute"])
    assert fixed.exit_code == 0, fixed.output
    assert runner.invoke(cli.app, ["points", "recompute", "--check"]).exit_code == 0
