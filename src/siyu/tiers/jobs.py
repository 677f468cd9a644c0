"""Daily jobs of the tiers package (see ``siyu.jobs.service``)."""

from __future__ import annotations

from datetime import date

from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.jobs.service import job
from siyu.tiers import service


@job(
    "tiers.review",
    "End expired tier grants, then review (保级) members whose period ended",
    order=30,
)
def review(db: Database, day: date) -> dict[str, int]:
    """Grants first (a grant ending today must not shield a member in today's review), then
    the members due, ``service.BATCH`` at a time, one unit of work per batch. Each batch
    moves its members' next review past ``day``, so a re-run (after a failure half-way, or
    for the same day) only does what is left."""
    tz = get_settings().timezone
    counts = {"grants_ended": 0, "reviewed": 0, "kept": 0, "downgraded": 0}
    while True:
        with db.unit_of_work() as session:
            ended = service.end_grants_due(session, day, tz=tz, limit=service.BATCH)
        counts["grants_ended"] += ended
        if ended < service.BATCH:
            break
    after = 0
    while True:
        with db.unit_of_work() as session:
            batch = service.review_due(session, day, tz=tz, after_id=after, limit=service.BATCH)
        counts["reviewed"] += batch.reviewed
        counts["kept"] += batch.kept
        counts["downgraded"] += batch.downgraded
        if batch.last_member_id is None:
            break
        after = batch.last_member_id
    return counts
