"""The nightly insight refresh as a job (see ``siyu.jobs.service``).

It runs after the loyalty jobs (tiers reviewed, paid memberships expired) so stages and
super users see the day's final state. Evaluated at the end of the job's brand-local day,
or now if that is still ahead; a day before the last refresh is evaluated as of that
refresh (stages are recorded in time order), which changes nothing.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.insight.refresh import last_as_of, refresh
from siyu.jobs.service import job


def _day_end(day: date, tz: str) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), ZoneInfo(tz)).astimezone(clock.UTC)


@job(
    "insight.refresh",
    "Insight: lifecycle stages and transitions, RFM, super users, early signals",
    order=60,
)
def refresh_insight(db: Database, day: date) -> dict[str, Any]:
    tz = get_settings().timezone
    as_of = min(_day_end(day, tz), clock.now())
    last = last_as_of(db)
    if last is not None and as_of < last:
        as_of = last
    result = refresh(db, as_of=as_of, tz=tz)
    return {
        "members": result.members,
        "buyers": result.buyers,
        "super_users": result.super_users,
        "transitions": result.transitions,
        "events": result.events,
    }
