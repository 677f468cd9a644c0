"""The order book (订单副本): every live order and order line, reduced to what the analytics
figures read, kept in a DuckDB file in the analytics directory and brought up to date
before each use.

Why: an attached SQLite table is read whole whatever the filter, and the nightly KPIs,
the cohort table and the segment profile's purchases (``segments.profile``) need every
order and line (a buyer's first purchase may be years old). Scanning ten million orders
and twice as many lines out of SQLite costs seconds each time; reading the same columns
out of a DuckDB file costs a fraction of that. The book is brought up to date from the
live database's indexes, never by a scan: a day of business costs a day of orders.

What changes an order after it is written, and how the book sees it (the same rules as
the insight refresh's watermarks, ``insight.refresh``):

- new orders: ids above the book's order watermark (on PostgreSQL the last
  ``ID_OVERLAP`` ids below it are read again: a sequence hands out ids before their
  transactions commit);
- refunds change an order's refunded amount and status: the orders of refunds above the
  refund watermark are read again;
- a merge moves the merged member's orders to the survivor, an unmerge moves them back:
  every order of both members of a merge or unmerge since the last sync is read again.

An order's lines are read again with it, in the same statement (so the two agree): they
change only through refunds (``refunded_quantity``), and their member is the order's.

Orders are never deleted. A re-read order replaces its row and its lines, so reading one
twice is harmless, and missing one is what the watermarks rule out. Anything unexpected (no
analytics directory, a file another version wrote, a file that does not open) reads the
live table instead, and a file that does not open is rebuilt: the book is a cache, never
the truth.

One process at a time brings the book up to date and copies from it (a lock file beside
it); the others wait, which costs them less than a scan.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import ibis

from siyu.insight.engine import LIVE, Analytics, sql_text

BOOK = "order_book"  # the attached file's catalog name
VERSION = 2  # bump when the book's columns change: an older book is rebuilt (2: lines)
ID_OVERLAP = 10_000  # PostgreSQL: ids below the watermark read again (see the docstring)
UNMERGE_ROOM = timedelta(hours=2)  # unmerges are found by time, with this much room

# (name, DuckDB type, expression over a live ``orders`` row, as the attached table gives it
# or as the live database's own query returns it: SQLite's values come untyped there)
COLUMNS = (
    ("id", "BIGINT", "id"),
    ("member_id", "BIGINT", "member_id"),
    ("paid_at", "TIMESTAMP", "paid_at"),
    ("net_fen", "BIGINT", "CAST(amount_fen AS BIGINT) - CAST(refunded_fen AS BIGINT)"),
    ("counted", "BOOLEAN", "member_id IS NOT NULL AND status <> 'refunded'"),
)
# the same for a live ``order_lines`` row: what the segment profile's purchases read (a
# line counts while not all of it was refunded)
LINE_COLUMNS = (
    ("order_id", "BIGINT", "order_id"),
    ("line_no", "INTEGER", "line_no"),
    ("category", "VARCHAR", "category"),
    ("counted", "BOOLEAN", "CAST(refunded_quantity AS BIGINT) < CAST(quantity AS BIGINT)"),
)


@dataclass(frozen=True)
class Place:
    """Where the book lives and the instant it is brought up to date at (the caller's
    clock: on SQLite the work runs in a child process, which has its own)."""

    path: str | None
    now: datetime


@dataclass(frozen=True)
class Synced:
    how: str  # built | updated | live (the book was not used)
    orders_read: int
    lines_read: int = 0


@dataclass(frozen=True)
class Book:
    """The book's two tables for one use: ``orders`` as ``orders()`` describes them, and
    ``lines`` as ``(order_id, line_no, category, counted)``."""

    orders: ibis.Table
    lines: ibis.Table
    synced: Synced


def _cast(columns: tuple[tuple[str, str, str], ...], prefix: str = "") -> str:
    return ", ".join(f"CAST({expr} AS {kind}) AS {prefix}{name}" for name, kind, expr in columns)


def _live(engine: Analytics) -> ibis.Table:
    """The live orders in the book's shape (read whole: the build, and the fallback)."""
    return engine.backend.sql(f"SELECT {_cast(COLUMNS)} FROM {LIVE}.orders")


def _live_lines(engine: Analytics) -> ibis.Table:
    """The live order lines in the book's shape (read whole: the build, and the fallback)."""
    return engine.backend.sql(f"SELECT {_cast(LINE_COLUMNS)} FROM {LIVE}.order_lines")


@contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _marks(engine: Analytics) -> tuple[int, int, int]:
    """The live database's highest order, refund and merge ids now."""
    row = engine.sql(
        "SELECT * FROM "
        + engine.live_query(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM orders) AS orders, "
            "(SELECT COALESCE(MAX(id), 0) FROM refunds) AS refunds, "
            "(SELECT COALESCE(MAX(id), 0) FROM member_merges) AS merges"
        )
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _build(engine: Analytics, now: datetime) -> Synced:
    marks = _marks(engine)  # before the read: what commits after it is read next time
    for table in ("orders", "lines", "meta"):
        engine.sql(f"DROP TABLE IF EXISTS {BOOK}.{table}")
    compiled = engine.backend.compile(_live(engine))
    engine.sql(f"CREATE TABLE {BOOK}.orders AS SELECT * FROM ({compiled}) AS o ORDER BY id")
    # one scan of the lines; a line whose order commits after the scan of the orders waits
    # for it outside the join, and is read again with it (its id is above the watermark)
    compiled = engine.backend.compile(_live_lines(engine))
    engine.sql(f"CREATE TABLE {BOOK}.lines AS SELECT * FROM ({compiled}) AS l")
    engine.sql(
        f"CREATE TABLE {BOOK}.meta AS SELECT {VERSION} AS version, {marks[0]}::BIGINT AS "
        f"order_id, {marks[1]}::BIGINT AS refund_id, {marks[2]}::BIGINT AS merge_id, "
        f"'{now.replace(tzinfo=None).isoformat()}'::TIMESTAMP AS synced_at"
    )
    return Synced(
        "built",
        int(engine.scalar(f"SELECT count(*) FROM {BOOK}.orders")),
        int(engine.scalar(f"SELECT count(*) FROM {BOOK}.lines")),
    )


def _update(engine: Analytics, meta: tuple[int, int, int, datetime], now: datetime) -> Synced:
    order_id, refund_id, merge_id, synced_at = meta
    overlap = 0 if engine.sqlite else ID_OVERLAP
    marks = _marks(engine)
    since = engine.live_instant(synced_at - UNMERGE_ROOM)
    merges = (
        f"FROM member_merges WHERE id > {merge_id - overlap} "
        f"OR unmerged_at > {since} OR merged_at > {since}"
    )
    changed = (
        f"SELECT id FROM orders WHERE id > {order_id - overlap} "
        f"UNION SELECT order_id FROM refunds WHERE id > {refund_id - overlap} "
        f"UNION SELECT id FROM orders WHERE member_id IN "
        f"(SELECT from_member_id {merges} UNION SELECT into_member_id {merges})"
    )
    # the changed orders with their lines, in one statement: one snapshot of both
    live = (
        "SELECT o.id, o.member_id, o.paid_at, o.amount_fen, o.refunded_fen, o.status, "
        "l.order_id, l.line_no, l.category, l.quantity, l.refunded_quantity "
        f"FROM orders o LEFT JOIN order_lines l ON l.order_id = o.id WHERE o.id IN ({changed})"
    )
    engine.sql(
        f"CREATE OR REPLACE TEMP TABLE order_book_read AS SELECT {_cast(COLUMNS)}, "
        f"{_cast(LINE_COLUMNS, 'line_')} FROM {engine.live_query(live)}"
    )
    order_names = ", ".join(name for name, _, _ in COLUMNS)
    line_names = ", ".join(f"line_{name} AS {name}" for name, _, _ in LINE_COLUMNS)
    engine.sql(
        "CREATE OR REPLACE TEMP TABLE order_book_changed AS "
        f"SELECT DISTINCT {order_names} FROM order_book_read"
    )
    read = int(engine.scalar("SELECT count(*) FROM order_book_changed"))
    lines = int(engine.scalar("SELECT count(line_order_id) FROM order_book_read"))
    engine.sql("BEGIN TRANSACTION")
    try:
        if read:
            changed_ids = "(SELECT id FROM order_book_changed)"
            engine.sql(f"DELETE FROM {BOOK}.orders WHERE id IN {changed_ids}")
            engine.sql(f"INSERT INTO {BOOK}.orders SELECT * FROM order_book_changed")
            engine.sql(f"DELETE FROM {BOOK}.lines WHERE order_id IN {changed_ids}")
            engine.sql(
                f"INSERT INTO {BOOK}.lines SELECT {line_names} FROM order_book_read "
                "WHERE line_order_id IS NOT NULL"
            )
        engine.sql(
            f"UPDATE {BOOK}.meta SET order_id = {max(marks[0], order_id)}, "
            f"refund_id = {max(marks[1], refund_id)}, merge_id = {max(marks[2], merge_id)}, "
            f"synced_at = '{now.replace(tzinfo=None).isoformat()}'::TIMESTAMP"
        )
    except BaseException:
        engine.sql("ROLLBACK")
        raise
    engine.sql("COMMIT")
    return Synced("updated", read, lines)


def _same_database(engine: Analytics, order_id: int) -> bool:
    """Whether the book still describes this database: the live first order and the order
    at the book's watermark were paid at the same instants in both (when an order was paid
    never changes). A database restored from a backup, or emptied and filled again (the
    tests do), fails this and the book is rebuilt."""
    probe = (
        f"SELECT id, paid_at FROM orders WHERE id = (SELECT MIN(id) FROM orders) OR id = {order_id}"
    )
    there = engine.sql(
        "SELECT CAST(id AS BIGINT), CAST(paid_at AS TIMESTAMP) FROM "
        f"{engine.live_query(probe)} ORDER BY 1"
    ).fetchall()
    ids = ", ".join(str(row[0]) for row in there) or "NULL"
    kept = engine.sql(
        f"SELECT id, paid_at FROM {BOOK}.orders WHERE id IN ({ids}) ORDER BY id"
    ).fetchall()
    return bool(there) and there == kept and there[-1][0] == order_id


def _meta(engine: Analytics) -> tuple[int, int, int, datetime] | None:
    try:
        row = engine.sql(
            f"SELECT version, order_id, refund_id, merge_id, synced_at FROM {BOOK}.meta"
        ).fetchone()
    except duckdb.CatalogException:
        return None
    if row is None or row[0] != VERSION or not _same_database(engine, int(row[1])):
        return None
    return int(row[1]), int(row[2]), int(row[3]), row[4]


def _attach(engine: Analytics, path: str) -> None:
    engine.sql(f"DETACH DATABASE IF EXISTS {BOOK}")
    try:
        engine.sql(f"ATTACH {sql_text(path)} AS {BOOK}")
    except duckdb.Error:
        # not a DuckDB file of this version, or damaged: the book is a cache, start again
        os.unlink(path)
        engine.sql(f"ATTACH {sql_text(path)} AS {BOOK}")


@contextmanager
def book(engine: Analytics, place: Place) -> Iterator[Book]:
    """Every live order and order line, brought up to date once for the block: orders as
    ``(id, member_id, paid_at, net_fen, counted)`` (``net_fen`` what was paid less what was
    refunded, ``counted`` a member's purchase not refunded in full), lines as ``(order_id,
    line_no, category, counted)`` (``counted``: not all of the line was refunded). Read
    what you need inside the block (into memory or another file): the book is locked and
    attached only while it lasts."""
    if place.path is None:
        yield Book(_live(engine), _live_lines(engine), Synced("live", 0))
        return
    with _locked(place.path):
        try:
            _attach(engine, place.path)
            meta = _meta(engine)
            synced = _build(engine, place.now) if meta is None else _update(engine, meta, place.now)
        except (duckdb.Error, OSError):
            engine.sql(f"DETACH DATABASE IF EXISTS {BOOK}")
            yield Book(_live(engine), _live_lines(engine), Synced("live", 0))
            return
        try:
            yield Book(
                engine.backend.table("orders", database=BOOK),
                engine.backend.table("lines", database=BOOK),
                synced,
            )
        finally:
            engine.sql(f"DETACH DATABASE IF EXISTS {BOOK}")


@contextmanager
def orders(engine: Analytics, place: Place) -> Iterator[tuple[ibis.Table, Synced]]:
    """Every live order (``book``'s orders) and how the book was brought up to date."""
    with book(engine, place) as held:
        yield held.orders, held.synced
