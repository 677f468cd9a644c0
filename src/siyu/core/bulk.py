"""Bulk writes for the hot paths (order import and its loyalty effects).

SQLAlchemy's Core ``executemany`` is convenient but does per-row work in Python that costs
more than the database's own insert on SQLite: it builds a parameter dictionary per row
and runs each column's bind processor per value (an instant is converted to UTC and then
formatted as text, once per column per row). An import of a million orders writes about
five million rows, and this overhead was the largest single cost of it.

``insert_rows`` compiles the ``INSERT`` once, converts values column by column with the
bind processors SQLAlchemy would use (so stored values are identical; instants on SQLite
by one direct formatting, checked against SQLAlchemy's), and hands the rows to the
driver's ``executemany``. ``next_ids`` reserves primary keys up front, so inserts that need the new
ids do not need ``RETURNING`` (which SQLite only offers row by row or through SQLAlchemy's
batching of multi-row ``VALUES``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Boolean, Table, insert, text
from sqlalchemy.orm import Session

from siyu.core.db import UTCDateTime


def _sqlite_instant(value: datetime) -> str:
    """What ``UTCDateTime`` stores on SQLite (UTC, as text), without its two steps through
    SQLAlchemy's processors: an import converts half a million instants."""
    if value.tzinfo is not UTC and value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


# The stored text of instants converted lately: an imported order's ``paid_at`` is written
# four times (the order, its growth entry, its points lot and the lot's entry), and the text
# of an instant is the same wherever it goes (processors are pure functions). Bounded: it
# is emptied when full, so it never holds more than a few chunks' instants.
_INSTANT_TEXTS: dict[datetime, str] = {}
_INSTANT_TEXTS_MAX = 1 << 17


def _sqlite_instants(values: Sequence[Any]) -> list[Any]:
    """``_sqlite_instant`` of each value (None stays None), through ``_INSTANT_TEXTS``.

    Only instants in ``UTC`` go through the memo (the import's all do): two datetimes of
    one other zone compare by wall time, so one in a daylight-saving fold would find the
    text of the other."""
    texts = _INSTANT_TEXTS
    if len(texts) > _INSTANT_TEXTS_MAX:
        texts.clear()
    get = texts.get
    out: list[Any] = []
    append = out.append
    last: Any = None
    text: Any = None
    for v in values:
        if v is last:  # a run of one object (a batch's created_at, a day's lot expiry)
            append(text)
            continue
        last = v
        if v is None:
            text = None
        elif v.tzinfo is UTC:
            text = get(v)
            if text is None:
                text = texts[v] = _sqlite_instant(v)
        else:
            text = _sqlite_instant(v)
        append(text)
    return out


def _instant_converter(column: Any, dialect: Any, process: Any) -> Any:
    """``_sqlite_instant`` where it gives exactly what SQLAlchemy would (checked on sample
    values once per column), else SQLAlchemy's own processor."""
    if dialect.name != "sqlite" or not isinstance(column.type, UTCDateTime):
        return process
    samples = (
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=8))),
    )
    if all(_sqlite_instant(v) == process(v) for v in samples):
        return _sqlite_instant
    return process  # pragma: no cover - a SQLAlchemy that stores instants otherwise


def _flat_json(value: Any) -> str | None:
    """``json.dumps`` of a list of flat objects of whole numbers (a points lot's line
    snapshot) in a few string joins; None for any other value (bool is not a whole number
    here: JSON spells it ``true``). Keys are taken as they are, so callers check them."""
    if type(value) is not list:
        return None
    parts = []
    for item in value:
        if type(item) is not dict:
            return None
        fields = []
        for key, number in item.items():
            if type(number) is not int or key not in _PLAIN_KEYS:
                return None
            fields.append(f'"{key}": {number}')
        parts.append("{" + ", ".join(fields) + "}")
    return "[" + ", ".join(parts) + "]"


# Keys of the lot snapshots, which JSON spells as they are between quotes (no escapes).
_PLAIN_KEYS = frozenset({"line_no", "amount_fen", "points"})


def _json_converter(column: Any, dialect: Any, process: Any) -> Any:
    """A converter of JSON values that takes ``_flat_json`` where it gives what the
    processor gives (checked on a sample once per column), else the processor."""
    if dialect.name != "sqlite" or not isinstance(column.type, JSON):
        return None
    sample = [{"line_no": 1, "amount_fen": 12990, "points": -129}, {"points": 0}]
    if _flat_json(sample) != process(sample):
        return None  # pragma: no cover - a serializer configured otherwise

    def convert(value: Any) -> Any:
        text = _flat_json(value)
        return process(value) if text is None else text

    return convert


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """``INSERT`` every row with one ``executemany`` in the session's transaction.

    Every row has the keys of the first (the columns written); columns left out take their
    scalar Python default (as ``insert(table)`` would) or the database's. No ``RETURNING``:
    reserve ids with ``next_ids`` when the caller needs them."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    keys = list(rows[0].keys())
    compiled = insert(table).compile(dialect=dialect, column_keys=keys, for_executemany=True)
    names: list[str] = (
        list(compiled.positiontup or []) if compiled.positional else list(compiled.binds)
    )
    given = [name for name in names if name in rows[0]]
    # The rows' values column by column, transposed by itemgetter and zip (in C) instead
    # of a Python loop per column over every row.
    by_name: dict[str, Any] = {}
    if given:
        pick = itemgetter(*given)
        picked = map(pick, rows) if len(given) > 1 else ((pick(row),) for row in rows)
        by_name = dict(zip(given, zip(*picked, strict=True), strict=True))
    columns: list[Sequence[Any]] = []
    for name in names:
        column = table.c[name]
        values = by_name.get(name)
        if values is None:
            default = column.default
            if default is None or not default.is_scalar:  # pragma: no cover - a caller's bug
                raise ValueError(f"insert_rows: no value and no scalar default for {name}")
            values = [default.arg] * len(rows)  # type: ignore[attr-defined]
        columns.append(_converted(column, dialect, values))
    parameters: list[Any] = list(zip(*columns, strict=True))
    if not compiled.positional:
        parameters = [dict(zip(names, values, strict=True)) for values in parameters]
    connection.exec_driver_sql(str(compiled), parameters)


def _converted(column: Any, dialect: Any, values: Sequence[Any]) -> Sequence[Any]:
    """A column's values as the driver takes them, through the bind processor SQLAlchemy
    would use (or none where the driver stores the Python value as is)."""
    if dialect.name == "sqlite" and isinstance(column.type, Boolean):
        return values  # sqlite3 stores True and False as 1 and 0, what the processor makes
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return values
    convert = _instant_converter(column, dialect, process)
    if convert is _sqlite_instant:
        return _sqlite_instants(values)
    convert = _json_converter(column, dialect, process) or convert
    # Runs of one object are converted once: ``created_at`` is one instant for a whole
    # batch, and lots of one day share their expiry. (Processors are pure functions.)
    out: list[Any] = []
    append = out.append
    last: Any = None
    converted: Any = None
    for v in values:
        if v is not last:
            last = v
            converted = None if v is None else convert(v)
        append(converted)
    return out


def next_ids(session: Session, table: Table, count: int) -> list[int]:
    """Reserve ``count`` new primary keys of ``table``, ascending.

    PostgreSQL: from the column's sequence (safe with concurrent writers, like any
    ``nextval``). SQLite: the ids it would assign itself (max + 1 on), which no other
    connection can take meanwhile: every transaction there starts with ``BEGIN IMMEDIATE``
    and holds the database's write lock until it ends."""
    if count <= 0:
        return []
    [key] = table.primary_key.columns
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence(:table, :column)) "
                "FROM generate_series(1, :n)"
            ),
            {"table": table.name, "column": key.name, "n": count},
        ).scalars()
        return sorted(int(i) for i in rows)
    top = session.execute(text(f'SELECT max("{key.name}") FROM "{table.name}"')).scalar()
    start = int(top or 0) + 1
    return list(range(start, start + count))
