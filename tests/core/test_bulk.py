"""Bulk writes store exactly what SQLAlchemy's own insert stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
    text,
)
from sqlalchemy.orm import Session

from siyu.core.bulk import _flat_json, insert_rows, insert_tuples, next_ids
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


_NUMBERS = st.one_of(st.integers(-(10**12), 10**12), st.booleans(), st.none(), st.floats())
_SNAPSHOTS = st.lists(
    st.dictionaries(
        st.sampled_from(["line_no", "amount_fen", "points", 'name with "quote"', "键"]),
        _NUMBERS,
        max_size=4,
    ),
    max_size=4,
)


@given(_SNAPSHOTS)
def test_a_lot_snapshot_is_spelled_as_json_dumps_spells_it_or_left_to_it(value: Any) -> None:
    # A list of flat objects of whole numbers under the snapshot's keys: the same text as
    # json.dumps; anything else (booleans, floats, nulls, other keys): not taken at all
    text_ = _flat_json(value)
    plain = all(
        k in ("line_no", "amount_fen", "points") and type(v) is int
        for item in value
        for k, v in item.items()
    )
    assert text_ == (json.dumps(value) if plain else None)
    assert _flat_json({"points": 1}) is None and _flat_json([[1]]) is None


def test_snapshots_and_instants_are_stored_as_sqlalchemy_stores_them_across_calls(
    session: Session,
) -> None:
    # Given lots whose instants are one UTC datetime object and equal copies of it, in
    # separate calls (the import writes an order's paid_at in four tables), and snapshots
    # of one and two lines
    member_id = members.enrol(session, EnrolDraft(phone="13800138003")).member_id
    at = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
    snapshots = [
        [{"line_no": 1, "amount_fen": 12_000, "points": 120}],
        [
            {"line_no": 1, "amount_fen": 0, "points": 0},
            {"line_no": 2, "amount_fen": 5, "points": -1},
        ],
    ]
    for n, lines in enumerate(snapshots):
        copy = at.replace(microsecond=0)  # equal, not the same object
        row = _lot(member_id, f"bulk-{n}", at) | {"lines": lines, "available_at": copy}
        [lot_id] = next_ids(session, PointsLot.__table__, 1)
        insert_rows(session, PointsLot.__table__, [row | {"id": lot_id}])
        session.execute(
            insert(PointsLot.__table__), [row | {"fact": f"core-{n}", "expires_at": copy}]
        )
        session.execute(
            PointsLot.__table__.update()
            .where(PointsLot.__table__.c.fact == f"bulk-{n}")
            .values(expires_at=copy)
        )
    # Then the stored text is the same, byte for byte
    stored = {
        fact: rest
        for fact, *rest in session.execute(
            text("SELECT fact, lines, earned_at, available_at, expires_at FROM points_lots")
        )
    }
    for n in range(len(snapshots)):
        assert stored[f"bulk-{n}"] == stored[f"core-{n}"], n


class _Earned(NamedTuple):
    """A snapshot line as earning gives it (the fields of ``LineEarning``)."""

    line_no: int
    amount_fen: int
    points: int


class _Other(NamedTuple):
    line_no: int
    name: int


@given(
    st.lists(
        st.tuples(st.integers(-(10**12), 10**12), _NUMBERS, st.integers(-(10**6), 10**6)),
        max_size=4,
    )
)
def test_a_snapshot_of_named_tuples_is_spelled_as_the_objects_of_their_fields(
    values: list[tuple[Any, Any, Any]],
) -> None:
    # Named tuples of the snapshot's keys: the JSON of their fields as objects; any field
    # that is not a whole number, or a field of another name: not taken at all
    lines = [_Earned(*v) for v in values]
    plain = all(type(x) is int for v in values for x in v)
    assert _flat_json(lines) == (json.dumps([x._asdict() for x in lines]) if plain else None)
    assert _flat_json([_Other(1, 2)]) is None and _flat_json([(1, 2, 3)]) is None


def test_a_snapshot_of_named_tuples_is_stored_as_the_same_objects_as_dictionaries(
    session: Session,
) -> None:
    # Given a lot whose snapshot is named tuples, and the same lot with dictionaries
    member_id = members.enrol(session, EnrolDraft(phone="13800138004")).member_id
    at = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
    lines = [_Earned(1, 12_000, 120), _Earned(2, 0, 0)]
    [lot_id] = next_ids(session, PointsLot.__table__, 1)
    # When one is written by insert_rows and the other by SQLAlchemy's own insert
    insert_rows(
        session, PointsLot.__table__, [_lot(member_id, "bulk", at) | {"id": lot_id, "lines": lines}]
    )
    session.execute(
        insert(PointsLot.__table__),
        [_lot(member_id, "core", at) | {"lines": [x._asdict() for x in lines]}],
    )
    # Then both store the same text and read back as the same objects
    stored = dict(session.execute(text("SELECT fact, lines FROM points_lots")).all())
    assert stored["bulk"] == stored["core"]
    lots = {lot.fact: lot for lot in session.scalars(select(PointsLot))}
    assert (
        lots["bulk"].lines
        == lots["core"].lines
        == [
            {"line_no": 1, "amount_fen": 12_000, "points": 120},
            {"line_no": 2, "amount_fen": 0, "points": 0},
        ]
    )


def test_none_zero_blank_text_and_booleans_are_stored_as_sqlalchemy_stores_them(
    session: Session,
) -> None:
    # Given a table with nullable numbers, text, booleans and JSON, and rows where a column
    # is None in every row, None in some rows (with and without a 0 or a '' beside it),
    # or never None (a JSON None is left out: SQLAlchemy stores it as JSON's null)
    probe = Table(
        "bulk_probe",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("some_none", BigInteger),
        Column("none_and_zero", Integer),
        Column("text_some_none", String(20)),
        Column("text_none_and_blank", String(20)),
        Column("flag", Boolean),
        Column("always_none", String(20)),
        Column("snapshot", JSON),
        prefixes=["TEMPORARY"],
    )
    keys = [c.name for c in probe.columns][1:]
    values = [
        (None, 0, None, "", True, None, [{"points": 0}]),
        (5, None, "x", None, False, None, [{"points": 1}]),
        (None, 3, "y", "z", None, None, []),
        (-7, 0, None, None, True, None, [{"points": 2}]),
    ]
    probe.create(session.connection())
    try:
        # When written by insert_tuples (ids 1..) and by SQLAlchemy's own insert (ids 101..)
        insert_tuples(session, probe, ["id", *keys], [(n, *v) for n, v in enumerate(values, 1)])
        session.execute(
            insert(probe),
            [{"id": 100 + n} | dict(zip(keys, v, strict=True)) for n, v in enumerate(values, 1)],
        )
        # Then every row reads back the same, stored value by stored value
        columns = ", ".join(keys)
        stored = {
            row[0]: tuple(row[1:])
            for row in session.execute(text(f"SELECT id, {columns} FROM bulk_probe"))
        }
        for n in range(1, len(values) + 1):
            assert stored[n] == stored[100 + n], n
        assert stored[2][:4] == (5, None, "x", None) and stored[1][5] is None
        if session.get_bind().dialect.name == "sqlite":  # the same storage classes too
            kinds = ", ".join(f"typeof({k})" for k in keys)
            typed = {
                row[0]: tuple(row[1:])
                for row in session.execute(text(f"SELECT id, {kinds} FROM bulk_probe"))
            }
            for n in range(1, len(values) + 1):
                assert typed[n] == typed[100 + n], n
    finally:
        probe.drop(session.connection())
