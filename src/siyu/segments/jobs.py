"""The nightly segments job: a new member profile snapshot and every rule tag recomputed
on it. It runs after the insight refresh (order 65), so lifecycle, RFM and CLV conditions
read that night's values."""

from __future__ import annotations

from datetime import date
from typing import Any

from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.jobs.service import job
from siyu.segments import tags


@job(
    "segments.tags",
    "Rebuild the member profile snapshot segments count on, and recompute rule tags",
    order=75,  # after insight.refresh (60) and insight.clv (70): tags see tonight's figures
)
def refresh_tags(db: Database, day: date) -> dict[str, Any]:
    settings = get_settings()
    done = tags.refresh(db, settings.analytics_dir, tz=settings.timezone)
    return {
        "members": done.profile.members,
        "purchase_lines": done.profile.purchases,
        "purchases_written": done.profile.written.summary() if done.profile.written else "",
        "profile_written": (done.profile.written.profile_summary() if done.profile.written else ""),
        "data_as_of": done.profile.data_as_of.isoformat(),
        "seconds": round(done.profile.seconds, 3),
        "rules": len(done.rules),
        "tagged": sum(r.members for r in done.rules),
        "added": sum(r.added for r in done.rules),
        "removed": sum(r.removed for r in done.rules),
    }
