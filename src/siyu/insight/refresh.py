"""The insight refresh: every member's lifecycle stage, RFM scores and group, super-user
flag, and the summaries the API serves, computed in DuckDB and written back set-based.

One pass over orders gives the per-member facts (``facts.member_facts``), kept in DuckDB
memory; everything after it reads that. Results are staged, then published into the
live database by ``INSERT … SELECT`` inside the database (``engine.Analytics.stage`` and
``publish``), so no member row passes through Python:

- ``member_insight``: rewritten in member-id ranges, one transaction each, so the live
  database is never locked for long; columns other steps own (CLV) are carried over;
- ``lifecycle_transitions``: one row per member whose stage changed (or was first placed),
  and an ``insight.stage_changed`` outbox event for each change after the first refresh
  (the first only places everyone: nothing happened to them);
- ``insight_groups``, ``lifecycle_matrix``, ``insight_early_signals``: small summaries.

A refresh is evaluated ``as_of`` an instant (default now): orders after it are ignored, so
past month ends can be replayed in order to build the matrix. It never goes back before
the last refresh, which would record transitions out of order.
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
import time as timer
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.errors import Conflict, InvalidInput
from siyu.core.settings import get_settings
from siyu.insight import facts, lifecycle, rfm, superusers
from siyu.insight.engine import LIVE, Analytics, Publisher, analytics, publish_staged
from siyu.insight.models import InsightRun, MemberInsight
from siyu.insight.rules import Marks, percentile_marks
from siyu.programme import service as programme_service
from siyu.programme.rules import Lifecycle, Programme, Rfm

STEP = "refresh"
TOPIC = "insight.stage_changed"
WRITE_BATCH = 100_000  # member ids per write transaction
STALE_RUN = timedelta(hours=2)  # a running refresh older than this is taken as dead

# member_insight columns the refresh computes; every other column is carried over
COMPUTED = (
    "member_id",
    "stage",
    "stage_since",
    "recency_days",
    "frequency",
    "monetary_fen",
    "r_score",
    "f_score",
    "m_score",
    "rfm_group",
    "super_user",
    "computed_at",
)

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class RefreshResult:
    run_id: int
    as_of: datetime
    members: int
    buyers: int
    super_users: int
    transitions: int
    events: int
    marks: Marks
    seconds: dict[str, float] = field(default_factory=dict)

    def detail(self) -> dict[str, Any]:
        return {
            "members": self.members,
            "buyers": self.buyers,
            "super_users": self.super_users,
            "transitions": self.transitions,
            "events": self.events,
            "marks": asdict(self.marks),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def _quiet(_what: str, _done: int, _total: int) -> None:
    return None


def _start(db: Database, as_of: datetime) -> tuple[int, datetime | None, Programme | None]:
    """Claim the refresh: one at a time, never before the last one's ``as_of``."""
    now = clock.now()
    with db.unit_of_work() as session:
        running = session.scalar(
            select(InsightRun)
            .where(InsightRun.step == STEP, InsightRun.status == "running")
            .order_by(InsightRun.id.desc())
            .limit(1)
            .with_for_update()
        )
        if running is not None:
            if clock.as_utc(running.started_at) > now - STALE_RUN:
                raise Conflict(
                    f"an insight refresh is running since {clock.as_utc(running.started_at)}; "
                    "wait for it to finish (siyu insight runs)",
                    code="refresh_running",
                )
            running.status, running.finished_at = "failed", now
            running.detail = "abandoned: it did not finish within two hours"
        last = session.scalar(
            select(InsightRun)
            .where(InsightRun.step == STEP, InsightRun.status == "done")
            .order_by(InsightRun.as_of.desc())
            .limit(1)
        )
        last_as_of = clock.as_utc(last.as_of) if last is not None else None
        if last_as_of is not None and as_of < last_as_of:
            raise InvalidInput(
                f"as_of {as_of.isoformat()} is before the last refresh "
                f"({last_as_of.isoformat()}); stages are recorded in time order, refresh "
                "as of that time or later",
                field="as_of",
            )
        version = programme_service.in_force(session, as_of)
        programme = programme_service.programme_of(version) if version is not None else None
        run = InsightRun(
            step=STEP, as_of=as_of, started_at=now, rows=0, detail="", status="running"
        )
        session.add(run)
        session.flush()
        return run.id, last_as_of, programme


def last_as_of(db: Database) -> datetime | None:
    """The instant the last finished refresh was evaluated at."""
    with db.unit_of_work() as session:
        at = session.scalar(
            select(InsightRun.as_of)
            .where(InsightRun.step == STEP, InsightRun.status == "done")
            .order_by(InsightRun.as_of.desc())
            .limit(1)
        )
    return clock.as_utc(at) if at is not None else None


def _finish(db: Database, run_id: int, *, status: str, rows: int, detail: str) -> None:
    with db.unit_of_work() as session:
        run = session.get(InsightRun, run_id)
        assert run is not None
        run.status, run.rows, run.detail = status, rows, detail[:2000]
        run.finished_at = clock.now()


@dataclass(frozen=True)
class _Job:
    """What a computation needs, picklable for the child process that runs it on SQLite."""

    url: str
    run_id: int
    as_of: datetime
    last_as_of: datetime | None
    programme: Programme | None
    tz: str
    computed_at: datetime
    threads: int | None


@dataclass
class _Plan:
    """What the computation staged, for the publishing transactions."""

    ranges: list[int]
    columns: list[str]
    first_refresh: bool
    months: list[str]
    members: int
    buyers: int
    super_users: int
    marks: Marks
    seconds: dict[str, float]


def refresh(
    db: Database,
    *,
    as_of: datetime | None = None,
    tz: str | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
) -> RefreshResult:
    """Run the whole refresh as of an instant; see the module's docstring.

    On SQLite the DuckDB part runs in a child process: DuckDB's own copy of SQLite must
    not open the live file in a process where the application's SQLite has it open (the
    two do not see each other's locks; see ``engine.Analytics``). The child computes and
    stages; this process publishes with the application's SQLite.
    """
    as_of = clock.as_utc(as_of) if as_of is not None else clock.now()
    if as_of > clock.now():
        raise InvalidInput("as_of is in the future; refresh as of now or earlier", field="as_of")
    tz = tz or get_settings().timezone
    report = progress or _quiet
    run_id, last_as_of, programme = _start(db, as_of)
    job = _Job(db.url, run_id, as_of, last_as_of, programme, tz, clock.now(), threads)
    began = timer.perf_counter()
    try:
        report("computing", 0, 1)
        if db.dialect == "sqlite":
            with tempfile.TemporaryDirectory(prefix="siyu-refresh-") as folder:
                staging = str(Path(folder) / "stage.db")
                context = multiprocessing.get_context("spawn")
                with context.Pool(1) as pool:
                    plan = pool.apply(_compute_in_child, (job, staging))
                report("computing", 1, 1)
                published = timer.perf_counter()
                transitions, events = _publish(lambda: publish_staged(db, staging), plan, report)
        else:
            with analytics(db, read_only=False, threads=threads) as engine:
                plan = _compute(engine, job)
                report("computing", 1, 1)
                published = timer.perf_counter()
                transitions, events = _publish(engine.publish, plan, report)
    except BaseException as exc:
        _finish(db, run_id, status="failed", rows=0, detail=f"failed: {exc}")
        raise
    plan.seconds["publish"] = timer.perf_counter() - published
    plan.seconds["total"] = timer.perf_counter() - began
    result = RefreshResult(
        run_id=run_id,
        as_of=as_of,
        members=plan.members,
        buyers=plan.buyers,
        super_users=plan.super_users,
        transitions=transitions,
        events=events,
        marks=plan.marks,
        seconds=plan.seconds,
    )
    _finish(db, run_id, status="done", rows=result.members, detail=json.dumps(result.detail()))
    return result


def _compute_in_child(job: _Job, staging: str) -> _Plan:
    """The computation in a process of its own (SQLite): only DuckDB opens the live file."""
    db = Database(job.url)
    engine = Analytics(db, read_only=False, threads=job.threads, staging_path=staging)
    try:
        return _compute(engine, job)
    finally:
        engine.close()
        db.dispose()


def _marks(engine: Analytics, member_facts: Any, lifecycle_rules: Lifecycle) -> Marks:
    if lifecycle_rules.basis != "percentiles":
        return percentile_marks(lifecycle_rules, silent_gap=None, sleeping_gap=None, buyers=0)
    gaps = facts.average_gap_days(member_facts)
    measured = gaps.aggregate(
        buyers=gaps.count(),
        silent=gaps.gap_days.quantile(lifecycle_rules.silent_percentile / 100),
        sleeping=gaps.gap_days.quantile(lifecycle_rules.sleeping_percentile / 100),
    )
    row = engine.con.execute(str(engine.backend.compile(measured))).fetchone()
    assert row is not None
    buyers, silent, sleeping = row
    return percentile_marks(
        lifecycle_rules, silent_gap=silent, sleeping_gap=sleeping, buyers=int(buyers or 0)
    )


def _compute(engine: Analytics, job: _Job) -> _Plan:
    """Everything in DuckDB, staged for publishing; nothing live is written here."""
    seconds: dict[str, float] = {}
    started = timer.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        now = timer.perf_counter()
        seconds[name] = now - started
        started = now

    as_of, programme = job.as_of, job.programme
    lifecycle_rules = (programme.lifecycle if programme else None) or Lifecycle()
    rfm_rules = (programme.rfm if programme else None) or Rfm()
    definition = programme.super_users if programme else None
    members = engine.materialize(
        "members_now",
        engine.table("members").select("id", "joined_at", "status", "tier_code", "referrer_id"),
    )
    bought = facts.purchases(engine.table("orders"), members, as_of=as_of)
    stats = facts.buyer_stats(bought, as_of=as_of, window_days=rfm_rules.window_days)
    member_facts = engine.materialize("facts", facts.member_facts(members, stats, as_of=as_of))
    lap("orders")

    marks = _marks(engine, member_facts, lifecycle_rules)
    staged = member_facts.select("member_id", stage=lifecycle.stage(member_facts, marks))
    scored = engine.materialize("rfm_scores", rfm.scores(member_facts, rfm_rules))
    lap("lifecycle_rfm")

    if definition is not None and programme is not None:
        average = engine.scalar(str(engine.backend.compile(member_facts.spend_12m_fen.mean())))
        supers = superusers.flags(
            member_facts,
            definition,
            programme=programme,
            paid=superusers.paid_members(engine.table("paid_subscriptions")),
            referred=superusers.referrals(members),
            average_spend_fen=float(average or 0),
        )
    else:
        supers = member_facts.select("member_id", super_user=False)
    supers = engine.materialize("supers", supers)
    engine.materialize(
        "insight_new",
        staged.join(supers, "member_id")
        .left_join(scored, "member_id")
        .select(
            "member_id",
            "stage",
            "super_user",
            "recency_days",
            "frequency",
            "monetary_fen",
            "r_score",
            "f_score",
            "m_score",
            "rfm_group",
        ),
    )
    lap("super_users")

    ranges, columns = _stage_members(engine, job)
    lap("stage_members")

    offset = ZoneInfo(job.tz).utcoffset(as_of.replace(tzinfo=None))
    engine.materialize(
        "early_signals",
        superusers.early_signals(
            member_facts,
            supers,
            as_of=as_of,
            utc_offset_seconds=int(offset.total_seconds()) if offset else 0,
        ),
    )
    local = lifecycle.month_key(clock.local_date(as_of, job.tz))
    last = job.last_as_of
    first = lifecycle.month_key(clock.local_date(last, job.tz)) if last else local
    months = lifecycle.months_between(first, local)
    lifecycle.build_matrix(engine, months, as_of=as_of, tz=job.tz, new_moves="new_moves")
    _stage_summaries(engine, run_id=job.run_id, computed_at=job.computed_at)
    lap("summaries")
    engine.release_staging()

    counts = engine.con.execute(
        "SELECT count(*), count(recency_days), count(*) FILTER (WHERE super_user) FROM insight_new"
    ).fetchone()
    assert counts is not None
    return _Plan(
        ranges=ranges,
        columns=columns,
        first_refresh=job.last_as_of is None,
        months=months,
        members=int(counts[0]),
        buyers=int(counts[1]),
        super_users=int(counts[2]),
        marks=marks,
        seconds=seconds,
    )


def _ts(at: datetime) -> str:
    """A DuckDB timestamp literal (naive UTC), for values stamped on every row."""
    return f"TIMESTAMP '{clock.as_utc(at).replace(tzinfo=None).isoformat(sep=' ')}'"


MOVES = ["member_id", "from_stage", "to_stage", "at", "run_id"]
EVENTS = ["topic", "key", "payload", "created_at"]
SIGNALS = [
    "cohort",
    "members",
    "first_within_7d",
    "second_within_30d",
    "early",
    "early_super",
    "other_super",
    "mature",
    "computed_at",
]


def _range(part: int) -> str:
    return f"member_id BETWEEN {part * WRITE_BATCH} AND {(part + 1) * WRITE_BATCH - 1}"


def _stage_members(engine: Analytics, job: _Job) -> tuple[list[int], list[str]]:
    """Stage each member-id range's new ``member_insight`` rows, its transitions and (after
    the first refresh) their events. Every column the refresh does not compute (CLV) is
    carried over from the row it replaces."""
    carried = [c.name for c in MemberInsight.__table__.columns if c.name not in COMPUTED]
    previous = ", ".join(["member_id", "stage", "stage_since", *carried])
    engine.sql(
        f"CREATE OR REPLACE TEMP TABLE insight_prev AS SELECT {previous} FROM {LIVE}.member_insight"
    )
    at = _ts(job.as_of)
    carried_select = "".join(f", p.{c}" for c in carried)
    engine.sql(
        f"""
        CREATE OR REPLACE TEMP TABLE insight_rows AS
        SELECT n.member_id, n.stage,
               CASE WHEN p.stage IS NOT DISTINCT FROM n.stage AND p.stage_since IS NOT NULL
                    THEN CAST(p.stage_since AS TIMESTAMP) ELSE {at} END AS stage_since,
               n.recency_days, n.frequency, n.monetary_fen, n.r_score, n.f_score, n.m_score,
               n.rfm_group, n.super_user, {_ts(job.computed_at)} AS computed_at{carried_select},
               p.stage AS previous_stage
        FROM insight_new n LEFT JOIN insight_prev p USING (member_id)
        ORDER BY n.member_id
        """
    )
    engine.sql(
        f"CREATE OR REPLACE TEMP TABLE new_moves AS SELECT member_id, previous_stage AS "
        f"from_stage, stage AS to_stage, {at} AS at, {job.run_id} AS run_id FROM insight_rows "
        "WHERE previous_stage IS DISTINCT FROM stage"
    )
    ranges = [
        int(row[0])
        for row in engine.sql(
            f"SELECT DISTINCT member_id // {WRITE_BATCH} FROM (SELECT member_id FROM "
            "insight_rows UNION ALL SELECT member_id FROM insight_prev) ORDER BY 1"
        ).fetchall()
    ]
    columns = [*COMPUTED, *carried]
    for part in ranges:
        where = _range(part)
        engine.stage(f"rows_{part}", f"SELECT {', '.join(columns)} FROM insight_rows WHERE {where}")
        engine.stage(f"moves_{part}", f"SELECT * FROM new_moves WHERE {where}")
        if job.last_as_of is not None:
            engine.stage(
                f"events_{part}",
                f"SELECT '{TOPIC}' AS topic, "
                f"'stage:' || member_id || ':' || {job.run_id} AS key, "
                f"CAST(json_object('member_id', member_id, 'from', from_stage, "
                f"'to', to_stage, 'at', '{job.as_of.isoformat()}', 'run_id', {job.run_id}) "
                f"AS VARCHAR) AS payload, {_ts(job.computed_at)} AS created_at "
                f"FROM new_moves WHERE {where}",
            )
    return ranges, columns


def _publish(
    open_publisher: Callable[[], AbstractContextManager[Publisher]],
    plan: _Plan,
    progress: Progress,
) -> tuple[int, int]:
    """Write what was staged: each member range in its own transaction (its rows, its
    transitions, its events together), then the summaries in one."""
    transitions = events = 0
    for i, part in enumerate(plan.ranges):
        with open_publisher() as live:
            live.delete("member_insight", _range(part))
            live.insert("member_insight", plan.columns, f"rows_{part}")
            transitions += live.insert("lifecycle_transitions", MOVES, f"moves_{part}")
            if not plan.first_refresh:
                events += live.insert("outbox", EVENTS, f"events_{part}")
        progress("writing members", i + 1, len(plan.ranges))
    months_in = ", ".join(f"'{m}'" for m in plan.months)
    with open_publisher() as live:
        live.insert(
            "insight_groups",
            ["run_id", "dimension", "key", "members", "spend_fen", "orders"],
            "groups",
        )
        live.delete("insight_early_signals", "1 = 1")
        live.insert("insight_early_signals", SIGNALS, "signals")
        live.delete("lifecycle_matrix", f"month IN ({months_in})")
        live.insert(
            "lifecycle_matrix",
            ["month", "from_stage", "to_stage", "members", "computed_at"],
            "matrix",
        )
    return transitions, events


def _stage_summaries(engine: Analytics, *, run_id: int, computed_at: datetime) -> None:
    """Members, orders and spend per stage, per RFM group, and super against ordinary; the
    early signals; the matrix of the months this refresh covers."""
    engine.stage(
        "groups",
        f"""
        SELECT {run_id} AS run_id, 'stage' AS dimension, n.stage AS key, count(*) AS members,
               coalesce(sum(f.spend_12m_fen), 0) AS spend_fen,
               coalesce(sum(f.orders_12m), 0) AS orders
        FROM insight_new n JOIN facts f USING (member_id) GROUP BY n.stage
        UNION ALL
        SELECT {run_id}, 'rfm', rfm_group, count(*), coalesce(sum(monetary_fen), 0),
               coalesce(sum(frequency), 0)
        FROM rfm_scores GROUP BY rfm_group
        UNION ALL
        SELECT {run_id}, 'super', CASE WHEN n.super_user THEN 'super' ELSE 'ordinary' END,
               count(*), coalesce(sum(f.spend_12m_fen), 0), coalesce(sum(f.orders_12m), 0)
        FROM insight_new n JOIN facts f USING (member_id) GROUP BY 3
        """,
    )
    engine.stage(
        "signals",
        f"SELECT {', '.join(SIGNALS[:-1])}, {_ts(computed_at)} AS computed_at FROM early_signals",
    )
    engine.stage("matrix", f"SELECT *, {_ts(computed_at)} AS computed_at FROM matrix_rows")
