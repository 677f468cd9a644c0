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

from sqlalchemy import JSON, Boolean, Executable, Table, insert, null, text
from sqlalchemy.orm import Session

from siyu.core.db import UTCDateTime


def _sqlite_instant(value: datetime) -> str:
    """What ``UTCDateTime`` stores on SQLite (UTC, as text), without its two steps through
    SQLAlchemy's processors: an import converts half a million instants."""
    if value.tzinfo is not UTC and value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


# The stored text of instants converted lately, by the identity of the datetime object: an
# imported order's ``paid_at`` is one object written four times (the order, its growth
# entry, its points lot and the lot's entry), and the text of an instant is the same
# wherever it goes (processors are pure functions). By identity, not by value: hashing an
# aware datetime asks its zone for the offset each time, which cost more than the lookup
# saved. Each entry holds its object, so an id is never reused while it is here. Bounded:
# emptied when full, so it never holds more than a few chunks' instants.
_INSTANT_TEXTS: dict[int, tuple[datetime, str]] = {}
_INSTANT_TEXTS_MAX = 1 << 17
_INSTANT_SPELLING = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


def _sqlite_instants(values: Sequence[Any]) -> list[Any]:
    """``_sqlite_instant`` of each value (None stays None), through ``_INSTANT_TEXTS``."""
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
        else:
            key = id(v)
            known = get(key)
            if known is not None and known[0] is v:
                text = known[1]
            else:
                # ``_sqlite_instant``, spelled out: this loop runs for every instant
                # written. Spelled by ``%`` rather than ``isoformat`` and a slice: the same
                # text (microseconds always, no offset) in two thirds of the time.
                u = v.astimezone(UTC) if v.tzinfo is not UTC and v.tzinfo is not None else v
                text = _INSTANT_SPELLING % (
                    u.year,
                    u.month,
                    u.day,
                    u.hour,
                    u.minute,
                    u.second,
                    u.microsecond,
                )
                texts[key] = (v, text)
        append(text)
    return out


def _instant_converter(kind: Any, dialect: Any, process: Any) -> Any:
    """``_sqlite_instant`` where it gives exactly what SQLAlchemy would (checked on sample
    values once per column), else SQLAlchemy's own processor."""
    if dialect.name != "sqlite" or not isinstance(kind, UTCDateTime):
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
    here: JSON spells it ``true``). Keys are taken as they are, so callers check them.

    An object may also come as a named tuple of those keys (``LineEarning``): it is spelled
    as the object of its fields, without a dictionary made per line first."""
    if type(value) is not list:
        return None
    parts = []
    for item in value:
        kind = type(item)
        if kind is dict:
            fields = []
            for key, number in item.items():
                if type(number) is not int or key not in _PLAIN_KEYS:
                    return None
                fields.append(f'"{key}": {number}')
            parts.append("{" + ", ".join(fields) + "}")
            continue
        spelling = _RECORD_SPELLINGS.get(kind)
        if spelling is None:
            spelling = _RECORD_SPELLINGS[kind] = _record_spelling(kind)
        if not spelling:
            return None
        for number in item:
            if type(number) is not int:
                return None
        parts.append(spelling % item)
    return "[" + ", ".join(parts) + "]"


# Keys of the lot snapshots, which JSON spells as they are between quotes (no escapes).
_PLAIN_KEYS = frozenset({"line_no", "amount_fen", "points"})
# Named tuple classes -> the spelling of one as a JSON object ("" for other classes).
_RECORD_SPELLINGS: dict[type, str] = {}


def _record_spelling(kind: type) -> str:
    """``{"line_no": %d, ...}`` for a named tuple class of snapshot keys, else ""."""
    fields = getattr(kind, "_fields", None) if issubclass(kind, tuple) else None
    if not fields or any(name not in _PLAIN_KEYS for name in fields):
        return ""
    return "{" + ", ".join(f'"{name}": %d' for name in fields) + "}"


def _as_objects(value: Any) -> Any:
    """A list's named tuples as the dictionaries of their fields (what JSON stores of
    them); any other value as it is."""
    if type(value) is list and any(type(x) is not dict and hasattr(x, "_asdict") for x in value):
        return [x._asdict() if hasattr(x, "_asdict") else x for x in value]
    return value


def _json_converter(kind: Any, dialect: Any, process: Any) -> Any:
    """A converter of JSON values: ``_flat_json`` on SQLite where it gives what the
    processor gives (checked on a sample once per column), else the processor, given
    named tuples as the objects of their fields."""
    if not isinstance(kind, JSON):
        return None
    sample = [{"line_no": 1, "amount_fen": 12990, "points": -129}, {"points": 0}]
    if dialect.name != "sqlite" or _flat_json(sample) != process(sample):

        def through_processor(value: Any) -> Any:
            return process(_as_objects(value))

        return through_processor

    def convert(value: Any) -> Any:
        text = _flat_json(value)
        return process(_as_objects(value)) if text is None else text

    return convert


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """``INSERT`` every row with one ``executemany`` in the session's transaction.

    Every row has the keys of the first (the columns written); columns left out take their
    scalar Python default (as ``insert(table)`` would) or the database's. No ``RETURNING``:
    reserve ids with ``next_ids`` when the caller needs them."""
    if not rows:
        return
    keys = tuple(rows[0].keys())
    # The rows' values as tuples by itemgetter (in C) instead of a Python loop per column.
    pick = itemgetter(*keys)
    values = list(map(pick, rows)) if len(keys) > 1 else [(pick(row),) for row in rows]
    insert_tuples(session, table, keys, values)


def insert_tuples(
    session: Session, table: Table, keys: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """``insert_rows`` of rows given as tuples of the values of ``keys``, in that order:
    the hot paths build a tuple per row, cheaper than a dictionary of a dozen keys.

    None costs sqlite3 more than any other value: it binds None (and booleans) only after
    asking its adapters' registry and the value itself for an adaptation (a failed lookup
    of ``__adapt__`` and ``__conform__`` per value), more than the row's insert of that
    column. So, on SQLite, a column that is None in every row is written as a ``NULL`` in
    the statement instead of bound row by row. The stored value is the same NULL (None is
    never converted here)."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    # The rows' values column by column, transposed by zip (in C).
    by_name = dict(zip(keys, zip(*rows, strict=True), strict=True))
    nulls: tuple[str, ...] = ()
    if dialect.name == "sqlite":
        nulls = tuple(
            name for name, values in by_name.items() if table.c[name].nullable and _all_none(values)
        )
    sql, names, positional = _statement(table, dialect, tuple(keys), nulls)
    columns: list[Sequence[Any]] = []
    for name in names:
        column = table.c[name]
        values = by_name.get(name)
        if values is None:
            default = column.default
            if default is None or not default.is_scalar:  # pragma: no cover - a caller's bug
                raise ValueError(f"insert_rows: no value and no scalar default for {name}")
            values = [default.arg] * len(rows)  # type: ignore[attr-defined]
        columns.append(_converted(column.type, dialect, values))
    if columns:
        parameters: list[Any] = list(zip(*columns, strict=True))
    else:  # every column given is None in every row
        parameters = [()] * len(rows)
    if not positional:
        parameters = [dict(zip(names, values, strict=True)) for values in parameters]
    connection.exec_driver_sql(sql, parameters)


def _all_none(values: Sequence[Any]) -> bool:
    """Whether every value is None (the first is looked at before the whole column)."""
    return values[0] is None and values.count(None) == len(values)


# Compiled INSERTs by table, dialect, the columns given and those of them written as NULL:
# an import writes the same few statements for every chunk, and compiling one took longer
# than converting its values.
_STATEMENTS: dict[
    tuple[Table, Any, tuple[str, ...], tuple[str, ...]], tuple[str, list[str], bool]
] = {}


def _statement(
    table: Table, dialect: Any, keys: tuple[str, ...], nulls: tuple[str, ...] = ()
) -> tuple[str, list[str], bool]:
    """The ``INSERT`` of ``keys`` into ``table`` as the driver takes it, the columns in
    ``nulls`` (some of ``keys``) as a ``NULL`` in the statement: its text, the names of its
    parameters in order, and whether they are positional."""
    found = _STATEMENTS.get((table, dialect, keys, nulls))
    if found is not None:
        return found
    statement = insert(table)
    if nulls:
        statement = statement.values({name: null() for name in nulls})
    compiled = statement.compile(
        dialect=dialect,
        column_keys=[k for k in keys if k not in nulls],
        for_executemany=True,
    )
    names = list(compiled.positiontup or []) if compiled.positional else list(compiled.binds)
    if len(_STATEMENTS) > 256:
        _STATEMENTS.clear()
    found = _STATEMENTS[(table, dialect, keys, nulls)] = (
        str(compiled),
        names,
        compiled.positional,
    )
    return found


def _converted(kind: Any, dialect: Any, values: Sequence[Any]) -> Sequence[Any]:
    """Values of one type as the driver takes them, through the bind processor SQLAlchemy
    would use (or none where the driver stores the Python value as is)."""
    mode, convert = _converter(kind, dialect)
    if mode is _AS_IS:
        return values
    if mode is _INSTANTS:
        return _sqlite_instants(values)
    if mode is _BOOLEANS:
        return [v if v is None else int(v) for v in values]
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


_AS_IS, _INSTANTS, _BOOLEANS, _EACH = "as is", "instants", "booleans", "each"
# How values of a type are converted, by the type object and dialect: the processor, the
# checks of ``_instant_converter`` and ``_json_converter`` on their samples, once, not at
# every insert of every column (an import chunk converts a few hundred columns). Each
# entry holds its type object, so an id is never reused while it is here.
_CONVERTERS: dict[tuple[int, Any], tuple[Any, str, Any]] = {}


def _converter(kind: Any, dialect: Any) -> tuple[str, Any]:
    """(mode, converter of one value) for values of ``kind`` on ``dialect``."""
    key = (id(kind), dialect)
    found = _CONVERTERS.get(key)
    if found is not None and found[0] is kind:
        return found[1], found[2]
    if dialect.name == "sqlite" and isinstance(kind, Boolean):
        # 1 and 0, what the processor makes of True and False: sqlite3 would store a bool
        # as the same integer, but only after asking for an adaptation of each one (see
        # ``insert_tuples``).
        mode, convert = _BOOLEANS, None
    else:
        process = kind.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            mode, convert = _AS_IS, None
        elif _instant_converter(kind, dialect, process) is _sqlite_instant:
            mode, convert = _INSTANTS, _sqlite_instant
        else:
            mode = _EACH
            convert = _json_converter(kind, dialect, process) or _instant_converter(
                kind, dialect, process
            )
    if len(_CONVERTERS) > 1024:
        _CONVERTERS.clear()
    _CONVERTERS[key] = (kind, mode, convert)
    return mode, convert


def execute_rows(
    session: Session, statement: Executable, rows: Sequence[Mapping[str, Any]]
) -> None:
    """``session.execute(statement, rows)`` for a statement run once per row (an ``UPDATE
    .. WHERE id = :b_id``, an upsert), with one ``executemany`` of the driver: compiled
    once per statement object, values converted parameter by parameter as ``insert_rows``
    converts them. Core's ``executemany`` builds and processes every row's parameters
    one by one, which an import chunk pays for thousands of members.

    ``statement`` should be built once and kept (the compiled form is kept by its
    identity); rows carry every parameter of the statement under its name."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    keys = tuple(rows[0].keys())
    cache_key = (id(statement), dialect, keys)
    found = _COMPILED.get(cache_key)
    if found is None or found[0] is not statement:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
        names = list(compiled.positiontup or []) if compiled.positional else list(compiled.binds)
        kinds = [compiled.binds[name].type for name in names]
        if len(_COMPILED) > 256:
            _COMPILED.clear()
        found = (statement, str(compiled), names, kinds, compiled.positional)
        _COMPILED[cache_key] = found
    _, sql, names, kinds, positional = found
    pick = itemgetter(*names)
    picked = map(pick, rows) if len(names) > 1 else ((pick(row),) for row in rows)
    columns = [
        _converted(kind, dialect, values)
        for kind, values in zip(kinds, zip(*picked, strict=True), strict=True)
    ]
    parameters: list[Any] = list(zip(*columns, strict=True))
    if not positional:
        parameters = [dict(zip(names, values, strict=True)) for values in parameters]
    connection.exec_driver_sql(sql, parameters)


_COMPILED: dict[tuple[int, Any, tuple[str, ...]], tuple[Any, str, list[str], list[Any], bool]] = {}


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
