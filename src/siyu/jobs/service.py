"""Jobs: daily work (expiry, frozen-points release, tier review, birthdays, coupon expiry).

A job is a function of the database and a brand-local day that returns counts of what it
did. Capabilities register theirs with ``@job``; the CLI (``siyu jobs run NAME --date D``)
and the in-process scheduler both call ``run``. Running a job for a day it already finished
changes nothing: ``job_runs`` has one row per (job, day). A job's own effects are
idempotent too (each writes facts with keys such as ``expire:<lot>``), so a run that
failed half-way is simply run again and finishes the rest.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.errors import Conflict, NotFound
from siyu.jobs.models import JobRun

JobFunction = Callable[[Database, date], dict[str, Any]]
LEASE = timedelta(hours=2)


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    run: JobFunction
    order: int


_jobs: dict[str, Job] = {}


def job(name: str, description: str, *, order: int = 100) -> Callable[[JobFunction], JobFunction]:
    """Register a daily job. ``order`` sets the sequence in a nightly run (lower first):
    frozen points are released before expiry, expiry before the tier review."""

    def register(fn: JobFunction) -> JobFunction:
        _jobs[name] = Job(name, description, fn, order)
        return fn

    return register


def registered() -> list[Job]:
    return sorted(_jobs.values(), key=lambda j: (j.order, j.name))


def get_job(name: str) -> Job:
    try:
        return _jobs[name]
    except KeyError:
        known = ", ".join(j.name for j in registered()) or "none"
        raise NotFound(f"no job named '{name}'; known jobs: {known}", field="name") from None


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Outcome:
    name: str
    run_date: date
    status: str  # done | skipped (already done for that day)
    result: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None


def _claim(db: Database, name: str, day: date) -> bool:
    """Take the (job, day) row; False when it is already done. A running row whose lease
    has not run out belongs to another worker: refuse rather than run twice."""
    now = clock.now()
    with db.unit_of_work() as session:
        run = session.scalar(
            select(JobRun).where(JobRun.name == name, JobRun.run_date == day).with_for_update()
        )
        if run is not None:
            if run.status == "done":
                return False
            if run.status == "running" and clock.as_utc(run.lease_until) > now:
                raise Conflict(
                    f"job {name} for {day} is running on {run.worker} since "
                    f"{clock.as_utc(run.started_at).isoformat()}; wait for it to finish",
                    code="job_running",
                )
            run.status, run.worker, run.started_at = "running", _worker(), now
            run.lease_until, run.error = now + LEASE, None
            return True
    try:
        with db.unit_of_work() as session:
            session.add(
                JobRun(
                    name=name,
                    run_date=day,
                    status="running",
                    worker=_worker(),
                    started_at=now,
                    lease_until=now + LEASE,
                    result={},
                )
            )
    except IntegrityError:  # another worker inserted it first
        raise Conflict(
            f"job {name} for {day} was just started elsewhere", code="job_running"
        ) from None
    return True


def _finish(db: Database, name: str, day: date, status: str, **values: Any) -> JobRun:
    with db.unit_of_work() as session:
        run = session.scalar(select(JobRun).where(JobRun.name == name, JobRun.run_date == day))
        assert run is not None
        run.status = status
        run.finished_at = clock.now()
        for key, value in values.items():
            setattr(run, key, value)
        session.flush()
        session.expunge(run)
        return run


def run(db: Database, name: str, day: date | None = None, *, tz: str = "Asia/Shanghai") -> Outcome:
    """Run one job for one brand-local day (today by default); a no-op if already done."""
    job_ = get_job(name)
    day = day or clock.local_date(clock.now(), tz)
    if not _claim(db, name, day):
        with db.unit_of_work() as session:
            done = session.scalar(select(JobRun).where(JobRun.name == name, JobRun.run_date == day))
            assert done is not None
            return Outcome(
                name, day, "skipped", dict(done.result), done.started_at, done.finished_at
            )
    try:
        result = job_.run(db, day)
    except Exception as exc:
        _finish(db, name, day, "failed", error=traceback.format_exc(limit=5)[-2000:])
        raise exc
    run_ = _finish(db, name, day, "done", result=result)
    return Outcome(name, day, "done", result, run_.started_at, run_.finished_at)


def run_all(db: Database, day: date | None = None, *, tz: str = "Asia/Shanghai") -> list[Outcome]:
    """Every registered job for one day, in order; a failure stops the ones after it."""
    return [run(db, j.name, day, tz=tz) for j in registered()]


def history(db: Database, *, name: str | None = None, limit: int = 50) -> list[JobRun]:
    with db.unit_of_work() as session:
        query = select(JobRun).order_by(JobRun.run_date.desc(), JobRun.name).limit(limit)
        if name is not None:
            query = query.where(JobRun.name == name)
        runs = list(session.scalars(query))
        for r in runs:
            session.expunge(r)
        return runs
