"""Insight refresh benchmark: the nightly refresh as it runs in production (incremental,
after a day of new orders), and a full recompute, next to a bare DuckDB group-by over the
same orders and next to the pandas RFM summary as lifetimes computes it.

    python bench/insight.py --members 20000 --orders 200000      # a quick look
    python bench/insight.py                                       # 1M members, 10M orders

One run:

1. builds (once; cached under ``--data-dir``, by default ``bench/out/insight/``) a live
   SQLite database of ``--members`` members and about ``--orders`` orders, migrated like
   any siyu database and with the example programme in force. The rows are generated in
   DuckDB and written by bulk ``INSERT … SELECT`` into the SQLite file, **not** through the
   services: enrolling a million members and ingesting ten million orders one business
   fact at a time would take hours and measure the loyalty engine, not insight (that is
   ``bench/ingest.py``). Orders skew towards a few heavy buyers (member ids drawn from a
   squared uniform), fall between the member's joining and now, 2% are refunded in full
   (their lines too); each order has one to three lines (about 1.8 on average) in the
   demo catalogue's categories (``siyu.demo.catalogue.CATEGORIES``), which the segment
   profile's purchases read; 5% of members hold a paid membership, 3% were referred by
   another member; order ids follow payment time, as a live database hands them out. The
   loyalty tables the nightly jobs read are filled as the loyalty engine would leave
   them: a points entry earned per order (a point a yuan), reversed for a refunded
   order, spent for one order in eight and expired for one in ten a year later (about
   12 million entries, which the KPIs' points figures read); a tier history row per
   member on joining and one upgrade for those above the bottom tier; and each member's
   purchase metrics (``member_metrics``, read by the segment profile);
2. (b) times the first refresh (``siyu.insight.refresh``): full, every order read, every
   member placed (a transition each) and every ``member_insight`` row written. Then
   (unless ``--no-jobs``) runs the rest of that night's insight jobs, untimed, so
   that what they keep between nights exists, as it does for a brand running siyu: the
   order book (``insight.orderbook``) the KPIs, the cohort table and the segment
   profile's purchases read;
3. lands a day of business a day later, bulk-inserted like the history: about 1/365 of
   the orders paid that day (with their lines), refunds in full of about 1/50 as many
   earlier orders (their lines' ``refunded_quantity`` too), the buyers' own rows as the
   order import leaves them (points balance, purchase metrics), and a
   day of new members (removed again at the start of the next run, so a rerun starts
   from the same history);
4. (b) times the nightly refresh as it runs in production: incremental from the first
   run's watermark (only the members with new orders, refunds or an order crossing the
   RFM or 12-month edge are recomputed from their orders; only changed rows written);
   then times the nightly ``insight.kpis`` job (the standard periods' reports and the
   cohort table; its order book brought up to date with the day) and ``segments.tags``
   (the member profile, its purchases from the same order book, and rule tags);
5. (b) times a full refresh (``full=True``) as of the same instant, for comparison: every
   order read again; it finds nothing to write, since the nightly run left the same rows;
6. (a) times a bare DuckDB group-by over the same orders read from the same SQLite file:
   orders, spend and last purchase per member, materialized (the floor of a full scan:
   one scan and one aggregation, nothing written back);
7. (c) loads the orders into pandas (timed apart) and times
   ``lifetimes.utils.summary_data_from_transaction_data``, the pandas RFM summary;
8. prints the times and the ratios to the bare group-by. Goal: the whole nightly insight
   pass (the refresh, then the KPI and tag jobs) within 2x of the bare group-by.

Nothing is asserted: this is a benchmark, not a test. ``--threads`` caps DuckDB's threads.

``--database-url postgresql+psycopg://…/siyu_bench`` runs the same against PostgreSQL: the
SQLite brand is copied once into that (empty) database (``copy_to_postgres``), the day is
landed and taken out there, and every CPU figure includes the PostgreSQL server's own
processes on this machine, which do the live database's share of the work.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table
from sqlalchemy import inspect

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.migrate import upgrade
from siyu.core.settings import get_settings
from siyu.demo.catalogue import CATEGORIES
from siyu.insight.engine import LIVE, _extension, attach_live, live_instant
from siyu.insight.isolation import workers
from siyu.insight.refresh import refresh

console = Console()
NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
YEARS = 3  # members joined over the last three years


def _naive(at: datetime) -> str:
    return at.replace(tzinfo=None).isoformat(sep=" ")


def _sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _stored(url: str, expr: str) -> str:
    """A DuckDB timestamp expression as the live database stores instants: text in SQLite
    (as SQLAlchemy writes it), a timestamp for PostgreSQL (DuckDB's session zone is UTC,
    so naive instants are UTC)."""
    return f"strftime({expr}, '%Y-%m-%d %H:%M:%S.%f')" if _sqlite(url) else expr


def _duck(url: str, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """DuckDB with the live database attached as ``live``, instants in UTC."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    attach_live(con, url, read_only=read_only)
    return con


def _line_count() -> str:
    """Lines of one order, drawn: one to three, 1.8 on average."""
    return "1 + CAST(random() < 0.55 AS INT) + CAST(random() < 0.25 AS INT)"


def _insert_lines(drawn: str, first_id: str) -> str:
    """The lines of the orders in DuckDB table ``drawn`` (``id, amount, lines, refunded``),
    ids from ``first_id`` + 1: the order's amount split between them, a category each from
    the demo catalogue's, refunded in full with a refunded order."""
    categories = "[" + ", ".join(f"'{c}'" for c in CATEGORIES) + "]"
    return f"""
        INSERT INTO {LIVE}.order_lines (id, order_id, line_no, sku, category, quantity,
            amount_fen, refunded_quantity, refunded_fen)
        WITH l AS (
            SELECT d.id AS order_id, r.line_no, d.refunded,
                   CASE WHEN r.line_no = d.lines
                        THEN d.amount - (d.lines - 1) * (d.amount // d.lines)
                        ELSE d.amount // d.lines END AS amount,
                   CAST(floor(random() * {len(CATEGORIES)}) AS INT) + 1 AS k
            FROM {drawn} d JOIN range(1, 4) r(line_no) ON r.line_no <= d.lines
        )
        SELECT {first_id} + row_number() OVER (ORDER BY order_id, line_no), order_id,
               line_no, 'SKU-' || k, {categories}[k], 1, amount,
               CASE WHEN refunded THEN 1 ELSE 0 END,
               CASE WHEN refunded THEN amount ELSE 0 END
        FROM l ORDER BY order_id, line_no
        """


def build(path: Path, *, members: int, orders: int) -> None:
    """The bench brand, bulk-inserted (see the module's docstring). The SQLAlchemy engine is
    gone before DuckDB writes, and DuckDB is closed before it comes back: two SQLite
    libraries in one process must never have the file open together."""
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    from siyu.demo.generator import apply_example_programme

    with db.unit_of_work() as session:
        apply_example_programme(session, effective_from=NOW - timedelta(days=365 * YEARS + 30))
    # Indexes are dropped for the bulk load and built once after it: maintaining them row
    # by row through ten million random keys is most of the load time.
    with db.engine.begin() as conn:
        indexes = [
            (name, ddl)
            for name, ddl in conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                "AND tbl_name IN ('orders', 'order_lines', 'members', 'points_entries', "
                "'tier_history', 'member_metrics')"
            )
        ]
        for name, _ in indexes:
            conn.exec_driver_sql(f"DROP INDEX {name}")
    db.dispose()

    con = duckdb.connect()
    con.execute(f"LOAD '{_extension('sqlite_scanner')}'")
    con.execute(f"ATTACH '{path}' AS {LIVE} (TYPE sqlite)")
    start = f"TIMESTAMP '{_naive(NOW - timedelta(days=365 * YEARS))}'"
    now = f"TIMESTAMP '{_naive(NOW)}'"
    span = 365 * YEARS * 86400
    con.execute(
        f"""
        CREATE TEMP TABLE m AS
        SELECT i AS id,
               {start} + to_seconds(CAST(floor(random() * {span}) AS BIGINT)) AS joined_at,
               CASE WHEN random() < 0.03 AND i > 100
                    THEN CAST(floor(random() * (i - 1)) + 1 AS BIGINT) END AS referrer_id,
               ['V1', 'V1', 'V1', 'V2', 'V2', 'V3', 'V4', 'V5', 'V6']
                 [CAST(floor(random() * 9) AS INT) + 1] AS tier_code
        FROM range(1, {members} + 1) t(i)
        """
    )
    con.execute(
        f"""
        CREATE TEMP TABLE o AS
        WITH drawn AS (
            SELECT CAST(floor(pow(random(), 2) * {members}) AS BIGINT) + 1 AS member_id,
                   random() AS r, CAST(5000 + floor(random() * 60000) AS BIGINT) AS amount,
                   {_line_count()} AS lines
            FROM range(1, {orders} + 1) t(i)
        ),
        timed AS (
            SELECT d.member_id, d.amount, d.lines,
                   m.joined_at + to_seconds(
                       CAST(floor(d.r * epoch({now} - m.joined_at)) AS BIGINT)) AS paid_at
            FROM drawn d JOIN m ON m.id = d.member_id
        ),
        -- ids in payment order, as a live database hands them out
        n AS (SELECT row_number() OVER (ORDER BY paid_at) AS id, * FROM timed)
        SELECT *, id % 50 = 0 AS refunded FROM n
        """
    )
    steps = [
        (
            "members",
            f"""
            INSERT INTO {LIVE}.members (id, joined_at, join_channel, referrer_id, status,
                consent_sms, consent_wechat, consent_email, tier_code, points_balance,
                points_frozen, points_debt, growth_balance, created_at, updated_at)
            SELECT id, strftime(joined_at, '%Y-%m-%d %H:%M:%S.%f'), 'store', referrer_id,
                'active', false, false, false, tier_code, 0, 0, 0, 0,
                strftime(joined_at, '%Y-%m-%d %H:%M:%S.%f'),
                strftime(joined_at, '%Y-%m-%d %H:%M:%S.%f')
            FROM m ORDER BY id
            """,
        ),
        (
            "orders",
            f"""
            INSERT INTO {LIVE}.orders (id, channel, external_id, member_id, paid_at,
                amount_fen, freight_fen, discount_fen, refunded_fen, status, content_hash,
                created_at)
            SELECT id, 'store', 'B' || id, member_id,
                   strftime(paid_at, '%Y-%m-%d %H:%M:%S.%f'),
                   amount, 0, 0, CASE WHEN refunded THEN amount ELSE 0 END,
                   CASE WHEN refunded THEN 'refunded' ELSE 'paid' END, 'bench',
                   strftime({now}, '%Y-%m-%d %H:%M:%S.%f')
            FROM o ORDER BY id
            """,
        ),
        ("order lines", _insert_lines("o", "0")),
        (
            "paid members",
            f"""
            INSERT INTO {LIVE}.paid_subscriptions (member_id, plan_code, terms, state,
                auto_renew, periods_paid, current_period_start, current_period_end,
                grace_days, created_at, updated_at)
            SELECT id, 'super', '{{}}', 'active', true, 1,
                   strftime({now} - INTERVAL 100 DAY, '%Y-%m-%d %H:%M:%S.%f'),
                   strftime({now} + INTERVAL 265 DAY, '%Y-%m-%d %H:%M:%S.%f'), 7,
                   strftime({now} - INTERVAL 100 DAY, '%Y-%m-%d %H:%M:%S.%f'),
                   strftime({now} - INTERVAL 100 DAY, '%Y-%m-%d %H:%M:%S.%f')
            FROM m WHERE id % 20 = 0
            """,
        ),
        (
            "points entries",
            f"""
            INSERT INTO {LIVE}.points_entries (id, member_id, kind, points, debt,
                balance_after, fact, seq, "at")
            WITH e AS (
                SELECT member_id, 'earn' AS kind, amount // 100 AS points, id, paid_at AS "at"
                FROM o
                UNION ALL
                SELECT member_id, 'reverse', -(amount // 100), id, paid_at + INTERVAL 3 DAY
                FROM o WHERE refunded AND paid_at + INTERVAL 3 DAY < {now}
                UNION ALL
                SELECT member_id, 'spend', -(amount // 125), id,
                       paid_at + to_seconds(CAST(floor(random() * 86400 * 60) AS BIGINT))
                FROM o WHERE id % 8 = 1
                UNION ALL
                SELECT member_id, 'expire', -(amount // 500), id, paid_at + INTERVAL 365 DAY
                FROM o WHERE id % 10 = 3 AND paid_at + INTERVAL 365 DAY < {now}
            )
            SELECT row_number() OVER (ORDER BY "at", id, kind), member_id, kind, points, 0, 0,
                   kind || ':B' || id, 0, strftime("at", '%Y-%m-%d %H:%M:%S.%f')
            FROM e WHERE "at" < {now} ORDER BY "at", id, kind
            """,
        ),
        (
            "tier history",
            f"""
            INSERT INTO {LIVE}.tier_history (id, member_id, from_code, to_code, reason, "at")
            WITH h AS (
                SELECT id AS member_id, NULL AS from_code, 'V1' AS to_code, 'join' AS reason,
                       joined_at AS "at"
                FROM m
                UNION ALL
                SELECT id, 'V1', tier_code, 'upgrade', joined_at + to_seconds(
                    CAST(floor(random() * epoch({now} - joined_at)) AS BIGINT))
                FROM m WHERE tier_code <> 'V1'
            )
            SELECT row_number() OVER (ORDER BY "at", member_id), member_id, from_code, to_code,
                   reason, strftime("at", '%Y-%m-%d %H:%M:%S.%f')
            FROM h ORDER BY "at", member_id
            """,
        ),
        (
            "member metrics",
            f"""
            INSERT INTO {LIVE}.member_metrics (member_id, first_order_at, last_order_at,
                order_count, spend_fen, refund_fen, refund_count)
            SELECT member_id,
                   strftime(min(paid_at) FILTER (WHERE NOT refunded), '%Y-%m-%d %H:%M:%S.%f'),
                   strftime(max(paid_at) FILTER (WHERE NOT refunded), '%Y-%m-%d %H:%M:%S.%f'),
                   count(*) FILTER (WHERE NOT refunded), sum(amount),
                   sum(CASE WHEN refunded THEN amount ELSE 0 END),
                   count(*) FILTER (WHERE refunded)
            FROM o GROUP BY member_id ORDER BY member_id
            """,
        ),
    ]
    for name, statement in steps:
        began = time.perf_counter()
        with console.status(f"building the bench brand: {name}"):
            con.execute(statement)
        console.print(f"built {name} in {time.perf_counter() - began:.1f} s")
    con.close()
    db = Database(f"sqlite:///{path}")
    began = time.perf_counter()
    with db.engine.begin() as conn, console.status("building the indexes"):
        for _, ddl in indexes:
            conn.exec_driver_sql(ddl)
        conn.exec_driver_sql("ANALYZE")
    console.print(f"built the indexes in {time.perf_counter() - began:.1f} s")
    db.dispose()


# the bench brand's tables, in the order their foreign keys need
BRAND_TABLES = (
    "members",
    "orders",
    "order_lines",
    "paid_subscriptions",
    "points_entries",
    "tier_history",
    "member_metrics",
)


def copy_to_postgres(path: Path, url: str) -> None:
    """The bench brand (the SQLite file built by ``build``) copied into an empty PostgreSQL
    database, once: migrated like any siyu database, the example programme applied, the
    brand's tables copied by DuckDB (PostgreSQL's COPY) with their secondary indexes built
    after the rows, the id sequences moved past the copied ids, and a note of which brand
    it holds (``bench_brand``), so the next run uses it as it is."""
    db = Database(url)
    with db.engine.begin() as conn:
        held = conn.exec_driver_sql("SELECT to_regclass('bench_brand') IS NOT NULL").scalar()
        if held:
            source = conn.exec_driver_sql("SELECT source FROM bench_brand").scalar()
            if source == path.name:
                console.print(f"using the bench brand copied before into {db.engine.url}")
                db.dispose()
                return
    upgrade(db)
    with db.engine.begin() as conn:
        found = conn.exec_driver_sql("SELECT count(*) FROM members").scalar()
    if found:
        db.dispose()
        raise SystemExit(
            f"{db.engine.url} holds members and no bench brand: give the bench an empty "
            "database (createdb siyu_bench), it copies the brand in once"
        )
    from siyu.demo.generator import apply_example_programme

    with db.unit_of_work() as session:
        apply_example_programme(session, effective_from=NOW - timedelta(days=365 * YEARS + 30))
    tables = ", ".join(f"'{t}'" for t in BRAND_TABLES)
    with db.engine.begin() as conn:
        indexes = list(
            conn.exec_driver_sql(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i "
                f"WHERE i.schemaname = 'public' AND i.tablename IN ({tables}) AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c "
                "WHERE c.conname = i.indexname)"  # a constraint's index bears its name
            )
        )
        for name, _ in indexes:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
    db.dispose()
    con = _duck(url, read_only=False)
    con.execute(f"LOAD '{_extension('sqlite_scanner')}'")
    con.execute(f"ATTACH '{path}' AS brand (TYPE sqlite, READ_ONLY)")
    for table in BRAND_TABLES:
        began = time.perf_counter()
        with console.status(f"copying the bench brand into PostgreSQL: {table}"):
            con.execute(f"INSERT INTO {LIVE}.{table} BY NAME SELECT * FROM brand.{table}")
        console.print(f"copied {table} in {time.perf_counter() - began:.1f} s")
    con.close()
    db = Database(url)
    began = time.perf_counter()
    with db.engine.begin() as conn, console.status("building the indexes"):
        for _, ddl in indexes:
            conn.exec_driver_sql(ddl)
        for table in BRAND_TABLES:
            sequence = conn.exec_driver_sql(
                "SELECT pg_get_serial_sequence(table_name, 'id') FROM information_schema.columns "
                f"WHERE table_name = '{table}' AND column_name = 'id'"
            ).scalar()
            if sequence:
                conn.exec_driver_sql(f"SELECT setval('{sequence}', (SELECT max(id) FROM {table}))")
        conn.exec_driver_sql("CREATE TABLE bench_brand (source text)")
        conn.exec_driver_sql(f"INSERT INTO bench_brand VALUES ('{path.name}')")
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    console.print(f"built the indexes in {time.perf_counter() - began:.1f} s")
    db.dispose()


def _process(stat: Path) -> tuple[str, list[str]] | None:
    """A process's name and the fields of its ``/proc/<pid>/stat`` after the name (None:
    it has ended). Field 11 on is utime, stime, cutime, cstime, in clock ticks."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    return text[text.find("(") + 1 : text.rfind(")")], text.rsplit(")", 1)[1].split()


TICK = os.sysconf("SC_CLK_TCK")


def _server_cpu() -> float:
    """CPU seconds of this machine's PostgreSQL server processes: on PostgreSQL the live
    database's reads and writes run there, not in this process, and count as the run's.
    A connection's backend that has ended is counted in its parent's (the postmaster's)
    reaped children's time, so the sum only grows."""
    used = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        found = _process(stat)
        if found is not None and found[0].startswith("postgres"):
            used += sum(int(f) for f in found[1][11:15])  # with reaped children's
    return used / TICK


SERVER_CPU = False  # count the PostgreSQL server's CPU (set by ``main`` for a PostgreSQL run)


def cpu() -> float:
    """CPU seconds of this process, its finished children and its running analytics
    children (on SQLite the refresh computes in a child kept warm between runs, see
    ``insight.isolation``): on a shared, loaded machine a fairer figure than wall time."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    for pid in workers.pids():
        found = _process(Path(f"/proc/{pid}/stat"))
        if found is not None:
            used += sum(int(f) for f in found[1][11:13]) / TICK  # utime, stime
    return used + (_server_cpu() if SERVER_CPU else 0.0)


DAY_MARK = "bench-day"  # content_hash / reason of the rows a run adds, to take them out again


def remove_day(url: str) -> None:
    """Take out what an earlier run's day added: the history is the same at every run."""
    db = Database(url)
    with db.engine.begin() as conn:
        if inspect(conn).has_table("bench_day_members"):  # the buyers' rows as they were
            conn.exec_driver_sql(
                "UPDATE members SET points_balance = b.points_balance "
                "FROM bench_day_members AS b WHERE members.id = b.id"
            )
            conn.exec_driver_sql(
                "DELETE FROM member_metrics WHERE member_id IN "
                "(SELECT member_id FROM bench_day_metrics)"
            )
            conn.exec_driver_sql("INSERT INTO member_metrics SELECT * FROM bench_day_metrics")
            conn.exec_driver_sql("DROP TABLE bench_day_members")
            conn.exec_driver_sql("DROP TABLE bench_day_metrics")
        refunded = f"(SELECT order_id FROM refunds WHERE reason = '{DAY_MARK}')"
        conn.exec_driver_sql(
            f"UPDATE orders SET refunded_fen = 0, status = 'paid' WHERE id IN {refunded}"
        )
        conn.exec_driver_sql(
            "UPDATE order_lines SET refunded_quantity = 0, refunded_fen = 0 "
            f"WHERE order_id IN {refunded}"
        )
        conn.exec_driver_sql(f"DELETE FROM refunds WHERE reason = '{DAY_MARK}'")
        conn.exec_driver_sql(f"DELETE FROM points_entries WHERE note = '{DAY_MARK}'")
        conn.exec_driver_sql(
            "DELETE FROM order_lines WHERE order_id IN "
            f"(SELECT id FROM orders WHERE content_hash = '{DAY_MARK}')"
        )
        conn.exec_driver_sql(f"DELETE FROM orders WHERE content_hash = '{DAY_MARK}'")
        since = live_instant(NOW, sqlite=_sqlite(url))
        conn.exec_driver_sql(f"DELETE FROM members WHERE joined_at >= {since}")
    db.dispose()


def land_day(url: str, *, members: int, orders: int) -> tuple[int, int, int]:
    """A day of business after ``NOW``: orders paid that day (about 1/365 of the history,
    buyers drawn like the history's) with their lines, full refunds of earlier orders
    (their lines refunded too), new members. Bulk inserted by DuckDB, with no SQLAlchemy
    engine open on the file."""
    day_orders = max(orders // 365, 1)
    day_refunds = max(day_orders // 50, 1)
    day_members = max(members // (365 * YEARS), 1)
    con = _duck(url, read_only=False)
    now = f"TIMESTAMP '{_naive(NOW)}'"
    stamp = _stored(url, f"{now} + INTERVAL 1 DAY")
    joined = _stored(url, f"{now} + to_seconds(CAST(floor(random() * 86400) AS BIGINT))")
    con.execute(
        f"""
        INSERT INTO {LIVE}.members (id, joined_at, join_channel, status, consent_sms,
            consent_wechat, consent_email, tier_code, points_balance, points_frozen,
            points_debt, growth_balance, created_at, updated_at)
        SELECT {members} + i, {joined}, 'store', 'active', false, false, false, 'V1',
               0, 0, 0, 0, {stamp}, {stamp}
        FROM range(1, {day_members} + 1) t(i)
        """
    )
    con.execute(
        f"""
        CREATE TEMP TABLE day AS
        SELECT {orders} + i AS id, 'D' || i AS external_id,
               CAST(floor(pow(random(), 2) * {members}) AS BIGINT) + 1 AS member_id,
               {now} + to_seconds(CAST(floor(random() * 86400) AS BIGINT)) AS paid_at,
               CAST(5000 + floor(random() * 60000) AS BIGINT) AS amount,
               {_line_count()} AS lines, false AS refunded
        FROM range(1, {day_orders} + 1) t(i)
        """
    )
    con.execute(
        f"""
        INSERT INTO {LIVE}.orders (id, channel, external_id, member_id, paid_at,
            amount_fen, freight_fen, discount_fen, refunded_fen, status, content_hash,
            created_at)
        SELECT id, 'store', external_id, member_id, {_stored(url, "paid_at")}, amount,
               0, 0, 0, 'paid', '{DAY_MARK}', {stamp}
        FROM day ORDER BY id
        """
    )
    last_line = con.execute(f"SELECT COALESCE(max(id), 0) FROM {LIVE}.order_lines").fetchone()
    con.execute(_insert_lines("day", str(last_line[0] if last_line else 0)))
    con.execute(
        f"""
        CREATE TEMP TABLE refunded AS
        SELECT id, member_id, amount_fen FROM {LIVE}.orders
        WHERE id IN (SELECT CAST(floor(random() * {orders}) AS BIGINT) + 1
                     FROM range({day_refunds}))
          AND status = 'paid'
        """
    )
    con.execute(
        f"""
        INSERT INTO {LIVE}.refunds (order_id, channel, external_id, member_id, refunded_at,
            amount_fen, reason, content_hash, created_at)
        SELECT id, 'store', 'DR' || id, member_id, {stamp}, amount_fen, '{DAY_MARK}',
               '{DAY_MARK}', {stamp}
        FROM refunded
        """
    )
    refunds = int(con.execute("SELECT count(*) FROM refunded").fetchone()[0])  # type: ignore[index]
    # the points the day's orders earned and the refunds took back
    con.execute(
        f"""
        INSERT INTO {LIVE}.points_entries (id, member_id, kind, points, debt, balance_after,
            fact, seq, "at", note)
        WITH e AS (
            SELECT member_id, 'earn' AS kind, amount // 100 AS points, id, paid_at AS "at"
            FROM day
            UNION ALL
            SELECT member_id, 'reverse', -(amount_fen // 100), id,
                   {now} + to_seconds(CAST(floor(random() * 86400) AS BIGINT))
            FROM refunded
        )
        SELECT (SELECT max(id) FROM {LIVE}.points_entries)
                   + row_number() OVER (ORDER BY "at", id, kind),
               member_id, kind, points, 0, 0, kind || ':D' || id, 0,
               {_stored(url, '"at"')}, '{DAY_MARK}'
        FROM e ORDER BY "at", id, kind
        """
    )
    con.close()
    db = Database(url)
    with db.engine.begin() as conn:  # the orders the refunds returned, and their lines
        refunded = f"(SELECT order_id FROM refunds WHERE reason = '{DAY_MARK}')"
        conn.exec_driver_sql(
            "UPDATE orders SET refunded_fen = amount_fen, status = 'refunded' WHERE id IN "
            f"{refunded}"
        )
        conn.exec_driver_sql(
            "UPDATE order_lines SET refunded_quantity = quantity, refunded_fen = amount_fen "
            f"WHERE order_id IN {refunded}"
        )
        # the buyers' own rows, as the order import leaves them: their points balance and
        # purchase metrics (kept first, for ``remove_day`` to put back)
        buyers = (
            f"SELECT member_id FROM orders WHERE content_hash = '{DAY_MARK}' "
            f"UNION SELECT member_id FROM refunds WHERE reason = '{DAY_MARK}'"
        )
        conn.exec_driver_sql(
            "CREATE TABLE bench_day_members AS SELECT id, points_balance FROM members "
            f"WHERE id IN ({buyers})"
        )
        conn.exec_driver_sql(
            "CREATE TABLE bench_day_metrics AS SELECT * FROM member_metrics "
            f"WHERE member_id IN ({buyers})"
        )
        conn.exec_driver_sql(
            "UPDATE members SET points_balance = members.points_balance + e.points "
            "FROM (SELECT member_id, sum(points) AS points FROM points_entries "
            f"WHERE note = '{DAY_MARK}' GROUP BY member_id) AS e WHERE members.id = e.member_id"
        )
        conn.exec_driver_sql(
            "UPDATE member_metrics SET order_count = member_metrics.order_count + d.n, "
            "spend_fen = member_metrics.spend_fen + d.spend, last_order_at = d.last "
            "FROM (SELECT member_id, count(*) AS n, sum(amount_fen) AS spend, "
            f"max(paid_at) AS last FROM orders WHERE content_hash = '{DAY_MARK}' "
            "GROUP BY member_id) AS d WHERE member_metrics.member_id = d.member_id"
        )
        conn.exec_driver_sql(
            "UPDATE member_metrics SET refund_fen = member_metrics.refund_fen + r.fen, "
            "refund_count = member_metrics.refund_count + r.n "
            "FROM (SELECT member_id, count(*) AS n, sum(amount_fen) AS fen FROM refunds "
            f"WHERE reason = '{DAY_MARK}' GROUP BY member_id) AS r "
            "WHERE member_metrics.member_id = r.member_id"
        )
    db.dispose()
    return day_orders, refunds, day_members


def bare_group_by(url: str, threads: int | None) -> tuple[float, float, int]:
    con = _duck(url, read_only=True)
    if threads:
        con.execute(f"SET threads = {threads}")
    began, cpu_began = time.perf_counter(), cpu()
    con.execute(
        f"CREATE TEMP TABLE per_member AS SELECT member_id, count(*) AS orders, "
        f"sum(amount_fen) AS spend, max(paid_at) AS last_at FROM {LIVE}.orders "
        "WHERE member_id IS NOT NULL GROUP BY member_id"
    )
    took, used = time.perf_counter() - began, cpu() - cpu_began
    row = con.execute("SELECT count(*) FROM per_member").fetchone()
    con.close()
    return took, used, int(row[0]) if row else 0


def nightly_jobs(
    url: str, at: datetime, *, fresh_book: bool = False
) -> list[tuple[str, float, float, str]]:
    """The rest of the nightly insight pass after the refresh, as the scheduler runs it:
    the stored KPI reports and cohorts (``insight.kpis``) and the segment profile with
    rule tags (``segments.tags``, its purchases read from the same order book).
    ``fresh_book``: remove the order book first (a rerun of the bench starts over)."""
    from siyu.insight.engine import analytics_file
    from siyu.insight.kpis import kpis_job
    from siyu.segments.jobs import refresh_tags

    done = []
    db = Database(url)
    book = analytics_file(db, "orders")
    if fresh_book and book is not None:
        Path(book).unlink(missing_ok=True)
    previous = clock.set_clock(clock.FixedClock(at))
    try:
        day = clock.local_date(at, get_settings().timezone)
        for name, function in (("insight.kpis", kpis_job), ("segments.tags", refresh_tags)):
            began, cpu_began = time.perf_counter(), cpu()
            result = function(db, day)
            took, used = time.perf_counter() - began, cpu() - cpu_began
            console.print(f"{name}: {took:.2f} s, {used:.2f} s CPU {result}")
            done.append((name, took, used, ", ".join(f"{k} {v}" for k, v in result.items())))
    finally:
        clock.set_clock(previous)
        db.dispose()
    return done


def lifetimes_summary(url: str) -> tuple[float, float, int]:
    from lifetimes.utils import summary_data_from_transaction_data

    con = _duck(url, read_only=True)
    began = time.perf_counter()
    frame = con.execute(
        f"SELECT member_id, paid_at, amount_fen / 100.0 AS amount FROM {LIVE}.orders "
        "WHERE member_id IS NOT NULL AND status <> 'refunded'"
    ).df()
    loaded = time.perf_counter() - began
    con.close()
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = summary_data_from_transaction_data(
            frame,
            "member_id",
            "paid_at",
            monetary_value_col="amount",
            observation_period_end=NOW.replace(tzinfo=None),
        )
    return loaded, time.perf_counter() - began, len(summary)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--data-dir", type=Path, default=Path("bench/out/insight"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-lifetimes", action="store_true", help="skip the pandas summary")
    parser.add_argument("--no-jobs", action="store_true", help="skip the nightly KPI and tag jobs")
    parser.add_argument(
        "--database-url",
        default=None,
        help="an empty PostgreSQL database to copy the brand into once and run against "
        "(postgresql+psycopg://…); default: the SQLite file",
    )
    args = parser.parse_args(argv)

    args.data_dir.mkdir(parents=True, exist_ok=True)
    # v2: order ids in payment order (v1 drew payment times at random against the ids,
    # which no live database does and which turned every range read by time into random
    # reads); v3: orders have lines (v2's had none, which hid the cost of the segment
    # profile's purchases, read from every order line); v4: the loyalty tables the
    # nightly jobs read (points ledger, tier history, member metrics; v3's were empty,
    # which hid the cost of the KPIs' points and tier figures)
    path = (args.data_dir / f"live-v4-{args.members}-{args.orders}.db").resolve()
    done = path.with_suffix(".built")
    if not done.exists():
        path.unlink(missing_ok=True)
        build(path, members=args.members, orders=args.orders)
        done.touch()
    else:
        console.print(f"using the bench brand built before: {path}")
    url = f"sqlite:///{path}"
    if args.database_url:
        copy_to_postgres(path, args.database_url)
        url = args.database_url
        global SERVER_CPU
        SERVER_CPU = True  # the server's work is the run's: counted in every CPU figure
    built = Database(url)
    upgrade(built)  # a brand built or copied before a later migration is migrated as any is
    built.dispose()

    import ibis.backends.duckdb  # noqa: F401  (imports are not the refresh's cost)
    import pandas  # noqa: F401

    db = Database(url)
    emptied = (
        "lifecycle_transitions",
        "insight_groups",
        "lifecycle_matrix",
        "insight_early_signals",
        "member_insight",
        "rfm_scales",
        "insight_runs",
    )
    with db.engine.begin() as conn:  # a rerun starts from an empty refresh again
        for table in emptied:
            conn.exec_driver_sql(f"DELETE FROM {table}")
        conn.exec_driver_sql("DELETE FROM outbox WHERE topic = 'insight.stage_changed'")
    db.dispose()
    remove_day(url)
    if not _sqlite(url):
        # the rows a rerun deleted stay in PostgreSQL's tables as dead rows until a vacuum:
        # without one, a second run's member_insight was three times its live size and
        # every scan of it paid for that (a brand's database has autovacuum between nights)
        db = Database(url)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            landed = ("orders", "order_lines", "points_entries", "refunds", "members", "outbox")
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {', '.join((*emptied, *landed))}")
        db.dispose()

    def timed(label: str, at: datetime, *, full: bool) -> tuple[str, float, float, Any]:
        db = Database(url)
        previous = clock.set_clock(clock.FixedClock(at))
        try:
            began, cpu_began = time.perf_counter(), cpu()
            result = refresh(db, threads=args.threads, full=full)
            took, used = time.perf_counter() - began, cpu() - cpu_began
        finally:
            clock.set_clock(previous)
            db.dispose()
        console.print(f"{label}: {took:.2f} s, {used:.2f} s CPU {result.detail()['seconds']}")
        return label, took, used, result

    runs = [timed("first refresh, full", NOW, full=False)]
    if not args.no_jobs:
        # the night before: the jobs build what they keep between nights (the order book
        # the KPIs and cohorts read, ``insight.orderbook``), as a brand running siyu has
        for label, took, used, _ in nightly_jobs(url, NOW, fresh_book=True):
            console.print(f"the night before, {label}: {took:.2f} s, {used:.2f} s CPU")
    day = land_day(url, members=args.members, orders=args.orders)
    console.print(f"a day landed: {day[0]:,} orders, {day[1]:,} refunds, {day[2]:,} members")
    tomorrow = NOW + timedelta(days=1, hours=1)
    runs.append(timed("nightly, incremental", tomorrow, full=False))
    jobs = [] if args.no_jobs else nightly_jobs(url, tomorrow)
    runs.append(timed("full recompute, same day", tomorrow, full=True))

    bare, bare_cpu, buyers = bare_group_by(url, args.threads)
    console.print(f"bare group-by: {bare:.2f} s, {bare_cpu:.2f} s CPU ({buyers:,} buyers)")

    table = Table(
        title=f"insight refresh, {args.members:,} members / {args.orders:,} orders "
        f"(+ a day: {day[0]:,} orders, {day[1]:,} refunds)"
    )
    for column in ("run", "seconds", "x bare", "CPU seconds", "x bare CPU", "what it did"):
        table.add_column(column)
    table.add_row(
        "bare DuckDB group-by over all orders",
        f"{bare:.2f}",
        "1.00",
        f"{bare_cpu:.2f}",
        "1.00",
        f"{buyers:,} buyers; one scan, one aggregation, nothing written",
    )
    for label, took, used, what in jobs:
        table.add_row(
            f"job {label}",
            f"{took:.2f}",
            f"{took / bare:.2f}",
            f"{used:.2f}",
            f"{used / bare_cpu:.2f}",
            what,
        )
    if jobs:
        nightly = next(r for r in runs if r[0] == "nightly, incremental")
        took = nightly[1] + sum(j[1] for j in jobs)
        used = nightly[2] + sum(j[2] for j in jobs)
        table.add_row(
            "nightly refresh + KPIs + tags",
            f"{took:.2f}",
            f"{took / bare:.2f}",
            f"{used:.2f}",
            f"{used / bare_cpu:.2f}",
            "the whole nightly insight pass",
        )
    for label, took, used, result in runs:
        table.add_row(
            f"refresh ({label})",
            f"{took:.2f}",
            f"{took / bare:.2f}",
            f"{used:.2f}",
            f"{used / bare_cpu:.2f}",
            f"{'all' if result.full else f'{result.recomputed:,}'} members from their "
            f"orders; {result.written:,} rows written; {result.transitions:,} transitions; "
            f"{result.members:,} members, {result.super_users:,} super users",
        )
    if not args.no_lifetimes:
        cpu_began = cpu()
        loaded, took, rows = lifetimes_summary(url)
        used = cpu() - cpu_began
        table.add_row(
            "pandas RFM summary (lifetimes)",
            f"{took:.2f}",
            f"{took / bare:.2f}",
            f"{used:.2f}",
            f"{used / bare_cpu:.2f}",
            f"{rows:,} customers; loading the orders into pandas took {loaded:.2f} s more "
            "(its CPU counted)",
        )
    console.print(table)


if __name__ == "__main__":
    main()
