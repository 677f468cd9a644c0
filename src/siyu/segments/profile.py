"""The member profile: one row per member with every field a condition can name, and the
purchases behaviour conditions read.

Both are Ibis expressions over the live tables (``profile_tables``), so the same
definition serves two sources:

- **profile** (the default): a columnar snapshot in a DuckDB file under
  ``settings.analytics_dir`` (``segments-<digest>/profile-*.duckdb``), rebuilt by the nightly
  ``segments.tags`` job and on demand (``siyu segments refresh``, ``POST
  /segments/profile/refresh``). A count over it scans two narrow columnar tables and
  answers in milliseconds at a million members; every answer carries the snapshot's
  ``data_as_of`` so nobody mistakes it for this second's truth.
- **live**: the same expressions over the live database read by DuckDB's scanner
  (``siyu.insight.engine``): up to date, and slower (the row store is read whole, at each
  query on PostgreSQL, once per use into a temporary file on SQLite).

Why a snapshot: reading SQLite through the scanner costs seconds per million members for
every count, and a console that counts on every click needs well under a second.
Contact data (phone, name) never goes into the snapshot: samples read it from the live
database for the few members shown.

The snapshot's purchases come from the order book (``insight.orderbook``: every order and
line in a DuckDB file, brought up to date from the live database's indexes), not from the
live ``orders`` and ``order_lines``: the same rows (``book_purchases``), without reading
ten million orders and their lines out of the live database every night.

Where DuckDB reads the live database: through ``insight.isolation``, in a child process on
SQLite (DuckDB's own SQLite library must not open the live file in the application's
process: it does not see the application's locks, and a later reader in a child then
finds the shared-memory index in disorder, "locking protocol", or the application dies of
SIGBUS), in this process on PostgreSQL. So on SQLite the snapshot's tables, the rule-tag
step's reads and the live source's tables are all computed in the child, into a DuckDB
file that this process then opens alone.

Each build is a new file, made current by switching a pointer atomically; readers keep a
read-only connection per file (``ProfileReader``), so a refresh never blocks a count and
a count never sees half a refresh.

The purchases follow the order book instead of being written whole every night: sorting
some eighteen million lines is most of a build's cost, and a night changes a few tens of
thousands of orders. A snapshot notes the book's ``generation`` and ``seq`` it reflects
(``profile_info``); the next build starts as a copy of that file (the file is closed and
checkpointed once published, and readers only read it), deletes the purchases of the
orders the book read again since (``orderbook.Book.changes``), inserts their purchases as
the book has them now, and writes the profile whole as before. The purchases are written
whole instead when the previous snapshot cannot be followed (none, an older format,
another generation of the book, its changes pruned) and, to restore the sort order and
give back the file's space, when the rows inserted since the last whole write pass
``REWRITE_SHARE`` of the rows written then, or the file has grown past ``REWRITE_GROWTH``
times its size after that write (``_whole_because``, ``_unfollowable``).

The profile follows the member changes the same way (``members.models.MemberChange``: the
database's triggers list every member whose own rows are written). A snapshot notes the
list's token and the last change it reflects; the next build keeps the copied profile,
deletes the rows of the members listed since and computes them again by
``profile_tables`` over those members' rows alone, read through the live database's
indexes (``_follow_profile``): a night's changed members instead of reading, joining and
writing a million. The members listed for ``member_insight`` writes alone (most of a
night's list: the refresh's) keep their rows and take the insight columns again. The
profile is written whole with the purchases, when a small table it names changed (a
store's or guide's code, a rule's name: ``REFERENCE_TABLES``), when more than
``FOLLOW_SHARE`` of its members changed, or when the list cannot be followed
(``member_changes.unfollowable``). After the rule tags are written, only the tags of the
members listed since are read again (``_retag``). Once published, a build prunes the
changes it has read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import ibis
from ibis.backends import BaseBackend

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.errors import NotFound
from siyu.insight import member_changes, orderbook
from siyu.insight.engine import (
    LIVE,
    Analytics,
    analytics_file,
    analytics_name,
    attach_live,
    compact,
    id_overlap,
    leave_deletes,
    sql_text,
)
from siyu.insight.isolation import run_isolated
from siyu.insight.rfm import SCALE_SCHEMA, latest_scale, on_scale
from siyu.members import service as member_service
from siyu.segments.rules import IDENTITY_CHANNELS

# the snapshots' format: the pointer is named for it, so a build of another format is
# neither read nor followed, and after an upgrade the first read builds one afresh.
# 2: the RFM scores and group derived from the figures and the refresh's scale
FORMAT = 2
POINTER = f"CURRENT-{FORMAT}"  # names the snapshot file in force
# the purchases are written whole again (sorted, and the file rewritten without what was
# deleted) once the rows inserted since the last whole write pass this share of the rows
# written then, or the file has grown to this many times its size after that write; see
# ``_whole_because``
REWRITE_SHARE = 0.1
REWRITE_GROWTH = 1.5
TableOf = Callable[[str], ibis.Table]

# The profile's columns: (name, Ibis type). ``segments.rules.FIELDS`` names these.
PROFILE_SCHEMA = ibis.schema(
    {
        "member_id": "int64",
        "gender": "string",
        "birthday": "date",
        "birthday_month": "int64",
        "child_birthday": "date",
        "joined_at": "timestamp",
        "join_channel": "string",
        "store": "string",
        "guide": "string",
        "scene": "string",
        "status": "string",
        "consent_sms": "boolean",
        "consent_wechat": "boolean",
        "consent_email": "boolean",
        "tier": "string",
        "points_balance": "int64",
        "growth_balance": "int64",
        "paid_plan": "string",
        "paid_state": "string",
        "paid_until": "timestamp",
        "order_count": "int64",
        "spend_fen": "int64",
        "refund_fen": "int64",
        "avg_order_fen": "int64",
        "first_order_at": "timestamp",
        "last_order_at": "timestamp",
        "stage": "string",
        "rfm_group": "string",
        "r_score": "int64",
        "f_score": "int64",
        "m_score": "int64",
        "super_user": "boolean",
        "p_alive": "float64",
        "expected_purchases_90": "float64",
        "expected_purchases_365": "float64",
        "clv_fen": "int64",
        "channel_mask": "int64",
        "tags": "array<string>",
    }
)
# The RFM scores and group are not stored in the snapshot: it keeps the figures they come
# from (``rfm_*``, the member's ``member_insight`` row) and the refresh's scale
# (``rfm_scale``, one row), and the profile derives them when read (``with_rfm``), as the
# API does: a night's new scale moves many members' scores while their rows stand still.
RFM_DERIVED = ("rfm_group", "r_score", "f_score", "m_score")
ROWS_SCHEMA = ibis.schema(
    {
        **{n: t for n, t in PROFILE_SCHEMA.items() if n not in RFM_DERIVED},
        "rfm_last_order_at": "timestamp",
        "rfm_frequency": "int64",
        "rfm_monetary_fen": "int64",
    }
)
PURCHASES_SCHEMA = ibis.schema(
    {"member_id": "int64", "order_id": "int64", "paid_at": "timestamp", "category": "string"}
)


@dataclass(frozen=True)
class Sources:
    """The two tables a compiled tree reads."""

    profile: ibis.Table
    purchases: ibis.Table


def with_rfm(rows: ibis.Table, scale: ibis.Table) -> ibis.Table:
    """The profile (``PROFILE_SCHEMA``) out of its stored rows (``ROWS_SCHEMA``) and the
    one row of an RFM scale: each member's scores and group derived from their figures."""
    joined = rows.cross_join(scale)
    derived = on_scale(
        scale,
        last_order_at=joined.rfm_last_order_at,
        frequency=joined.rfm_frequency,
        monetary=joined.rfm_monetary_fen,
    )
    return joined.select(
        *[derived[name] if name in derived else joined[name] for name in PROFILE_SCHEMA.names]
    )


def unbound() -> Sources:
    """The snapshot's tables by name and schema, for compiling SQL without a connection."""
    return Sources(
        profile=with_rfm(
            ibis.table(ROWS_SCHEMA, name="profile"), ibis.table(SCALE_SCHEMA, name="rfm_scale")
        ),
        purchases=ibis.table(PURCHASES_SCHEMA, name="purchases"),
    )


def _ts(column: ibis.Value) -> ibis.Value:
    """Instants as naive UTC timestamps (SQLite hands them back naive, PostgreSQL aware)."""
    return column.cast("timestamp")


def tags_expr(t: TableOf) -> ibis.Table:
    """Every member's tags: manual and QR-scene tags, and rule tags by their rule's name."""
    manual = t("member_tags")
    ruled = t("member_rule_tags")
    names = t("tag_rules")
    # (cast: the union needs one nullability on both sides)
    both = manual.select(
        member_id=manual.member_id.cast("int64"), tag=manual.tag.cast("string")
    ).union(
        ruled.join(names, ruled.tag_rule_id == names.id).select(
            member_id=ruled.member_id.cast("int64"), tag=names.name.cast("string")
        )
    )
    return both.group_by("member_id").aggregate(tags=both.tag.collect())


# The live tables keyed by a member that the profile reads (the ones the member changes
# watch: migration ``0021_member_changes``) and the columns it reads of each
# (``profile_tables`` selects them first, so it can read no other): a build that follows
# the member changes reads only these of the changed members' rows (``_follow_profile``).
# ``members`` names its member by ``id``, the others by ``member_id``.
MEMBER_COLUMNS = {
    "members": (
        "id",
        "gender",
        "birthday",
        "child_birthday",
        "joined_at",
        "join_channel",
        "store_id",
        "guide_id",
        "scene_code",
        "status",
        "consent_sms",
        "consent_wechat",
        "consent_email",
        "tier_code",
        "points_balance",
        "growth_balance",
    ),
    "member_metrics": (
        "member_id",
        "first_order_at",
        "last_order_at",
        "order_count",
        "spend_fen",
        "refund_fen",
    ),
    "member_insight": (
        "member_id",
        "stage",
        "last_order_at",
        "frequency",
        "monetary_fen",
        "super_user",
        "p_alive",
        "expected_purchases_90",
        "expected_purchases_365",
        "expected_value_fen",
    ),
    "paid_subscriptions": ("id", "member_id", "plan_code", "state", "current_period_end"),
    "member_identities": ("member_id", "channel"),
    "member_tags": ("member_id", "tag"),
    "member_rule_tags": ("member_id", "tag_rule_id"),
}


def insight_columns(insight: ibis.Table) -> dict[str, ibis.Value]:
    """The profile's columns out of a member's ``member_insight`` row (null when there is
    none): the whole profile and a night's insight-only members (``_follow_profile``)
    both take them from here."""
    return {
        "stage": insight.stage,
        "rfm_last_order_at": _ts(insight.last_order_at),
        "rfm_frequency": insight.frequency.cast("int64"),
        "rfm_monetary_fen": insight.monetary_fen.cast("int64"),
        "super_user": insight.super_user.cast("boolean").fill_null(False),
        "p_alive": insight.p_alive.cast("float64"),
        "expected_purchases_90": insight.expected_purchases_90.cast("float64"),
        "expected_purchases_365": insight.expected_purchases_365.cast("float64"),
        "clv_fen": insight.expected_value_fen.cast("int64"),
    }


def profile_tables(t: TableOf) -> Sources:
    """The profile's stored rows (``ROWS_SCHEMA``: ``with_rfm`` derives the rest) and the
    purchases as expressions over the live tables ``t(name)``."""

    def own(name: str) -> ibis.Table:
        return t(name).select(*MEMBER_COLUMNS[name])

    members = own("members")
    members = members.filter(members.status.isin(["active", "frozen"]))
    metrics = own("member_metrics")
    insight = own("member_insight")
    stores = t("stores").select(store_pk="id", store="code")
    staff = t("staff").select(staff_pk="id", guide="code")

    subs = own("paid_subscriptions")
    last = subs.group_by("member_id").aggregate(sub_id=subs.id.max())
    paid = last.join(subs, last.sub_id == subs.id).select(
        paid_member_id=last.member_id,
        paid_plan=subs.plan_code,
        paid_state=subs.state,
        paid_until=_ts(subs.current_period_end),
    )
    # channel identities as bits (``rules.IDENTITY_CHANNELS`` order): a bit test is an
    # order of magnitude cheaper than looking into a list, and there are seven channels
    identities = own("member_identities")
    bit = identities.channel.cases(
        *[(name, 1 << i) for i, name in enumerate(IDENTITY_CHANNELS)], else_=0
    ).cast("int64")
    channels = identities.group_by("member_id").aggregate(channel_mask=bit.bit_or())
    tags = tags_expr(lambda name: own(name) if name in MEMBER_COLUMNS else t(name))

    joined = (
        members.left_join(metrics, members.id == metrics.member_id)
        .left_join(insight, members.id == insight.member_id)
        .left_join(stores, members.store_id == stores.store_pk)
        .left_join(staff, members.guide_id == staff.staff_pk)
        .left_join(paid, members.id == paid.paid_member_id)
        .left_join(channels, members.id == channels.member_id)
        .left_join(tags, members.id == tags.member_id)
    )
    order_count = metrics.order_count.fill_null(0)
    spend = metrics.spend_fen.fill_null(0)
    profile = joined.select(
        member_id=members.id,
        gender=members.gender,
        birthday=members.birthday,
        birthday_month=members.birthday.month().cast("int64"),
        child_birthday=members.child_birthday,
        joined_at=_ts(members.joined_at),
        join_channel=members.join_channel,
        store=stores.store,
        guide=staff.guide,
        scene=members.scene_code,
        status=members.status,
        consent_sms=members.consent_sms.cast("boolean"),
        consent_wechat=members.consent_wechat.cast("boolean"),
        consent_email=members.consent_email.cast("boolean"),
        tier=members.tier_code,
        points_balance=members.points_balance.cast("int64"),
        growth_balance=members.growth_balance.cast("int64"),
        paid_plan=paid.paid_plan,
        paid_state=paid.paid_state,
        paid_until=paid.paid_until,
        order_count=order_count.cast("int64"),
        spend_fen=spend.cast("int64"),
        refund_fen=metrics.refund_fen.fill_null(0).cast("int64"),
        avg_order_fen=ibis.ifelse(order_count > 0, spend // order_count, ibis.null()).cast("int64"),
        first_order_at=_ts(metrics.first_order_at),
        last_order_at=_ts(metrics.last_order_at),
        **insight_columns(insight),
        channel_mask=channels.channel_mask.fill_null(0),
        tags=tags.tags,
    )

    orders = t("orders")
    lines = t("order_lines")
    purchases = (
        lines.join(orders, lines.order_id == orders.id)
        .filter(orders.member_id.notnull(), lines.refunded_quantity < lines.quantity)
        .select(
            member_id=orders.member_id,
            order_id=orders.id,
            paid_at=_ts(orders.paid_at),
            category=lines.category,
        )
    )
    return Sources(profile=profile, purchases=purchases)


def book_purchases(orders: ibis.Table, lines: ibis.Table) -> ibis.Table:
    """The purchases of ``profile_tables`` out of the order book's orders and lines
    (``orderbook.book``): a member's order lines not refunded in full."""
    return (
        lines.join(orders, lines.order_id == orders.id)
        .filter(orders.member_id.notnull(), lines.counted)
        .select(
            member_id=orders.member_id,
            order_id=orders.id,
            paid_at=_ts(orders.paid_at),
            category=lines.category,
        )
    )


# --- connections -------------------------------------------------------------------------------


def connect(database: str = ":memory:", *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(database, read_only=read_only)
    con.execute("SET TimeZone = 'UTC'")
    return con


LIVE_TABLES = (
    "members",
    "member_metrics",
    "member_insight",
    "stores",
    "staff",
    "paid_subscriptions",
    "member_identities",
    "member_tags",
    "member_rule_tags",
    "tag_rules",
    "orders",
    "order_lines",
    "rfm_scales",
)
_live_schemas: dict[str, dict[str, ibis.Schema]] = {}
_live_lock = threading.Lock()


def _url(db: Database) -> str:
    return db.engine.url.render_as_string(hide_password=False)


def live_tables(db: Database, backend: BaseBackend) -> TableOf:
    """The live tables (attached as ``live``) as Ibis tables. Their schemas are read once
    per process and database (each read is a round trip through the scanner); the
    tables compile to ``live.<name>`` for any connection that has the live database
    attached."""
    key = _url(db)
    with _live_lock:
        schemas = _live_schemas.get(key)
        if schemas is None:
            schemas = {n: backend.table(n, database=LIVE).schema() for n in LIVE_TABLES}
            _live_schemas[key] = schemas
    return lambda name: ibis.table(schemas[name], name=name, database=LIVE)


_live: dict[str, tuple[duckdb.DuckDBPyConnection, Sources]] = {}


@contextmanager
def live_backend(db: Database) -> Iterator[tuple[duckdb.DuckDBPyConnection, Sources]]:
    """A cursor on a DuckDB with the live profile and purchases, read at this use.

    PostgreSQL: the live database attached, and the expressions over it (the connection,
    attaching costs a quarter of a second, and the expressions are made once per process
    and database); the scanner reads the live tables at each query. SQLite: DuckDB must not
    open the live file in the application's process (``insight.engine``), so the same
    expressions are computed in the analytics child into a temporary DuckDB file, read
    here while the block lasts: one read of the live tables per use, as a query over them
    would cost."""
    if db.dialect == "sqlite":
        with tempfile.TemporaryDirectory(prefix="siyu-live-profile-") as folder:
            path = str(Path(folder) / "live.duckdb")
            run_isolated(db, _in_snapshot, path, _write_live)
            con = connect(path, read_only=True)
            try:
                yield con, unbound()
            finally:
                con.close()
        return
    key = _url(db)
    with _live_lock:
        held = _live.get(key)
    if held is None:
        con = connect()
        attach_live(con, key)
        tables = live_tables(db, ibis.duckdb.from_connection(con))
        rows = profile_tables(tables)
        sources = replace(rows, profile=with_rfm(rows.profile, latest_scale(tables("rfm_scales"))))
        held = (con, sources)
        with _live_lock:
            held = _live.setdefault(key, held)
    cursor = held[0].cursor()
    try:
        yield cursor, held[1]
    finally:
        cursor.close()


@dataclass(frozen=True)
class Lineage:
    """Where a snapshot stands (its ``profile_info``). Its purchases against the order
    book: the book's ``generation`` and ``seq`` they reflect, the rows written at the last
    whole write (``whole_rows``), the rows inserted since (``inserted``: 0 after a whole
    write), and the file's size after the last whole write (``whole_bytes``: 0 until known,
    since a file's size is final only once it is published; the build that follows it
    notes it). Its profile against the member changes (``members.models.MemberChange``):
    the list's ``member_token`` and the last change id it reflects (``member_seq``)."""

    generation: str
    seq: int
    whole_rows: int
    inserted: int
    whole_bytes: int
    member_token: str = ""
    member_seq: int = 0


@dataclass(frozen=True)
class Previous:
    """The snapshot in force when a build starts, which the build may follow."""

    path: str
    size: int
    lineage: Lineage


@dataclass(frozen=True)
class Written:
    """How a build wrote its purchases: ``followed`` the order book from the previous
    snapshot (``deleted`` and ``inserted`` rows) or ``whole`` (``reason``); how it wrote
    the profile: the rows of ``profile_members`` changed members rewritten in the previous
    snapshot's profile, or whole when that is None (``profile_reason``); and the lineage
    the new snapshot notes."""

    how: str
    reason: str
    deleted: int
    inserted: int
    lineage: Lineage
    profile_members: int | None = None
    profile_reason: str = ""
    profile_insight_alone: int = 0  # of ``profile_members``: changed in member_insight alone

    def summary(self) -> str:
        """How the purchases were written."""
        if self.how == FOLLOWED:
            return f"followed the order book: -{self.deleted} +{self.inserted} rows"
        return f"whole: {self.reason}"

    def profile_summary(self) -> str:
        """How the profile was written."""
        if self.profile_members is not None:
            return (
                f"followed the member changes: {self.profile_members} members "
                f"({self.profile_insight_alone} in their insight alone)"
            )
        return f"whole: {self.profile_reason}"


FOLLOWED = "followed"
WHOLE = "whole"


@dataclass(frozen=True)
class ProfileInfo:
    path: Path
    data_as_of: datetime
    built_at: datetime
    seconds: float
    members: int
    purchases: int
    written: Written | None = None  # how the build wrote the purchases (from ``publish``)


def profile_dir(db: Database, analytics_dir: str | Path) -> Path:
    """This database's snapshots: a folder of its own in the analytics directory
    (``segments-<digest of the database URL>``), so two databases that share an analytics
    directory never read each other's profile."""
    return Path(analytics_dir) / analytics_name(db, "segments")


def current_path(db: Database, analytics_dir: str | Path) -> Path | None:
    """The snapshot in force: the file ``CURRENT`` names, or None before the first build.

    Every build is a file of its own (``profile-<time>-<id>.duckdb``) and ``CURRENT`` is
    switched atomically: a reader that opened the previous file keeps reading it, and
    DuckDB's per-path instance cache never hands back the old file's data."""
    directory = profile_dir(db, analytics_dir)
    try:
        name = (directory / POINTER).read_text("utf-8").strip()
    except FileNotFoundError:
        return None
    return directory / name


def previous_snapshot(db: Database, analytics_dir: str | Path) -> Previous | None:
    """The snapshot in force and its lineage, for a build to follow; None when there is
    none, or it is of an older format (no lineage) or does not open."""
    path = current_path(db, analytics_dir)
    if path is None or path.with_name(path.name + ".wal").exists():  # (publish checkpoints)
        return None
    try:
        size = path.stat().st_size
        con = connect(str(path), read_only=True)
        try:
            row = con.execute(
                "SELECT generation, seq, whole_rows, inserted, whole_bytes, member_token, "
                "member_seq FROM profile_info"
            ).fetchone()
        finally:
            con.close()
    except (duckdb.Error, OSError):
        return None
    if row is None:
        return None
    # 0 when its purchases were written whole: then its own size is that write's
    whole_bytes = int(row[4]) or size
    lineage = Lineage(
        str(row[0]), int(row[1]), int(row[2]), int(row[3]), whole_bytes, str(row[5]), int(row[6])
    )
    return Previous(str(path), size, lineage)


def _info(con: duckdb.DuckDBPyConnection, path: Path) -> ProfileInfo:
    row = con.execute(
        "SELECT data_as_of, built_at, seconds, members, purchases FROM profile_info"
    ).fetchone()
    assert row is not None
    return ProfileInfo(
        path=path,
        data_as_of=clock.as_utc(row[0]),
        built_at=clock.as_utc(row[1]),
        seconds=float(row[2]),
        members=int(row[3]),
        purchases=int(row[4]),
    )


SNAPSHOT = "snapshot"  # the snapshot being built, in work over the live database

SnapshotWork = Callable[..., Any]  # work(engine, *args) with the snapshot attached as SNAPSHOT


def _in_snapshot(engine: Analytics, path: str, work: SnapshotWork, *args: Any) -> Any:
    """``work(engine, *args)`` with the snapshot file attached as ``snapshot`` (and the
    default catalog, so the snapshot's tables are found by their plain names); the file is
    closed before it returns, for the process that opens it next."""
    with engine.deletes_left({}):  # its checkpoints leave deleted rows: see ``Build.con``
        engine.sql(f"ATTACH {sql_text(path)} AS {SNAPSHOT}")
        try:
            engine.sql(f"USE {SNAPSHOT}")
            return work(engine, *args)
        finally:
            engine.sql("USE memory")
            engine.sql(f"DETACH DATABASE IF EXISTS {SNAPSHOT}")


def _write_tables(
    engine: Analytics,
    path: str,
    book: orderbook.Place,
    previous: Previous | None,
    whole: str | None,
    follow_share: float,
) -> Written:
    """The new snapshot at ``path``: the purchases from the order book (brought up to date
    as of ``book.now``), following the ``previous`` snapshot's when they can (the file
    starts as its copy) unless ``whole`` says why not (``_whole_because``), then the
    profile: the previous one with the rows of the members changed since rewritten, when
    it can be followed up to where the member changes stand now (``member_changes.unfollowable``,
    ``_follow_profile``), else whole from the live tables. Runs as isolated work."""
    mark = member_changes.changes_mark(engine)  # before anything is read
    with orderbook.book(engine, book) as held:
        if previous is not None and whole is None:
            whole = _unfollowable(previous, held)
        if previous is not None and whole is None:
            try:
                shutil.copyfile(previous.path, path)
            except OSError:  # removed meanwhile (two builds published at once)
                Path(path).unlink(missing_ok=True)
                whole = "the previous snapshot's file is gone"
        if previous is not None and whole is None:
            written = _in_snapshot(engine, path, _follow_purchases, held, previous)
        else:
            written = _in_snapshot(engine, path, _whole_purchases, held, whole or "")
    written = replace(
        written, lineage=replace(written.lineage, member_token=mark.token, member_seq=mark.upto)
    )
    if previous is None or written.how != FOLLOWED:
        reason: str | int = "the purchases were written whole"
    else:
        overlap = id_overlap(engine.db)
        lineage = previous.lineage
        reason = member_changes.unfollowable(
            lineage.member_token, lineage.member_seq, mark, overlap
        ) or _in_snapshot(
            engine,
            path,
            _follow_profile,
            _read_after(lineage, overlap),
            mark.upto,
            follow_share,
        )
    if not isinstance(reason, str):
        return replace(written, profile_members=reason[0], profile_insight_alone=reason[1])
    _in_snapshot(engine, path, _write_profile)
    return replace(written, profile_reason=reason)


def _read_after(lineage: Lineage, overlap: int) -> int:
    """The member changes the next build reads are those with ids above this."""
    return member_changes.read_after(lineage.member_seq, overlap)


# the small tables whose names the profile spells (a store's code, a rule's name), with
# the columns it reads: a snapshot keeps a copy, and any difference rewrites the profile
REFERENCE_TABLES = {"stores": ("id", "code"), "staff": ("id", "code"), "tag_rules": ("id", "name")}
# a night that changed more than this share of the profile's members writes it whole:
# rewriting a row in place costs more than writing it
FOLLOW_SHARE = member_changes.FOLLOW_SHARE
_CHANGED = "profile_changed_members"
_REWRITTEN = "profile_rewritten_members"  # listed for a table other than member_insight
_ALONE = "profile_insight_alone"  # the others' insight columns


def _reference(name: str) -> str:
    """The columns of a small live table the profile names, as its snapshot copy has them."""
    key, named = REFERENCE_TABLES[name]
    return (
        f"SELECT CAST({key} AS BIGINT) AS {key}, CAST({named} AS VARCHAR) AS {named} "
        f"FROM {LIVE}.{name}"
    )


def _too_many(engine: Analytics, members: int, follow_share: float) -> str | None:
    """Why ``members`` rows are too many to rewrite in place in the snapshot's profile (more
    than ``follow_share`` of its rows: ``FOLLOW_SHARE``, handed over by the process that
    started the work), or None."""
    rows = int(engine.scalar(f"SELECT count(*) FROM {SNAPSHOT}.profile"))
    return f"{members} members changed, of {rows}" if members > follow_share * rows else None


def _follow_profile(
    engine: Analytics, low: int, upto: int, follow_share: float
) -> tuple[int, int] | str:
    """In a copy of the previous snapshot: the profile rows of the members listed in
    ``member_changes`` with ids in (``low``, ``upto``] brought up to date, by the same
    expressions as a whole write (``profile_tables``) over those members' rows only, read
    through the live database's indexes. Returns the members listed and how many of them
    changed in ``member_insight`` alone, or why the profile must be written whole instead
    (a small table it names changed, or too many members: ``_too_many``).

    At a million members a night lists some 42,000: 28,000 changed elsewhere (the day's
    buyers and new members), and 14,500 whose ``member_insight`` row alone the refresh
    rewrote (a stage that moved with time, a purchase leaving the RFM window; the RFM
    scores are not stored, see ``with_rfm``). The latter keep every other column and take
    the insight columns again (``insight_columns``): one table read for them instead of
    seven, and an update of nine columns instead of a row deleted and inserted. The
    members changed anywhere else are deleted and computed again whole."""
    for name in REFERENCE_TABLES:
        differ = engine.scalar(
            f"SELECT count(*) FROM ((SELECT * FROM {SNAPSHOT}.profile_{name} EXCEPT "
            f"{_reference(name)}) UNION ALL ({_reference(name)} EXCEPT "
            f"SELECT * FROM {SNAPSHOT}.profile_{name}))"
        )
        if differ:
            return f"{name} changed"
    try:
        changed, members = member_changes.list_changed(engine, _CHANGED, low, upto)
        too_many = _too_many(engine, members, follow_share)
        if too_many:
            return too_many
        rewritten, _ = member_changes.list_changed(
            engine, _REWRITTEN, low, upto, but=("member_insight",)
        )
        reads = {name: rewritten for name in MEMBER_COLUMNS}
        reads["member_insight"] = changed  # every listed member's: see below
        table = _rows_of(engine, reads)
        profile = ibis.to_sql(profile_tables(table).profile, dialect="duckdb")
        engine.sql(
            f"DELETE FROM {SNAPSHOT}.profile "
            f"WHERE member_id IN (SELECT member_id FROM {_REWRITTEN})"
        )
        engine.sql(f"INSERT INTO {SNAPSHOT}.profile BY NAME {profile}")
        # the members listed for member_insight alone: their insight columns again
        listed, again = (
            ibis.table({"member_id": "int64"}, name=name, database="temp")
            for name in (_CHANGED, _REWRITTEN)
        )
        alone = listed.anti_join(again, "member_id")
        insight = table("member_insight")
        columns = insight_columns(insight)
        rows = alone.left_join(insight, alone.member_id == insight.member_id).select(
            alone.member_id, **columns
        )
        engine.sql(
            f"CREATE OR REPLACE TEMP TABLE {_ALONE} AS {ibis.to_sql(rows, dialect='duckdb')}"
        )
        insight_alone = int(engine.scalar(f"SELECT count(*) FROM {_ALONE}"))
        if insight_alone:
            assign = ", ".join(f'"{c}" = n."{c}"' for c in columns)
            engine.sql(
                f"UPDATE {SNAPSHOT}.profile AS p SET {assign} FROM {_ALONE} AS n "
                "WHERE p.member_id = n.member_id"
            )
        _write_scale(engine)  # here, not on its own: each attachment ends in a checkpoint
        return members, insight_alone
    finally:
        for name in (_CHANGED, _REWRITTEN, _ALONE):
            engine.sql(f"DROP TABLE IF EXISTS temp.{name}")
        _drop_rows_of(engine)


def _rows_of(engine: Analytics, reads: dict[str, str]) -> TableOf:
    """The live tables named in ``reads`` (keyed by a member) cut down to the members its
    query lists (in the live database's own SQL) and to ``MEMBER_COLUMNS``, as temporary
    tables; every other table live. Dropped by ``_drop_rows_of``."""
    live = live_tables(engine.db, engine.backend)
    for name, changed in reads.items():
        read = MEMBER_COLUMNS[name]
        columns, key = ", ".join(read), "id" if name == "members" else "member_id"
        # typed as the attached table reads them; filled from the live database's own
        # query, so its indexes find the changed members
        engine.sql(
            f"CREATE OR REPLACE TEMP TABLE profile_of_{name} AS "
            f"SELECT {columns} FROM {LIVE}.{name} LIMIT 0"
        )
        theirs = engine.live_query(f"SELECT {columns} FROM {name} WHERE {key} IN ({changed})")
        engine.sql(f"INSERT INTO temp.profile_of_{name} BY NAME SELECT * FROM {theirs}")

    def table(name: str) -> ibis.Table:
        if name in reads:
            schema = live(name).select(*MEMBER_COLUMNS[name]).schema()
            return ibis.table(schema, name=f"profile_of_{name}", database="temp")
        return live(name)

    return table


def _drop_rows_of(engine: Analytics) -> None:
    for name in MEMBER_COLUMNS:
        engine.sql(f"DROP TABLE IF EXISTS temp.profile_of_{name}")


def _whole_because(previous: Previous | None) -> str | None:
    """Why the purchases are written whole whatever the book says, or None: no snapshot
    to follow, or upkeep.

    Rows inserted by following land after the sorted rows in small runs of their own,
    each spanning every category, so a behaviour condition reads them all besides its own
    category's rows; and the rows they replace stay in the file until it is rewritten.
    Measured at a million members and eighteen million lines, a night inserts some 50,000
    rows (0.3%) and the file grows by some 0.6 MB a night on 140 MB (the rows deleted
    are few); a one-category count read 40 ms after a week of
    following against 33 ms on the file written whole. At a tenth of the rows (a whole
    write about once a month, as the book's changes are kept) the extra reading stays in
    the tens of milliseconds, and the whole write (some 15 s there) comes once a month
    instead of every night. The size test is a guard against a file that fills with
    what deletes leave behind (a day of mass refunds or merges)."""
    if previous is None:
        return "no previous snapshot in this format"
    lineage = previous.lineage
    if lineage.inserted > REWRITE_SHARE * lineage.whole_rows:
        return (
            f"{lineage.inserted} rows inserted since the last whole write, of {lineage.whole_rows}"
        )
    if lineage.whole_bytes and previous.size > REWRITE_GROWTH * lineage.whole_bytes:
        return f"the file grew to {previous.size} bytes from {lineage.whole_bytes}"
    return None


def _unfollowable(previous: Previous, held: orderbook.Book) -> str | None:
    """Why the book cannot bring ``previous``'s purchases up to date, or None: following
    is exact whenever the book's changes reach back to the sync the snapshot reflects."""
    lineage = previous.lineage
    if not held.generation:
        return "no order book (the live tables were read)"
    if not held.changed_since(lineage.generation, lineage.seq) or lineage.seq > held.seq:
        return "the order book was rebuilt, or its changes since the last snapshot are pruned"
    return None


def _whole_purchases(engine: Analytics, held: orderbook.Book, reason: str) -> Written:
    """Every purchase out of the book, sorted: into a new file."""
    purchases = engine.backend.compile(book_purchases(held.orders, held.lines))
    # sorted by category then time: a behaviour condition reads one category's recent
    # row groups only (DuckDB skips the others by their min/max)
    engine.sql(
        f"CREATE TABLE {SNAPSHOT}.purchases AS SELECT * FROM ({purchases}) AS p "
        "ORDER BY category, paid_at"
    )
    rows = int(engine.scalar(f"SELECT count(*) FROM {SNAPSHOT}.purchases"))
    return Written(WHOLE, reason, 0, rows, Lineage(held.generation, held.seq, rows, 0, 0))


def _follow_purchases(engine: Analytics, held: orderbook.Book, previous: Previous) -> Written:
    """In a copy of the previous snapshot: the purchases of the orders the book read again
    since it replaced by their purchases now; everything but the purchases dropped (the
    profile and the rest are written again)."""
    kept = ["purchases", "profile", *(f"profile_{name}" for name in REFERENCE_TABLES)]
    # the names spelled in the SQL: a Python list as a parameter makes DuckDB's Python
    # side import pandas, a quarter of a second in a child that had not yet
    tables = engine.sql(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
        f"AND table_name NOT IN ({', '.join(sql_text(name) for name in kept)})",
        [SNAPSHOT],
    ).fetchall()
    for (table,) in tables:
        engine.sql(f'DROP TABLE {SNAPSHOT}."{table}"')
    lineage = previous.lineage
    changes = held.changes
    since = changes.filter(changes.seq > lineage.seq).order_id
    changed = engine.backend.compile(since.name("order_id").as_table().distinct())
    engine.sql(f"CREATE OR REPLACE TEMP TABLE profile_changed AS {changed}")
    try:
        deleted = engine.scalar(
            f"DELETE FROM {SNAPSHOT}.purchases "
            "WHERE order_id IN (SELECT order_id FROM profile_changed)"
        )
        orders, lines = held.orders, held.lines
        purchases = engine.backend.compile(
            book_purchases(
                orders.filter(orders.id.isin(since)), lines.filter(lines.order_id.isin(since))
            )
        )
        # sorted among themselves: they follow the sorted rows (see ``_whole_because``)
        inserted = engine.scalar(
            f"INSERT INTO {SNAPSHOT}.purchases BY NAME SELECT * FROM ({purchases}) AS p "
            "ORDER BY category, paid_at"
        )
    finally:
        engine.sql("DROP TABLE IF EXISTS temp.profile_changed")
    return Written(
        FOLLOWED,
        "",
        int(deleted or 0),
        int(inserted or 0),
        Lineage(
            held.generation,
            held.seq,
            lineage.whole_rows,
            lineage.inserted + int(inserted or 0),
            lineage.whole_bytes,
        ),
    )


def _write_profile(engine: Analytics) -> None:
    """The profile from the live tables, whole, and the copies of the small tables it
    names (``REFERENCE_TABLES``). In the order the joins leave it (members are read in id
    order, so the rows come out nearly so): every reader that needs an order asks for it,
    and sorting a million wide rows was a seventh of a build."""
    # a copy of the previous snapshot holds its profile: its blocks are free for the new
    # one only once checkpointed (otherwise the file grows by a profile a night)
    engine.sql(f"DROP TABLE IF EXISTS {SNAPSHOT}.profile")
    engine.sql(f"CHECKPOINT {SNAPSHOT}")
    profile = profile_tables(live_tables(engine.db, engine.backend)).profile
    engine.sql(f"CREATE TABLE {SNAPSHOT}.profile AS {ibis.to_sql(profile, dialect='duckdb')}")
    for name in REFERENCE_TABLES:
        engine.sql(f"CREATE OR REPLACE TABLE {SNAPSHOT}.profile_{name} AS {_reference(name)}")
    _write_scale(engine)


def _write_scale(engine: Analytics) -> None:
    """The last refresh's RFM scale (one row), which the profile's scores are read on
    (``with_rfm``): written again by every build, followed or whole."""
    scale = latest_scale(live_tables(engine.db, engine.backend)("rfm_scales"))
    engine.sql(
        f"CREATE OR REPLACE TABLE {SNAPSHOT}.rfm_scale AS {ibis.to_sql(scale, dialect='duckdb')}"
    )


def _write_live(engine: Analytics) -> None:
    """The profile and purchases as ``profile_tables`` reads them from the live tables."""
    sources = profile_tables(live_tables(engine.db, engine.backend))
    for name, expr in (("profile", sources.profile), ("purchases", sources.purchases)):
        engine.sql(f"CREATE TABLE {SNAPSHOT}.{name} AS {ibis.to_sql(expr, dialect='duckdb')}")
    _write_scale(engine)


def _retag(engine: Analytics, after: int | None, follow_share: float) -> int | None:
    """The tags read again from the live database after the build wrote rule tags: only
    of the members listed in the member changes above ``after`` (the last change the
    snapshot reflects: the rule-tag writes that followed are listed above it, with any
    other change since, which costs a read and nothing more), or of every member when
    ``after`` is None or more than ``follow_share`` of the members are listed. Returns
    the members read again, None for every member."""
    try:
        if after is not None:
            changed, members = member_changes.list_changed(engine, _CHANGED, after)
            if not _too_many(engine, members, follow_share):
                table = _rows_of(engine, {"member_tags": changed, "member_rule_tags": changed})
                tags = ibis.to_sql(tags_expr(table), dialect="duckdb")
                engine.sql(
                    f"UPDATE {SNAPSHOT}.profile AS p SET tags = n.tags FROM "
                    f"(SELECT c.member_id, t.tags FROM {_CHANGED} AS c "
                    f"LEFT JOIN ({tags}) AS t USING (member_id)) AS n "
                    "WHERE p.member_id = n.member_id"
                )
                return members
        tags = ibis.to_sql(tags_expr(live_tables(engine.db, engine.backend)), dialect="duckdb")
        engine.sql(
            f"CREATE OR REPLACE TABLE {SNAPSHOT}.profile AS "
            f"SELECT p.* REPLACE (t.tags AS tags) FROM {SNAPSHOT}.profile p "
            f"LEFT JOIN ({tags}) t USING (member_id) ORDER BY member_id"
        )
        return None
    finally:
        engine.sql(f"DROP TABLE IF EXISTS temp.{_CHANGED}")
        _drop_rows_of(engine)
        for table in ("rule_members", "rule_added", "rule_removed"):  # ``segments.tags``'s
            engine.sql(f"DROP TABLE IF EXISTS {SNAPSHOT}.{table}")


class Build:
    """A new snapshot being written in a file of its own. ``write_tables`` writes the
    profile and purchases; ``run`` does more DuckDB work over the live database on it (the
    tag-rule step, see ``segments.tags``), ``con`` reads it here; ``publish`` makes it
    current; ``discard`` throws it away.

    Every reading of the live database runs through ``insight.isolation``: on SQLite in a
    child process, since DuckDB must not open the live SQLite file in the application's
    process (``insight.engine``); ``con`` opens the snapshot file alone, and is closed
    while a child has the file.

    ``upkeep`` (the default) lets the build write to the live database for the member
    changes' upkeep: making their state row when missing, and pruning the changes its
    snapshot reflects once published. A build inside a request goes without: the request
    may hold SQLite's write lock, and another write from this process would wait on it."""

    def __init__(self, db: Database, analytics_dir: str | Path, *, upkeep: bool = True) -> None:
        self.db = db
        self.analytics_dir = analytics_dir
        self.directory = profile_dir(db, analytics_dir)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_as_of = clock.now()
        stamp = self.data_as_of.strftime("%Y%m%dT%H%M%S")
        self.path = self.directory / f"profile-{stamp}-{uuid.uuid4().hex[:8]}.duckdb"
        # the order book beside the other analytics files, brought up to the snapshot's
        # instant (this process's clock: on SQLite the tables are written in a child)
        self.book = orderbook.Place(analytics_file(db, "orders", analytics_dir), self.data_as_of)
        self._con: duckdb.DuckDBPyConnection | None = None
        self.written: Written | None = None
        self.upkeep = upkeep

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The new snapshot, opened here (no live database attached).

        A followed snapshot keeps the profile rows a night deleted (a day's buyers,
        rewritten; tags read again) in place, marked deleted, not vacuumed at each
        checkpoint (``insight.engine.leave_deletes``), until they pass a quarter of its
        live rows: the build then writes the profile again whole, as it is published
        (``publish``). Whatever opens the file for writing says so, here and in the work
        (``_in_snapshot``). The purchases' few deleted rows a night are cleared by their
        own whole writes (``_whole_because``)."""
        if self._con is None:
            self._con = connect(str(self.path))
            leave_deletes(self._con)
        return self._con

    def run(self, work: SnapshotWork, *args: Any) -> Any:
        """``work(engine, *args)`` over the live database, with the snapshot attached as
        ``snapshot`` (see ``_in_snapshot``; module-level and plain data: it may run in a
        child)."""
        if self._con is not None:  # one process has the file at a time
            self._con.close()
            self._con = None
        return run_isolated(self.db, _in_snapshot, str(self.path), work, *args)

    def write_tables(self) -> Written:
        """The profile and purchases (the purchases following the snapshot in force when
        they can: see the module's docstring)."""
        if self._con is not None:  # the child writes the file
            self._con.close()
            self._con = None
        previous = previous_snapshot(self.db, self.analytics_dir)
        whole = _whole_because(previous)  # here: what the book says is read in the work
        if self.upkeep:
            with self.db.unit_of_work() as session:
                member_service.ensure_changes_state(session)
        self.written = run_isolated(
            self.db, _write_tables, str(self.path), self.book, previous, whole, FOLLOW_SHARE
        )
        return self.written

    def retag(self) -> int | None:
        """Read the tags again from the live database after rule tags were written: of the
        members changed since the snapshot's tables were written, or of every member
        (None) when those cannot be told (see ``_retag``)."""
        lineage = self.written.lineage if self.written else None
        after = lineage.member_seq if lineage and lineage.member_token else None
        retagged: int | None = self.run(_retag, after, FOLLOW_SHARE)
        return retagged

    def publish(self, seconds: float) -> ProfileInfo:
        members = self.con.execute("SELECT count(*) FROM profile").fetchone()[0]  # type: ignore[index]
        purchases = self.con.execute("SELECT count(*) FROM purchases").fetchone()[0]  # type: ignore[index]
        built_at = clock.now()
        # no lineage when the purchases were not written by ``write_tables``: the next
        # build writes them whole
        lineage = self.written.lineage if self.written else Lineage("", 0, 0, 0, 0)
        self.con.execute(
            "CREATE OR REPLACE TABLE profile_info AS SELECT ?::TIMESTAMP AS data_as_of, "
            "?::TIMESTAMP AS built_at, ?::DOUBLE AS seconds, ?::BIGINT AS members, "
            "?::BIGINT AS purchases, ?::VARCHAR AS generation, ?::BIGINT AS seq, "
            "?::BIGINT AS whole_rows, ?::BIGINT AS inserted, ?::BIGINT AS whole_bytes, "
            "?::VARCHAR AS member_token, ?::BIGINT AS member_seq",
            [
                self.data_as_of.replace(tzinfo=None),
                built_at.replace(tzinfo=None),
                seconds,
                members,
                purchases,
                lineage.generation,
                lineage.seq,
                lineage.whole_rows,
                lineage.inserted,
                lineage.whole_bytes,
                lineage.member_token,
                lineage.member_seq,
            ],
        )
        compact(self.con, {"profile": "member_id"})
        self.con.execute("CHECKPOINT")
        self.con.close()
        previous = current_path(self.db, self.analytics_dir)
        pointer = self.directory / f".{POINTER}.{uuid.uuid4().hex[:8]}"
        pointer.write_text(self.path.name, "utf-8")
        os.replace(pointer, self.directory / POINTER)
        for stale in self.directory.glob("CURRENT*"):  # another format's pointer
            if stale.name != POINTER:
                stale.unlink(missing_ok=True)
        # keep the previous file for readers still on it; older ones go
        for old in self.directory.glob("profile-*.duckdb*"):
            if not old.name.startswith((self.path.name, previous.name if previous else "-")):
                old.unlink(missing_ok=True)
        if self.upkeep and lineage.member_token:  # the changes it reflects are read
            with self.db.unit_of_work() as session:
                member_service.prune_changes(session, _read_after(lineage, id_overlap(self.db)))
        return ProfileInfo(
            self.path, self.data_as_of, built_at, seconds, members, purchases, self.written
        )

    def discard(self) -> None:
        if self._con is not None:
            with suppress(duckdb.Error):  # already closed
                self._con.close()
        for leftover in (self.path, self.path.with_name(self.path.name + ".wal")):
            leftover.unlink(missing_ok=True)


# --- reading the snapshot ------------------------------------------------------------------


class ProfileReader:
    """Read-only connections to snapshot files, one per file, shared by the threads of a
    process (each query takes its own cursor)."""

    KEEP = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, tuple[duckdb.DuckDBPyConnection, ProfileInfo]] = {}

    def get(
        self, db: Database, analytics_dir: str | Path
    ) -> tuple[duckdb.DuckDBPyConnection, ProfileInfo]:
        """A cursor on ``db``'s current snapshot and its info; ``NotFound`` when there is
        none."""
        path = current_path(db, analytics_dir)
        if path is None or not path.exists():
            raise NotFound(
                "no member profile snapshot yet; build it with `siyu segments refresh` or "
                "POST /segments/profile/refresh (the nightly job builds it too)",
                code="no_profile",
            )
        with self._lock:
            held = self._open.get(path)
            if held is None:
                con = connect(str(path), read_only=True)
                held = self._open[path] = (con, _info(con, path))
                while len(self._open) > self.KEEP:  # the oldest: cursors in flight keep it
                    self._open.pop(next(iter(self._open)))
            return held[0].cursor(), held[1]


readers = ProfileReader()
