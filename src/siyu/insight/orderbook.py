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
  ``engine.ID_OVERLAP`` ids below it are read again: a sequence hands out ids before their
  transactions commit);
- refunds change an order's refunded amount and status: the orders of refunds above the
  refund watermark are read again;
- a merge moves the merged member's orders to the survivor, an unmerge moves them back:
  every order of both members of a merge or unmerge since the last sync is read again.

An order's lines are read again with it, in the same statement (so the two agree): they
change only through refunds (``refunded_quantity``), and their member is the order's.

Orders are never deleted. A re-read order replaces its row and its lines, so reading one
twice is harmless, and missing one is what the watermarks rule out.

What the book keeps for the figures beside the orders and lines:

- ``firsts``: each buyer's first and second counted purchase instants, ever (the KPIs'
  first-to-second conversion and join conversion). Finding them is a grouping of every
  purchase; kept here, a sync regroups only the members whose orders it read again (the
  members those orders had before and have now).
- ``points``: the points ledger summed by minute and kind (the KPIs' points issued,
  redeemed and expired, and the liability, for periods that begin and end on whole
  minutes). The ledger is append-only, so a sync adds the entries above its entry
  watermark; on PostgreSQL it also reads the last ``engine.ID_OVERLAP`` ids below it again and
  skips those it already counted (``points_seen``): a sum, unlike a row replaced by id,
  must not count an entry twice.
- ``tiers``: the tier history (the KPIs' tier distribution and moves): rows above its
  watermark, and every row of both members of a merge or unmerge since the last sync, are
  read again, as for orders (a merge moves the merged member's history). Each row keeps
  when its member's next change came (``next_at``, by time then id; null for the member's
  latest), so a member's tier at any instant is the row before it whose next change is
  not: the KPIs' distribution reads it without ordering the whole history each night (a
  window over 1.7 million rows cost 0.24 s of 0.32 s). A sync orders again only the
  histories of the members whose rows it read again.
- ``members``: every member's ``(id, joined_at, status, tier_code, referrer_id)`` (the
  KPIs' members and join cohorts, the refresh's members), kept by following the member
  changes (``insight.member_changes``): a sync reads again the members whose ``members``
  row was written since the last one, through the live database's indexes, a night's
  changed members instead of a million rows; it copies them whole when the list cannot be
  followed or lists more than ``member_changes.FOLLOW_SHARE`` of them. Members are never
  deleted, but a member listed and no longer found goes.
- ``changes``: the ids of the orders each sync read again and found changed (new, or
  another member, amount, status or lines), numbered by sync (``seq``), for
  ``CHANGES_KEPT``. A copy made from the book (the segment profile's purchases) is
  brought up to date from them instead of being copied whole again: it notes the book's
  ``generation`` (new at each build) and the ``seq`` it reflects, and what changed since
  is the orders of the later syncs, as long as the book still holds them
  (``first_seq``); otherwise, or in another generation, it copies the book whole.

Anything unexpected (no analytics directory, a file another version wrote, a file that
does not open) reads the live table instead, and a file that does not open is rebuilt: the
book is a cache, never the truth.

One process at a time brings the book up to date and copies from it (a lock file beside
it); the others wait, which costs them less than a scan.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import ibis

from siyu.insight import member_changes
from siyu.insight.engine import LIVE, Analytics, id_overlap, sql_text
from siyu.members.service import ChangesMark

BOOK = "order_book"  # the attached file's catalog name
# a ``Book``'s tables, in its order
TABLES = ("orders", "lines", "firsts", "points", "tiers", "members", "changes")
# bump when the book's tables change: an older book is rebuilt (3: firsts, points, changes;
# 4: the tier history's next change; 5: the members)
VERSION = 5
UNMERGE_ROOM = timedelta(hours=2)  # unmerges are found by time, with this much room
CHANGES_KEPT = timedelta(days=35)  # how long the orders a sync read again are listed

# (name, DuckDB type, expression over a live ``orders`` row, as the attached table gives it
# or as the live database's own query returns it: SQLite's values come untyped there)
COLUMNS = (
    ("id", "BIGINT", "id"),
    ("member_id", "BIGINT", "member_id"),
    ("paid_at", "TIMESTAMP", "paid_at"),
    ("net_fen", "BIGINT", "CAST(amount_fen AS BIGINT) - CAST(refunded_fen AS BIGINT)"),
    ("counted", "BOOLEAN", "member_id IS NOT NULL AND status <> 'refunded'"),
)
# the same for a live ``tier_history`` row (the KPIs' tier distribution and moves)
TIER_COLUMNS = (
    ("id", "BIGINT", "id"),
    ("member_id", "BIGINT", "member_id"),
    ("at", "TIMESTAMP", '"at"'),
    ("from_code", "VARCHAR", "from_code"),
    ("to_code", "VARCHAR", "to_code"),
)
# the same for a live ``members`` row (the KPIs' members and cohorts, the refresh's members)
MEMBER_COLUMNS = (
    ("id", "BIGINT", "id"),
    ("joined_at", "TIMESTAMP", "joined_at"),
    ("status", "VARCHAR", "status"),
    ("tier_code", "VARCHAR", "tier_code"),
    ("referrer_id", "BIGINT", "referrer_id"),
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
    clock: on SQLite the work runs in a child process, which has its own), and past what
    share of its members listed in the member changes it reads them whole."""

    path: str | None
    now: datetime
    follow_share: float = member_changes.FOLLOW_SHARE


@dataclass(frozen=True)
class Synced:
    how: str  # built | updated | live (the book was not used)
    orders_read: int
    lines_read: int = 0
    members_read: int = 0  # member rows read from the live database
    # how they were: "followed" (the member changes since the last sync), or why whole
    members_how: str = ""


@dataclass(frozen=True)
class Book:
    """The book's tables for one use: ``orders`` as ``book()`` describes them, ``lines``
    as ``(order_id, line_no, category, counted)``, ``firsts`` as ``(member_id, first_at,
    second_at)``, ``points`` as ``(at, kind, points)`` (the ledger by minute), ``tiers`` as
    ``(id, member_id, at, from_code, to_code, next_at)`` (the tier history, each change with
    when its member's next one came), ``members`` as ``MEMBER_COLUMNS`` and ``changes`` as
    ``(seq, order_id)`` (see the module's docstring);
    ``generation`` is empty when the live tables were read (no book: nothing to follow)."""

    orders: ibis.Table
    lines: ibis.Table
    firsts: ibis.Table
    points: ibis.Table
    tiers: ibis.Table
    members: ibis.Table
    changes: ibis.Table
    synced: Synced
    generation: str = ""
    seq: int = 0  # the last sync's number
    first_seq: int = 1  # the oldest sync whose changes are still listed

    def changed_since(self, generation: str, seq: int) -> bool:
        """Whether ``changes`` holds every order read again after sync ``seq`` of
        ``generation`` (a copy made then can be brought up to date from them)."""
        return bool(self.generation) and generation == self.generation and seq + 1 >= self.first_seq


def _cast(columns: tuple[tuple[str, str, str], ...], prefix: str = "") -> str:
    return ", ".join(f'CAST({expr} AS {kind}) AS "{prefix}{name}"' for name, kind, expr in columns)


def _live(engine: Analytics) -> ibis.Table:
    """The live orders in the book's shape (read whole: the build, and the fallback)."""
    return engine.backend.sql(f"SELECT {_cast(COLUMNS)} FROM {LIVE}.orders")


def _live_members() -> str:
    """The live members in the book's shape (SQL: read whole)."""
    return f"SELECT {_cast(MEMBER_COLUMNS)} FROM {LIVE}.members"


def _live_lines(engine: Analytics) -> ibis.Table:
    """The live order lines in the book's shape (read whole: the build, and the fallback)."""
    return engine.backend.sql(f"SELECT {_cast(LINE_COLUMNS)} FROM {LIVE}.order_lines")


NEXT_AT = 'lead("at") OVER (PARTITION BY member_id ORDER BY "at", id) AS next_at'


def _with_next(history: str) -> str:
    """The tier history rows of ``history`` (SQL) with when each member's next change came
    (by time, then id: two changes at one instant come in the order they were written)."""
    return f"SELECT *, {NEXT_AT} FROM {history}"


def _firsts(orders: str, members: str | None = None) -> str:
    """Each buyer's first and second counted purchase instants over ``orders`` (SQL), of
    ``members`` (a query of member ids) or all: the two earliest times (the same instant
    twice when two purchases share it), one grouping instead of ranking every purchase."""
    only = f" AND member_id IN ({members})" if members else ""
    return (
        "SELECT member_id, earliest[1] AS first_at, earliest[2] AS second_at FROM ("
        f"SELECT member_id, min(paid_at, 2) AS earliest FROM {orders} "
        f"WHERE counted{only} GROUP BY member_id) AS f"
    )


def _points(entries: str) -> str:
    """The points ledger rows of ``entries`` (SQL) summed by minute and kind."""
    return (
        'SELECT CAST(date_trunc(\'minute\', CAST("at" AS TIMESTAMP)) AS TIMESTAMP) AS "at", '
        "CAST(kind AS VARCHAR) AS kind, CAST(sum(CAST(points AS BIGINT)) AS BIGINT) AS points "
        f"FROM {entries} GROUP BY ALL"
    )


def _unbooked(engine: Analytics) -> Book:
    """The live tables in the book's shape: no book (no analytics directory, or it failed)."""
    orders = _live(engine)
    firsts = engine.backend.sql(_firsts(f"({engine.backend.compile(orders)}) AS o"))
    points = engine.backend.sql(_points(f"{LIVE}.points_entries"))
    tiers = engine.backend.sql(
        _with_next(f"(SELECT {_cast(TIER_COLUMNS)} FROM {LIVE}.tier_history) AS h")
    )
    members = engine.backend.sql(_live_members())
    changes = engine.backend.sql("SELECT 0::BIGINT AS seq, 0::BIGINT AS order_id WHERE false")
    return Book(
        orders, _live_lines(engine), firsts, points, tiers, members, changes, Synced("live", 0)
    )


@contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


Marks = tuple[int, int, int, int, int]  # live order, refund, merge, entry, tier history ids


def _marks(engine: Analytics) -> Marks:
    """The live database's highest order, refund, merge, points entry and tier history
    ids now."""
    row = engine.sql(
        "SELECT * FROM "
        + engine.live_query(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM orders) AS orders, "
            "(SELECT COALESCE(MAX(id), 0) FROM refunds) AS refunds, "
            "(SELECT COALESCE(MAX(id), 0) FROM member_merges) AS merges, "
            "(SELECT COALESCE(MAX(id), 0) FROM points_entries) AS entries, "
            "(SELECT COALESCE(MAX(id), 0) FROM tier_history) AS tiers"
        )
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4])


def _build(engine: Analytics, now: datetime, marks: Marks, listed: ChangesMark) -> Synced:
    """``marks`` and ``listed``: the live ids and where the member changes stand, read
    before anything else (what commits after them is read next time)."""
    for table in (*TABLES, "points_seen", "syncs", "meta"):
        engine.sql(f"DROP TABLE IF EXISTS {BOOK}.{table}")
    compiled = engine.backend.compile(_live(engine))
    engine.sql(f"CREATE TABLE {BOOK}.orders AS SELECT * FROM ({compiled}) AS o ORDER BY id")
    # one scan of the lines; a line whose order commits after the scan of the orders waits
    # for it outside the join, and is read again with it (its id is above the watermark)
    compiled = engine.backend.compile(_live_lines(engine))
    engine.sql(f"CREATE TABLE {BOOK}.lines AS SELECT * FROM ({compiled}) AS l")
    engine.sql(f"CREATE TABLE {BOOK}.firsts AS {_firsts(f'{BOOK}.orders')}")
    # the entries a later sync reads again (PostgreSQL) are read once, so the ones
    # counted are exactly the ones noted as seen
    overlap = id_overlap(engine.db)
    engine.sql(
        'CREATE OR REPLACE TEMP TABLE order_book_entries AS SELECT id, "at", kind, points '
        f"FROM {LIVE}.points_entries WHERE id > {marks[3] - overlap} AND id <= {marks[3]}"
    )
    entries = f"(SELECT * FROM {LIVE}.points_entries WHERE id <= {marks[3] - overlap}) AS e"
    engine.sql(
        f"CREATE TABLE {BOOK}.points AS {_points(entries)} "
        f"UNION ALL {_points('order_book_entries')}"
    )
    engine.sql(
        f"CREATE TABLE {BOOK}.points_seen AS SELECT CAST(id AS BIGINT) AS id "
        "FROM order_book_entries"
    )
    compiled = f"SELECT {_cast(TIER_COLUMNS)} FROM {LIVE}.tier_history WHERE id <= {marks[4]}"
    engine.sql(f"CREATE TABLE {BOOK}.tiers AS {_with_next(f'({compiled}) AS h')}")
    engine.sql(f"CREATE TABLE {BOOK}.members AS {_live_members()}")
    engine.sql(f"CREATE TABLE {BOOK}.changes (seq BIGINT, order_id BIGINT)")
    engine.sql(f"CREATE TABLE {BOOK}.syncs (seq BIGINT, synced_at TIMESTAMP)")
    engine.sql(
        f"CREATE TABLE {BOOK}.meta AS SELECT {VERSION} AS version, {marks[0]}::BIGINT AS "
        f"order_id, {marks[1]}::BIGINT AS refund_id, {marks[2]}::BIGINT AS merge_id, "
        f"{marks[3]}::BIGINT AS entry_id, {marks[4]}::BIGINT AS tier_id, "
        f"'{now.replace(tzinfo=None).isoformat()}'::TIMESTAMP AS synced_at, "
        f"'{uuid.uuid4().hex}' AS generation, 0::BIGINT AS seq, 1::BIGINT AS first_seq, "
        f"{sql_text(listed.token)} AS member_token, {listed.upto}::BIGINT AS member_seq"
    )
    return Synced(
        "built",
        int(engine.scalar(f"SELECT count(*) FROM {BOOK}.orders")),
        int(engine.scalar(f"SELECT count(*) FROM {BOOK}.lines")),
        int(engine.scalar(f"SELECT count(*) FROM {BOOK}.members")),
        "whole: the book was built",
    )


def _update(
    engine: Analytics,
    meta: _Meta,
    now: datetime,
    marks: Marks,
    listed: ChangesMark,
    follow_share: float,
) -> Synced:
    order_id, refund_id, merge_id = meta.order_id, meta.refund_id, meta.merge_id
    overlap = id_overlap(engine.db)
    members_read, members_how = _read_members(engine, meta, listed, follow_share)
    entry_id = max(marks[3], meta.entry_id)
    # the points entries above the watermark (and on PostgreSQL the last ids below it,
    # less those already counted)
    engine.sql(
        "CREATE OR REPLACE TEMP TABLE order_book_entries AS SELECT * FROM "
        + engine.live_query(
            "SELECT id, at, kind, points FROM points_entries "
            f"WHERE id > {meta.entry_id - overlap} AND id <= {marks[3]}"
        )
        + f" WHERE CAST(id AS BIGINT) NOT IN (SELECT id FROM {BOOK}.points_seen)"
    )
    since = engine.live_instant(meta.synced_at - UNMERGE_ROOM)
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
    # tier history: new rows, and every row of the members of a merge or unmerge (a
    # merge moves the merged member's history to the survivor)
    tiers = (
        f"SELECT * FROM tier_history WHERE id > {meta.tier_id - overlap} "
        f"OR member_id IN (SELECT from_member_id {merges} UNION SELECT into_member_id {merges})"
    )
    engine.sql(
        f"CREATE OR REPLACE TEMP TABLE order_book_tiers AS SELECT {_cast(TIER_COLUMNS)} "
        f"FROM {engine.live_query(tiers)}"
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
    _drop_unchanged(engine)
    rewritten = int(engine.scalar("SELECT count(*) FROM order_book_changed"))
    seq = meta.seq + 1
    at = f"'{now.replace(tzinfo=None).isoformat()}'::TIMESTAMP"
    engine.sql("BEGIN TRANSACTION")
    try:
        if rewritten:
            changed_ids = "(SELECT id FROM order_book_changed)"
            # the members whose first purchases may move: those the orders had, and have
            engine.sql(
                "CREATE OR REPLACE TEMP TABLE order_book_members AS "
                f"SELECT member_id FROM {BOOK}.orders WHERE id IN {changed_ids} "
                "AND member_id IS NOT NULL UNION "
                "SELECT member_id FROM order_book_changed WHERE member_id IS NOT NULL"
            )
            engine.sql(f"DELETE FROM {BOOK}.orders WHERE id IN {changed_ids}")
            engine.sql(f"INSERT INTO {BOOK}.orders SELECT * FROM order_book_changed")
            engine.sql(f"DELETE FROM {BOOK}.lines WHERE order_id IN {changed_ids}")
            engine.sql(
                f"INSERT INTO {BOOK}.lines SELECT {line_names} FROM order_book_read "
                "WHERE line_order_id IS NOT NULL"
            )
            members = "SELECT member_id FROM order_book_members"
            engine.sql(f"DELETE FROM {BOOK}.firsts WHERE member_id IN ({members})")
            engine.sql(f"INSERT INTO {BOOK}.firsts {_firsts(f'{BOOK}.orders', members)}")
            engine.sql(f"INSERT INTO {BOOK}.changes SELECT {seq}, id FROM order_book_changed")
        _replace_tiers(engine)
        _replace_members(engine, whole=members_how != FOLLOWED)
        # a minute and kind may so have a row per sync that saw entries of it: sum them
        engine.sql(f"INSERT INTO {BOOK}.points {_points('order_book_entries')}")
        if overlap:
            engine.sql(
                f"INSERT INTO {BOOK}.points_seen SELECT CAST(id AS BIGINT) FROM order_book_entries"
            )
            engine.sql(f"DELETE FROM {BOOK}.points_seen WHERE id <= {entry_id - overlap}")
        engine.sql(f"INSERT INTO {BOOK}.syncs VALUES ({seq}, {at})")
        # the changes of syncs older than CHANGES_KEPT go: a copy older than that is
        # made again whole
        stale = (
            f"SELECT max(seq) FROM {BOOK}.syncs WHERE synced_at < "
            f"'{(now - CHANGES_KEPT).replace(tzinfo=None).isoformat()}'::TIMESTAMP"
        )
        first_seq = max(meta.first_seq, int(engine.scalar(stale) or 0) + 1)
        if first_seq > meta.first_seq:
            engine.sql(f"DELETE FROM {BOOK}.changes WHERE seq < {first_seq}")
            engine.sql(f"DELETE FROM {BOOK}.syncs WHERE seq < {first_seq}")
        engine.sql(
            f"UPDATE {BOOK}.meta SET order_id = {max(marks[0], order_id)}, "
            f"refund_id = {max(marks[1], refund_id)}, merge_id = {max(marks[2], merge_id)}, "
            f"entry_id = {entry_id}, tier_id = {max(marks[4], meta.tier_id)}, "
            f"synced_at = {at}, seq = {seq}, first_seq = {first_seq}, "
            f"member_token = {sql_text(listed.token)}, "
            f"member_seq = {listed.upto}"
        )
    except BaseException:
        engine.sql("ROLLBACK")
        raise
    engine.sql("COMMIT")
    return Synced("updated", read, lines, members_read, members_how)


FOLLOWED = "followed"  # ``Synced.members_how`` when the member changes were followed
_LISTED = "order_book_listed"  # the members listed since the last sync


def _read_members(
    engine: Analytics, meta: _Meta, listed: ChangesMark, follow_share: float
) -> tuple[int, str]:
    """Read from the live database (before the sync's transaction) the members whose rows
    the book must replace, into ``order_book_member_rows``: those the member changes list
    for ``members`` since the last sync (``_LISTED``), or every member when it cannot be
    followed or lists more than ``follow_share`` of them. Returns how many rows were read
    and ``FOLLOWED`` or why they were read whole."""
    overlap = id_overlap(engine.db)
    why = member_changes.unfollowable(meta.member_token, meta.member_seq, listed, overlap)
    if why is None:
        after = member_changes.read_after(meta.member_seq, overlap)
        changed, n = member_changes.list_changed(
            engine, _LISTED, after, listed.upto, sources=("members",)
        )
        kept = int(engine.scalar(f"SELECT count(*) FROM {BOOK}.members"))
        if n > follow_share * kept:
            why = f"{n} members changed, of {kept}"
    if why is None:
        query = engine.live_query(
            f"SELECT {', '.join(e for _, _, e in MEMBER_COLUMNS)} FROM members "
            f"WHERE id IN ({changed})"
        )
        source, how = f"{query} AS m", FOLLOWED
    else:
        source, how = f"{LIVE}.members", f"whole: {why}"
    engine.sql(
        "CREATE OR REPLACE TEMP TABLE order_book_member_rows AS "
        f"SELECT {_cast(MEMBER_COLUMNS)} FROM {source}"
    )
    return int(engine.scalar("SELECT count(*) FROM order_book_member_rows")), how


def _replace_members(engine: Analytics, *, whole: bool) -> None:
    """Put the members read (``_read_members``) into the book: in place of the rows of the
    members listed (a listed member no longer found goes), or of every member."""
    if whole:
        engine.sql(f"DELETE FROM {BOOK}.members")
    else:
        engine.sql(f"DELETE FROM {BOOK}.members WHERE id IN (SELECT member_id FROM {_LISTED})")
    engine.sql(f"INSERT INTO {BOOK}.members SELECT * FROM order_book_member_rows")
    engine.sql("DROP TABLE IF EXISTS order_book_member_rows")
    engine.sql(f"DROP TABLE IF EXISTS {_LISTED}")


def _replace_tiers(engine: Analytics) -> None:
    """Replace the tier history rows read again (``order_book_tiers``) and order again the
    histories of their members. A row changes member only in a merge or an unmerge, and
    then every row of both members is read again: the members of the rows read are every
    history that changed."""
    read = "order_book_tiers"
    engine.sql(f"DELETE FROM {BOOK}.tiers WHERE id IN (SELECT id FROM {read})")
    engine.sql(f"INSERT INTO {BOOK}.tiers SELECT *, NULL AS next_at FROM {read}")
    engine.sql(
        f"UPDATE {BOOK}.tiers AS t SET next_at = n.next_at FROM (SELECT id, {NEXT_AT} "
        f"FROM {BOOK}.tiers WHERE member_id IN (SELECT member_id FROM {read})) AS n "
        "WHERE t.id = n.id AND t.next_at IS DISTINCT FROM n.next_at"
    )


def _drop_unchanged(engine: Analytics) -> None:
    """Leave out of the orders read again those the book already holds as they are, with
    the same lines: rewriting them changes nothing, and listing them in ``changes`` makes
    every copy follow them. On PostgreSQL every sync reads the last ``engine.ID_OVERLAP`` ids again
    and nearly all of them are unchanged; a merge reads every order of its survivor.

    The orders first, then the lines of those alone: the lines are the larger table (18
    million at a million members), and on a night with no order read again unchanged (on
    SQLite, most nights: a new order is not in the book, a refunded one has changed)
    comparing the lines of every order read cost two thirds of the check."""
    engine.sql(
        "CREATE OR REPLACE TEMP TABLE order_book_same AS "
        f"SELECT c.id FROM order_book_changed c JOIN {BOOK}.orders b ON b.id = c.id "
        "AND b.member_id IS NOT DISTINCT FROM c.member_id AND b.paid_at = c.paid_at "
        "AND b.net_fen = c.net_fen AND b.counted = c.counted"
    )
    if not engine.scalar("SELECT count(*) FROM order_book_same"):
        return
    same = "(SELECT id FROM order_book_same)"
    book_lines = (
        f"SELECT order_id, line_no, category, counted FROM {BOOK}.lines WHERE order_id IN {same}"
    )
    read_lines = (
        "SELECT line_order_id, line_line_no, line_category, line_counted "
        f"FROM order_book_read WHERE line_order_id IN {same}"
    )
    # a line in one and not the other (EXCEPT compares whole rows, nulls equal)
    engine.sql(
        "DELETE FROM order_book_same WHERE id IN ("
        f"SELECT order_id FROM ({book_lines} EXCEPT {read_lines}) AS gone "
        f"UNION SELECT line_order_id FROM ({read_lines} EXCEPT {book_lines}) AS new)"
    )
    engine.sql(f"DELETE FROM order_book_changed WHERE id IN {same}")
    engine.sql(f"DELETE FROM order_book_read WHERE id IN {same}")


def _same_database(engine: Analytics, order_id: int, entry_id: int, marks: Marks) -> bool:
    """Whether the book still describes this database: the live first order and the order
    at the book's watermark were paid at the same instants in both (when an order was paid
    never changes), and the points ledger reaches the book's entry watermark. A database
    restored from a backup, or emptied and filled again (the tests do), fails this and the
    book is rebuilt."""
    if entry_id and marks[3] < entry_id:
        return False
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


@dataclass(frozen=True)
class _Meta:
    order_id: int
    refund_id: int
    merge_id: int
    entry_id: int
    tier_id: int
    synced_at: datetime
    generation: str
    seq: int
    first_seq: int
    member_token: str
    member_seq: int


def _meta(engine: Analytics, marks: Marks) -> _Meta | None:
    try:
        version = engine.sql(f"SELECT version FROM {BOOK}.meta").fetchone()
        if version is None or version[0] != VERSION:
            return None
        row = engine.sql(
            "SELECT order_id, refund_id, merge_id, entry_id, tier_id, synced_at, generation, "
            f"seq, first_seq, member_token, member_seq FROM {BOOK}.meta"
        ).fetchone()
    except duckdb.Error:  # no meta, or one another version wrote: rebuilt
        return None
    if row is None or not _same_database(engine, int(row[0]), int(row[3]), marks):
        return None
    ids = [int(v) for v in row[:5]]
    return _Meta(*ids, row[5], str(row[6]), int(row[7]), int(row[8]), str(row[9]), int(row[10]))


# the book's tables a night deletes rows of, with the order each is kept in (see ``book``)
_FOLLOWED = {
    "orders": "id",
    "lines": "order_id, line_no",
    "members": "id",
    "firsts": "member_id",
}


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
        yield _unbooked(engine)
        return
    # a night replaces the rows of some of the million members and their first purchases,
    # and of its refunded orders: the dead rows stay until they pile up in one of those
    # tables, which is then written again whole (``engine.leave_deletes``)
    followed = {f"{BOOK}.{t}": key for t, key in _FOLLOWED.items()}
    with _locked(place.path), engine.deletes_left(followed) as compact:
        try:
            _attach(engine, place.path)
            # the live ids first: what commits after them is read at the next sync
            listed = member_changes.changes_mark(engine)
            marks = _marks(engine)
            meta = _meta(engine, marks)
            synced = (
                _build(engine, place.now, marks, listed)
                if meta is None
                else _update(engine, meta, place.now, marks, listed, place.follow_share)
            )
        except (duckdb.Error, OSError):
            engine.sql(f"DETACH DATABASE IF EXISTS {BOOK}")
            yield _unbooked(engine)
            return
        try:
            generation, seq, first_seq = engine.sql(
                f"SELECT generation, seq, first_seq FROM {BOOK}.meta"
            ).fetchone()  # type: ignore[misc]
            yield Book(
                *(engine.backend.table(t, database=BOOK) for t in TABLES),
                synced,
                str(generation),
                int(seq),
                int(first_seq),
            )
        finally:
            compact()
            engine.sql(f"DETACH DATABASE IF EXISTS {BOOK}")
