"""The insight refresh: every member's lifecycle stage, RFM scores and group, super-user
flag, and the summaries the API serves, computed in DuckDB and written back set-based.

Incremental. Each member's purchase aggregates (first and last order, orders and net
spend over the RFM window and 12 months, early orders after joining) are kept on
``member_insight``; each run records a watermark (the highest order, refund and merge ids
it read) and a digest of the settings the aggregates depend on. The nightly run recomputes
from their orders only the members whose aggregates can differ since the last run, found
set-based through the live database's indexes (``_merge_stats``): the orders since the
watermark are added to the stored aggregates, the orders that crossed the edge of the RFM
window or of the 12 months since the last run are taken off them; the few members with a
refund, a merge or an unmerge since, or who joined since, are recomputed from all their
orders. Every other member's aggregates are read back from ``member_insight``. So a day
of orders costs a day of orders, plus one pass over ``member_insight`` (one row per
member) for what is global: lifecycle stages move as time passes, percentile marks, RFM
quintiles, super users, the summaries. A full
recompute from every order runs on ``full=True`` (``siyu insight refresh --full``), on
the first run, and whenever the settings digest differs; both give the same rows.

The members (join time, status, tier, referrer) are read from the order book
(``insight.orderbook``), which follows the member changes: a night's changed members
read through the live indexes instead of a million rows. The per-member facts
(``facts.member_facts``: the members, their last rows and the fresh aggregates, joined
once) are read by the placing, which keeps every member's new row in DuckDB memory
(``insight_new``); everything after it reads that.
Results are staged, then published into the live database by ``INSERT … SELECT`` inside
the database (``engine.Analytics.stage`` and ``publish``), so no member row passes
through Python:

- ``member_insight``: only the rows that changed (compared in DuckDB with the rows read
  at the start), in member-id ranges, one transaction each, so the live database is never
  locked for long; columns other steps own (CLV) are carried over. The rows of members who
  no longer count (merged, closed) are removed, whichever step wrote them. Recency is not
  stored (it changes every day for everyone): it is days since ``last_order_at``, computed
  when read; nor are the RFM scores and group, which move with every day's buyers while
  a member's own figures stand still: the run records its scale (``rfm_scales``: the
  least value that reached each score) and readers derive them (``rules.scored_on``;
  ``rfm.on_scale`` in DuckDB). ``computed_at`` is when the row last changed;
- ``lifecycle_transitions``: one row per member whose stage changed (or was first placed),
  and an ``insight.stage_changed`` outbox event for each change after the first refresh
  (the first only places everyone: nothing happened to them);
- ``insight_groups``, ``rfm_scales``, ``lifecycle_matrix``, ``insight_early_signals``:
  small summaries.

A refresh is evaluated ``as_of`` an instant (default now): orders after it are ignored, so
past month ends can be replayed in order to build the matrix. It never goes back before
the last refresh, which would record transitions out of order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time as timer
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import ibis
from sqlalchemy import select

from siyu.core import clock
from siyu.core.db import Database, UTCDateTime
from siyu.core.errors import Conflict, InvalidInput
from siyu.core.settings import get_settings
from siyu.insight import facts, lifecycle, orderbook, rfm, superusers
from siyu.insight.engine import (
    LIVE,
    Analytics,
    Publisher,
    analytics_file,
    id_overlap,
    sql_text,
)
from siyu.insight.isolation import isolated
from siyu.insight.models import InsightRun, MemberInsight
from siyu.insight.rules import Marks, percentile_marks
from siyu.programme import service as programme_service
from siyu.programme.rules import Lifecycle, Programme, Rfm

STEP = "refresh"
TOPIC = "insight.stage_changed"
WRITE_BATCH = 100_000  # member ids per write transaction
STALE_RUN = timedelta(hours=2)  # a running refresh older than this is taken as dead
# orders near an edge in time are read with this much room (the exact edge is applied in
# DuckDB, to the second, the way a full recompute applies it)
TIME_OVERLAP = timedelta(minutes=1)
# bump when the stored aggregates change meaning: the next refresh recomputes everything
AGGREGATES_VERSION = 1
# the token of a run's saved copy of member_insight, first in the run's recorded detail
STATE_TOKEN = re.compile(r'^\{"state": "([0-9a-f]{32})"')

# member_insight columns the refresh computes; every other column is carried over
COMPUTED = (
    "member_id",
    "stage",
    "stage_since",
    "first_order_at",
    "last_order_at",
    "order_count",
    "orders_12m",
    "spend_12m_fen",
    "orders_by_join_7d",
    "orders_by_join_30d",
    "frequency",
    "monetary_fen",
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
    full: bool = True  # every order read (else: the members touched since the watermark)
    # members whose aggregates this run updated from orders: recomputed from all their
    # orders, or the stored ones plus new orders and minus those that left a window
    recomputed: int = 0
    written: int = 0  # member_insight rows written (changed, new or removed)
    previous: str = "live"  # where the last run's rows were read: "copy" or "live"
    # orders below the last run's watermark it had not counted (``_late_orders``); None:
    # not known, and every member with an order among the last ``ID_OVERLAP`` ids was
    # recomputed (or, on SQLite, no overlap: its ids commit in order)
    late_orders: int | None = None

    def detail(self) -> dict[str, Any]:
        return {
            "mode": "full" if self.full else "incremental",
            "previous": self.previous,
            "recomputed": self.recomputed,
            "late_orders": self.late_orders,
            "written": self.written,
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


@dataclass(frozen=True)
class Watermark:
    """What the last finished refresh had read: the highest order, refund and merge ids,
    when it started (merges and unmerges since are looked at again) and its ``as_of``."""

    order_id: int
    refund_id: int
    merge_id: int
    started_at: datetime
    as_of: datetime


def settings_key(programme: Programme | None, tz: str) -> str:
    """A digest of what the stored aggregates and stages depend on: the lifecycle, RFM and
    super-user settings and the brand's time zone. Another digest means recompute all."""
    sections = {
        "version": AGGREGATES_VERSION,
        "tz": tz,
        "lifecycle": programme.lifecycle.model_dump(mode="json")
        if programme and programme.lifecycle
        else None,
        "rfm": programme.rfm.model_dump(mode="json") if programme and programme.rfm else None,
        "super_users": programme.super_users.model_dump(mode="json")
        if programme and programme.super_users
        else None,
    }
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class _Claim:
    run_id: int
    last_as_of: datetime | None
    programme: Programme | None
    settings: str
    watermark: Watermark | None  # None: recompute every member from every order
    state_token: str | None  # the token of the last finished run's saved state


def _start(db: Database, as_of: datetime, *, tz: str, full: bool) -> _Claim:
    """Claim the refresh: one at a time, never before the last one's ``as_of``; and decide
    whether it can be incremental (a finished run with a watermark, the same settings)."""
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
            .order_by(InsightRun.as_of.desc(), InsightRun.id.desc())
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
        key = settings_key(programme, tz)
        watermark = None
        if (
            not full
            and last is not None
            and last.settings_key == key
            and last.order_watermark is not None
            and last.refund_watermark is not None
            and last.merge_watermark is not None
        ):
            watermark = Watermark(
                order_id=last.order_watermark,
                refund_id=last.refund_watermark,
                merge_id=last.merge_watermark,
                started_at=clock.as_utc(last.started_at),
                as_of=clock.as_utc(last.as_of),
            )
        run = InsightRun(
            step=STEP, as_of=as_of, started_at=now, rows=0, detail="", status="running"
        )
        session.add(run)
        session.flush()
        state = STATE_TOKEN.match(last.detail or "") if last is not None else None
        return _Claim(
            run.id, last_as_of, programme, key, watermark, state.group(1) if state else None
        )


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


def _finish(
    db: Database,
    run_id: int,
    *,
    status: str,
    rows: int,
    detail: str,
    marks: tuple[int, int, int] | None = None,
    settings: str | None = None,
) -> None:
    with db.unit_of_work() as session:
        run = session.get(InsightRun, run_id)
        assert run is not None
        run.status, run.rows, run.detail = status, rows, detail[:2000]
        run.finished_at = clock.now()
        if marks is not None:
            run.order_watermark, run.refund_watermark, run.merge_watermark = marks
            run.settings_key = settings


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
    watermark: Watermark | None  # None: full recompute
    id_overlap: int  # see engine.ID_OVERLAP
    state_path: str | None  # the analytics copy of member_insight (see ``_read_previous``)
    state_token: str | None  # the token the copy must carry to be the live table's
    new_token: str  # the token of the copy this run saves
    book: orderbook.Place  # the order book, for the members


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
    watermark: tuple[int, int, int]  # the highest order, refund, merge ids read
    recomputed: int
    written: int
    previous: str
    late_orders: int | None


def refresh(
    db: Database,
    *,
    as_of: datetime | None = None,
    tz: str | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
    full: bool = False,
    analytics_dir: str | Path | None = None,
) -> RefreshResult:
    """Run the whole refresh as of an instant; see the module's docstring. ``full``
    recomputes every member from every order even when the last run left a watermark.
    ``analytics_dir`` (default: the setting) holds the analytics copy of
    ``member_insight`` (see ``_read_previous``).

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
    claim = _start(db, as_of, tz=tz, full=full)
    run_id = claim.run_id
    new_token = uuid.uuid4().hex
    job = _Job(
        db.url,
        run_id,
        as_of,
        claim.last_as_of,
        claim.programme,
        tz,
        clock.now(),
        threads,
        claim.watermark,
        id_overlap(db),
        _state_path(analytics_dir, db),
        claim.state_token,
        new_token,
        orderbook.Place(analytics_file(db, "orders", analytics_dir), clock.now()),
    )
    began = timer.perf_counter()
    try:
        report("computing", 0, 1)
        # On SQLite the DuckDB part runs in a spawned child (see ``insight.isolation``)
        with isolated(db, writes=True, threads=threads) as place:
            plan = place.run(_compute, job)
            report("computing", 1, 1)
            published = timer.perf_counter()
            transitions, events = _publish(place.publish, plan, report)
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
        full=job.watermark is None,
        recomputed=plan.recomputed,
        written=plan.written,
        previous=plan.previous,
        late_orders=plan.late_orders,
    )
    _finish(
        db,
        run_id,
        status="done",
        rows=result.members,
        # the token first: the detail is cut at 2,000 characters
        detail=json.dumps({"state": new_token, **result.detail()}),
        marks=plan.watermark,
        settings=claim.settings,
    )
    return result


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
    watermark = _read_watermark(engine)
    # the members from the order book, which follows the member changes (a night's
    # changed members read through the live indexes, not a million rows)
    with orderbook.book(engine, job.book) as held:
        members = engine.materialize(
            "members_now",
            held.members.select("id", "joined_at", "status", "tier_code", "referrer_id"),
        )
    plan_source, copy_month = _read_previous(engine, job)
    lap("read")
    # Orders above the new watermark (committed while this run reads) are left to the next
    # run, which adds every order above it: read now as well, they would count twice.
    upto = watermark[0]
    late_orders = None
    if job.watermark is None:
        _count_zone(engine, job, upto=upto, late=None, full=True)
        orders = engine.table("orders")
        orders = orders.filter(orders.id <= upto)
        bought = facts.purchases(orders, members, as_of=as_of)
        fresh = facts.buyer_stats(bought, as_of=as_of, window_days=rfm_rules.window_days)
        engine.sql(f"CREATE OR REPLACE TEMP TABLE stats AS {_stats_sql(engine, fresh)}")
    else:
        late_orders = _merge_stats(engine, job, rfm_rules, members, upto=upto)
    expr = facts.member_facts(
        members,
        engine.backend.table("stats"),
        as_of=as_of,
        before=_before(engine, from_copy=plan_source == "copy"),
        keep_stored=job.watermark is not None,
    )
    # The placing reads the facts once (its rank tables share that one evaluation), so
    # they are a view, joined where they are read, unless the percentile marks or the
    # average member's spend read them first: then they are computed once into a table.
    # (As a table, a million rows of thirty columns were written only to be read back.)
    multiple = definition is not None and definition.min_spend_multiple is not None
    if lifecycle_rules.basis == "percentiles" or multiple:
        member_facts = engine.materialize("facts", expr)
    else:
        member_facts = engine.view("facts", expr)
    lap("orders")

    marks = _marks(engine, member_facts, lifecycle_rules)
    lap("marks")

    # one pass over the facts: the flag, the scores and the stage computed in place (each
    # computed apart and joined back cost a join of a million rows)
    if definition is not None and programme is not None:
        average = None
        if multiple:  # the only condition that reads the average member's spend
            mean = member_facts.spend_12m_fen.mean()
            average = engine.scalar(str(engine.backend.compile(mean)))
        placed = superusers.with_flag(
            member_facts,
            definition,
            programme=programme,
            paid=superusers.paid_members(engine.table("paid_subscriptions")),
            referred=superusers.referrals(members),
            average_spend_fen=float(average or 0),
        )
    else:
        placed = member_facts.mutate(super_user=False)
    placed = rfm.with_scores(placed, rfm_rules)
    _place(
        engine,
        placed.select(
            member_id=placed.member_id,
            stage=lifecycle.stage(placed, marks),
            super_user=placed.super_user,
            first_order_at=placed.first_order_at,
            last_order_at=placed.last_order_at,
            frequency=placed.frequency,
            monetary_fen=placed.monetary_fen,
            r_score=placed.r_score,
            f_score=placed.f_score,
            m_score=placed.m_score,
            rfm_group=placed.rfm_group,
            order_count=placed.orders_all,
            orders_12m=placed.orders_12m,
            spend_12m_fen=placed.spend_12m_fen,
            orders_by_join_7d=placed.orders_by_join_7d,
            orders_by_join_30d=placed.orders_by_join_30d,
            # for the early signals, not a member_insight column
            joined_s=placed.joined_s,
            **{c: placed[c] for c in placed.columns if c.startswith(facts.WAS)},
        ),
    )
    lap("place")
    recomputed = int(
        engine.scalar(
            "SELECT count(*) FROM insight_new"
            if job.watermark is None
            else "SELECT (SELECT count(*) FROM recomputed) + (SELECT count(*) FROM touched)"
        )
    )

    ranges, columns, written = _stage_members(engine, job)
    lap("stage_members")

    offset = ZoneInfo(job.tz).utcoffset(as_of.replace(tzinfo=None))
    engine.materialize(
        "early_signals",
        superusers.early_signals(
            engine.backend.table("insight_new"),
            as_of=as_of,
            utc_offset_seconds=int(offset.total_seconds()) if offset else 0,
        ),
    )
    local = lifecycle.month_key(clock.local_date(as_of, job.tz))
    last = job.last_as_of
    first = lifecycle.month_key(clock.local_date(last, job.tz)) if last else local
    months = lifecycle.months_between(first, local)
    if plan_source == "copy" and copy_month == months[0]:
        # the copy holds each member's stage at the start of its month: no transition read
        lifecycle.matrix_from_stages(engine, months, pairs="insight_new")
    else:
        lifecycle.build_matrix(
            engine, months, as_of=as_of, tz=job.tz, new_moves="new_moves", current="insight_new"
        )
    _stage_summaries(
        engine,
        run_id=job.run_id,
        as_of=as_of,
        computed_at=job.computed_at,
        high_from=rfm_rules.high_from,
    )
    lap("summaries")
    _save_state(engine, job, month=local, in_place=plan_source == "copy" and months == [local])
    lap("save_copy")
    engine.release_staging()

    counts = engine.con.execute(
        "SELECT count(*), count(last_order_at), count(*) FILTER (WHERE super_user) FROM insight_new"
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
        watermark=watermark,
        recomputed=recomputed,
        written=written,
        previous=plan_source,
        late_orders=late_orders,
    )


# member_insight columns the refresh compares with the last run's to find the rows to write
COMPARED = tuple(c for c in COMPUTED if c not in ("member_id", "stage_since", "computed_at"))


def _before(engine: Analytics, *, from_copy: bool) -> ibis.Table:
    """The last run's rows (``insight_prev``) as ``facts.member_facts`` joins them: the
    columns this run compares and carries, each named ``was_…``; ``month_start`` (each
    member's stage when the copy's month began) is null when they were read from the
    live table, which does not keep it."""
    prev = engine.backend.table("insight_prev")
    month_start = prev.month_start if from_copy else ibis.null("string")
    return prev.select(
        **{f"{facts.WAS}{c}": prev[c] for c in ("member_id", "stage_since", *COMPARED)},
        **{f"{facts.WAS}month_start": month_start.cast("string")},
    )


def _place(engine: Analytics, placed: ibis.Table) -> None:
    """Materialize ``insight_new``: every member the refresh scores, with the columns it
    computes (``placed``), beside what the last run left for them, carried on the facts'
    rows (``_before``): their stage, since when, their stage when the copy's month began
    (null when the last run's rows were read from the live table, which does not keep
    it) and whether their row ``changed``. One join of the members with the last run's
    rows, in ``facts.member_facts``, serves all that compares a member with the last
    run: the stored aggregates the nightly run starts from, the rows to write, the
    transitions, the matrix and the copy's ``month_start``. (The aggregates and the
    comparison each joined two tables of a million rows of their own; ``bench/README.md``
    has what the one join saves.)"""
    was = facts.WAS
    changed = " OR ".join(f"n.{c} IS DISTINCT FROM n.{was}{c}" for c in COMPARED)
    carried = ", ".join(c for c in placed.columns if c.startswith(was))
    # read by joins and aggregates only (and staged, copied and published through
    # them), so its million rows may be written in whatever order the threads finish
    with engine.unordered():
        engine.sql(
            f"""
            CREATE OR REPLACE TEMP TABLE insight_new AS
            SELECT n.* EXCLUDE ({carried}), n.{was}stage AS previous_stage,
                   n.{was}stage_since AS previous_since,
                   n.{was}month_start AS previous_month_start,
                   n.{was}member_id IS NULL OR {changed} AS changed
            FROM ({engine.backend.compile(placed)}) AS n
            """
        )


def _read_watermark(engine: Analytics) -> tuple[int, int, int]:
    """The highest order, refund and merge ids now, read before any order is: whatever
    lands while this run reads is looked at again by the next."""
    query = engine.live_query(
        "SELECT (SELECT max(id) FROM orders) AS o, (SELECT max(id) FROM refunds) AS r, "
        "(SELECT max(id) FROM member_merges) AS m"
    )
    row = engine.sql(f"SELECT * FROM {query}").fetchone()
    assert row is not None
    order_id, refund_id, merge_id = (int(v) if v is not None else 0 for v in row)
    return order_id, refund_id, merge_id


# member_insight columns the refresh compares and keeps in its analytics copy
KEPT = tuple(c for c in COMPUTED if c != "member_id")


def _state_path(analytics_dir: str | Path | None, db: Database) -> str | None:
    """Where this database's analytics copy of ``member_insight`` lives (None: the
    directory cannot be made, and the refresh reads the live table)."""
    return analytics_file(db, "insight", analytics_dir)


COPY_VERSION = 2  # bump when the copy's columns change: an older copy is not read


def _read_previous(engine: Analytics, job: _Job) -> tuple[str, str | None]:
    """``member_insight`` as the last run left it, into DuckDB (``insight_prev``): the
    aggregates the incremental run starts from, and what the new rows are compared with.

    Read from the analytics copy the last finished run saved (``_save_state``) when its
    token is the one that run recorded: a DuckDB file reads a million rows in a fraction
    of the time the live table takes through the SQLite or PostgreSQL reader. Only this
    refresh writes these columns (the CLV step writes its own, and adds rows for buyers
    not yet placed, which count as new here either way, or are removed if the member no
    longer counts: see ``_stage_members``), so the copy is the live table's columns
    exactly. Any doubt (no copy, another token, a failed run since, an unreadable
    file) reads the live table. The copy stays attached while the run reads it (read in
    place: copying it into memory first would cost as much as the reads). Returns where it
    read from (``copy`` or ``live``) and, from a copy, the brand-local month it was saved
    in (its ``month_start`` column is each member's stage when that month began)."""
    if job.state_path and job.state_token and os.path.exists(job.state_path):
        try:
            engine.sql(f"ATTACH {sql_text(job.state_path)} AS insight_copy (READ_ONLY)")
            row = engine.sql("SELECT token, month, version FROM insight_copy.meta").fetchone()
            if row is not None and row[0] == job.state_token and row[2] == COPY_VERSION:
                engine.sql(
                    "CREATE OR REPLACE TEMP VIEW insight_prev AS "
                    "SELECT * FROM insight_copy.insight_state"
                )
                return "copy", str(row[1])
            engine.sql("DETACH insight_copy")
        except duckdb.Error:
            engine.sql("DETACH DATABASE IF EXISTS insight_copy")
    columns = ['CAST("member_id" AS BIGINT) AS "member_id"']
    for column in MemberInsight.__table__.columns:
        if column.name not in KEPT:
            continue
        if isinstance(column.type, UTCDateTime):
            columns.append(f'CAST("{column.name}" AS TIMESTAMP) AS "{column.name}"')
        elif column.name == "super_user":
            columns.append('CAST("super_user" AS BOOLEAN) AS "super_user"')
        else:
            columns.append(f'"{column.name}"')
    engine.sql(
        "CREATE OR REPLACE TEMP TABLE insight_prev AS "
        f"SELECT {', '.join(columns)} FROM {LIVE}.member_insight"
    )
    return "live", None


def _save_state(engine: Analytics, job: _Job, *, month: str, in_place: bool) -> None:
    """Save what ``member_insight`` holds once this run is published (every member this
    run scores: the changed rows as staged, the others as they were) as the analytics copy
    the next run reads, with this run's token, and with each member's stage when this
    brand-local ``month`` began (``month_start`` from the matrix step; null: not placed
    yet) for the next run's matrix. Written beside and moved into place, so a reader sees
    the old copy or the new one whole; the token is recorded on the run when it finishes,
    so a copy whose run failed is never read.

    Within the month the copy was read from (``in_place``), only the rows this run
    changed are replaced, with the token, in one DuckDB transaction: a night's changes
    instead of a million rows compressed again. The first run of a month writes it whole
    (and so leaves none of the month's replaced rows behind)."""
    if not job.state_path:
        engine.sql("DETACH DATABASE IF EXISTS insight_copy")
        return
    if in_place and _update_state(engine, job):
        return
    written = f"{job.state_path}.next"
    for leftover in (written, f"{written}.wal"):
        if os.path.exists(leftover):
            os.remove(leftover)
    when = ("stage_since", "computed_at")
    names = ", ".join(
        f"coalesce(r.{c}, p.{c}) AS {c}" if c in when else f"n.{c}" for c in ("member_id", *KEPT)
    )
    try:
        engine.sql(f"ATTACH {sql_text(written)} AS insight_next")
        try:
            engine.sql(
                f"CREATE TABLE insight_next.meta AS SELECT '{job.new_token}' AS token, "
                f"'{month}' AS month, {COPY_VERSION} AS version"
            )
            engine.sql(
                f"""
                CREATE TABLE insight_next.insight_state AS
                SELECT {names}, s.stage AS month_start
                FROM insight_new n
                LEFT JOIN insight_rows r USING (member_id)
                LEFT JOIN insight_prev p USING (member_id)
                LEFT JOIN month_start s USING (member_id)
                """
            )
            _save_counted(engine, "insight_next")
        finally:
            engine.sql("DETACH insight_next")
            engine.sql("DETACH DATABASE IF EXISTS insight_copy")
        os.replace(written, job.state_path)
    except (duckdb.Error, OSError):
        # no copy this time: the next run reads the live table
        for leftover in (written, job.state_path):
            if os.path.exists(leftover):
                os.remove(leftover)


def _update_state(engine: Analytics, job: _Job) -> bool:
    """``_save_state`` in place; False (nothing changed) if the copy cannot be written."""
    assert job.state_path is not None
    names = ", ".join(f"r.{c}" for c in ("member_id", *KEPT))
    try:
        engine.sql("DETACH DATABASE IF EXISTS insight_copy")
        # the night's rows replace rows spread over the whole copy: their dead rows are
        # left in place, not vacuumed at its checkpoint, until they pile up (the first
        # run of a month writes it whole anyway): ``engine.leave_deletes``
        with engine.deletes_left({"insight_copy.insight_state": "member_id"}) as compact:
            engine.sql(f"ATTACH {sql_text(job.state_path)} AS insight_copy")
            try:
                engine.sql("BEGIN TRANSACTION")
                try:
                    engine.sql(
                        "DELETE FROM insight_copy.insight_state WHERE member_id IN "
                        "(SELECT member_id FROM insight_rows UNION ALL "
                        "SELECT member_id FROM insight_gone)"
                    )
                    engine.sql(
                        f"INSERT INTO insight_copy.insight_state SELECT {names}, s.stage "
                        "FROM insight_rows r LEFT JOIN month_start s USING (member_id)"
                    )
                    _save_counted(engine, "insight_copy")
                    engine.sql(f"UPDATE insight_copy.meta SET token = '{job.new_token}'")
                except BaseException:
                    engine.sql("ROLLBACK")
                    raise
                engine.sql("COMMIT")
                compact()
            finally:
                engine.sql("DETACH DATABASE IF EXISTS insight_copy")  # its checkpoint
    except duckdb.Error:
        return False
    return True


def _save_counted(engine: Analytics, copy: str) -> None:
    """The ids this run counted near its watermark (``_count_zone``) into the copy being
    saved, or none: a copy's counted ids are always its own run's."""
    for table in ("counted_orders", "counted_zone"):
        engine.sql(f"DROP TABLE IF EXISTS {copy}.{table}")
    if _exists(engine, "temp", "counted_zone"):
        engine.sql(f"CREATE TABLE {copy}.counted_orders AS SELECT id FROM counted_now")
        engine.sql(f"CREATE TABLE {copy}.counted_zone AS SELECT * FROM counted_zone")


def _recompute_set(engine: Analytics, job: _Job, late: list[int] | None) -> str:
    """SQL for the live database: the members whose stored aggregates cannot simply be
    added to, recomputed from all their orders. Each part is answered by an index; they
    are few (a refund or a merge is rarer than an order).

    - refunds since the watermark (an order's net amount changed, or it stopped counting);
    - both members of a merge or an unmerge since (orders moved between them);
    - members who joined between the two runs (orders imported from before they joined);
    - orders below the watermark paid between the two runs' ``as_of`` (they did not count
      yet), and on PostgreSQL the orders among the last ``ID_OVERLAP`` ids below it
      that the last run did not count (``late``: they committed after it read), or,
      when that is not known (``late`` None), every order there."""
    mark = job.watermark
    assert mark is not None
    at = engine.live_instant
    since, until = mark.as_of - TIME_OVERLAP, job.as_of + TIME_OVERLAP
    merged = (
        f"FROM member_merges WHERE id > {mark.merge_id} "
        f"OR merged_at > {at(mark.started_at - STALE_RUN)} "
        f"OR unmerged_at > {at(mark.started_at - STALE_RUN)}"
    )
    parts = [
        "SELECT o.member_id FROM refunds r JOIN orders o ON o.id = r.order_id "
        f"WHERE r.id > {mark.refund_id - job.id_overlap}",
        f"SELECT from_member_id {merged}",
        f"SELECT into_member_id {merged}",
        f"SELECT id FROM members WHERE joined_at > {at(since)} AND joined_at <= {at(until)}",
        f"SELECT member_id FROM orders WHERE id <= {mark.order_id} "
        f"AND paid_at > {at(since)} AND paid_at <= {at(until)}",
    ]
    if job.id_overlap and late is None:
        parts.append(
            f"SELECT member_id FROM orders WHERE id > {mark.order_id - job.id_overlap} "
            f"AND id <= {mark.order_id}"
        )
    elif late:
        parts.append(f"SELECT member_id FROM orders WHERE id IN ({', '.join(map(str, late))})")
    return " UNION ".join(parts)


def _late_orders(engine: Analytics, job: _Job) -> list[int] | None:
    """The orders among the last ``ID_OVERLAP`` ids below the last run's watermark that it
    did not count: on PostgreSQL an id is handed out before its transaction commits, so an
    order may become visible after a run read past its id. The last run kept the ids it
    counted there in the analytics copy (``counted_orders``, ``_count_zone``); only the
    members of the orders missing from them are recomputed, not every member with an
    order among those ids (ten thousand orders a night, read again whole). None: not
    known (no overlap, the live table was read instead of the copy, the copy has no
    counted ids or counted another stretch): the caller looks at every order there."""
    mark = job.watermark
    if not job.id_overlap or mark is None or not _exists(engine, "insight_copy", "counted_zone"):
        return None
    zone = engine.sql("SELECT upto, overlap FROM insight_copy.counted_zone").fetchall()
    if zone != [(mark.order_id, job.id_overlap)]:
        return None
    there = engine.live_query(
        f"SELECT id FROM orders WHERE id > {mark.order_id - job.id_overlap} "
        f"AND id <= {mark.order_id} AND member_id IS NOT NULL"
    )
    rows = engine.sql(
        f"SELECT CAST(o.id AS BIGINT) AS id FROM {there} AS o "
        "WHERE CAST(o.id AS BIGINT) NOT IN (SELECT id FROM insight_copy.counted_orders) "
        "ORDER BY 1"
    ).fetchall()
    return [int(row[0]) for row in rows]


def _exists(engine: Analytics, database: str, table: str) -> bool:
    return bool(
        engine.scalar(
            "SELECT count(*) FROM duckdb_tables() "
            f"WHERE database_name = '{database}' AND table_name = '{table}'"
        )
    )


def _count_zone(
    engine: Analytics, job: _Job, *, upto: int, late: list[int] | None, full: bool = False
) -> None:
    """The ids among the last ``ID_OVERLAP`` at or below ``upto`` that this run counts
    (DuckDB tables ``counted_now`` and ``counted_zone``, saved with the copy for the next
    run's ``_late_orders``): those it read, new or of a member recomputed, and those the
    last run counted, where it knew them. An order that commits after this run read past
    its id is in none of them, and the next run finds it. Counted from what was read,
    never by reading again: a read a moment later could see an order this run missed.

    A ``full`` run reads every order in one statement, so its ids there are read just
    before it: every order visible then is visible to the later read (orders are never
    deleted), and one that appears in between is only looked at again by the next run."""
    if not job.id_overlap:
        return
    low = upto - job.id_overlap
    if full:
        there = engine.live_query(
            f"SELECT id FROM orders WHERE id > {low} AND id <= {upto} AND member_id IS NOT NULL"
        )
        counted = f"SELECT CAST(id AS BIGINT) AS id FROM {there} AS o"
    else:
        before = " UNION SELECT id FROM insight_copy.counted_orders" if late is not None else ""
        counted = (
            f"SELECT id FROM (SELECT id FROM new_orders UNION SELECT id FROM "
            f"recomputed_orders{before}) AS c WHERE id > {low} AND id <= {upto}"
        )
    engine.sql(f"CREATE OR REPLACE TEMP TABLE counted_now AS {counted}")
    engine.sql(
        "CREATE OR REPLACE TEMP TABLE counted_zone AS "
        f"SELECT CAST({upto} AS BIGINT) AS upto, CAST({job.id_overlap} AS BIGINT) AS overlap"
    )


ORDER_COLUMNS = "id, member_id, paid_at, amount_fen, refunded_fen, status"


def _load_orders(engine: Analytics, name: str, query: str, *, others: bool) -> ibis.Table:
    """Orders read by the live database (``query`` selects ``ORDER_COLUMNS``) into a
    DuckDB table shaped like ``orders`` for ``facts.purchases``; ``others``: leave out
    the members recomputed in full."""
    but = " AND member_id NOT IN (SELECT member_id FROM recomputed)" if others else ""
    engine.sql(
        f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT DISTINCT * FROM (SELECT "
        "CAST(id AS BIGINT) AS id, CAST(member_id AS BIGINT) AS member_id, "
        "CAST(paid_at AS TIMESTAMP) AS paid_at, CAST(amount_fen AS BIGINT) AS amount_fen, "
        "CAST(refunded_fen AS BIGINT) AS refunded_fen, CAST(status AS VARCHAR) AS status "
        f"FROM {engine.live_query(query)} AS o) AS o WHERE member_id IS NOT NULL{but}"
    )
    return engine.backend.table(name)


def _merge_stats(
    engine: Analytics, job: _Job, rfm_rules: Rfm, members: ibis.Table, *, upto: int
) -> int | None:
    """The nightly run's buyer stats (DuckDB table ``stats``), from the stored ones and the
    orders since the watermark, never every order:

    - members in ``_recompute_set``: from all their orders;
    - members with orders since the watermark, or with an order leaving the RFM window or
      the 12 months since the last run: the stored aggregates, plus the new orders, minus
      what left the windows (``touched``);
    - everyone else: as stored.

    Orders above ``upto`` (the watermark this run records) are left to the next run.
    Returns how many orders below the last watermark were found late (``_late_orders``;
    None: not known)."""
    mark = job.watermark
    assert mark is not None
    at = engine.live_instant
    window = rfm_rules.window_days
    late = _late_orders(engine, job)
    recompute = _recompute_set(engine, job, late)
    engine.sql(
        "CREATE OR REPLACE TEMP TABLE recomputed AS SELECT DISTINCT "
        f"CAST(member_id AS BIGINT) AS member_id FROM {engine.live_query(recompute)} AS d "
        "WHERE member_id IS NOT NULL"
    )
    # their orders by the ids read, not by the set's query again: PostgreSQL estimates a
    # union of subqueries at tens of thousands of members and scans every order, where a
    # list of a few thousand ids takes the (member_id, paid_at) index; and the orders then
    # belong exactly to the members ``recomputed`` holds, whatever committed in between
    ids = [int(row[0]) for row in engine.sql("SELECT member_id FROM recomputed").fetchall()]
    whole = _load_orders(
        engine,
        "recomputed_orders",
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE id <= {upto} "
        f"AND member_id IN ({', '.join(map(str, sorted(ids))) or 'NULL'})",
        others=False,
    )
    new = _load_orders(
        engine,
        "new_orders",
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE id > {mark.order_id} AND id <= {upto}",
        others=True,
    )
    edges = " UNION ".join(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE id <= {mark.order_id} "
        f"AND paid_at > {at(mark.as_of - timedelta(days=days) - TIME_OVERLAP)} "
        f"AND paid_at <= {at(job.as_of - timedelta(days=days) + TIME_OVERLAP)}"
        for days in sorted({window, facts.YEAR_DAYS})
    )
    aging = _load_orders(engine, "aging_orders", edges, others=True)
    _count_zone(engine, job, upto=upto, late=late)

    def stats_of(orders: ibis.Table) -> str:
        bought = facts.purchases(orders, members, as_of=job.as_of)
        return _stats_sql(engine, facts.buyer_stats(bought, as_of=job.as_of, window_days=window))

    engine.sql(f"CREATE OR REPLACE TEMP TABLE stats_whole AS {stats_of(whole)}")
    engine.sql(f"CREATE OR REPLACE TEMP TABLE stats_added AS {stats_of(new)}")
    expired = facts.expired_stats(
        facts.purchases(aging, members, as_of=job.as_of),
        since=mark.as_of,
        as_of=job.as_of,
        window_days=window,
    )
    engine.sql(f"CREATE OR REPLACE TEMP TABLE stats_expired AS {engine.backend.compile(expired)}")
    previous = facts.stored_stats(engine.backend.table("insight_prev"))
    engine.sql(f"CREATE OR REPLACE TEMP VIEW stats_prev AS {_stats_sql(engine, previous)}")
    engine.sql(
        "CREATE OR REPLACE TEMP TABLE touched AS SELECT member_id FROM stats_added "
        "UNION SELECT member_id FROM stats_expired WHERE orders_window > 0 OR orders_12m > 0"
    )

    def plus(column: str, minus: bool) -> str:
        taken = f" - coalesce(e.{column}, 0)" if minus else ""
        return f"CAST(coalesce(p.{column}, 0) + coalesce(a.{column}, 0){taken} AS BIGINT)"

    summed = ", ".join(
        f"{plus(c, c in ('orders_window', 'spend_window_fen', 'orders_12m', 'spend_12m_fen'))}"
        f" AS {c}"
        for c in facts.STATS_COLUMNS[5:]
    )
    # least/greatest skip nulls: a member's first order may be among the new ones. One
    # row for each member recomputed or touched (stats null: no purchase left); everyone
    # else keeps the aggregates stored on their row, read where the facts join the last
    # run's rows (``facts.member_facts``): no second pass over a million stored rows
    columns = ", ".join(f"s.{c}" for c in facts.STATS_COLUMNS[1:])
    engine.sql(
        f"""
        CREATE OR REPLACE TEMP TABLE stats AS
        SELECT o.member_id, {columns}
        FROM (SELECT member_id FROM recomputed UNION SELECT member_id FROM touched) o
        LEFT JOIN (
            SELECT * FROM stats_whole
            UNION ALL
            SELECT t.member_id, least(p.first_at, a.first_at) AS first_at,
                   greatest(p.last_at, a.last_at) AS last_at,
                   least(p.first_s, a.first_s) AS first_s, greatest(p.last_s, a.last_s) AS last_s,
                   {summed}
            FROM touched t
            LEFT JOIN stats_prev p USING (member_id)
            LEFT JOIN stats_added a USING (member_id)
            LEFT JOIN stats_expired e USING (member_id)
            WHERE p.member_id IS NOT NULL OR a.member_id IS NOT NULL
        ) s USING (member_id)
        """
    )
    return None if late is None else len(late)


def _stats_sql(engine: Analytics, stats: ibis.Table) -> str:
    """Buyer stats as DuckDB SQL with one set of column types, so the recomputed and the
    stored stats make one table."""
    types = {"member_id": "BIGINT", "first_at": "TIMESTAMP", "last_at": "TIMESTAMP"}
    columns = ", ".join(
        f'CAST("{c}" AS {types.get(c, "BIGINT")}) AS "{c}"' for c in facts.STATS_COLUMNS
    )
    return f"SELECT {columns} FROM ({engine.backend.compile(stats)}) AS s_"


def _ts(at: datetime) -> str:
    """A DuckDB timestamp literal (naive UTC), for values stamped on every row."""
    return f"TIMESTAMP '{clock.as_utc(at).replace(tzinfo=None).isoformat(sep=' ')}'"


MOVES = ["member_id", "from_stage", "to_stage", "at", "run_id"]
EVENTS = ["topic", "key", "payload", "created_at"]
SCALE = ["run_id", "as_of", "high_from", *rfm.SCALE_EDGES, "computed_at"]
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


def _stage_members(engine: Analytics, job: _Job) -> tuple[list[int], list[str], int]:
    """Stage, per member-id range, the ``member_insight`` rows that changed (compared in
    DuckDB with ``insight_prev``: see ``_place``), the rows of members who left (merged,
    closed: also the rows only the CLV step wrote, found through the stage index), the
    transitions and (after the first refresh) their events. Only the columns the refresh
    computes are written (an upsert: the CLV step's columns stay as they are). Returns the
    ranges, the columns and how many rows will be written or removed."""
    at = _ts(job.as_of)
    engine.sql(
        f"""
        CREATE OR REPLACE TEMP TABLE insight_rows AS
        SELECT member_id, stage,
               CASE WHEN previous_stage IS NOT DISTINCT FROM stage
                         AND previous_since IS NOT NULL
                    THEN previous_since ELSE {at} END AS stage_since,
               first_order_at, last_order_at, order_count, orders_12m,
               spend_12m_fen, orders_by_join_7d, orders_by_join_30d,
               frequency, monetary_fen, super_user, {_ts(job.computed_at)} AS computed_at,
               previous_stage
        FROM insight_new WHERE changed
        ORDER BY member_id
        """
    )
    # the rows of members who no longer count (merged, closed): the refresh's own rows, and
    # the rows the CLV step added for buyers not placed yet, which the analytics copy does
    # not hold (no stage: the stage index finds the few of them, no scan of the table)
    unplaced = engine.live_query("SELECT member_id FROM member_insight WHERE stage IS NULL")
    excluded = ", ".join(f"'{status}'" for status in facts.EXCLUDED_STATUSES)
    engine.sql(
        "CREATE OR REPLACE TEMP TABLE insight_gone AS SELECT member_id FROM insight_prev "
        "WHERE member_id NOT IN (SELECT member_id FROM insight_new) "
        "UNION SELECT CAST(u.member_id AS BIGINT) "
        f"FROM {unplaced} AS u JOIN members_now AS m ON m.id = u.member_id "
        f"WHERE m.status IN ({excluded})"
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
            "insight_rows UNION ALL SELECT member_id FROM insight_gone) ORDER BY 1"
        ).fetchall()
    ]
    written = int(
        engine.scalar(
            "SELECT (SELECT count(*) FROM insight_rows) + (SELECT count(*) FROM insight_gone)"
        )
    )
    columns = list(COMPUTED)
    # one staged table of each kind, in member order; each publishing transaction takes
    # its range of it (staging a table per range cost more than the rows)
    engine.stage("rows", f"SELECT {', '.join(columns)} FROM insight_rows ORDER BY member_id")
    engine.stage("gone", "SELECT member_id FROM insight_gone ORDER BY member_id")
    engine.stage("moves", "SELECT * FROM new_moves ORDER BY member_id")
    if job.last_as_of is not None:
        engine.stage(
            "events",
            f"SELECT member_id, '{TOPIC}' AS topic, "
            f"'stage:' || member_id || ':' || {job.run_id} AS key, "
            f"CAST(json_object('member_id', member_id, 'from', from_stage, "
            f"'to', to_stage, 'at', '{job.as_of.isoformat()}', 'run_id', {job.run_id}) "
            f"AS VARCHAR) AS payload, {_ts(job.computed_at)} AS created_at "
            "FROM new_moves ORDER BY member_id",
        )
    return ranges, columns, written


def _publish(
    open_publisher: Callable[[], AbstractContextManager[Publisher]],
    plan: _Plan,
    progress: Progress,
) -> tuple[int, int]:
    """Write what was staged: each member range in its own transaction (its rows, its
    transitions, its events together), then the summaries in one."""
    transitions = events = 0
    for i, part in enumerate(plan.ranges):
        within = _range(part)
        with open_publisher() as live:
            live.delete_keyed("member_insight", within, "member_id", "gone")
            live.upsert("member_insight", plan.columns, "member_id", "rows", where=within)
            transitions += live.insert("lifecycle_transitions", MOVES, "moves", where=within)
            if not plan.first_refresh:
                events += live.insert("outbox", EVENTS, "events", where=within)
        progress("writing members", i + 1, len(plan.ranges))
    months_in = ", ".join(f"'{m}'" for m in plan.months)
    with open_publisher() as live:
        live.insert(
            "insight_groups",
            ["run_id", "dimension", "key", "members", "spend_fen", "orders"],
            "groups",
        )
        live.insert("rfm_scales", SCALE, "scale")
        live.delete("insight_early_signals", "1 = 1")
        live.insert("insight_early_signals", SIGNALS, "signals")
        live.delete("lifecycle_matrix", f"month IN ({months_in})")
        live.insert(
            "lifecycle_matrix",
            ["month", "from_stage", "to_stage", "members", "computed_at"],
            "matrix",
        )
    return transitions, events


def _stage_summaries(
    engine: Analytics, *, run_id: int, as_of: datetime, computed_at: datetime, high_from: int
) -> None:
    """Members, orders and spend per stage, per RFM group (buyers: the members with a
    group), and super against ordinary; the RFM scale (``models.RfmScale``: for each
    score, the least value that reached it); the early signals; the matrix of the months
    this refresh covers. All from ``insight_new``, which carries the 12 months' figures
    and every member's scores as this run computed them."""
    edges = engine.backend.compile(rfm.scale_edges(engine.backend.table("insight_new")))
    engine.stage(
        "scale",
        f"SELECT {run_id} AS run_id, {_ts(as_of)} AS as_of, {int(high_from)} AS high_from, "
        f"e.*, {_ts(computed_at)} AS computed_at FROM ({edges}) AS e",
    )
    engine.stage(
        "groups",
        f"""
        SELECT {run_id} AS run_id, 'stage' AS dimension, stage AS key, count(*) AS members,
               coalesce(sum(spend_12m_fen), 0) AS spend_fen,
               coalesce(sum(orders_12m), 0) AS orders
        FROM insight_new GROUP BY stage
        UNION ALL
        SELECT {run_id}, 'rfm', rfm_group, count(*), coalesce(sum(monetary_fen), 0),
               coalesce(sum(frequency), 0)
        FROM insight_new WHERE rfm_group IS NOT NULL GROUP BY rfm_group
        UNION ALL
        SELECT {run_id}, 'super', CASE WHEN super_user THEN 'super' ELSE 'ordinary' END,
               count(*), coalesce(sum(spend_12m_fen), 0), coalesce(sum(orders_12m), 0)
        FROM insight_new GROUP BY 3
        """,
    )
    engine.stage(
        "signals",
        f"SELECT {', '.join(SIGNALS[:-1])}, {_ts(computed_at)} AS computed_at FROM early_signals",
    )
    engine.stage("matrix", f"SELECT *, {_ts(computed_at)} AS computed_at FROM matrix_rows")
