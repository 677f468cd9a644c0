"""Lifecycle stages (生命周期) as Ibis expressions, and the month-over-month matrix.

The stage rule is ``rules.stage_of``; ``stages`` is the same rule over a whole table.

The transition matrix is built from ``lifecycle_transitions``, not from monthly snapshots:
a member's stage at an instant is the ``to_stage`` of their last transition before it,
so one row per change (a few percent of members a day) holds the whole history, where a
snapshot would copy every member every month. A stage also depends on the marks in force
on the day it was recorded (the document may change), which history rebuilt from orders
would get wrong; the transitions keep what the brand saw.
"""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import ibis

from siyu.core import clock
from siyu.insight.engine import LIVE, Analytics
from siyu.insight.rules import Marks, Stage

NONE = "none"  # the from-stage of a member first placed in the month


def stage(facts: ibis.Table, marks: Marks) -> ibis.Value:
    """The stage column for member facts (see ``rules.stage_of``)."""
    first, last = facts.days_since_first, facts.days_since_last
    return ibis.cases(
        (first.isnull(), Stage.prospect.value),
        (first <= marks.new_within_days, Stage.new.value),
        (last <= marks.silent_after_days, Stage.active.value),
        (last <= marks.sleeping_after_days, Stage.silent.value),
        (last <= marks.churned_after_days, Stage.sleeping.value),
        else_=Stage.churned.value,
    )


def month_key(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def month_end(month: str, tz: str) -> datetime:
    """The first instant after a brand-local month (YYYY-MM), in UTC."""
    year, number = (int(p) for p in month.split("-"))
    first_next = date(year + number // 12, number % 12 + 1, 1)
    return datetime.combine(first_next, time(), ZoneInfo(tz)).astimezone(clock.UTC)


def previous_month(month: str) -> str:
    year, number = (int(p) for p in month.split("-"))
    return f"{year - 1:04d}-12" if number == 1 else f"{year:04d}-{number - 1:02d}"


def months_between(first: str, last: str) -> list[str]:
    months, month = [], last
    while month >= first:
        months.append(month)
        month = previous_month(month)
    return sorted(months)


def build_matrix(
    engine: Analytics, months: list[str], *, as_of: datetime, tz: str, new_moves: str
) -> None:
    """Materialize a DuckDB table ``matrix_rows`` (month, from_stage, to_stage, members)
    for these months: stage at the end of the month before against stage at the end of
    the month (at ``as_of`` for the month not yet over), from the recorded transitions and
    the ``new_moves`` of this refresh (not yet published). Members merged or closed since
    are left out (``members_now``: the members table as read by this refresh)."""
    bounds = []
    for month in months:
        end = min(month_end(month, tz), as_of)
        start = month_end(previous_month(month), tz)
        bounds.append((month, start.replace(tzinfo=None), end.replace(tzinfo=None)))
    values = ", ".join(
        f"('{month}', TIMESTAMP '{start.isoformat(sep=' ')}', TIMESTAMP '{end.isoformat(sep=' ')}')"
        for month, start, end in bounds
    )
    engine.sql(
        "CREATE OR REPLACE TEMP TABLE matrix_bounds AS SELECT * FROM "
        f"(VALUES {values}) AS b(month, start_at, end_at)"
    )
    engine.sql(
        f"""
        CREATE OR REPLACE TEMP TABLE matrix_rows AS
        WITH moves AS (
            SELECT member_id, to_stage, CAST("at" AS TIMESTAMP) AS "at"
            FROM {LIVE}.lifecycle_transitions
            UNION ALL
            SELECT member_id, to_stage, "at" FROM {new_moves}
        ),
        t AS (
            SELECT t.member_id, t.to_stage, t."at" AS at_
            FROM moves t JOIN members_now m ON m.id = t.member_id
            WHERE m.status NOT IN ('merged', 'closed')
              AND t."at" <= (SELECT max(end_at) FROM matrix_bounds)
        ),
        ends AS (
            SELECT b.month, t.member_id, arg_max(t.to_stage, t.at_) AS to_stage
            FROM matrix_bounds b JOIN t ON t.at_ <= b.end_at
            GROUP BY b.month, t.member_id
        ),
        starts AS (
            SELECT b.month, t.member_id, arg_max(t.to_stage, t.at_) AS from_stage
            FROM matrix_bounds b JOIN t ON t.at_ < b.start_at
            GROUP BY b.month, t.member_id
        )
        SELECT e.month, coalesce(s.from_stage, '{NONE}') AS from_stage, e.to_stage,
               count(*) AS members
        FROM ends e LEFT JOIN starts s ON s.month = e.month AND s.member_id = e.member_id
        GROUP BY ALL
        """
    )
