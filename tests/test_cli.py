"""The ``siyu`` command end to end, on the test database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from siyu import cli
from siyu.core.db import Database
from siyu.core.errors import Conflict, InvalidInput
from siyu.core.settings import get_settings
from siyu.members import service as members
from siyu.members.service import EnrolDraft


@pytest.fixture
def runner(clean_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_keys_members_and_import(runner: CliRunner, clean_db: Database, tmp_path) -> None:
    created = runner.invoke(cli.app, ["keys", "create", "--role", "operator"])
    assert created.exit_code == 0, created.output
    assert "sk_" in created.output

    with clean_db.unit_of_work() as s:
        member_id = members.enrol(s, EnrolDraft(phone="13800138000", name="王芳")).member_id
    shown = runner.invoke(cli.app, ["members", "show", "13800138000"])
    assert shown.exit_code == 0 and "王芳" in shown.output
    assert str(member_id) in shown.output

    orders = tmp_path / "orders.csv"
    orders.write_text(
        "channel,external_id,paid_at,buyer_channel,buyer_id,store_code,sku,category,quantity,amount\n"
        "tmall,A1,2026-11-01 10:00:00,phone,13800138000,,SKU-1,奶粉,2,256.00\n"
        "tmall,A2,2026-11-01 11:00:00,phone,13800138000,,SKU-1,奶粉,0,256.00\n",
        encoding="utf-8",
    )
    imported = runner.invoke(cli.app, ["import", "orders", str(orders)])
    assert imported.exit_code == 1  # one row rejected
    assert (tmp_path / "orders.csv.errors.csv").read_text(encoding="utf-8-sig").count("\n") == 2
    checked = runner.invoke(cli.app, ["orders", "check-metrics"])
    assert checked.exit_code == 0, checked.output


def test_domain_errors_print_one_line_and_exit_2(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["siyu", "members", "show", "99999"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    assert "no member with id 99999" in capsys.readouterr().err


def test_jobs_list_and_run_twice(runner: CliRunner) -> None:
    listed = runner.invoke(cli.app, ["jobs", "list"])
    assert listed.exit_code == 0, listed.output
    assert "points.expire" in listed.output and "tiers.review" in listed.output
    args = ["jobs", "run", "points.expire", "--date", "2026-11-23"]
    first = runner.invoke(cli.app, args)
    assert first.exit_code == 0, first.output
    assert "done" in first.output
    again = runner.invoke(cli.app, args)
    assert again.exit_code == 0 and "already done" in again.output
    history = runner.invoke(cli.app, ["jobs", "history"])
    assert "points.expire" in history.output and "2026-11-23" in history.output
    bad = runner.invoke(cli.app, ["jobs", "run", "points.expire", "--date", "23/11"])
    assert isinstance(bad.exception, InvalidInput) and "2026-12-31" in str(bad.exception)


def test_a_demo_build_that_stopped_half_way_is_not_served_as_a_brand(
    runner: CliRunner, clean_db: Database
) -> None:
    """The demo's build ends with the day's nightly jobs: members without any job run are
    a build that was interrupted, and the next ``siyu demo`` says how to rebuild it."""
    with clean_db.unit_of_work() as s:
        members.enrol(s, EnrolDraft(phone="13800138000", name="王芳"))
    halfway = runner.invoke(cli.app, ["demo", "--no-serve"])
    assert isinstance(halfway.exception, Conflict)
    assert "siyu demo --reset" in str(halfway.exception) and "1 members" in str(halfway.exception)
    ran = runner.invoke(cli.app, ["jobs", "run", "points.expire", "--date", "2026-11-23"])
    assert ran.exit_code == 0, ran.output
    loaded = runner.invoke(cli.app, ["demo", "--no-serve"])
    assert loaded.exit_code == 0, loaded.output
    assert "demo brand already loaded (1 members)" in loaded.output
