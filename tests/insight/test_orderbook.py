"""The order book: a DuckDB copy of the orders the analytics figures read, brought up to date
from the live database's indexes. Whatever happens to the orders (new ones, guests', partial
and full refunds, merges and unmerges), after a sync the book equals the live orders; a
book that no longer describes the database is rebuilt; and the KPIs read from it equal the
KPIs read from the live table."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.insight import kpis, orderbook
from siyu.insight.engine import Analytics, analytics_file
from siyu.insight.isolation import run_isolated
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.models import Order
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft, RefundLineDraft

TZ = "Asia/Shanghai"
Row = tuple[int, int | None, datetime, int, bool]


def _book(engine: Analytics, place: orderbook.Place) -> tuple[str, int, list[Row]]:
    with orderbook.orders(engine, place) as (every, synced):
        rows = every.order_by("id").to_pyarrow().to_pylist()
    return (
        synced.how,
        synced.orders_read,
        [(r["id"], r["member_id"], r["paid_at"], r["net_fen"], r["counted"]) for r in rows],
    )


def _live(db: Database) -> list[Row]:
    with db.unit_of_work() as session:
        return [
            (
                o.id,
                o.member_id,
                clock.as_utc(o.paid_at).replace(tzinfo=None),
                o.amount_fen - o.refunded_fen,
                o.member_id is not None and o.status != "refunded",
            )
            for o in session.scalars(select(Order).order_by(Order.id))
        ]


def _sync(db: Database, path: str | None) -> tuple[str, int, list[Row]]:
    return run_isolated(db, _book, orderbook.Place(path, clock.now()))


def _order(key: str, at: datetime, yuan: int, member_id: int | None) -> OrderDraft:
    return OrderDraft(
        channel="mini_program",
        external_id=key,
        paid_at=at,
        member_id=member_id,
        lines=[LineDraft("SKU-1", "奶粉", 1, yuan * 100), LineDraft("SKU-2", "纸尿裤", 1, 5_000)],
    )


def _refund(key: str, order_key: str, at: datetime, part: bool = False) -> RefundDraft:
    """The whole order, or (``part``) its second line."""
    return RefundDraft(
        channel="mini_program",
        external_id=key,
        order_channel="mini_program",
        order_external_id=order_key,
        refunded_at=at,
        lines=[RefundLineDraft(line_no=2, quantity=1, amount_fen=5_000)] if part else [],
    )


@pytest.fixture
def brand(clean_db: Database, programme_in_force: None) -> dict[str, int]:
    now = clock.now()
    with clean_db.unit_of_work() as session:
        ids = {
            name: members.enrol(
                session,
                EnrolDraft(phone=f"1390000{i:04d}", joined_at=now - timedelta(days=days)),
            ).member_id
            for i, (name, days) in enumerate(zip("ABCD", (400, 200, 100, 30), strict=True))
        }
        orders.ingest_orders(
            session,
            [
                _order("A-0", now - timedelta(days=380), 100, ids["A"]),
                _order("A-1", now - timedelta(days=20), 200, ids["A"]),
                _order("B-0", now - timedelta(days=15), 300, ids["B"]),
                _order("C-0", now - timedelta(days=10), 150, ids["C"]),
                _order("guest-0", now - timedelta(days=5), 400, None),
            ],
        )
    return ids


def test_the_book_follows_every_change_to_the_orders(
    clean_db: Database, brand: dict[str, int], tmp_path: Path
) -> None:
    path = analytics_file(clean_db, "orders", tmp_path)
    how, read, rows = _sync(clean_db, path)
    assert how == "built" and rows == _live(clean_db) and len(rows) == 5

    # what is read again: on PostgreSQL also the last ids below the watermark (they may
    # commit after it was read), which here are all of them
    exact = clean_db.dialect == "sqlite"
    how, read, rows = _sync(clean_db, path)  # nothing happened: nothing read
    assert how == "updated" and rows == _live(clean_db)
    assert read == (0 if exact else 5)

    now = clock.now()
    with clean_db.unit_of_work() as session:
        orders.ingest_orders(
            session,
            [
                _order("D-0", now - timedelta(days=1), 80, brand["D"]),
                _order("guest-1", now - timedelta(hours=3), 90, None),
            ],
        )
        orders.record_refund(session, _refund("R-B-0", "B-0", now - timedelta(days=1), part=True))
        orders.record_refund(session, _refund("R-C-0", "C-0", now - timedelta(days=2)))  # full
        orders.record_refund(session, _refund("R-guest-0", "guest-0", now - timedelta(days=1)))
        merge = members.merge(
            session, brand["A"], brand["D"], reason="one person", principal=SYSTEM
        ).id
    how, read, rows = _sync(clean_db, path)
    # the two new orders (D's one of them), the three refunded ones, and A's two orders
    assert how == "updated" and read == (2 + 3 + 2 if exact else 7)
    assert rows == _live(clean_db)
    assert [r[1] for r in rows[:2]] == [brand["D"], brand["D"]]  # A's orders, merged

    clock_now = clock.now()
    with clean_db.unit_of_work() as session:
        members.unmerge(session, merge, principal=SYSTEM)
    assert clock.now() == clock_now  # the unmerge is found by time, at the same instant
    how, read, rows = _sync(clean_db, path)
    assert how == "updated" and rows == _live(clean_db)
    assert [r[1] for r in rows[:2]] == [brand["A"], brand["A"]]


def test_a_book_that_no_longer_describes_the_database_is_rebuilt(
    clean_db: Database, brand: dict[str, int], tmp_path: Path
) -> None:
    path = analytics_file(clean_db, "orders", tmp_path)
    assert path is not None
    assert _sync(clean_db, path)[0] == "built"

    Path(path).write_bytes(b"not a DuckDB file")  # damaged
    how, _, rows = _sync(clean_db, path)
    assert how == "built" and rows == _live(clean_db)

    # the database emptied and filled again (a restore): the ids start over
    with clean_db.engine.begin() as conn:
        for table in ("refund_lines", "refunds", "order_lines"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
        conn.exec_driver_sql("DELETE FROM points_entries")
        conn.exec_driver_sql("DELETE FROM points_lots")
        conn.exec_driver_sql("DELETE FROM growth_entries")
        conn.exec_driver_sql("DELETE FROM member_metrics")
        conn.exec_driver_sql("DELETE FROM orders")
    with clean_db.unit_of_work() as session:
        orders.ingest_orders(
            session, [_order("E-0", clock.now() - timedelta(days=2), 70, brand["B"])]
        )
    how, _, rows = _sync(clean_db, path)
    assert how == "built" and rows == _live(clean_db) and len(rows) == 1


def test_without_an_analytics_directory_the_live_table_is_read(
    clean_db: Database, brand: dict[str, int]
) -> None:
    how, read, rows = _sync(clean_db, None)
    assert (how, read) == ("live", 0) and rows == _live(clean_db)


def test_kpis_from_the_book_equal_kpis_from_the_live_table(
    clean_db: Database, brand: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    today = clock.local_date(clock.now(), TZ)
    periods = [kpis.Period(today - timedelta(days=29), today)]
    first = kpis.kpi_reports(clean_db, periods, tz=TZ)[0]  # builds the book
    again = kpis.kpi_reports(clean_db, periods, tz=TZ)[0]  # reads it
    table = kpis.cohorts(clean_db, tz=TZ)
    monkeypatch.setattr(kpis, "analytics_file", lambda db, kind: None)
    live = kpis.kpi_reports(clean_db, periods, tz=TZ)[0]
    for report in (first, again):
        assert (report.current, report.previous, report.last_year) == (
            live.current,
            live.previous,
            live.last_year,
        )
    assert live.current.revenue_fen == (200 + 300 + 150 + 400 + 4 * 50) * 100
    assert table == kpis.cohorts(clean_db, tz=TZ)
    assert sum(sum(c.buyers) for c in table) > 0
