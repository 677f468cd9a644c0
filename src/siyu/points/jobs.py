"""Daily jobs of the points package (see ``siyu.jobs.service``).

Each works ``service.BATCH`` lots or members at a time, one unit of work per batch, and is
idempotent on its own: what a batch did is no longer selected (a released lot is not
frozen, an expired lot has nothing left, a birthday lot's fact is known), so a re-run after
a failure half-way finishes the rest and a re-run of a finished day changes nothing.
"""

from __future__ import annotations

from datetime import date

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.jobs.service import job
from siyu.points import rules, service


@job("points.release_frozen", "Release points whose return window has ended", order=10)
def release_frozen(db: Database, day: date) -> dict[str, int]:
    """Frozen lots whose window ended by the end of ``day`` (and not after now: a window
    ending later today is not over yet)."""
    cutoff = min(rules.day_end(day, get_settings().timezone), clock.now())
    counts = {"lots": 0, "points": 0}
    after = 0
    while True:
        with db.unit_of_work() as session:
            lots, points, last = service.release_frozen_batch(session, cutoff, after_id=after)
        counts["lots"] += lots
        counts["points"] += points
        if last == after:  # nothing due after the last batch
            return counts
        after = last


@job("points.expire", "Expire points lots due by the end of the day", order=20)
def expire(db: Database, day: date) -> dict[str, int]:
    cutoff = rules.day_end(day, get_settings().timezone)
    counts = {"lots": 0, "points": 0}
    after = 0
    while True:
        with db.unit_of_work() as session:
            lots, points, last = service.expire_batch(session, cutoff, after_id=after)
        counts["lots"] += lots
        counts["points"] += points
        if last == after:  # nothing due after the last batch
            return counts
        after = last


@job("points.birthday", "Birthday points for members born on this day", order=40)
def birthday(db: Database, day: date) -> dict[str, int]:
    tz = get_settings().timezone
    counts = {"members": 0, "granted": 0}
    after = 0
    while True:
        with db.unit_of_work() as session:
            seen, granted, after = service.birthday_batch(session, day, after_id=after, tz=tz)
        counts["members"] += seen
        counts["granted"] += granted
        if seen < service.BATCH:
            return counts


@job("points.reservations", "Release points holds whose time ran out", order=15)
def reservations(db: Database, day: date) -> dict[str, int]:
    counts = {"expired": 0}
    while True:
        with db.unit_of_work() as session:
            expired = service.expire_holds_batch(session, clock.now())
        counts["expired"] += expired
        if expired < service.BATCH:
            return counts
