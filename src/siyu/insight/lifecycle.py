"""Lifecycle stages (生命周期) as Ibis expressions, and the month-over-month matrix.

The stage rule is ``rules.stage_of``; ``stages`` is the same rule over a whole table.

The transition matrix is built from ``lifecycle_transitions``, not from monthly snapshots:
a member's stage at an instant is the ``to_stage`` of their last transition before it,
so one row per change (a few percent of members a day) holds the whole history, where a
snapshot would copy every member every month. A stage also depends on the marks in force
on the day it was recorded (the document may change), which history rebuilt from orders
would get wrong; the transitions keep what the brand saw.

A member who stops counting (merged into another, closed) leaves the refresh's rows with
no transition recorded, and is placed again from no stage (``from_stage`` null) when they
count again (an unmerge, a reopened account). The matrix takes that record as it stands:
a month whose end finds them not counted does not show them, and in the month they are
placed again they come from ``none`` like a member placed for the first time, even if a
stage was recorded for them earlier that month, before they left. So the months in
between show them nowhere, each month's cells add up to the members counted at its end,
and the matrix built from transitions (``build_matrix``) agrees with the one built from
the refresh's analytics copy (``matrix_from_stages``), where a member who left has no row
and so no stage at the start of the month.
"""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import ibis

from siyu.core import clock
from siyu.insight.engine import Analytics
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
    engine: Analytics,
    months: list[str],
    *,
    as_of: datetime,
    tz: str,
    new_moves: str,
    current: str,
) -> None:
    """Materialize a DuckDB table ``matrix_rows`` (month, from_stage, to_stage, members)
    for these months: stage at the end of the month before against stage at the end of
    the month (at ``as_of`` for the month not yet over).

    Only the transitions since the first month's start are read (the live index on
    ``at``), with the ``new_moves`` of this refresh (not yet published) and the members'
    stages now (``current``: member_id, stage; the members this refresh scores, so those
    merged or closed are left out). A member's stage at an instant is the ``from_stage``
    of their first transition after it, or their stage now if they have not moved since;
    a member who has not moved since the month began was in the same stage at both ends.
    So the cost is the months' movements, not the whole history: reading every transition
    ever recorded grows by a few percent of the members every day.

    A member placed within a month (first placed, or placed again after they stopped
    counting) comes from ``none`` in it, whatever was recorded of them earlier that
    month: see the module's docstring.

    Also materializes ``month_start`` (member_id, stage): each current member's stage when
    the last of these months began (null: not placed yet), which the refresh keeps in its
    analytics copy for ``matrix_from_stages``."""
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
    since = min(start for _, start, _ in bounds).replace(tzinfo=clock.UTC)
    recorded = engine.live_query(
        "SELECT id, member_id, from_stage, at FROM lifecycle_transitions "
        f"WHERE at >= {engine.live_instant(since)}"
    )
    # the first transition after an instant: ordered by time, then by id (this refresh's
    # moves come last)
    engine.sql(
        f"""
        CREATE OR REPLACE TEMP TABLE matrix_moved AS
        WITH moves AS (
            SELECT CAST(member_id AS BIGINT) AS member_id,
                   coalesce(CAST(from_stage AS VARCHAR), '{NONE}') AS from_stage,
                   CAST("at" AS TIMESTAMP) AS at_, CAST(id AS BIGINT) AS seq
            FROM {recorded} AS r
            UNION ALL
            SELECT member_id, coalesce(from_stage, '{NONE}'), "at", 9223372036854775807
            FROM {new_moves}
        )
        SELECT b.month, t.member_id,
               CASE WHEN bool_or(t.from_stage = '{NONE}' AND t.at_ <= b.end_at)
                    THEN '{NONE}'
                    ELSE arg_min(t.from_stage, {{'at': t.at_, 'seq': t.seq}}) END AS from_stage,
               arg_min(t.from_stage, {{'at': t.at_, 'seq': t.seq}})
                   FILTER (WHERE t.at_ > b.end_at) AS after_end
        FROM matrix_bounds b JOIN moves t ON t.at_ >= b.start_at
        GROUP BY b.month, t.member_id
        """
    )
    engine.sql(
        f"""
        CREATE OR REPLACE TEMP TABLE month_start AS
        SELECT c.member_id,
               CASE WHEN m.member_id IS NULL THEN c.stage
                    ELSE nullif(m.from_stage, '{NONE}') END AS stage
        FROM {current} c
        LEFT JOIN matrix_moved m ON m.member_id = c.member_id AND m.month = '{months[-1]}'
        """
    )
    engine.sql(
        f"""
        CREATE OR REPLACE TEMP TABLE matrix_rows AS
        WITH
        moved AS (SELECT * FROM matrix_moved),
        moved_now AS (
            SELECT m.month, m.from_stage, coalesce(m.after_end, c.stage) AS to_stage,
                   c.stage AS stage_now
            FROM moved m JOIN {current} c USING (member_id)
        ),
        everyone AS (SELECT stage, count(*) AS members FROM {current} GROUP BY stage),
        unmoved AS (
            SELECT b.month, e.stage, e.members - coalesce(
                       (SELECT count(*) FROM moved_now m
                        WHERE m.month = b.month AND m.stage_now = e.stage), 0) AS members
            FROM matrix_bounds b CROSS JOIN everyone e
        )
        SELECT month, from_stage, to_stage, sum(members) AS members
        FROM (
            SELECT month, from_stage, to_stage, count(*) AS members FROM moved_now
            WHERE to_stage <> '{NONE}' GROUP BY ALL
            UNION ALL
            SELECT month, stage, stage, members FROM unmoved WHERE members > 0
        )
        GROUP BY ALL
        """
    )


def matrix_from_stages(engine: Analytics, months: list[str], *, pairs: str) -> None:
    """``build_matrix`` without reading a transition, from the refresh's analytics copy:
    ``pairs`` holds every member counted now with their stage now (``stage``), the stage
    the last refresh recorded for them (``previous_stage``) and their stage when that
    refresh's month began (``previous_month_start``; both null: not placed yet, or not
    in the copy). ``months`` starts with the last refresh's month. Stages change only
    when a refresh records them, so through that month's end a member stayed in the stage
    it recorded, and so through every month after it until this one. A member who left
    (merged, closed) has no row in the copy: if they count again, they come from ``none``
    (see the module's docstring). The same rows as ``build_matrix``, and the same
    ``month_start`` (a view of ``pairs``) for the copy this refresh saves."""
    last = months[-1]
    cells = []
    for i, month in enumerate(months):
        start = "previous_month_start" if i == 0 else "previous_stage"
        end = "stage" if month == last else "previous_stage"
        cells.append(
            f"SELECT '{month}' AS month, coalesce({start}, '{NONE}') AS from_stage, "
            f"{end} AS to_stage FROM {pairs}"
        )
    engine.sql(
        f"""
        CREATE OR REPLACE TEMP TABLE matrix_rows AS
        SELECT month, from_stage, to_stage, count(*) AS members
        FROM ({" UNION ALL ".join(cells)}) AS cells
        WHERE to_stage IS NOT NULL
        GROUP BY ALL
        """
    )
    start = "previous_month_start" if len(months) == 1 else "previous_stage"
    engine.sql(
        f"CREATE OR REPLACE TEMP VIEW month_start AS SELECT member_id, {start} AS stage "
        f"FROM {pairs}"
    )
