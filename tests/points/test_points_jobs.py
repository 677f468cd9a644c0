"""Daily jobs: frozen points released, lots expired, birthday points, holds ended; each run
twice for the same day does it once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from siyu.core import clock
from siyu.core.db import Database
from siyu.jobs import service as jobs
from siyu.points import service
from siyu.points.models import PointsEntry, PointsLot, PointsReservation

Enrol = Callable[..., int]


def _cached(db: Database, member_id: int) -> tuple[int, int, int]:
    from siyu.members.models import Member

    with db.unit_of_work() as s:
        m = s.get(Member, member_id)
        assert m is not None
        return m.points_balance, m.points_frozen, m.points_debt


def _enrol(db: Database, phone: str, **fields: Any) -> int:
    from siyu.members import service as members
    from siyu.members.service import EnrolDraft

    with db.unit_of_work() as s:
        return members.enrol(s, EnrolDraft(phone=phone, **fields)).member_id


def test_expiry_runs_once_per_day_and_only_takes_what_is_left(
    clean_db: Database, apply_programme: Callable[..., None], doc: dict[str, Any], fixed_clock: Any
) -> None:
    apply_programme(doc)
    member = _enrol(clean_db, "13800138000")
    fixed_clock.set(datetime(2025, 6, 1, tzinfo=UTC))
    with clean_db.unit_of_work() as s:
        service.grant(s, member, 100, fact="g:old", reason="r")  # expires end of 2025-12-31
        service.spend(s, member, 30, fact="mall:1", reason="gift")
    fixed_clock.set(datetime(2026, 1, 2, tzinfo=UTC))
    with clean_db.unit_of_work() as s:
        service.grant(s, member, 50, fact="g:new", reason="r")
    first = jobs.run(clean_db, "points.expire", date(2025, 12, 30))
    assert first.result == {"lots": 0, "points": 0}  # not due yet
    done = jobs.run(clean_db, "points.expire", date(2025, 12, 31))
    assert done.result == {"lots": 1, "points": 70}
    again = jobs.run(clean_db, "points.expire", date(2025, 12, 31))
    assert again.status == "skipped"
    # the job's own effects are idempotent too (a failed run is run again)
    fn = jobs.get_job("points.expire").run
    assert fn(clean_db, date(2025, 12, 31)) == {"lots": 0, "points": 0}
    assert _cached(clean_db, member) == (50, 0, 0)
    with clean_db.unit_of_work() as s:
        assert service.check(s) == []


def test_frozen_points_are_released_after_the_return_window(
    clean_db: Database, apply_programme: Callable[..., None], doc: dict[str, Any], fixed_clock: Any
) -> None:
    apply_programme(doc)
    member = _enrol(clean_db, "13800138000")
    with clean_db.unit_of_work() as s:
        lot = service.grant(s, member, 80, fact="g:1", reason="r")
        assert lot is not None
        s.execute(
            update(PointsLot)
            .where(PointsLot.id == lot.id)
            .values(frozen=True, available_at=clock.now() + timedelta(days=2))
        )
        service.recompute(s, [member])
    assert _cached(clean_db, member) == (80, 80, 0)
    fixed_clock.advance(timedelta(days=1))
    today = clock.local_date(clock.now(), "Asia/Shanghai")
    assert jobs.run(clean_db, "points.release_frozen", today).result["lots"] == 0
    fixed_clock.advance(timedelta(days=1, hours=1))
    later = clock.local_date(clock.now(), "Asia/Shanghai")
    assert jobs.run(clean_db, "points.release_frozen", later).result == {"lots": 1, "points": 80}
    fn = jobs.get_job("points.release_frozen").run
    assert fn(clean_db, later) == {"lots": 0, "points": 0}
    assert _cached(clean_db, member) == (80, 0, 0)
    with clean_db.unit_of_work() as s:
        releases = s.scalar(
            select(func.count()).select_from(PointsEntry).where(PointsEntry.kind == "release")
        )
        assert releases == 1
        assert service.available(s, member) == 80


def test_birthday_points_once_a_year(
    clean_db: Database, apply_programme: Callable[..., None], doc: dict[str, Any]
) -> None:
    apply_programme(doc)
    born = _enrol(clean_db, "13800138000", birthday=date(1990, 11, 23))
    leap = _enrol(clean_db, "13800138001", birthday=date(1992, 2, 29))
    _enrol(clean_db, "13800138002", birthday=date(1990, 11, 24))
    outcome = jobs.run(clean_db, "points.birthday", date(2026, 11, 23))
    assert outcome.result == {"members": 1, "granted": 1}
    fn = jobs.get_job("points.birthday").run
    assert fn(clean_db, date(2026, 11, 23)) == {"members": 1, "granted": 0}
    assert _cached(clean_db, born) == (200, 0, 0)
    assert jobs.run(clean_db, "points.birthday", date(2027, 2, 28)).result["granted"] == 1
    assert _cached(clean_db, leap) == (200, 0, 0)


def test_holds_that_ran_out_are_released(
    clean_db: Database, apply_programme: Callable[..., None], doc: dict[str, Any], fixed_clock: Any
) -> None:
    apply_programme(doc)
    member = _enrol(clean_db, "13800138000")
    with clean_db.unit_of_work() as s:
        service.grant(s, member, 500, fact="g:1", reason="r")
        service.reserve(s, member, 200, key="checkout:1")
    fixed_clock.advance(timedelta(hours=1))
    today = clock.local_date(clock.now(), "Asia/Shanghai")
    assert jobs.run(clean_db, "points.reservations", today).result == {"expired": 1}
    with clean_db.unit_of_work() as s:
        row = s.scalar(select(PointsReservation))
        assert row is not None and row.status == "expired"
