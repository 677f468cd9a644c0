"""The daily job of paid membership: grace, expiry and reminders (see ``siyu.jobs.service``).

Idempotent on its own: a subscription moved is no longer selected, and a reminder records
the period end it was sent for, so a re-run after a failure finishes the rest.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.jobs.service import job
from siyu.paid import service


def day_end(day: date, tz: str) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), ZoneInfo(tz)).astimezone(clock.UTC)


@job("paid.expire", "Paid membership: grace, expiry, trial and renewal reminders", order=25)
def expire(db: Database, day: date) -> dict[str, int]:
    cutoff = min(day_end(day, get_settings().timezone), clock.now())
    counts = {"moved": 0, "reminded": 0}
    for name, step in (("moved", service.expire_batch), ("reminded", service.remind_batch)):
        while True:
            with db.unit_of_work() as session:
                done = step(session, cutoff)
            counts[name] += done
            if done < service.BATCH:
                break
    return counts
