"""Bulk writes store exactly what SQLAlchemy's own insert stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from siyu.core.bulk import insert_rows, next_ids
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.points.models import PointsLot
from siyu.tiers.models import GrowthEntry

SHANGHAI = timezone(timedelta(hours=8))


def _lot(member_id: int, fact: str, earned_at: datetime) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "source": "order",
        "points": 120,
        "remaining": 120,
        "earned_at": earned_at,
        "available_at": earned_at + timedelta(days=7),
        "frozen": True,
        "expires_at": None,
        "fact": fact,
        "order_id": None,
        "lines": [{"line_no": 1, "amount_fen": 12_000, "points": 120}],
    }


def test_rows_read_back_the_same_as_rows_inserted_by_sqlalchemy(session: Session) -> None:
    member_id = members.enrol(session, EnrolDraft(phone="13800138000")).member_id
    earned_at = datetime(2026, 11, 11, 20, 0, 0, 123_456, tzinfo=SHANGHAI)  # not UTC
    ids = next_ids(session, PointsLot.__table__, 1)
    insert_rows(session, PointsLot.__table__, [_lot(member_id, "bulk", earned_at) | {"id": ids[0]}])
    session.execute(insert(PointsLot.__table__), [_lot(member_id, "core", earned_at)])
    lots = {lot.fact: lot for lot in session.scalars(select(PointsLot))}
    bulk, core = lots["bulk"], lots["core"]
    assert bulk.id == ids[0]
    for name in ("points", "remaining", "earned_at", "available_at", "frozen", "lines"):
        assert getattr(bulk, name) == getattr(core, name), name
    assert bulk.earned_at == earned_at and bulk.earned_at.tzinfo is not None
    # Stored alike, byte for byte: the window and expiry queries compare them as stored.
    raw = session.execute(
        text("SELECT fact, earned_at, available_at FROM points_lots ORDER BY fact")
    ).all()
    assert [tuple(r[1:]) for r in raw if r[0] == "bulk"] == [
        tuple(r[1:]) for r in raw if r[0] == "core"
    ]


def test_columns_left_out_take_their_defaults_and_reserved_ids_follow_the_stored_ones(
    session: Session,
) -> None:
    member_id = members.enrol(session, EnrolDraft(phone="13800138001")).member_id
    at = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
    row = {
        "member_id": member_id,
        "kind": "adjust",
        "growth": 5,
        "fact": "adjust:a",
        "order_id": None,
        "at": at,
        "note": None,
        "created_at": at,
    }
    insert_rows(session, GrowthEntry.__table__, [row, row | {"fact": "adjust:b", "growth": 7}])
    entries = list(session.scalars(select(GrowthEntry).order_by(GrowthEntry.id)))
    assert [(e.fact, e.growth, e.spend_fen, e.orders) for e in entries] == [
        ("adjust:a", 5, 0, 0),
        ("adjust:b", 7, 0, 0),
    ]
    more = next_ids(session, GrowthEntry.__table__, 3)
    assert len(set(more)) == 3 and min(more) > max(e.id for e in entries)
    assert next_ids(session, GrowthEntry.__table__, 0) == []


def test_an_instant_shared_by_rows_and_columns_is_stored_as_sqlalchemy_stores_it(
    session: Session,
) -> None:
    # Given one datetime object in several rows and columns (an order's paid_at is its
    # ledger rows' time), in an offset that is not UTC, and a lot with no expiry
    member_id = members.enrol(session, EnrolDraft(phone="13800138002")).member_id
    shared = datetime(2026, 11, 11, 20, 0, 0, 5, tzinfo=SHANGHAI)
    rows = [
        _lot(member_id, f"bulk-{n}", shared) | {"available_at": shared, "frozen": n % 2 == 0}
        for n in range(3)
    ]
    rows[1]["expires_at"] = shared
    # When written by insert_rows and by SQLAlchemy's own insert
    ids = next_ids(session, PointsLot.__table__, len(rows))
    insert_rows(
        session, PointsLot.__table__, [r | {"id": i} for r, i in zip(rows, ids, strict=True)]
    )
    session.execute(
        insert(PointsLot.__table__), [r | {"fact": r["fact"].replace("bulk", "core")} for r in rows]
    )
    # Then every row reads back the same, byte for byte
    stored = {
        fact: rest
        for fact, *rest in session.execute(
            text("SELECT fact, earned_at, available_at, expires_at, frozen FROM points_lots")
        )
    }
    for n in range(3):
        assert stored[f"bulk-{n}"] == stored[f"core-{n}"], n
    assert stored["bulk-1"][2] is not None and stored["bulk-0"][2] is None
