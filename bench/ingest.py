"""Order ingestion benchmark: the real import path against a raw bulk insert of the same rows.

    python bench/ingest.py --quick
    python bench/ingest.py --members 100000 --orders 1000000
    python bench/ingest.py --quick --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

One run:

1. generates the demo brand (``siyu.demo.generator``) for ``--members`` people, with the
   activity calibrated so that they place about ``--orders`` orders, and writes those orders
   to a Parquet file in the import format (``write_orders_file``: one row per order line);
2. prepares two fresh databases of the same kind, each with the organisation (stores,
   staff) and the members already enrolled;
3. (a) imports the file into the first with ``import_orders_file``: store codes resolved,
   buyers matched to members (guests stay guests), idempotency keys checked, member metrics
   maintained, a commit every ``--chunk-size`` rows;
4. (b) reads the same file with pyarrow and inserts the same orders and lines into the second
   with SQLAlchemy Core ``executemany``, no checks at all, committing every
   ``--chunk-size`` rows too;
5. prints rows/s both ways and their ratio. With the loyalty programme in force (the
   default) every imported order also earns growth value and points (lots, frozen through
   the return window) and upgrades tiers in its own transaction; the goal on SQLite is
   import >= 0.4x raw. ``--no-loyalty`` measures the order path alone (goal >= 0.5x);
6. then (``--jobs``, the default) runs each nightly job once for the last day on the
   imported brand and prints how long each took: release of frozen points, expiry, the
   tier review, birthdays, monthly packs, coupon expiry.

SQLite databases go to a temporary directory (``--workdir`` to choose). With
``--database-url`` pointing at a PostgreSQL server the benchmark creates two databases of
its own next to the one named (``siyu_bench_import``, ``siyu_bench_raw``) and drops them
at the end (``--keep`` keeps them). This is a benchmark, not a test: nothing is asserted
beyond the two databases holding the same number of orders and lines.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from siyu.bootstrap import load_handlers
from siyu.core import clock
from siyu.core.db import Database
from siyu.core.migrate import upgrade
from siyu.demo.generator import calibrate_activity, generate_brand, iter_orders
from siyu.orders.importer import import_orders_file, write_orders_file
from siyu.orders.models import Order, OrderLine
from siyu.orders.service import check_metrics
from siyu.stores.models import Store

AS_OF = datetime(2026, 11, 23, 4, 0, tzinfo=clock.UTC)  # fixed: same seed, same file
PG_DATABASES = ("siyu_bench_import", "siyu_bench_raw")
console = Console()


@dataclass
class Timing:
    rows: int
    orders: int
    seconds: float
    # This process's CPU time: on a machine shared with other work, wall-clock seconds of
    # the two sides may see different loads; CPU seconds do not (SQLite runs in-process).
    cpu_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def orders_per_second(self) -> float:
        return self.orders / self.seconds if self.seconds else 0.0


# --- databases ---------------------------------------------------------------------------


class Databases:
    """Two fresh, empty, migrated databases of the kind asked for; removed on close."""

    def __init__(self, url: str | None, workdir: Path, keep: bool) -> None:
        self.keep = keep
        self.admin_url: str | None = None
        if url is None or url.startswith("sqlite"):
            for name in ("import.db", "raw.db"):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{workdir / name}{suffix}").unlink(missing_ok=True)
            self.urls = [f"sqlite:///{workdir / 'import.db'}", f"sqlite:///{workdir / 'raw.db'}"]
        else:
            self.admin_url = url
            self._recreate_pg()
            base = make_url(url)
            self.urls = [
                base.set(database=name).render_as_string(hide_password=False)
                for name in PG_DATABASES
            ]
        self.imported = Database(self.urls[0])
        self.raw = Database(self.urls[1])
        for db in (self.imported, self.raw):
            upgrade(db)

    def _pg_admin(self, statements: list[str]) -> None:
        assert self.admin_url is not None
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
        engine.dispose()

    def _recreate_pg(self) -> None:
        self._pg_admin(
            [f"DROP DATABASE IF EXISTS {n} WITH (FORCE)" for n in PG_DATABASES]
            + [f"CREATE DATABASE {n}" for n in PG_DATABASES]
        )

    @property
    def kind(self) -> str:
        return self.imported.dialect

    def close(self) -> None:
        self.imported.dispose()
        self.raw.dispose()
        if self.admin_url is not None and not self.keep:
            self._pg_admin([f"DROP DATABASE IF EXISTS {n} WITH (FORCE)" for n in PG_DATABASES])


# --- the raw insert ----------------------------------------------------------------------


def _fen(value: Decimal | None) -> int:
    return 0 if value is None else int(value * 100)


def _parquet_rows(path: Path, batch_size: int) -> Iterator[dict[str, Any]]:
    parquet = pq.ParquetFile(path)
    try:
        for batch in parquet.iter_batches(batch_size=batch_size):
            columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
            names = list(columns)
            for values in zip(*(columns[n] for n in names), strict=True):
                yield dict(zip(names, values, strict=True))
    finally:
        parquet.close()


def raw_insert(db: Database, path: Path, chunk_size: int) -> Timing:
    """Read the file, group rows into orders, insert orders and lines with executemany.
    No validation, no member matching, no idempotency check, no metrics: the floor."""
    started = time.perf_counter()
    orders_table, lines_table = Order.__table__, OrderLine.__table__
    now = clock.now()
    with db.engine.begin() as conn:
        store_ids = dict(conn.execute(select(Store.code, Store.id)).all())
        next_id = int(conn.execute(select(func.coalesce(func.max(Order.id), 0))).scalar_one()) + 1
    order_rows: list[dict[str, Any]] = []
    line_rows: list[dict[str, Any]] = []
    rows = orders = 0
    key: tuple[str, str] | None = None
    current: dict[str, Any] | None = None
    line_no = 0

    def flush() -> None:
        if order_rows:
            with db.engine.begin() as conn:
                conn.execute(insert(orders_table), order_rows)
                conn.execute(insert(lines_table), line_rows)
        order_rows.clear()
        line_rows.clear()

    for row in _parquet_rows(path, chunk_size):
        rows += 1
        row_key = (row["channel"], row["external_id"])
        if row_key != key:
            if len(line_rows) >= chunk_size:
                flush()
            key = row_key
            current = {
                "id": next_id,
                "channel": row["channel"],
                "external_id": row["external_id"],
                "member_id": row["member_id"],
                "store_id": store_ids.get(row["store_code"]) if row["store_code"] else None,
                "guide_id": None,
                "paid_at": row["paid_at"],
                "amount_fen": _fen(row["freight"]),
                "freight_fen": _fen(row["freight"]),
                "discount_fen": 0,
                "refunded_fen": 0,
                "status": "paid",
                "buyer_channel": row["buyer_channel"],
                "buyer_external_id": row["buyer_id"],
                "content_hash": "",
                "created_at": now,
            }
            order_rows.append(current)
            next_id += 1
            orders += 1
            line_no = 0
        assert current is not None
        line_no += 1
        amount = _fen(row["amount"])
        current["amount_fen"] += amount
        line_rows.append(
            {
                "order_id": current["id"],
                "line_no": line_no,
                "sku": row["sku"],
                "category": row["category"],
                "quantity": row["quantity"],
                "amount_fen": amount,
                "refunded_quantity": 0,
                "refunded_fen": 0,
            }
        )
    flush()
    return Timing(rows, orders, time.perf_counter() - started)


# --- the run -----------------------------------------------------------------------------


def _counts(db: Database) -> tuple[int, int, int]:
    with db.engine.connect() as conn:
        orders = conn.execute(select(func.count()).select_from(Order)).scalar_one()
        lines = conn.execute(select(func.count()).select_from(OrderLine)).scalar_one()
        matched = conn.execute(
            select(func.count()).select_from(Order).where(Order.member_id.is_not(None))
        ).scalar_one()
    return orders, lines, matched


def _counted(drafts: Iterator[Any], counter: dict[str, int]) -> Iterator[Any]:
    for draft in drafts:
        counter["orders"] += 1
        yield draft


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--members", type=int, default=None, help="default 100,000")
    parser.add_argument("--orders", type=int, default=None, help="about; default 1,000,000")
    parser.add_argument("--quick", action="store_true", help="5,000 members, ~50,000 orders")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chunk-size", type=int, default=5_000, help="rows per transaction")
    parser.add_argument("--database-url", default=None, help="PostgreSQL server (default SQLite)")
    parser.add_argument("--workdir", type=Path, default=None, help="for the file and SQLite")
    parser.add_argument("--keep", action="store_true", help="keep the file and databases")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--no-loyalty", dest="loyalty", action="store_false", help="no programme in force"
    )
    parser.add_argument(
        "--no-jobs", dest="jobs", action="store_false", help="skip timing the nightly jobs"
    )
    args = parser.parse_args(argv)
    members = args.members or (5_000 if args.quick else 100_000)
    target = args.orders or (members * 10)

    load_handlers()
    previous_clock = clock.set_clock(clock.FixedClock(AS_OF))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="siyu-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "orders.parquet"
    dbs: Databases | None = None
    try:
        console.print(f"[bold]siyu ingest benchmark[/]: {members:,} members, ~{target:,} orders")
        started = time.perf_counter()
        activity = calibrate_activity(target / members, seed=args.seed, as_of=AS_OF)
        counter = {"orders": 0}
        drafts = _counted(iter_orders(args.seed, members, AS_OF, activity=activity), counter)
        rows = write_orders_file(path, drafts)
        generated = time.perf_counter() - started
        console.print(
            f"wrote {counter['orders']:,} orders / {rows:,} rows to {path.name} "
            f"({path.stat().st_size / 2**20:,.1f} MiB) in {generated:,.1f}s"
        )

        dbs = Databases(args.database_url, workdir, args.keep)
        enrol_seconds = []
        for label, db in (("import", dbs.imported), ("raw", dbs.raw)):
            console.print(f"enrolling members into the {label} database ({dbs.kind})")
            t = time.perf_counter()
            generate_brand(
                db,
                members=members,
                seed=args.seed,
                as_of=AS_OF,
                progress=args.progress,
                with_orders=False,
                with_programme=args.loyalty and label == "import",
            )
            enrol_seconds.append(time.perf_counter() - t)

        console.print("(a) import_orders_file")
        # Each side starts with no garbage left by what ran before it (generating the
        # brand, the other side), so neither pays for a collection the other owed.
        gc.collect()
        cpu = time.process_time()
        report = import_orders_file(
            dbs.imported,
            path,
            unknown_buyer="guest",
            chunk_size=args.chunk_size,
            progress=args.progress,
        )
        imported = Timing(report.rows, report.orders_created, report.elapsed_seconds)
        imported.cpu_seconds = time.process_time() - cpu
        console.print("(b) raw Core executemany")
        gc.collect()
        cpu = time.process_time()
        raw = raw_insert(dbs.raw, path, args.chunk_size)
        raw.cpu_seconds = time.process_time() - cpu

        import_counts, raw_counts = _counts(dbs.imported), _counts(dbs.raw)
        with dbs.imported.unit_of_work() as session:
            drift = len(check_metrics(session, limit=10))
        _print(
            dbs.kind,
            members,
            counter["orders"],
            rows,
            imported,
            raw,
            report.rejected_orders,
            import_counts,
            raw_counts,
            drift,
            enrol_seconds,
            goal=0.4 if args.loyalty else 0.5,
        )
        if args.loyalty:
            _print_loyalty(dbs.imported)
        if args.jobs:
            _time_jobs(dbs.imported, members)
    finally:
        clock.set_clock(previous_clock)
        if dbs is not None:
            dbs.close()
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not args.keep:
            path.unlink(missing_ok=True)


def _print(
    kind: str,
    members: int,
    orders: int,
    rows: int,
    imported: Timing,
    raw: Timing,
    rejected: int,
    import_counts: tuple[int, int, int],
    raw_counts: tuple[int, int, int],
    drift: int,
    enrol_seconds: list[float],
    *,
    goal: float,
) -> None:
    table = Table(title=f"order ingestion on {kind}: {members:,} members, {orders:,} orders")
    table.add_column("")
    table.add_column("(a) import_orders_file", justify="right")
    table.add_column("(b) raw executemany", justify="right")
    table.add_row("file rows (order lines)", f"{imported.rows:,}", f"{raw.rows:,}")
    table.add_row("orders stored", f"{import_counts[0]:,}", f"{raw_counts[0]:,}")
    table.add_row("lines stored", f"{import_counts[1]:,}", f"{raw_counts[1]:,}")
    table.add_row("orders matched to a member", f"{import_counts[2]:,}", "(no matching)")
    table.add_row("seconds", f"{imported.seconds:,.1f}", f"{raw.seconds:,.1f}")
    table.add_row(
        "CPU seconds (this process)", f"{imported.cpu_seconds:,.1f}", f"{raw.cpu_seconds:,.1f}"
    )
    table.add_row("rows/s", f"{imported.rows_per_second:,.0f}", f"{raw.rows_per_second:,.0f}")
    table.add_row("orders/s", f"{imported.orders_per_second:,.0f}", f"{raw.orders_per_second:,.0f}")
    console.print(table)
    ratio = imported.rows_per_second / raw.rows_per_second if raw.rows_per_second else 0.0
    wanted = f" (goal on SQLite: >= {goal:.2f})" if kind == "sqlite" else ""
    colour = "green" if ratio >= goal else "red"
    console.print(f"import / raw = [bold {colour}]{ratio:.2f}[/]{wanted}")
    if imported.cpu_seconds and raw.cpu_seconds and kind == "sqlite":
        cpu_ratio = raw.cpu_seconds / imported.cpu_seconds
        console.print(f"on CPU time (both sides in this process): {cpu_ratio:.2f}")
    console.print(
        f"setup (not timed above): enrolling {members:,} members took "
        + " and ".join(f"{s:,.1f}s" for s in enrol_seconds)
        + f" ({members / min(enrol_seconds):,.0f} members/s); "
        f"rejected orders: {rejected}; member metrics drift: {drift}"
    )
    if import_counts[:2] != raw_counts[:2] or rows != imported.rows:
        console.print("[red]the two databases do not hold the same orders[/]")


def _print_loyalty(db: Database) -> None:
    """What the import did besides storing orders: the loyalty effects, in figures."""
    from siyu.members.models import Member
    from siyu.points.models import PointsLot
    from siyu.tiers.models import GrowthEntry

    with db.unit_of_work() as s:
        growth = s.execute(select(func.count(), func.sum(GrowthEntry.growth))).one()
        lots = s.execute(select(func.count(), func.sum(PointsLot.points))).one()
        tiers = s.execute(
            select(Member.tier_code, func.count())
            .group_by(Member.tier_code)
            .order_by(Member.tier_code)
        ).all()
    console.print(
        f"loyalty effects: {growth[0]:,} growth entries ({growth[1] or 0:,} growth), "
        f"{lots[0]:,} points lots ({lots[1] or 0:,} points); tiers: "
        + ", ".join(f"{code or '-'} {n:,}" for code, n in tiers)
    )


def _time_jobs(db: Database, members: int) -> None:
    """Each nightly job once, for the benchmark's last day, on the imported brand."""
    from siyu.jobs import service as jobs

    day = clock.local_date(AS_OF, "Asia/Shanghai")
    table = Table(title=f"nightly jobs for {day} on {members:,} members ({db.dialect})")
    table.add_column("job")
    table.add_column("seconds", justify="right")
    table.add_column("what it did")
    for job in jobs.registered():
        started = time.perf_counter()
        outcome = jobs.run(db, job.name, day)
        seconds = time.perf_counter() - started
        table.add_row(
            job.name,
            f"{seconds:,.2f}",
            ", ".join(
                f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}"
                for k, v in outcome.result.items()
            ),
        )
    console.print(table)


if __name__ == "__main__":
    main()
