"""Segments: validate trees against the brand, save them, and evaluate them as one query.

Services flush and never commit; the API request, the CLI command or the job commits.
Evaluation runs on DuckDB (``source="profile"``: the columnar snapshot; ``"live"``: the
live database read in place) and returns the time the data is as of with every answer.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import duckdb
import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.core import audit, clock
from siyu.core.auth import Principal
from siyu.core.db import Database, in_chunks
from siyu.core.errors import Conflict, InvalidInput, NotFound, Problem, invalid
from siyu.members.models import Member, MemberTag
from siyu.members.rules import mask_phone, member_no
from siyu.programme import service as programme
from siyu.segments import compiler, rules
from siyu.segments import profile as profiles
from siyu.segments.models import Segment, SegmentMember, SegmentSnapshot, TagRule
from siyu.segments.rules import Node, Vocabulary
from siyu.stores.models import Staff, Store

Source = Literal["profile", "live"]
Format = Literal["csv", "parquet"]

MAX_NAME = 100
MAX_DESCRIPTION = 500
MAX_SAMPLE = 200
BATCH = 50_000  # rows per batch when streaming members out of DuckDB

# Exported with every member: no contact data (see ``profile``), the member number instead.
EXPORT_COLUMNS = (
    "member_id",
    "gender",
    "joined_at",
    "join_channel",
    "store",
    "guide",
    "tier",
    "points_balance",
    "paid_plan",
    "paid_state",
    "order_count",
    "spend_fen",
    "last_order_at",
    "stage",
    "rfm_group",
    "super_user",
    "clv_fen",
)
SAMPLE_COLUMNS = (
    "member_id",
    "gender",
    "tier",
    "stage",
    "rfm_group",
    "order_count",
    "spend_fen",
    "last_order_at",
    "points_balance",
)


# --- validation against the brand -----------------------------------------------------------


def vocabulary(session: Session, raw: Any, *, for_rule: bool = False) -> Vocabulary:
    """What the names in a raw tree can be for this brand now: tiers, categories and plans of
    the programme in force; store and guide codes, tags and rule tags that exist (looked up
    for the names the tree uses only)."""
    version = programme.in_force(session)
    tiers = categories = plans = None
    if version is not None:
        doc = programme.programme_of(version)
        tiers = frozenset(level.code for level in doc.tiers.levels)
        categories = frozenset(doc.categories)
        plans = frozenset(p.code for p in doc.paid.plans) if doc.paid else frozenset()
    stores = _existing(session, Store.code, rules.named(raw, "stores"))
    guides = _existing(session, Staff.code, rules.named(raw, "guides"))
    tags = rules.named(raw, "tags")
    rule_tags = _existing(session, TagRule.name, tags)
    manual = _existing(session, MemberTag.tag, tags - rule_tags)
    return Vocabulary(
        tiers=tiers,
        categories=categories,
        plans=plans,
        stores=stores,
        guides=guides,
        tags=rule_tags | manual,
        rule_tags=rule_tags,
        allow_rule_tags=not for_rule,
    )


def _existing(session: Session, column: Any, names: set[str]) -> frozenset[str]:
    found: set[str] = set()
    for chunk in in_chunks(sorted(names)):
        found.update(session.scalars(select(column).where(column.in_(chunk)).distinct()))
    return frozenset(found)


def parse(session: Session, raw: Any, *, for_rule: bool = False, what: str = "tree") -> Node:
    """The parsed tree, or ``InvalidInput`` naming every problem with its path."""
    node, problems = rules.check(raw, vocabulary(session, raw, for_rule=for_rule))
    if node is None:
        raise invalid([Problem(f"{what}.{p.field}", p.reason) for p in problems], what="segment")
    return node


# --- saved segments -----------------------------------------------------------------------------


def _check_text(name: str, description: str) -> str:
    name = (name or "").strip()
    problems = []
    if not name or len(name) > MAX_NAME:
        problems.append(Problem("name", f"1 to {MAX_NAME} characters"))
    if len(description) > MAX_DESCRIPTION:
        problems.append(Problem("description", f"at most {MAX_DESCRIPTION} characters"))
    if problems:
        raise invalid(problems, what="segment")
    return name


def get(session: Session, segment_id: int) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise NotFound(f"no segment with id {segment_id}", field="segment_id")
    return segment


def find(session: Session, ref: str) -> Segment:
    """A segment by id or by name: what someone types at the command line."""
    segment = session.get(Segment, int(ref)) if ref.isdigit() else None
    segment = segment or session.scalar(select(Segment).where(Segment.name == ref))
    if segment is None:
        raise NotFound(f"no segment with id or name '{ref}'; `siyu segments list` shows them")
    return segment


def list_segments(session: Session) -> list[Segment]:
    return list(session.scalars(select(Segment).order_by(Segment.id)))


def create(
    session: Session, *, name: str, tree: Any, principal: Principal, description: str = ""
) -> Segment:
    name = _check_text(name, description)
    node = parse(session, tree)
    if session.scalar(select(exists().where(Segment.name == name))):
        raise Conflict(f"a segment named '{name}' exists; choose another name", field="name")
    now = clock.now()
    segment = Segment(
        name=name,
        description=description,
        tree=rules.dump(node),
        author=principal.actor,
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    try:
        session.flush()
    except IntegrityError:  # a concurrent create took the name
        raise Conflict(
            f"a segment named '{name}' exists; choose another name", field="name"
        ) from None
    audit.record(
        session,
        actor=principal.actor,
        action="segment.create",
        target_type="segment",
        target_id=segment.id,
        detail={"name": name, "tree": segment.tree},
    )
    return segment


def update(
    session: Session,
    segment_id: int,
    *,
    principal: Principal,
    name: str | None = None,
    tree: Any = None,
    description: str | None = None,
) -> Segment:
    segment = get(session, segment_id)
    before = {"name": segment.name, "tree": segment.tree, "description": segment.description}
    if name is not None or description is not None:
        new_name = _check_text(name if name is not None else segment.name, description or "")
        if new_name != segment.name and session.scalar(
            select(exists().where(Segment.name == new_name))
        ):
            raise Conflict(f"a segment named '{new_name}' exists", field="name")
        segment.name = new_name
        if description is not None:
            segment.description = description
    if tree is not None:
        segment.tree = rules.dump(parse(session, tree))
    segment.updated_at = clock.now()
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="segment.update",
        target_type="segment",
        target_id=segment.id,
        detail={"before": before, "tree": segment.tree, "name": segment.name},
    )
    return segment


def remove(session: Session, segment_id: int, *, principal: Principal) -> None:
    """Delete a segment and its snapshots."""
    segment = get(session, segment_id)
    snapshot_ids = list(
        session.scalars(select(SegmentSnapshot.id).where(SegmentSnapshot.segment_id == segment.id))
    )
    for chunk in in_chunks(snapshot_ids):
        session.execute(delete(SegmentMember).where(SegmentMember.snapshot_id.in_(chunk)))
    session.execute(delete(SegmentSnapshot).where(SegmentSnapshot.segment_id == segment.id))
    session.delete(segment)
    audit.record(
        session,
        actor=principal.actor,
        action="segment.delete",
        target_type="segment",
        target_id=segment_id,
        detail={"name": segment.name, "tree": segment.tree, "snapshots": len(snapshot_ids)},
    )
    session.flush()


# --- evaluation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a tree is evaluated: the database, the analytics directory, the brand's
    timezone, and which source (the profile snapshot or the live database)."""

    db: Database
    analytics_dir: str | Path
    tz: str
    source: Source = "profile"


@dataclass(frozen=True)
class Counted:
    members: int
    source: Source
    data_as_of: datetime
    seconds: float


@contextmanager
def _evaluate(
    where: Where, node: Node
) -> Iterator[tuple[duckdb.DuckDBPyConnection, ir.Table, datetime]]:
    """A DuckDB connection, the tree's members as an expression to compile for it, and the
    instant the data is as of (conditions relative to today are relative to that instant)."""
    if where.source == "live":
        with profiles.live_backend(where.db) as (con, sources):
            now = clock.now()
            ctx = compiler.Context(now=now, tz=where.tz)
            yield con, compiler.members(node, sources, ctx), now
        return
    cursor, info = _profile(where)
    try:
        ctx = compiler.Context(now=info.data_as_of, tz=where.tz)
        yield cursor, compiler.members(node, profiles.unbound(), ctx), info.data_as_of
    finally:
        cursor.close()


def _profile(where: Where) -> tuple[duckdb.DuckDBPyConnection, profiles.ProfileInfo]:
    """A cursor on the current profile snapshot, building the first one if there is none.
    The first build leaves rule tags as they are: the job writes them, and a request may
    hold the SQLite write lock meanwhile."""
    if profiles.current_path(where.db, where.analytics_dir) is None:
        from siyu.segments import tags

        tags.refresh(where.db, where.analytics_dir, tz=where.tz, with_rules=False)
    return profiles.readers.get(where.db, where.analytics_dir)


def _sql(expr: ir.Expr) -> str:
    return str(ibis.to_sql(expr, dialect="duckdb"))


@lru_cache(maxsize=512)
def _profile_count_sql(node: Node, as_of: datetime, tz: str) -> str:
    """The counting query of a tree on the snapshot of ``as_of``. Compiling costs more than
    running it at a million members (tens of milliseconds), and a console counts the same
    trees again and again; the snapshot time in the key keeps relative conditions right."""
    ctx = compiler.Context(now=as_of, tz=tz)
    return _sql(compiler.members(node, profiles.unbound(), ctx).count())


def count(where: Where, node: Node) -> Counted:
    """How many members the tree selects: one query."""
    started = time.perf_counter()
    if where.source == "profile":
        cursor, info = _profile(where)
        try:
            row = cursor.execute(_profile_count_sql(node, info.data_as_of, where.tz)).fetchone()
        finally:
            cursor.close()
        as_of = info.data_as_of
    else:
        with _evaluate(where, node) as (con, chosen, as_of):
            row = con.execute(_sql(chosen.count())).fetchone()
    assert row is not None
    return Counted(int(row[0]), where.source, as_of, time.perf_counter() - started)


@dataclass(frozen=True)
class Sample:
    counted: Counted
    members: list[dict[str, Any]]


def sample(
    session: Session, where: Where, node: Node, *, size: int, principal: Principal
) -> Sample:
    """The count and ``size`` members picked evenly over ids (the same members every time
    for the same data), with a few columns; phones masked for roles that need not see them."""
    if not 0 <= size <= MAX_SAMPLE:
        raise InvalidInput(f"a sample has 0 to {MAX_SAMPLE} members", field="size")
    started = time.perf_counter()
    with _evaluate(where, node) as (con, chosen, as_of):
        total = con.execute(_sql(chosen.count())).fetchone()[0]  # type: ignore[index]
        picked = chosen.order_by(chosen.member_id.hash(), "member_id").limit(size)
        rows = con.execute(_sql(picked.select(*SAMPLE_COLUMNS))).fetchall() if size else []
    counted = Counted(int(total), where.source, as_of, time.perf_counter() - started)
    contacts = (
        {
            m.id: m
            for m in session.scalars(select(Member).where(Member.id.in_([r[0] for r in rows])))
        }
        if rows
        else {}
    )
    out = []
    for row in rows:
        item = dict(zip(SAMPLE_COLUMNS, row, strict=True))
        member = contacts.get(item["member_id"])
        item["member_no"] = member_no(item["member_id"])
        item["name"] = member.name if member else None
        phone = member.phone if member else None
        item["phone"] = phone if principal.sees_phones else mask_phone(phone)
        if item["last_order_at"] is not None:
            item["last_order_at"] = clock.as_utc(item["last_order_at"])
        out.append(item)
    return Sample(counted, out)


def _with_member_no(batch: pa.RecordBatch) -> pa.RecordBatch:
    ids = batch.column(0).to_pylist()
    numbers = pa.array([member_no(i) for i in ids], type=pa.string())
    columns = [batch.column(0), numbers, *batch.columns[1:]]
    names = [batch.schema.names[0], "member_no", *batch.schema.names[1:]]
    return pa.RecordBatch.from_arrays(columns, names=names)


def _batches(con: duckdb.DuckDBPyConnection, chosen: ir.Table) -> Iterator[pa.RecordBatch]:
    query = _sql(chosen.select(*EXPORT_COLUMNS).order_by("member_id"))
    reader = con.execute(query).to_arrow_reader(BATCH)
    for batch in reader:
        yield _with_member_no(batch)


def export_stream(where: Where, node: Node, fmt: Format) -> Iterator[bytes]:
    """The tree's members as CSV or Parquet, produced batch by batch (never all in memory).
    CSV goes out as it is made; Parquet is written to a temporary file first (its footer
    comes last) and then read out in chunks."""
    if fmt not in ("csv", "parquet"):
        raise InvalidInput("format is csv or parquet", field="format")
    if fmt == "csv":
        yield from _csv_stream(where, node)
    else:
        yield from _parquet_stream(where, node)


def _csv_chunks(batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    header = True
    for batch in batches:
        buffer = io.BytesIO()
        pacsv.write_csv(batch, buffer, write_options=pacsv.WriteOptions(include_header=header))
        header = False
        yield buffer.getvalue()
    if header:  # no members: still the header line
        yield (",".join(("member_id", "member_no", *EXPORT_COLUMNS[1:])) + "\n").encode()


def _csv_stream(where: Where, node: Node) -> Iterator[bytes]:
    with _evaluate(where, node) as (con, chosen, _):
        yield from _csv_chunks(_batches(con, chosen))


def _parquet_stream(where: Where, node: Node) -> Iterator[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "segment.parquet"
        export_file(where, node, path, "parquet")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk


def export_file(where: Where, node: Node, path: Path, fmt: Format) -> int:
    """Write the tree's members to a file, batch by batch; returns how many."""
    written = 0
    with _evaluate(where, node) as (con, chosen, _):

        def counted() -> Iterator[pa.RecordBatch]:
            nonlocal written
            for batch in _batches(con, chosen):
                written += batch.num_rows
                yield batch

        if fmt == "csv":
            with path.open("wb") as f:
                for chunk in _csv_chunks(counted()):
                    f.write(chunk)
            return written
        writer: pq.ParquetWriter | None = None
        try:
            for batch in counted():
                if writer is None:
                    writer = pq.ParquetWriter(path, batch.schema)
                writer.write_batch(batch)
            if writer is None:  # no members: a file with the columns and no rows
                query = _sql(chosen.select(*EXPORT_COLUMNS).limit(0))
                schema = con.execute(query).to_arrow_table().schema
                empty = _with_member_no(pa.RecordBatch.from_pylist([], schema=schema))
                pq.write_table(pa.Table.from_batches([empty]), path)
        finally:
            if writer is not None:
                writer.close()
    return written


# --- snapshots --------------------------------------------------------------------------------


@contextmanager
def selected_ids(where: Where, node: Node) -> Iterator[tuple[datetime, Iterable[list[int]]]]:
    """The ids of the tree's members, in batches, and the instant the data is as of."""
    with _evaluate(where, node) as (con, chosen, as_of):
        result = con.execute(_sql(chosen.select("member_id").order_by("member_id")))

        def batches() -> Iterator[list[int]]:
            while rows := result.fetchmany(BATCH):
                yield [r[0] for r in rows]

        yield as_of, batches()


def bulk_insert(
    session: Session, table: Any, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Insert many rows in the session's transaction: ``COPY`` on PostgreSQL, batched
    ``executemany`` on SQLite. Returns how many."""
    total = 0
    if session.get_bind().dialect.name == "postgresql":
        raw = session.connection().connection.driver_connection
        names = ", ".join(columns)
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
                total += 1
        return total
    statement = insert(table)
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(zip(columns, row, strict=True)))
        if len(batch) >= BATCH:
            session.execute(statement, batch)
            total += len(batch)
            batch = []
    if batch:
        session.execute(statement, batch)
        total += len(batch)
    return total


def take_snapshot(
    session: Session, where: Where, segment_id: int, *, principal: Principal
) -> SegmentSnapshot:
    """Freeze the segment's members now, for a campaign: one row per member, in this
    transaction with the snapshot row."""
    segment = get(session, segment_id)
    node = parse(session, segment.tree)
    snapshot = SegmentSnapshot(
        segment_id=segment.id,
        taken_at=clock.now(),
        data_as_of=clock.now(),
        source=where.source,
        tree=segment.tree,
        member_count=0,
        author=principal.actor,
    )
    session.add(snapshot)
    session.flush()
    with selected_ids(where, node) as (as_of, batches):
        rows = ((snapshot.id, member_id) for batch in batches for member_id in batch)
        snapshot.member_count = bulk_insert(
            session, SegmentMember.__table__, ("snapshot_id", "member_id"), rows
        )
    snapshot.data_as_of = as_of
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="segment.snapshot",
        target_type="segment",
        target_id=segment.id,
        detail={"snapshot_id": snapshot.id, "members": snapshot.member_count},
    )
    return snapshot


def snapshots(session: Session, segment_id: int, *, limit: int = 100) -> list[SegmentSnapshot]:
    get(session, segment_id)
    stmt = (
        select(SegmentSnapshot)
        .where(SegmentSnapshot.segment_id == segment_id)
        .order_by(SegmentSnapshot.taken_at.desc(), SegmentSnapshot.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def get_snapshot(session: Session, segment_id: int, snapshot_id: int) -> SegmentSnapshot:
    snapshot = session.get(SegmentSnapshot, snapshot_id)
    if snapshot is None or snapshot.segment_id != segment_id:
        raise NotFound(f"segment {segment_id} has no snapshot {snapshot_id}", field="snapshot_id")
    return snapshot


def snapshot_members(
    session: Session, snapshot_id: int, *, after: int = 0, limit: int = 1_000
) -> list[int]:
    """A page of a snapshot's member ids, in id order, after ``after`` (keyset paging)."""
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit is 1 to 10000", field="limit")
    stmt = (
        select(SegmentMember.member_id)
        .where(SegmentMember.snapshot_id == snapshot_id, SegmentMember.member_id > after)
        .order_by(SegmentMember.member_id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def snapshot_count(session: Session, snapshot_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(SegmentMember)
            .where(SegmentMember.snapshot_id == snapshot_id)
        )
        or 0
    )
