"""Jobs: a day's run is recorded once; re-running changes nothing; failures can be re-run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, time, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.errors import Conflict, NotFound
from siyu.jobs import service
from siyu.jobs.models import JobRun
from siyu.jobs.scheduler import Scheduler

DAY = date(2026, 11, 23)


@pytest.fixture
def counter() -> Iterator[dict[str, Any]]:
    """A test job that counts its calls and can be told to fail."""
    state: dict[str, Any] = {"calls": [], "fail": False}

    def count(db: Database, day: date) -> dict[str, int]:
        state["calls"].append(day)
        if state["fail"]:
            raise RuntimeError("the warehouse API is down")
        return {"counted": len(state["calls"])}

    service.job("test.count", "counts its calls", order=999)(count)
    yield state
    service._jobs.pop("test.count", None)


def test_a_job_runs_once_per_day(clean_db: Database, counter: dict[str, Any]) -> None:
    first = service.run(clean_db, "test.count", DAY)
    again = service.run(clean_db, "test.count", DAY)
    assert first.status == "done" and first.result == {"counted": 1}
    assert again.status == "skipped" and again.result == {"counted": 1}
    assert counter["calls"] == [DAY]
    next_day = service.run(clean_db, "test.count", DAY + timedelta(days=1))
    assert next_day.status == "done" and len(counter["calls"]) == 2


def test_a_failed_run_is_recorded_and_runs_again(
    clean_db: Database, counter: dict[str, Any]
) -> None:
    counter["fail"] = True
    with pytest.raises(RuntimeError):
        service.run(clean_db, "test.count", DAY)
    with clean_db.unit_of_work() as s:
        run = s.scalar(select(JobRun).where(JobRun.name == "test.count"))
        assert run is not None and run.status == "failed"
        assert "warehouse API is down" in (run.error or "")
    counter["fail"] = False
    assert service.run(clean_db, "test.count", DAY).status == "done"


def test_a_running_job_is_not_started_twice(clean_db: Database, counter: dict[str, Any]) -> None:
    with clean_db.unit_of_work() as s:
        s.add(
            JobRun(
                name="test.count",
                run_date=DAY,
                status="running",
                worker="other-host:1",
                started_at=clock.now(),
                lease_until=clock.now() + timedelta(hours=1),
                result={},
            )
        )
    with pytest.raises(Conflict, match="running on other-host:1"):
        service.run(clean_db, "test.count", DAY)
    assert counter["calls"] == []


def test_an_abandoned_run_is_taken_over_after_its_lease(
    clean_db: Database, counter: dict[str, Any]
) -> None:
    with clean_db.unit_of_work() as s:
        s.add(
            JobRun(
                name="test.count",
                run_date=DAY,
                status="running",
                worker="crashed:1",
                started_at=clock.now() - timedelta(hours=3),
                lease_until=clock.now() - timedelta(hours=1),
                result={},
            )
        )
    assert service.run(clean_db, "test.count", DAY).status == "done"


def test_an_unknown_job_names_the_known_ones(clean_db: Database, counter: dict[str, Any]) -> None:
    with pytest.raises(NotFound, match=r"known jobs: .*test\.count"):
        service.run(clean_db, "points.expiry", DAY)


def test_the_scheduler_runs_today_after_the_hour_once(
    clean_db: Database, counter: dict[str, Any], fixed_clock: clock.FixedClock
) -> None:
    # 12:00 in Shanghai: before 13:00 nothing runs, after it every job runs once.
    scheduler = Scheduler(clean_db, tz="Asia/Shanghai", at=time(13, 0))
    assert scheduler.tick() == []
    fixed_clock.advance(timedelta(hours=2))
    ran = scheduler.tick()
    assert [o.name for o in ran][-1] == "test.count" and counter["calls"] == [DAY]
    assert all(o.status == "skipped" for o in scheduler.tick())
    assert counter["calls"] == [DAY]
