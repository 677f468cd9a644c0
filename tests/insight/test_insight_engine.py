"""The analytics engine on the live database (SQLite file or PostgreSQL): instants come
back as UTC, writes are set-based and all-or-nothing, and the SQLite WAL is left alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from insight_brand import SmallBrand
from sqlalchemy import func, select

from siyu.core.db import Database
from siyu.core.errors import SiyuError
from siyu.insight.engine import Analytics, analytics, instant
from siyu.insight.models import LifecycleMatrix
from siyu.members.models import Member
from siyu.orders.models import Order


def test_instants_come_back_as_utc(in_process_brand: SmallBrand) -> None:
    with in_process_brand.db.unit_of_work() as s:
        paid_at = s.scalar(select(func.max(Order.paid_at)))
    assert paid_at is not None
    with analytics(in_process_brand.db) as engine:
        orders = engine.table("orders")
        assert orders.schema()["paid_at"].timezone is None  # naive UTC on both databases
        latest = engine.backend.execute(orders.paid_at.max())
        recent = engine.backend.execute(
            orders.filter(orders.paid_at >= instant(paid_at - timedelta(seconds=1))).count()
        )
    assert latest.to_pydatetime().replace(tzinfo=UTC) == paid_at
    assert recent >= 1


def test_writes_are_set_based_and_roll_back_together(in_process_brand: SmallBrand) -> None:
    db = in_process_brand.db
    now = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
    columns = ["month", "from_stage", "to_stage", "members", "computed_at"]
    with analytics(db, read_only=False) as engine:
        with engine.transaction():
            written = engine.write(
                "lifecycle_matrix",
                columns,
                "SELECT '2026-11' AS month, 'none' AS from_stage, stage AS to_stage, "
                "CAST(n AS HUGEINT) AS members, TIMESTAMP '2026-11-23 04:00:00' AS computed_at "
                "FROM (VALUES ('new', 3), ('active', 5)) AS v(stage, n)",
            )
        assert written == 2
        with pytest.raises(RuntimeError), engine.transaction():
            engine.delete("lifecycle_matrix", "1 = 1")
            raise RuntimeError("half-way")
    with db.unit_of_work() as s:
        rows = list(s.scalars(select(LifecycleMatrix).order_by(LifecycleMatrix.to_stage)))
        assert [(r.to_stage, r.members, r.computed_at) for r in rows] == [
            ("active", 5, now),
            ("new", 3, now),
        ]
        # what the analytics wrote compares like what the application writes
        assert s.scalar(select(func.count()).where(LifecycleMatrix.computed_at == now)) == 2


def test_a_read_only_connection_refuses_to_write(in_process_brand: SmallBrand) -> None:
    with analytics(in_process_brand.db) as engine, pytest.raises(SiyuError, match="read-only"):
        engine.delete("lifecycle_matrix", "1 = 1")


def test_the_application_keeps_writing_after_analytics_close(in_process_brand: SmallBrand) -> None:
    """DuckDB bundles its own SQLite: a read-write attachment in this process would delete
    the WAL on close and lose the application's next commits. It stays read-only."""
    db: Database = in_process_brand.db
    for _ in range(2):
        engine = Analytics(db, read_only=False)
        engine.backend.execute(engine.table("members").count())
        engine.close()
        with db.unit_of_work() as s:
            s.add(
                Member(
                    joined_at=in_process_brand.now,
                    join_channel="store",
                    created_at=in_process_brand.now,
                    updated_at=in_process_brand.now,
                )
            )
    with analytics(db) as engine:
        seen = engine.backend.execute(engine.table("members").count())
    with db.unit_of_work() as s:
        assert seen == s.scalar(select(func.count()).select_from(Member)) == 13


def test_staged_results_publish_all_or_nothing(in_process_brand: SmallBrand) -> None:
    db = in_process_brand.db
    columns = ["month", "from_stage", "to_stage", "members", "computed_at"]
    with analytics(db, read_only=False) as engine:
        engine.stage(
            "cells",
            "SELECT '2026-10' AS month, 'new' AS from_stage, 'active' AS to_stage, "
            "CAST(7 AS HUGEINT) AS members, TIMESTAMP '2026-11-23 04:00:00' AS computed_at",
        )
        with pytest.raises(RuntimeError), engine.publish() as live:
            live.insert("lifecycle_matrix", columns, "cells")
            raise RuntimeError("half-way")
        with db.unit_of_work() as s:
            assert s.scalar(select(func.count()).select_from(LifecycleMatrix)) == 0
        with engine.publish() as live:
            assert live.insert("lifecycle_matrix", columns, "cells") == 1
    with db.unit_of_work() as s:
        cell = s.scalars(select(LifecycleMatrix)).one()
    assert (cell.month, cell.members, cell.computed_at) == (
        "2026-10",
        7,
        datetime(2026, 11, 23, 4, 0, tzinfo=UTC),
    )


def test_unordered_writes_lift_the_insertion_order_for_the_block_alone(
    in_process_brand: SmallBrand,
) -> None:
    """The placing writes its million rows unordered; everything after it, in the same
    connection, keeps the order it was given (an ORDER BY is kept either way)."""

    def kept(engine: Analytics) -> bool:
        return bool(engine.scalar("SELECT current_setting('preserve_insertion_order')"))

    with analytics(in_process_brand.db) as engine:
        assert kept(engine)
        with engine.unordered():
            assert not kept(engine)
            engine.sql("CREATE TEMP TABLE t AS SELECT i FROM range(100000) r(i) ORDER BY i DESC")
            first = engine.scalar("SELECT i FROM t LIMIT 1")
        assert kept(engine)
        assert first == 99_999
        with pytest.raises(RuntimeError), engine.unordered():
            raise RuntimeError("the block failed")
        assert kept(engine)


def test_deleted_rows_are_left_in_a_file_until_they_pile_up(
    in_process_brand: SmallBrand, tmp_path: Path
) -> None:
    """A nightly follow deletes a few percent of a file's rows: its checkpoint leaves them
    marked deleted instead of rewriting row groups to reclaim them, until the dead rows
    pass ``DEAD_ROWS_SHARE`` of the live ones; then the table is written again whole, in
    its order."""
    path = tmp_path / "copy.duckdb"

    def stored(engine: Analytics) -> int:
        return int(
            engine.scalar(
                "SELECT estimated_size FROM duckdb_tables() WHERE database_name = 'f' "
                "AND table_name = 't'"
            )
        )

    with analytics(in_process_brand.db) as engine:
        engine.sql(f"ATTACH '{path}' AS f")
        engine.sql("CREATE TABLE f.t AS SELECT i AS id, i * 7 AS v FROM range(1000000) r(i)")
        engine.sql("CHECKPOINT f")
        # a night deletes half the rows of the first two row groups (which DuckDB's
        # vacuum would merge into one), and inserts a row
        with engine.deletes_left({"f.t": "id"}) as compact:
            assert engine.scalar("SELECT current_setting('max_vacuum_tasks')") == 0
            engine.sql("DELETE FROM f.t WHERE id < 245760 AND id % 2 = 0")
            engine.sql("INSERT INTO f.t VALUES (2000000, 1)")
            assert compact() == []  # 122,880 dead rows of 877,121 live ones
            engine.sql("CHECKPOINT f")
        assert engine.scalar("SELECT current_setting('max_vacuum_tasks')") > 0
        assert stored(engine) == 1_000_001  # the dead rows are still in the file
        # the next night passes a quarter: the table is written again, in its order
        with engine.deletes_left({"f.t": "id"}) as compact:
            engine.sql("DELETE FROM f.t WHERE id % 10 = 3")
            assert compact() == ["f.t"]
            engine.sql("CHECKPOINT f")
        engine.sql("DETACH f")
        engine.sql(f"ATTACH '{path}' AS f")
        live = engine.scalar("SELECT count(*) FROM f.t")
        assert stored(engine) == live
        ids = [r[0] for r in engine.sql("SELECT id FROM f.t").fetchall()]
        assert ids == sorted(ids) and ids[:3] == [1, 5, 7] and ids[-1] == 2_000_000
        assert (
            engine.scalar("SELECT sum(v) FROM f.t")
            == sum(
                i * 7 for i in range(1_000_000) if not ((i < 245_760 and i % 2 == 0) or i % 10 == 3)
            )
            + 1
        )
        engine.sql("DETACH f")
