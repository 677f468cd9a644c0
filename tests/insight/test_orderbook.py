"""The order book: a DuckDB copy of the orders and order lines the analytics figures read,
brought up to date from the live database's indexes. Whatever happens to the orders (new
ones, guests', partial and full refunds, merges and unmerges), after a sync the book equals
the live orders and lines; a book that no longer describes the database is rebuilt; and the
KPIs read from it equal the KPIs read from the live table."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import func, select

from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.insight import kpis, orderbook
from siyu.insight.engine import Analytics, analytics_file
from siyu.insight.isolation import run_isolated
from siyu.members import service as members
from siyu.members.models import Member, MemberChange
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.models import Order, OrderLine
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft, RefundLineDraft
from siyu.points.models import PointsEntry
from siyu.tiers.models import TierHistory

TZ = "Asia/Shanghai"
Row = tuple[int, int | None, datetime, int, bool]
Line = tuple[int, int, str, bool]


def _book(engine: Analytics, place: orderbook.Place) -> tuple[str, int, list[Row]]:
    with orderbook.book(engine, place) as held:
        rows = held.orders.order_by("id").to_pyarrow().to_pylist()
        synced = held.synced
    return (
        synced.how,
        synced.orders_read,
        [(r["id"], r["member_id"], r["paid_at"], r["net_fen"], r["counted"]) for r in rows],
    )


def _book_lines(engine: Analytics, place: orderbook.Place) -> tuple[str, int, int, list[Line]]:
    with orderbook.book(engine, place) as held:
        rows = held.lines.order_by(["order_id", "line_no"]).to_pyarrow().to_pylist()
        synced = held.synced
    return (
        synced.how,
        synced.orders_read,
        synced.lines_read,
        [(r["order_id"], r["line_no"], r["category"], r["counted"]) for r in rows],
    )


def _book_follow(engine: Analytics, place: orderbook.Place) -> dict[str, object]:
    """The book's firsts, its list of changes and where it is in it."""
    with orderbook.book(engine, place) as held:
        firsts = held.firsts.order_by("member_id").to_pyarrow().to_pylist()
        changes = held.changes.order_by(["seq", "order_id"]).to_pyarrow().to_pylist()
        points: dict[tuple[datetime, str], int] = {}
        for r in held.points.to_pyarrow().to_pylist():
            key = (r["at"], r["kind"])
            points[key] = points.get(key, 0) + r["points"]
        return {
            "firsts": [(r["member_id"], r["first_at"], r["second_at"]) for r in firsts],
            "points": {key: n for key, n in points.items() if n},
            "tiers": [
                (r["id"], r["member_id"], r["at"], r["from_code"], r["to_code"], r["next_at"])
                for r in held.tiers.order_by("id").to_pyarrow().to_pylist()
            ],
            "changes": [(r["seq"], r["order_id"]) for r in changes],
            "generation": held.generation,
            "seq": held.seq,
            "first_seq": held.first_seq,
        }


def _follow(db: Database, path: str | None) -> dict[str, object]:
    return run_isolated(db, _book_follow, orderbook.Place(path, clock.now()))


def _live_firsts(db: Database) -> list[tuple[int, datetime, datetime | None]]:
    """Each buyer's two earliest counted purchase instants, from the live orders."""
    times: dict[int, list[datetime]] = {}
    for _, member_id, paid_at, _, counted in _live(db):
        if counted and member_id is not None:
            times.setdefault(member_id, []).append(paid_at)
    return [
        (member, sorted(at)[0], sorted(at)[1] if len(at) > 1 else None)
        for member, at in sorted(times.items())
    ]


def _live_points(db: Database) -> dict[tuple[datetime, str], int]:
    """The live points ledger summed by minute and kind (sums of zero left out)."""
    points: dict[tuple[datetime, str], int] = {}
    with db.unit_of_work() as session:
        for entry in session.scalars(select(PointsEntry)):
            at = clock.as_utc(entry.at).replace(tzinfo=None, second=0, microsecond=0)
            points[(at, entry.kind)] = points.get((at, entry.kind), 0) + entry.points
    return {key: n for key, n in points.items() if n}


TierRow = tuple[int, int, datetime, str | None, str, datetime | None]


def _live_tiers(db: Database) -> list[TierRow]:
    """The live tier history, each change with when its member's next one came (by time,
    then id; None for the member's latest)."""
    with db.unit_of_work() as session:
        rows = [
            (h.id, h.member_id, clock.as_utc(h.at).replace(tzinfo=None), h.from_code, h.to_code)
            for h in session.scalars(select(TierHistory).order_by(TierHistory.id))
        ]
    following: dict[int, datetime | None] = {}
    for member in {r[1] for r in rows}:
        own = sorted((r for r in rows if r[1] == member), key=lambda r: (r[2], r[0]))
        for change, after in zip(own, [*own[1:], None], strict=True):
            following[change[0]] = after[2] if after else None
    return [(*r, following[r[0]]) for r in rows]


def _live_lines(db: Database) -> list[Line]:
    with db.unit_of_work() as session:
        return [
            (line.order_id, line.line_no, line.category, line.refunded_quantity < line.quantity)
            for line in session.scalars(
                select(OrderLine).order_by(OrderLine.order_id, OrderLine.line_no)
            )
        ]


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


def _sync_lines(db: Database, path: str | None) -> tuple[str, int, int, list[Line]]:
    return run_isolated(db, _book_lines, orderbook.Place(path, clock.now()))


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


def _a_day_of_changes(db: Database, brand: dict[str, int]) -> int:
    """New orders (D's and a guest's), B-0's second line refunded, C-0 and guest-0 refunded
    in full, and A merged into D; returns the merge."""
    now = clock.now()
    with db.unit_of_work() as session:
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
        return members.merge(
            session, brand["A"], brand["D"], reason="one person", principal=SYSTEM
        ).id


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

    merge = _a_day_of_changes(clean_db, brand)
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


def test_the_books_lines_follow_every_change_to_the_orders(
    clean_db: Database, brand: dict[str, int], tmp_path: Path
) -> None:
    # given a book built from five orders of two lines each
    path = analytics_file(clean_db, "orders", tmp_path)
    how, read, lines_read, lines = _sync_lines(clean_db, path)
    assert (how, read, lines_read) == ("built", 5, 10) and lines == _live_lines(clean_db)
    assert all(counted for *_, counted in lines)

    # when new orders come, a line is refunded, two orders are refunded in full, and A is
    # merged into D
    merge = _a_day_of_changes(clean_db, brand)
    with clean_db.unit_of_work() as session:
        ids = {
            o.external_id: o.id
            for o in session.scalars(select(Order).where(Order.external_id.in_(["B-0", "C-0"])))
        }
    how, read, lines_read, lines = _sync_lines(clean_db, path)
    # then the book's lines are the live lines: B-0's second line and all of C-0's no
    # longer count, the new orders' lines are there; each changed order's lines were read
    assert how == "updated" and lines == _live_lines(clean_db) and len(lines) == 14
    if clean_db.dialect == "sqlite":  # (PostgreSQL also reads the last ids again)
        assert (read, lines_read) == (7, 14)
    assert lines_read == 2 * read
    not_counted = {(order_id, line_no) for order_id, line_no, _, counted in lines if not counted}
    assert not_counted == {
        (ids["B-0"], 2),
        (ids["C-0"], 1),
        (ids["C-0"], 2),
        *((order_id, no) for order_id, no, *_ in lines if order_id == _guest_0(clean_db)),
    }

    # when the merge is undone (D's orders are read again, D-0 as it was) after D-0's
    # second line was put in another category (a catalogue correction: the order's own
    # row is the same, its line is not), and a sync with nothing new
    with clean_db.unit_of_work() as session:
        members.unmerge(session, merge, principal=SYSTEM)
        d_0 = session.scalars(select(Order.id).where(Order.external_id == "D-0")).one()
        line = session.scalars(
            select(OrderLine).where(OrderLine.order_id == d_0, OrderLine.line_no == 2)
        ).one()
        line.category = "湿巾"
    for _ in range(2):
        how, _, _, lines = _sync_lines(clean_db, path)
        assert how == "updated" and lines == _live_lines(clean_db)
    assert (d_0, 2, "湿巾", True) in lines
    # and the KPIs' view of the same book is unchanged by the lines
    assert _sync(clean_db, path)[2] == _live(clean_db)


def _guest_0(db: Database) -> int:
    with db.unit_of_work() as session:
        return session.scalars(select(Order.id).where(Order.external_id == "guest-0")).one()


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
    assert _sync_lines(clean_db, path)[3] == _live_lines(clean_db)


def test_an_older_books_file_is_rebuilt_with_lines(
    clean_db: Database, brand: dict[str, int], tmp_path: Path
) -> None:
    # given a book written by the previous version (orders only)
    path = analytics_file(clean_db, "orders", tmp_path)
    assert path is not None
    assert _sync(clean_db, path)[0] == "built"
    with duckdb.connect(path) as con:
        con.execute("DROP TABLE lines")
        con.execute(f"UPDATE meta SET version = {orderbook.VERSION - 1}")
    # then the next use rebuilds it, lines and all
    how, _, lines_read, lines = _sync_lines(clean_db, path)
    assert (how, lines_read) == ("built", 10) and lines == _live_lines(clean_db)


def test_a_books_file_of_this_version_missing_a_column_is_rebuilt(
    clean_db: Database, brand: dict[str, int], tmp_path: Path
) -> None:
    # given a book whose meta lacks a column (a file written while the version was
    # being changed): it is rebuilt, not read around by falling back to the live tables
    path = analytics_file(clean_db, "orders", tmp_path)
    assert path is not None
    assert _sync(clean_db, path)[0] == "built"
    with duckdb.connect(path) as con:
        con.execute("ALTER TABLE meta DROP COLUMN tier_id")
    assert _sync(clean_db, path)[0] == "built"
    assert _sync(clean_db, path)[0] == "updated"


def test_without_an_analytics_directory_the_live_table_is_read(
    clean_db: Database, brand: dict[str, int]
) -> None:
    how, read, rows = _sync(clean_db, None)
    assert (how, read) == ("live", 0) and rows == _live(clean_db)
    how, _, _, lines = _sync_lines(clean_db, None)
    assert how == "live" and lines == _live_lines(clean_db) and len(lines) == 10


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


def test_the_books_firsts_and_changes_follow_every_change_to_the_orders(
    clean_db: Database, brand: dict[str, int], tmp_path: Path
) -> None:
    # given a book just built: every buyer's first purchases, no changes listed yet
    path = analytics_file(clean_db, "orders", tmp_path)
    built = _follow(clean_db, path)
    assert built["firsts"] == _live_firsts(clean_db) and len(built["firsts"]) == 3
    assert built["points"] == _live_points(clean_db) and built["points"]
    assert built["tiers"] == _live_tiers(clean_db) and built["tiers"]
    assert (built["changes"], built["seq"], built["first_seq"]) == ([], 0, 1)

    # when a day of changes lands (C-0 refunded in full: C has no purchase left; A's two
    # orders move to D, who bought once that day)
    merge = _a_day_of_changes(clean_db, brand)
    with clean_db.unit_of_work() as session:
        ids = dict(session.execute(select(Order.external_id, Order.id)).all())
    day = _follow(clean_db, path)
    # then the firsts are the live ones, regrouped for the members of the changed orders,
    # and the points the live ledger's (the new orders' earnings, the refunds' reversals)
    assert day["firsts"] == _live_firsts(clean_db)
    assert day["points"] == _live_points(clean_db) != built["points"]
    # and the tier history the live one: A's rows are D's now, and D's history is ordered
    # again with them (each change's next, across the two members' rows)
    assert day["tiers"] == _live_tiers(clean_db) != built["tiers"]
    assert any(r[5] is not None for r in day["tiers"] if r[1] == brand["D"])
    assert [m for m, *_ in day["firsts"]] == sorted([brand["B"], brand["D"]])
    # and the orders read again are listed under the sync's number, in the same generation
    assert day["generation"] == built["generation"] and day["seq"] == 1
    # (only those that changed: PostgreSQL also reads the last ids below the watermark
    # again, and a merge every order of its survivor)
    listed = {order_id for seq, order_id in day["changes"] if seq == 1}
    assert listed == {ids[k] for k in ("D-0", "guest-1", "B-0", "C-0", "guest-0", "A-0", "A-1")}

    # when the merge is undone: A's purchases are A's again
    with clean_db.unit_of_work() as session:
        members.unmerge(session, merge, principal=SYSTEM)
    undone = _follow(clean_db, path)
    assert undone["firsts"] == _live_firsts(clean_db) and undone["seq"] == 2
    assert undone["points"] == _live_points(clean_db)
    assert undone["tiers"] == _live_tiers(clean_db)
    assert _follow(clean_db, path)["points"] == _live_points(clean_db)  # nothing counted twice
    # A's orders are listed, not D-0, read again with them but unchanged
    assert {o for s, o in undone["changes"] if s == 2} == {ids["A-0"], ids["A-1"]}

    # when nothing happens, a sync lists nothing, though PostgreSQL reads orders again
    quiet = _follow(clean_db, path)
    assert quiet["seq"] == 4 and not [o for s, o in quiet["changes"] if s == 4]


def test_the_books_changes_are_kept_for_a_while_and_a_rebuild_starts_a_generation(
    clean_db: Database, brand: dict[str, int], tmp_path: Path
) -> None:
    path = analytics_file(clean_db, "orders", tmp_path)
    assert path is not None
    built = _follow(clean_db, path)
    _a_day_of_changes(clean_db, brand)
    day = _follow(clean_db, path)
    assert day["changes"] and day["first_seq"] == 1

    # a copy made at the build can be brought up to date from the changes; one made in
    # another generation, or whose changes are gone, cannot
    def follows(state: dict[str, object], generation: object, seq: int) -> bool:
        return orderbook.Book(
            *([None] * 7),  # type: ignore[arg-type]
            orderbook.Synced("updated", 0),
            str(state["generation"]),
            int(state["seq"]),  # type: ignore[call-overload]
            int(state["first_seq"]),  # type: ignore[call-overload]
        ).changed_since(str(generation), seq)

    assert follows(day, built["generation"], 0) and not follows(day, "another", 0)

    # when the book is synced again more than CHANGES_KEPT later, the first day's changes go
    later = clock.now() + orderbook.CHANGES_KEPT + timedelta(days=1)
    state = run_isolated(clean_db, _book_follow, orderbook.Place(path, later))
    assert state["seq"] == 2 and state["first_seq"] == 2
    assert all(seq >= 2 for seq, _ in state["changes"])  # type: ignore[attr-defined]
    assert not follows(state, built["generation"], 0) and follows(state, built["generation"], 1)

    # and a rebuilt book (damaged file) is a new generation
    Path(path).write_bytes(b"not a DuckDB file")
    again = _follow(clean_db, path)
    assert again["generation"] != built["generation"] and again["seq"] == 0
    assert again["firsts"] == _live_firsts(clean_db)


def test_without_an_analytics_directory_the_firsts_are_the_live_ones(
    clean_db: Database, brand: dict[str, int]
) -> None:
    state = _follow(clean_db, None)
    assert state["firsts"] == _live_firsts(clean_db) and state["generation"] == ""
    assert state["points"] == _live_points(clean_db)
    assert state["tiers"] == _live_tiers(clean_db)
    assert state["changes"] == []


MemberRow = tuple[int, datetime, str, str | None, int | None]


def _book_members(engine: Analytics, place: orderbook.Place) -> tuple[list[MemberRow], str, int]:
    """The book's members, how a sync read them and how many rows it read."""
    with orderbook.book(engine, place) as held:
        rows = held.members.order_by("id").to_pyarrow().to_pylist()
        synced = held.synced
    members_read = [
        (r["id"], r["joined_at"], r["status"], r["tier_code"], r["referrer_id"]) for r in rows
    ]
    return members_read, synced.members_how, synced.members_read


def _sync_members(
    db: Database, path: str | None, share: float = 1e9
) -> tuple[list[MemberRow], str, int]:
    """A sync of the book's members (``share``: past what share of them listed it reads
    them whole; the brand here is five members, so the default follows any night)."""
    return run_isolated(db, _book_members, orderbook.Place(path, clock.now(), share))


def _live_members(db: Database) -> list[MemberRow]:
    with db.unit_of_work() as session:
        return [
            (
                m.id,
                clock.as_utc(m.joined_at).replace(tzinfo=None),
                m.status,
                m.tier_code,
                m.referrer_id,
            )
            for m in session.scalars(select(Member).order_by(Member.id))
        ]


def test_the_books_members_follow_the_member_changes(
    clean_db: Database, brand: dict[str, int], tmp_path: Path
) -> None:
    # given the member changes' state, and a book just built: every member copied
    with clean_db.unit_of_work() as session:
        members.ensure_changes_state(session)
    path = analytics_file(clean_db, "orders", tmp_path)
    built, how, read = _sync_members(clean_db, path)
    assert built == _live_members(clean_db) and how == "whole: the book was built"
    assert read == len(built) == 4

    # when a day changes members: a new one (referred by B), B closed, A merged into D
    with clean_db.unit_of_work() as session:
        members.enrol(
            session,
            EnrolDraft(phone="13900000099", joined_at=clock.now(), referrer_id=brand["B"]),
        )
        members.set_status(session, brand["B"], "closed", reason="asked", principal=SYSTEM)
    merge = _a_day_of_changes(clean_db, brand)
    # then a sync reads again only the members listed since, and the book is the live table
    day, how, read = _sync_members(clean_db, path)
    assert day == _live_members(clean_db) != built and how == orderbook.FOLLOWED
    if clean_db.dialect == "sqlite":  # (PostgreSQL reads the last ids again)
        assert read == 5  # the new member, B, A, D, and C (its refund took its points back)
    # and when the merge is undone
    with clean_db.unit_of_work() as session:
        members.unmerge(session, merge, principal=SYSTEM)
    undone, how, _ = _sync_members(clean_db, path)
    assert undone == _live_members(clean_db) and how == orderbook.FOLLOWED

    # when nothing happened, nothing is read (SQLite)
    quiet, how, read = _sync_members(clean_db, path)
    assert quiet == undone and how == orderbook.FOLLOWED
    if clean_db.dialect == "sqlite":
        assert read == 0
    # nor when only other member tables were written (a tag, the refresh's insight rows)
    with clean_db.unit_of_work() as session:
        members.add_tags(session, brand["C"], ["孕妈"], principal=SYSTEM)
    tagged, how, read = _sync_members(clean_db, path)
    assert tagged == quiet and how == orderbook.FOLLOWED
    if clean_db.dialect == "sqlite":
        assert read == 0

    # when a night lists more than the share of the members, they are read whole
    with clean_db.unit_of_work() as session:
        members.set_status(session, brand["C"], "frozen", reason="audit", principal=SYSTEM)
    many, how, read = _sync_members(clean_db, path, share=0.1)
    assert many == _live_members(clean_db) and how.startswith("whole: ")
    assert "members changed, of 5" in how and read == 5

    # when changes since the book's last sync were pruned, it reads the members whole
    # (pruned below the last change, as after a profile build that read them all)
    for status in ("active", "frozen"):
        with clean_db.unit_of_work() as session:
            members.set_status(session, brand["C"], status, reason="audit", principal=SYSTEM)
    with clean_db.unit_of_work() as session:
        members.prune_changes(session, session.scalar(select(func.max(MemberChange.id))))
    pruned, how, _ = _sync_members(clean_db, path)
    assert pruned == _live_members(clean_db) and "pruned" in how
    if clean_db.dialect == "sqlite":  # and follows them again (PostgreSQL reads from
        # ID_OVERLAP ids below its mark, which this brand's few changes never reach)
        assert _sync_members(clean_db, path)[1] == orderbook.FOLLOWED


def test_without_the_member_changes_state_the_books_members_are_read_whole(
    clean_db: Database, brand: dict[str, int], tmp_path: Path
) -> None:
    path = analytics_file(clean_db, "orders", tmp_path)
    _sync_members(clean_db, path)
    with clean_db.unit_of_work() as session:
        members.set_status(session, brand["C"], "frozen", reason="audit", principal=SYSTEM)
    rows, how, read = _sync_members(clean_db, path)
    assert rows == _live_members(clean_db) and "another list" in how and read == 4
    # and with no analytics directory, the live members are read
    assert _sync_members(clean_db, None)[0] == _live_members(clean_db)
