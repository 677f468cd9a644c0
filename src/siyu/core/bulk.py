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

from sqlalchemy import Boolean, Table, insert, text
from sqlalchemy.orm import Session

from siyu.core.db import UTCDateTime


def _sqlite_instant(value: datetime) -> str:
    """What ``UTCDateTime`` stores on SQLite (UTC, as text), without its two steps through
    SQLAlchemy's processors: an import converts half a million instants."""
    if value.tzinfo is not UTC and value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


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
