"""DuckDB work where it is safe: in a spawned child on SQLite (DuckDB's own SQLite never
opens the live file in the application's process), in process on PostgreSQL; what it
staged is published in one live transaction."""

from __future__ import annotations

import os
import time
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from siyu.core import clock
from siyu.core.db import Database
from siyu.insight import isolation
from siyu.insight.engine import LIVE, Analytics, AnalyticsUnavailable
from siyu.insight.isolation import isolated, run_isolated
from siyu.insight.models import LifecycleMatrix, MemberInsight
from siyu.members import service as members
from siyu.members.service import EnrolDraft

MATRIX = ["month", "from_stage", "to_stage", "members", "computed_at"]


def _members_where(engine: Analytics, status: str) -> tuple[int, int]:
    """Work for the tests: the process it ran in and a count over the live database."""
    count = engine.scalar(f"SELECT count(*) FROM {LIVE}.members WHERE status = ?", [status])
    return os.getpid(), int(count)


def _stage_counts(engine: Analytics, month: str) -> int:
    """Work that stages a small summary for publishing and says how many rows."""
    engine.stage(
        "counts",
        f"SELECT '{month}' AS month, 'new' AS from_stage, status AS to_stage, "
        f"count(*) AS members, TIMESTAMP '2026-11-23 04:00:00' AS computed_at "
        f"FROM {LIVE}.members GROUP BY status",
    )
    return int(engine.scalar("SELECT count(DISTINCT status) FROM live.members"))


@pytest.fixture
def three_members(clean_db: Database) -> None:
    with clean_db.unit_of_work() as session:
        for i in range(3):
            members.enrol(
                session,
                EnrolDraft(
                    phone=f"1390000000{i}",
                    joined_at=clock.now() - timedelta(days=i),
                    join_channel="store",
                ),
            )


@pytest.mark.usefixtures("three_members")
def test_work_runs_in_a_child_on_sqlite_and_here_on_postgresql(clean_db: Database) -> None:
    pid, count = run_isolated(clean_db, _members_where, "active")
    assert count == 3
    assert (pid != os.getpid()) == (clean_db.dialect == "sqlite")


@pytest.mark.usefixtures("three_members")
def test_staged_results_are_published_in_one_transaction(clean_db: Database) -> None:
    with isolated(clean_db, writes=True) as place:
        assert place.run(_stage_counts, "2026-11") == 1
        with place.publish() as live:
            assert live.insert("lifecycle_matrix", MATRIX, "counts") == 1
    with clean_db.unit_of_work() as session:
        row = session.scalars(select(LifecycleMatrix)).one()
        assert (row.month, row.to_stage, row.members) == ("2026-11", "active", 3)
        assert row.computed_at == clock.now()

    # a publish that raises leaves nothing behind
    with isolated(clean_db, writes=True) as place:
        place.run(_stage_counts, "2026-12")
        with pytest.raises(RuntimeError), place.publish() as live:
            live.insert("lifecycle_matrix", MATRIX, "counts")
            raise RuntimeError("stop")
    with clean_db.unit_of_work() as session:
        assert [r.month for r in session.scalars(select(LifecycleMatrix))] == ["2026-11"]


def _stage_insight(engine: Analytics, frequency: int) -> int:
    """Work that stages every member's insight row (a frequency, a stage since an instant)
    to upsert, and the member with the highest id as gone."""
    engine.stage(
        "rows",
        f"SELECT CAST(id AS BIGINT) AS member_id, 'active' AS stage, {frequency} AS frequency, "
        "false AS super_user, TIMESTAMP '2026-11-20 01:02:03.456789' AS stage_since "
        f"FROM {LIVE}.members",
    )
    engine.stage("gone", f"SELECT max(CAST(id AS BIGINT)) AS member_id FROM {LIVE}.members")
    return int(engine.scalar(f"SELECT count(*) FROM {LIVE}.members"))


INSIGHT = ["member_id", "stage", "frequency", "super_user", "stage_since"]


@pytest.mark.usefixtures("three_members")
def test_upserts_and_keyed_deletes_are_published_in_one_transaction(
    clean_db: Database,
) -> None:
    """On PostgreSQL they go through a table of the server's own (``Publisher._ship``);
    either way a publish that raises leaves nothing, and one that ends leaves exactly the
    staged rows, their instants to the microsecond, and no table of its own behind."""

    def scores() -> dict[int, tuple[int | None, object]]:
        with clean_db.unit_of_work() as session:
            return {
                i.member_id: (i.frequency, i.stage_since)
                for i in session.scalars(select(MemberInsight))
            }

    with isolated(clean_db, writes=True) as place:
        assert place.run(_stage_insight, 5) == 3
        with pytest.raises(RuntimeError), place.publish() as live:
            assert live.upsert("member_insight", INSIGHT, "member_id", "rows") == 3
            raise RuntimeError("stop")
    assert scores() == {}

    with isolated(clean_db, writes=True) as place:
        place.run(_stage_insight, 5)
        with place.publish() as live:
            assert live.upsert("member_insight", INSIGHT, "member_id", "rows") == 3
    since = datetime(2026, 11, 20, 1, 2, 3, 456789, tzinfo=UTC)
    assert list(scores().values()) == [(5, since)] * 3

    with isolated(clean_db, writes=True) as place:
        place.run(_stage_insight, 2)
        with place.publish() as live:
            live.delete_keyed("member_insight", "1 = 1", "member_id", "gone")
            assert live.upsert("member_insight", INSIGHT, "member_id", "rows") == 3
            live.delete_keyed("member_insight", "1 = 1", "member_id", "gone")
    after = scores()
    assert len(after) == 2 and set(after.values()) == {(2, since)}
    if clean_db.dialect == "postgresql":
        with clean_db.unit_of_work() as session:
            left = session.execute(
                text("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'siyu_stage_%'")
            ).scalar()
        assert left == 0


def test_a_read_only_place_cannot_publish(clean_db: Database) -> None:
    with isolated(clean_db) as place, pytest.raises(AnalyticsUnavailable, match="read-only"):
        place.publish()


def _die(engine: Analytics) -> None:
    """Work that kills the child running it, as a crash would."""
    os._exit(3)


@pytest.mark.usefixtures("three_members")
def test_the_child_stays_warm_and_a_dead_child_is_an_error_not_a_retry(
    clean_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if clean_db.dialect != "sqlite":
        pytest.skip("work runs in a child on SQLite only")
    first, _ = run_isolated(clean_db, _members_where, "active")
    again, _ = run_isolated(clean_db, _members_where, "active")
    assert again == first  # no second start-up cost

    with pytest.raises(BrokenProcessPool):
        run_isolated(clean_db, _die)
    fresh, count = run_isolated(clean_db, _members_where, "active")
    assert fresh != first and count == 3

    # without work for IDLE_SECONDS the children stop; the next work starts one
    monkeypatch.setattr(isolation, "IDLE_SECONDS", 0.05)
    run_isolated(clean_db, _members_where, "active")
    deadline = time.monotonic() + 10
    while isolation.workers._pool is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert isolation.workers._pool is None
    later, _ = run_isolated(clean_db, _members_where, "active")
    assert later != fresh
