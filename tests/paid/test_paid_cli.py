"""``siyu paid``: a member sold a trial, converted, renewed, cancelled and refunded from the
terminal, through the same services as the API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from siyu import cli
from siyu.core import clock
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.paid.models import Payment, Subscription

PHONE = "13800138000"


@pytest.fixture
def runner(clean_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(cli.app, ["paid", *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # Rich wraps lines at the terminal's width


def test_trial_convert_renew_cancel_refund_from_the_terminal(
    runner: CliRunner,
    clean_db: Database,
    programme_in_force: None,
    fixed_clock: clock.FixedClock,
) -> None:
    with clean_db.unit_of_work() as s:
        member_id = members.enrol(s, EnrolDraft(phone=PHONE)).member_id

    assert "trial" in _ok(runner, "trial", PHONE, "--plan", "super")
    again = runner.invoke(cli.app, ["paid", "trial", PHONE])
    assert again.exit_code != 0  # one trial per person, ever

    fixed_clock.advance(timedelta(days=3))
    bought = _ok(runner, "purchase", PHONE, "--txn", "wx-1", "--amount-fen", "19900")
    assert "active" in bought
    repeat = _ok(runner, "purchase", PHONE, "--txn", "wx-1", "--amount-fen", "19900")
    assert "already recorded" in repeat

    with clean_db.unit_of_work() as s:
        sub = s.scalars(select(Subscription).where(Subscription.member_id == member_id)).one()
        end_before = sub.current_period_end
    fixed_clock.advance(timedelta(days=300))
    _ok(runner, "renew", PHONE, "--txn", "wx-2", "--amount-fen", "19900")
    with clean_db.unit_of_work() as s:
        sub = s.scalars(select(Subscription).where(Subscription.member_id == member_id)).one()
        # a year more, from where the paid period ended: no gap, no overlap
        assert clock.as_utc(sub.current_period_start) == clock.as_utc(end_before)
        assert sub.current_period_end > end_before + timedelta(days=364)

    assert "off" in _ok(runner, "auto-renew", PHONE, "--off")
    assert "cancelled" in _ok(runner, "cancel", PHONE, "--reason", "搬家")

    refunded = _ok(
        runner, "refund", "--txn", "wx-r1", "--payment-txn", "wx-2", "--amount-fen", "19900"
    )
    assert "refund" in refunded
    with clean_db.unit_of_work() as s:
        kinds = s.scalars(select(Payment.kind).order_by(Payment.id)).all()
        state = s.scalars(select(Subscription.state)).one()
    assert kinds == ["purchase", "renewal", "refund"]
    assert state == "refunded"

    shown = _ok(runner, "show", PHONE)
    assert "wx-1" in shown and "wx-r1" in shown
    assert "month" in _ok(runner, "savings", PHONE)


def test_a_time_without_offset_is_refused_with_how_to_fix(
    runner: CliRunner, clean_db: Database, programme_in_force: None
) -> None:
    with clean_db.unit_of_work() as s:
        members.enrol(s, EnrolDraft(phone=PHONE))
    result = runner.invoke(
        cli.app,
        [
            "paid",
            "purchase",
            PHONE,
            "--txn",
            "t",
            "--amount-fen",
            "19900",
            "--paid-at",
            "2026-11-23 10:00",
        ],
    )
    assert result.exit_code != 0
    assert "offset" in result.output
