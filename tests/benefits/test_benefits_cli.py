"""``siyu benefits ...`` end to end, on the test database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from siyu import cli
from siyu.benefits import coupons, mall
from siyu.benefits.coupons import TemplateDraft
from siyu.benefits.mall import RewardDraft
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.errors import InvalidInput
from siyu.core.settings import get_settings
from siyu.members import service as members
from siyu.members.service import EnrolDraft


@pytest.fixture
def runner(clean_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_templates_issue_coupons_rewards(
    runner: CliRunner, clean_db: Database, tmp_path: Path
) -> None:
    with clean_db.unit_of_work() as s:
        coupons.create_template(
            s,
            TemplateDraft(
                code="FULL200-20",
                name="满200减20",
                kind="amount_off",
                threshold_fen=20_000,
                amount_off_fen=2_000,
                valid_days=7,
                per_member_limit=1,
            ),
            principal=SYSTEM,
        )
        mall.create_reward(
            s,
            RewardDraft(code="CUP", name="吸管杯", kind="gift", points_price=500, stock=10),
            principal=SYSTEM,
        )
        ids = [members.enrol(s, EnrolDraft(phone=f"1390000000{i}")).member_id for i in range(3)]
    listed = runner.invoke(cli.app, ["benefits", "templates"])
    assert listed.exit_code == 0, listed.output
    assert "FULL200-20" in listed.output and "¥20.00 off from ¥200.00" in listed.output

    file = tmp_path / "members.csv"
    file.write_text("member_id\n" + "\n".join(map(str, ids)) + "\n", encoding="utf-8")
    args = [
        "benefits",
        "issue",
        "FULL200-20",
        "--members",
        str(file),
        "--key",
        "k",
        "--reason",
        "r",
    ]
    issued = runner.invoke(cli.app, args)
    assert issued.exit_code == 0, issued.output
    assert "3 coupons issued" in issued.output
    again = runner.invoke(cli.app, args)
    assert "0 coupons issued" in again.output and "3 were issued before" in again.output
    more = runner.invoke(
        cli.app,
        ["benefits", "issue", "1", "--members", f"{ids[0]}", "--key", "k2", "--reason", "r"],
    )
    assert "1 members skipped" in more.output and "limit of 1" in more.output
    bad = runner.invoke(
        cli.app, ["benefits", "issue", "1", "--members", "1,x", "--key", "k", "--reason", "r"]
    )
    assert isinstance(bad.exception, InvalidInput)

    shown = runner.invoke(cli.app, ["benefits", "coupons", "13900000000", "--state", "usable"])
    assert shown.exit_code == 0 and "FULL200-20" in shown.output
    rewards = runner.invoke(cli.app, ["benefits", "rewards"])
    assert rewards.exit_code == 0 and "吸管杯" in rewards.output
    assert runner.invoke(cli.app, ["benefits", "packs"]).exit_code == 0
    assert runner.invoke(cli.app, ["benefits", "redemptions"]).exit_code == 0
    jobs = runner.invoke(cli.app, ["jobs", "list"])
    assert "benefits.expire_coupons" in jobs.output and "benefits.birthday_packs" in jobs.output
    run = runner.invoke(cli.app, ["jobs", "run", "benefits.monthly_packs", "--date", "2026-12-01"])
    assert run.exit_code == 0, run.output
