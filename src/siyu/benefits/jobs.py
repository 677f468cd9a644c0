"""Daily jobs of the benefits package (see ``siyu.jobs.service``).

Each works ``BATCH`` members or coupons at a time, one unit of work per batch, and is
idempotent on its own: an expired coupon is no longer selected, a pack issue's fact
(``pack:<code>:<member>:<year or month>``) is known, so a re-run after a failure half-way
finishes the rest and a re-run of a finished day changes nothing.
"""

from __future__ import annotations

from datetime import date, timedelta

from siyu.benefits import coupons, packs, rules
from siyu.core import clock
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.jobs.service import job

BATCH = 5_000


@job("benefits.expire_coupons", "Expire coupons whose validity has ended", order=30)
def expire_coupons(db: Database, day: date) -> dict[str, int]:
    """Coupons whose validity ended by the end of ``day``, and not after now: a coupon good
    until tonight stays usable when the job runs in the morning."""
    tz = get_settings().timezone
    cutoff = min(rules.local_midnight(day + timedelta(days=1), tz), clock.now())
    counts = {"coupons": 0}
    while True:
        with db.unit_of_work() as session:
            done = coupons.expire_batch(session, cutoff=cutoff, limit=BATCH)
        counts["coupons"] += done
        if done < BATCH:
            return counts


@job("benefits.birthday_packs", "Birthday packs for members born on this day", order=40)
def birthday_packs(db: Database, day: date) -> dict[str, int]:
    tz = get_settings().timezone
    counts = {"members": 0, "packs": 0}
    after = 0
    while True:
        with db.unit_of_work() as session:
            seen, given, after = packs.birthday_batch(
                session, day, after_id=after, batch=BATCH, tz=tz
            )
        counts["members"] += seen
        counts["packs"] += given
        if seen < BATCH:
            return counts


@job("benefits.monthly_packs", "Monthly packs of each level, on the 1st of the month", order=50)
def monthly_packs(db: Database, day: date) -> dict[str, int]:
    counts = {"members": 0, "packs": 0}
    if day.day != 1:
        return counts
    tz = get_settings().timezone
    after = 0
    while True:
        with db.unit_of_work() as session:
            seen, given, after = packs.monthly_batch(
                session, day, after_id=after, batch=BATCH, tz=tz
            )
        counts["members"] += seen
        counts["packs"] += given
        if seen < BATCH:
            return counts
