"""Order files (CSV and Parquet) in and out, streamed: a file of any size is read once, a
chunk at a time, and each chunk is its own transaction.

The format is one row per order line::

    channel,external_id,paid_at,buyer_channel,buyer_id,member_id,store_code,sku,category,quantity,amount,freight
    tmall,T1001,2026-11-11T20:00:00+08:00,phone,13800138000,,S001,SKU-1,奶粉,2,256.00,10.00
    tmall,T1001,2026-11-11T20:00:00+08:00,phone,13800138000,,S001,SKU-9,纸尿裤,1,99.90,

Consecutive rows with the same (channel, external_id) are one order; the order's fields
(paid_at, buyer, store, freight) come from its first row. A time without an offset is the
brand's local time. Amounts are yuan. Rows are numbered as a spreadsheet shows them: the
header is row 1 (Parquet rows are numbered the same way, so reports read alike).

A bad row rejects its whole order (storing the other lines would store a wrong total) and
is listed in the error report with the reason; other orders land.
"""

from __future__ import annotations

import codecs
import csv
import gc
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError

from siyu.core.db import Database
from siyu.core.errors import InvalidInput
from siyu.core.money import FEN_PER_YUAN, fen_to_yuan, yuan_to_fen
from siyu.core.settings import get_settings
from siyu.orders import rules
from siyu.orders.rules import LineDraft, OrderDraft
from siyu.orders.service import IngestResult, UnknownBuyer, analyze_if_stale, ingest_orders

COLUMNS = (
    "channel",
    "external_id",
    "paid_at",
    "buyer_channel",
    "buyer_id",
    "member_id",
    "store_code",
    "sku",
    "category",
    "quantity",
    "amount",
    "freight",
)
OPTIONAL = frozenset({"buyer_channel", "buyer_id", "member_id", "store_code", "freight"})
REQUIRED = tuple(c for c in COLUMNS if c not in OPTIONAL)
HEADER = ",".join(COLUMNS)
PARQUET_SUFFIXES = (".parquet", ".pq")
SAMPLE_ERRORS = 20
_ZONE_UTC = ZoneInfo("UTC")

# Where a problem reported by the service on an order points to in the file.
FIELD_COLUMNS = {
    "channel": "channel",
    "external_id": "external_id",
    "paid_at": "paid_at",
    "buyer_identities": "buyer_id",
    "member_id": "member_id",
    "store_code": "store_code",
    "store_id": "store_code",
    "freight": "freight",
    "discount": "amount",
    "amount": "amount",
    "lines": "sku",
    "order": "",
}


class ImportFailed(InvalidInput):
    """The file as a whole cannot be imported (header, encoding, not a Parquet file)."""

    code = "invalid_file"


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    reason: str


@dataclass
class ImportReport:
    path: Path
    rows: int = 0
    orders_created: int = 0
    duplicates: int = 0
    rejected_orders: int = 0
    rejected_rows: int = 0
    errors: int = 0
    error_report: Path | None = None
    elapsed_seconds: float = 0.0
    sample_errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rejected_rows == 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


@dataclass(slots=True)
class _Row:
    """One row as read: its number, raw values by column, and what is wrong with it."""

    number: int
    values: dict[str, Any]
    errors: list[tuple[str, str]] = field(default_factory=list)
    line: LineDraft | None = None

    def raw(self, column: str) -> str:
        value = self.values.get(column)
        return "" if value is None else str(value)


class _ErrorReport:
    """The error CSV, opened on the first error only (a clean import leaves no file).
    UTF-8 with a BOM so Excel, what most operators open it with, shows Chinese right."""

    def __init__(self, path: Path | None, columns: Sequence[str], report: ImportReport) -> None:
        self.path = path
        self.columns = list(columns)
        self.report = report
        self._file: IO[str] | None = None
        self._writer: Any = None

    def add(self, row: _Row, column: str, reason: str) -> None:
        self.report.errors += 1
        if len(self.report.sample_errors) < SAMPLE_ERRORS:
            self.report.sample_errors.append(RowError(row.number, column, reason))
        if self.path is None:
            return
        if self._writer is None:
            self._file = self.path.open("w", encoding="utf-8-sig", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(["row", "column", "reason", *self.columns])
            self.report.error_report = self.path
        self._writer.writerow([row.number, column, reason, *(row.raw(c) for c in self.columns)])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# --- reading -----------------------------------------------------------------------------


def _check_header(names: Sequence[str], path: Path) -> None:
    seen = [n.strip() for n in names]
    missing = [c for c in REQUIRED if c not in seen]
    unknown = [n for n in seen if n not in COLUMNS]
    repeated = sorted({n for n in seen if seen.count(n) > 1})
    if missing or unknown or repeated:
        parts = []
        if missing:
            parts.append("missing columns: " + ", ".join(missing))
        if unknown:
            parts.append("unknown columns: " + ", ".join(repr(n) for n in unknown))
        if repeated:
            parts.append("repeated columns: " + ", ".join(repeated))
        raise ImportFailed(
            f"{path.name}: the header does not fit ({'; '.join(parts)}). Expected header: "
            f"{HEADER} (buyer_channel, buyer_id, member_id, store_code and freight may be left "
            "out)",
            field="header",
        )


def _encoding_hint(encoding: str) -> str:
    other = "utf-8" if codecs.lookup(encoding).name in ("gbk", "gb18030", "gb2312") else "gbk"
    return f"the file may be in another encoding; try --encoding {other}"


class _Lines:
    """A binary file's lines, decoded one by one so a decoding error names its line
    (a text stream decodes 8 KB blocks and cannot say which row was wrong)."""

    def __init__(self, stream: IO[bytes], encoding: str) -> None:
        self.stream = stream
        self.encoding = encoding
        self.bad: list[str] = []
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        decode = codecs.getdecoder(self.encoding)
        first = True
        for raw in self.stream:
            self.bytes_read += len(raw)
            if first and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            first = False
            try:
                text, _ = decode(raw)
            except UnicodeDecodeError as exc:
                self.bad.append(f"byte {raw[exc.start : exc.start + 1]!r} at position {exc.start}")
                text, _ = decode(raw, "replace")
            yield text


def _csv_rows(path: Path, encoding: str, on_bytes: Any) -> tuple[list[str], Iterator[_Row]]:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ImportFailed(f"unknown encoding '{encoding}'", field="encoding") from None
    stream = path.open("rb")
    lines = _Lines(stream, encoding)
    reader = csv.reader(iter(lines))
    try:
        header = next(reader)
    except StopIteration:
        stream.close()
        raise ImportFailed(f"{path.name} is empty; expected the header {HEADER}") from None
    except csv.Error as exc:
        stream.close()
        raise ImportFailed(f"{path.name}: the header is not CSV ({exc})") from None
    if lines.bad:
        stream.close()
        raise ImportFailed(
            f"{path.name} row 1 (the header) is not valid {encoding} ({lines.bad[0]}); "
            + _encoding_hint(encoding),
            field="encoding",
        )
    header = [h.strip() for h in header]
    try:
        _check_header(header, path)
    except ImportFailed:
        stream.close()
        raise

    def rows() -> Iterator[_Row]:
        number = 1
        try:
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    number += 1
                    yield _Row(number, {}, [("", f"malformed CSV: {exc}")])
                    continue
                number += 1
                on_bytes(lines.bytes_read)
                if not record:  # a blank line
                    continue
                values: dict[str, Any] = dict(zip(header, record, strict=False))
                row = _Row(number, values)
                if lines.bad:
                    reason = f"not valid {encoding} ({lines.bad[0]}); {_encoding_hint(encoding)}"
                    lines.bad.clear()
                    row.errors.append(("", reason))
                elif len(record) != len(header):
                    row.errors.append(
                        (
                            header[min(len(record), len(header) - 1)],
                            f"{len(record)} values where the header has {len(header)} columns "
                            "(a truncated or malformed line?)",
                        )
                    )
                yield row
        finally:
            stream.close()

    return header, rows()


_UTC_NAMES = frozenset({"UTC", "utc", "Etc/UTC", "+00:00", "Z"})


def _plain_utc(kind: Any) -> bool:
    """Whether a Parquet column type holds UTC instants a ``datetime`` can take as plain
    UTC wall times (nanoseconds stay on pyarrow's path: they do not fit a datetime)."""
    import pyarrow as pa

    return bool(pa.types.is_timestamp(kind) and kind.tz in _UTC_NAMES and kind.unit != "ns")


def _column_values(column: Any) -> list[Any]:
    """A Parquet column's values as Python objects.

    Instants in UTC (what ``write_orders_file`` writes) come as ``datetime.UTC`` instants:
    pyarrow makes an aware value through zoneinfo for each one, a tenth of a file's import
    time, where reading them as plain UTC wall times and attaching ``UTC`` gives the same
    instants at a third of the cost (and in the zone every later step takes as it is)."""
    import pyarrow as pa

    kind = column.type
    if _plain_utc(kind):
        return [
            None if v is None else v.replace(tzinfo=UTC)
            for v in column.cast(pa.timestamp(kind.unit)).to_pylist()
        ]
    return column.to_pylist()  # type: ignore[no-any-return]


# --- parsing -----------------------------------------------------------------------------


def _text(value: Any) -> str:
    if type(value) is str:
        return value.strip()
    return "" if value is None else str(value).strip()


def _integer(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool):
        raise ValueError(f"'{value}' is not a whole number")
    if isinstance(value, int):
        return value
    text = _text(value)
    try:
        number = Decimal(text)
        if number != number.to_integral_value():
            raise ValueError
        return int(number)
    except (InvalidOperation, ValueError):
        raise ValueError(f"'{text}' is not a whole number") from None


def _decimal_fen(value: Any) -> int | None:
    """Fen of a Decimal amount (what ``yuan_to_fen`` makes of it, without its round trip
    through text); None when ``value`` is not one or is not a whole number of fen."""
    if type(value) is Decimal and value.is_finite():
        fen = value * FEN_PER_YUAN
        if fen == fen.to_integral_value():
            return int(fen)
    return None


def _fen(value: Any) -> int:
    fen = _decimal_fen(value)
    if fen is not None:
        return fen
    if isinstance(value, float):  # a Parquet file written with float amounts: take its text
        value = repr(value)
    try:
        return yuan_to_fen(value if isinstance(value, (Decimal, int)) else _text(value))
    except InvalidInput as exc:
        raise ValueError(exc.message.split(": ", 1)[-1]) from None


def _instant(value: Any, tz: str) -> datetime:
    if type(value) is datetime and value.tzinfo is not None:
        return value
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(tz))
    return rules.local_instant(_text(value), tz)


@dataclass(slots=True)
class _Head:
    """The order-level fields, from an order's first row."""

    channel: str
    external_id: str
    paid_at: datetime | None
    member_id: int | None
    buyer: tuple[str, str] | None
    store_code: str | None
    freight_fen: int


def _blank(value: Any) -> bool:
    """What a required column lacks: no value, or only spaces."""
    kind = type(value)
    if kind is int or kind is Decimal or kind is datetime:  # never blank as text
        return False
    return not _text(value)


def _attempt(errors: list[tuple[str, str]], column: str, parse: Any, value: Any, *args: Any) -> Any:
    try:
        if column in REQUIRED and _blank(value):
            raise ValueError("missing")
        return parse(value, *args)
    except ValueError as exc:
        errors.append((column, str(exc)))
        return None


def _optional_integer(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is int:
        return value
    return _integer(value) if _text(value) else None


def _optional_fen(value: Any) -> int:
    if value is None:
        return 0
    if type(value) is Decimal:
        return _fen(value)
    return _fen(value) if _text(value) else 0


def _parse(row: _Row, tz: str, first: bool, key: tuple[str, str] | None = None) -> _Head | None:
    """Fill ``row.line`` (and return the order's fields for its first row), or add errors.
    ``key`` is the row's (channel, external_id) as text, when the caller has it already."""
    errors = row.errors
    if errors:  # a line of the wrong shape: its values cannot be trusted one by one
        return None
    get = row.values.get
    sku, category = _text(get("sku")), _text(get("category"))
    if not sku:
        errors.append(("sku", "missing"))
    if not category:
        errors.append(("category", "missing"))
    # Each value takes a shortcut when it comes typed as expected (Parquet), else the full
    # parse with its checks and messages.
    quantity = get("quantity")
    if type(quantity) is not int:
        quantity = _attempt(errors, "quantity", _integer, quantity)
    value = get("amount")
    amount = _decimal_fen(value)
    if amount is None:
        amount = _attempt(errors, "amount", _fen, value)
    if quantity is not None and amount is not None:
        row.line = LineDraft(sku, category, quantity, amount)
    if not first:
        return None
    channel, external_id = key or (_text(get("channel")), _text(get("external_id")))
    if not channel:
        errors.append(("channel", "missing"))
    if not external_id:
        errors.append(("external_id", "missing"))
    paid_at = get("paid_at")
    if type(paid_at) is not datetime or paid_at.tzinfo is None:
        paid_at = _attempt(errors, "paid_at", _instant, paid_at, tz)
    elif paid_at.tzinfo is _ZONE_UTC:
        # Parquet instants come in zoneinfo's UTC; the same instant in ``datetime.UTC`` is
        # what every later step (growth, points, the stored text) takes without converting.
        paid_at = paid_at.replace(tzinfo=UTC)
    member_id = get("member_id")
    if member_id is not None and type(member_id) is not int:
        member_id = _attempt(errors, "member_id", _optional_integer, member_id)
    buyer_id = _text(get("buyer_id"))
    buyer = (_text(get("buyer_channel")) or "phone", buyer_id) if buyer_id else None
    value = get("freight")
    freight = 0 if value is None else _decimal_fen(value)
    if freight is None:
        freight = _attempt(errors, "freight", _optional_fen, value)
    return _Head(
        channel,
        external_id,
        paid_at,
        member_id,
        buyer,
        _text(get("store_code")) or None,
        freight or 0,
    )


class _PendingOrder:
    """An order as read: its draft (None when a row is bad) and its rows, for the report.

    Orders read by the Parquet fast path keep their batch and row range instead of row
    objects: the rows are made only when the order is rejected and must be reported."""

    __slots__ = ("_rows", "_source", "draft", "size")

    def __init__(
        self,
        rows: list[_Row] | None,
        draft: OrderDraft | None,
        size: int | None = None,
        source: tuple[Any, int, int] | None = None,
    ) -> None:
        self._rows = rows
        self.draft = draft
        self.size = len(rows) if rows is not None else size or 0
        self._source = source  # (record batch, first row's index in it, its row number)

    @property
    def rows(self) -> list[_Row]:
        if self._rows is None:
            assert self._source is not None
            batch, start, number = self._source
            part = batch.slice(start, self.size)
            names = part.schema.names
            columns = [_column_values(part.column(name)) for name in names]
            self._rows = [
                _Row(number + i, dict(zip(names, values, strict=True)))
                for i, values in enumerate(zip(*columns, strict=True))
            ]
        return self._rows


def _orders(rows: Iterable[_Row], tz: str) -> Iterator[_PendingOrder]:
    """Group consecutive rows by (channel, external_id) into drafts; an order with a bad row
    comes out without a draft."""
    group: list[_Row] = []
    head: _Head | None = None
    key: tuple[str, str] | None = None

    def finish() -> _PendingOrder:
        bad = any(r.errors for r in group) or head is None or head.paid_at is None
        draft = None
        if not bad and head is not None and head.paid_at is not None:
            draft = OrderDraft(
                channel=head.channel,
                external_id=head.external_id,
                paid_at=head.paid_at,
                lines=[r.line for r in group if r.line is not None],
                member_id=head.member_id,
                buyer_identities=[head.buyer] if head.buyer else [],
                store_code=head.store_code,
                freight_fen=head.freight_fen,
            )
        return _PendingOrder(group, draft)

    for row in rows:
        values = row.values
        row_key = (_text(values.get("channel")), _text(values.get("external_id")))
        if key is not None and row_key == key and not (row.errors and not values):
            _parse(row, tz, first=False)
            group.append(row)
            continue
        if group:
            yield finish()
        group, key = [row], row_key
        head = _parse(row, tz, first=True, key=row_key) if values else None
    if group:
        yield finish()


def _parquet_orders(
    path: Path, batch_size: int, tz: str
) -> tuple[list[str], int, Iterator[_PendingOrder]]:
    """The orders of a Parquet file, a batch of rows at a time.

    A batch typed as ``write_orders_file`` writes it (text, UTC instants, whole numbers,
    amounts as decimals of whole fen, no value missing where one is required) is turned
    into drafts column by column (``_clean_orders``): the same drafts the row-by-row parse
    makes of it, without a dictionary, a row object and a parse per row, which cost more
    than storing the row. Any other batch goes row by row through the parse CSV takes,
    with its checks and messages. An order whose rows run into the next batch waits for
    it, so an order is read whole either way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ImportFailed(
            f"{path.name} is not a readable Parquet file ({exc}); export it again, or send CSV"
        ) from None
    header = list(parquet.schema_arrow.names)
    _check_header(header, path)

    def orders() -> Iterator[_PendingOrder]:
        number = 1  # the last row read
        held: Any = None  # the rows of the last order of the batch before
        try:
            for batch in parquet.iter_batches(batch_size=max(1, batch_size)):
                number += batch.num_rows
                if held is not None:
                    batch = pa.Table.from_batches([held, batch]).combine_chunks().to_batches()[0]
                first = number - batch.num_rows + 1
                cut = _last_order_start(batch)
                held = batch.slice(cut)
                if cut:
                    yield from _batch_orders(batch.slice(0, cut), first, tz)
            if held is not None and held.num_rows:
                yield from _batch_orders(held, number - held.num_rows + 1, tz)
        except (pa.ArrowException, OSError) as exc:
            raise ImportFailed(
                f"{path.name} is damaged after row {number} ({exc}); the orders before it "
                "were imported, the rest were not"
            ) from None
        finally:
            parquet.close()

    return header, parquet.metadata.num_rows, orders()


def _last_order_start(batch: Any) -> int:
    """Where the batch's last order (its last rows with the same key) begins."""
    channels, external_ids = batch.column("channel"), batch.column("external_id")
    end = batch.num_rows
    if not end:
        return 0

    def key(i: int) -> tuple[str, str]:
        return _text(channels[i].as_py()), _text(external_ids[i].as_py())

    last = key(end - 1)
    start = end - 1
    while start > 0 and key(start - 1) == last:
        start -= 1
    return start


def _batch_orders(batch: Any, first: int, tz: str) -> Iterator[_PendingOrder]:
    """The orders of a batch of whole orders whose first row is row ``first``."""
    clean = _clean_orders(batch, first)
    if clean is not None:
        return clean
    names = batch.schema.names
    columns = [_column_values(batch.column(name)) for name in names]
    rows = (
        _Row(first + i, dict(zip(names, values, strict=True)))
        for i, values in enumerate(zip(*columns, strict=True))
    )
    return _orders(rows, tz)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECONDS = {"s": 1_000_000, "ms": 1_000, "us": 1}


def _utc_instants(column: Any, rows: Sequence[int]) -> list[datetime] | None:
    """The values of a UTC timestamp column (no value missing) at ``rows``, as
    ``_column_values`` gives them, made only for those rows: from the stored whole numbers
    since the epoch, which is what pyarrow counts from. None when one is out of range."""
    import pyarrow as pa

    factor = _MICROSECONDS[column.type.unit]
    counts = column.cast(pa.int64()).to_pylist()
    try:
        # ``timedelta(0, 0, n)``: n microseconds, without parsing a keyword per instant.
        return [_EPOCH + timedelta(0, 0, counts[i] * factor) for i in rows]
    except OverflowError:  # beyond what a datetime holds: row by row, with its message
        return None


_MISSING_NEVER = ("channel", "external_id", "paid_at", "sku", "category", "quantity", "amount")


def _fen_column(column: Any) -> list[int | None] | None:
    """Fen of a decimal column (None stays None), or None when it is not one or a value is
    not a whole number of fen: exactly what ``_decimal_fen`` makes of each value.

    Arrow keeps a decimal as its unscaled integer (16 bytes, little-endian two's
    complement): rescaled to 2 decimals (refused when a digit would be lost), that integer
    is the fen. Read through numpy, not through Python ``Decimal`` objects nor a pyarrow
    compute with a constant (making a pyarrow value from a Python one imports pandas)."""
    import numpy as np
    import pyarrow as pa

    if not pa.types.is_decimal(column.type) or column.type.byte_width != 16:
        return None
    try:
        fen = column.cast(pa.decimal128(38, 2))
    except pa.ArrowException:  # a fraction of a fen: row by row, with its message
        return None
    words = np.frombuffer(fen.buffers()[1], dtype="<i8", count=2 * (fen.offset + len(fen)))
    low, high = words[2 * fen.offset :: 2], words[2 * fen.offset + 1 :: 2]
    if not np.array_equal(high, low >> 63):  # beyond 64 bits
        return None
    values: list[int | None] = low.tolist()
    if fen.null_count:
        for i, missing in enumerate(fen.is_null().to_pylist()):
            if missing:
                values[i] = None
    return values


def _clean_orders(batch: Any, first: int) -> Iterator[_PendingOrder] | None:
    """The orders of a batch read column by column, or None when a column is not typed as
    the fast path takes it or a value would be reported (then the batch is parsed row by
    row). Text is stripped as ``_text`` strips it; a required text left empty is not
    clean."""
    import pyarrow as pa

    names = set(batch.schema.names)

    def column(name: str) -> Any:
        return batch.column(name) if name in names else None

    text_columns = ("channel", "external_id", "sku", "category")
    optional_text = ("buyer_channel", "buyer_id", "store_code")
    for name in text_columns + optional_text:
        found = column(name)
        if found is not None and not (
            pa.types.is_string(found.type) or pa.types.is_large_string(found.type)
        ):
            return None
    if any(column(name).null_count for name in _MISSING_NEVER):
        return None
    if not _plain_utc(column("paid_at").type):
        return None
    if not pa.types.is_integer(column("quantity").type):
        return None
    members = column("member_id")
    if members is not None and not pa.types.is_integer(members.type):
        return None
    amounts = _fen_column(column("amount"))
    freights = column("freight")
    freight_fen = None if freights is None else _fen_column(freights)
    if amounts is None or (freights is not None and freight_fen is None):
        return None
    channel, external_id, sku, category = (
        [v.strip() for v in column(name).to_pylist()] for name in text_columns
    )
    if not (all(channel) and all(external_id) and all(sku) and all(category)):
        return None
    count = batch.num_rows
    # Where each order begins: its first row holds the order's fields, read for those rows.
    starts = [
        i
        for i in range(count)
        if i == 0 or external_id[i] != external_id[i - 1] or channel[i] != channel[i - 1]
    ]
    paid_at = _utc_instants(column("paid_at"), starts)
    if paid_at is None:
        return None
    quantity = column("quantity").to_pylist()
    nothing = [None] * len(starts)

    def order_field(name: str, texts: bool) -> list[Any]:
        if name not in names:
            return nothing
        values = column(name).to_pylist()
        return [_text(values[i]) for i in starts] if texts else [values[i] for i in starts]

    member_id = order_field("member_id", False)
    buyer_channel, buyer_id, store_code = (order_field(name, True) for name in optional_text)
    freight = nothing if freight_fen is None else [freight_fen[i] for i in starts]

    def orders() -> Iterator[_PendingOrder]:
        ends = [*starts[1:], count]
        for n, (start, end) in enumerate(zip(starts, ends, strict=True)):
            buyer = buyer_id[n]
            # Positional, in the order of ``OrderDraft``'s fields (channel, external_id,
            # paid_at, lines, member_id, buyer_identities, store_id, store_code, guide_id,
            # freight_fen): one is made per order, and matching ten keywords took a third
            # of the time of making it.
            draft = OrderDraft(
                channel[start],
                external_id[start],
                paid_at[n],
                [
                    LineDraft(sku[i], category[i], quantity[i], amounts[i])  # type: ignore[arg-type]
                    for i in range(start, end)
                ],
                member_id[n],
                [(buyer_channel[n] or "phone", buyer)] if buyer else [],
                None,
                store_code[n] or None,
                None,
                freight[n] or 0,
            )
            yield _PendingOrder(None, draft, end - start, (batch, start, first + start))

    return orders()


def _column_of(problem_field: str) -> tuple[int | None, str]:
    """A service problem's field ('lines[2].amount', 'paid_at') as (line index, column)."""
    if problem_field.startswith("lines[") and "]" in problem_field:
        index_text, _, rest = problem_field[len("lines[") :].partition("]")
        column = rest.lstrip(".") or "sku"
        return int(index_text), column
    return None, FIELD_COLUMNS.get(problem_field.split("[")[0].split(".")[0], problem_field)


def _report_rejected(
    order: _PendingOrder, errors: _ErrorReport, result: IngestResult | None
) -> None:
    reported: set[int] = set()
    if result is None:
        for row in order.rows:
            for column, reason in row.errors:
                errors.add(row, column, reason)
                reported.add(row.number)
        if not reported and order.rows:  # the first row lacks order fields
            errors.add(order.rows[0], "paid_at", "missing")
            reported.add(order.rows[0].number)
        culprit = min(reported)
    else:
        for problem in result.problems:
            index, column = _column_of(problem.field)
            inside = index is not None and index < len(order.rows)
            row = order.rows[index] if inside and index is not None else order.rows[0]
            reason = problem.reason
            if result.conflict is not None:
                stored = result.conflict.get("stored", {})
                reason += (
                    f" (stored: order {stored.get('order_id')}, {stored.get('amount')} yuan, "
                    f"paid {stored.get('paid_at')})"
                )
            errors.add(row, column, reason)
            reported.add(row.number)
        culprit = min(reported) if reported else order.rows[0].number
    for row in order.rows:
        if row.number not in reported:
            errors.add(row, "", f"not imported: its order is rejected (see row {culprit})")


# --- importing ---------------------------------------------------------------------------


def _progress(enabled: bool) -> AbstractContextManager[Any]:
    if not enabled:
        return nullcontext(None)
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:>12,} rows"),
        TextColumn("{task.fields[rate]:>10,.0f} rows/s"),
        TimeElapsedColumn(),
        transient=False,
    )


_MIDDLE_EVERY = 8


@contextmanager
def _young_collections_only() -> Iterator[bool]:
    """Keep the garbage collector to the young generations while a file streams in.

    Each chunk holds a few hundred thousand short-lived objects (rows, drafts, parameters);
    they outlive a young collection, so the automatic collector ran a full collection of
    the whole heap at every chunk, a fifth of the import's time. Instead, automatic
    collection pauses and the caller collects the young generations after each chunk, when
    that chunk's objects are gone: cyclic garbage is still reclaimed chunk by chunk. Yields
    whether the caller should collect (the collector was enabled); restored on exit.

    The youngest generation each chunk, the middle one every ``_MIDDLE_EVERY`` chunks:
    each collection of the middle generation counts towards a full one, and a collection
    of it per chunk left the collector owing a full collection of the whole heap when the
    import ended (a twentieth of a 50,000-order import, whatever the heap's size)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield enabled
    finally:
        if enabled:
            gc.enable()


def import_orders_file(
    db: Database,
    path: Path | str,
    *,
    unknown_buyer: UnknownBuyer = "guest",
    encoding: str = "utf-8",
    chunk_size: int = 5_000,
    error_report: Path | None = None,
    progress: bool = False,
    timezone: str | None = None,
) -> ImportReport:
    """Import an order file, committing every ``chunk_size`` rows (an order is never split
    across chunks), so memory stays flat and a crash keeps what was committed; importing the
    file again is safe, stored orders come back as duplicates."""
    path = Path(path)
    tz = timezone or get_settings().timezone
    report = ImportReport(path=path)
    started = time.perf_counter()
    if not path.is_file():
        raise ImportFailed(f"no file at {path}", field="path")
    size = path.stat().st_size
    position = {"bytes": 0}

    def on_bytes(n: int) -> None:
        position["bytes"] = n

    if path.suffix.lower() in PARQUET_SUFFIXES:
        header, total_rows, orders = _parquet_orders(path, chunk_size, tz)
        total: int | None = total_rows
        by_bytes = False
    elif path.suffix.lower() in (".csv", ".txt"):
        header, rows = _csv_rows(path, encoding, on_bytes)
        total, by_bytes = size, True
        orders = None
    else:
        raise ImportFailed(f"{path.name}: import reads .csv or .parquet files", field="path")

    errors = _ErrorReport(error_report, header, report)
    committed = {"any": False}

    def flush(batch: list[_PendingOrder]) -> None:
        drafts = [o.draft for o in batch if o.draft is not None]
        # One set of statements for the whole chunk: the file's chunk is the unit, and its
        # transaction holds nothing else, so it needs no savepoint of its own. Should a
        # constraint fire all the same (the same order stored meanwhile by another
        # connection), the transaction is rolled back whole and the chunk done again with
        # the service's savepoints, order by order where needed: every row still gets its
        # own outcome.
        try:
            with db.unit_of_work() as session:
                results = ingest_orders(
                    session,
                    drafts,
                    unknown_buyer=unknown_buyer,
                    chunk_size=max(1, len(drafts)),
                    savepoint=False,
                )
        except IntegrityError:
            with db.unit_of_work() as session:
                results = ingest_orders(
                    session, drafts, unknown_buyer=unknown_buyer, chunk_size=max(1, len(drafts))
                )
        committed["any"] = committed["any"] or bool(drafts)
        if db.dialect == "postgresql":
            with db.unit_of_work() as session:
                analyze_if_stale(session)
        outcome = iter(results)
        for order in batch:
            result = next(outcome) if order.draft is not None else None
            if result is not None and result.status == "created":
                report.orders_created += 1
            elif result is not None and result.status == "duplicate":
                report.duplicates += 1
            else:
                report.rejected_orders += 1
                report.rejected_rows += order.size
                _report_rejected(order, errors, result)

    try:
        with _progress(progress) as bar, _young_collections_only() as collect:
            task = bar.add_task(path.name, total=total, rows=0, rate=0.0) if bar else None
            batch: list[_PendingOrder] = []
            lines = chunks = 0
            if orders is None:  # CSV: rows, with the encoding guard, grouped into orders
                orders = _orders(_guard_encoding(rows, committed, path, encoding), tz)
            for order in orders:
                batch.append(order)
                report.rows += order.size
                lines += order.size
                if lines >= chunk_size:
                    flush(batch)
                    batch, lines = [], 0
                    chunks += 1
                    if collect:
                        gc.collect(1 if chunks % _MIDDLE_EVERY == 0 else 0)
                    if bar is not None:
                        elapsed = time.perf_counter() - started
                        bar.update(
                            task,
                            completed=position["bytes"] if by_bytes else report.rows,
                            rows=report.rows,
                            rate=report.rows / elapsed if elapsed else 0.0,
                        )
            if batch:
                flush(batch)
            if bar is not None:
                elapsed = time.perf_counter() - started
                bar.update(
                    task,
                    completed=total,
                    rows=report.rows,
                    rate=report.rows / elapsed if elapsed else 0.0,
                )
    finally:
        errors.close()
        report.elapsed_seconds = time.perf_counter() - started
    return report


def _guard_encoding(
    rows: Iterator[_Row], committed: dict[str, bool], path: Path, encoding: str
) -> Iterator[_Row]:
    """A decoding error before anything was committed means the file is in another encoding:
    stop with one clear message instead of a report full of mangled rows. Later, it is one
    damaged row among good ones, and is reported as such."""
    for row in rows:
        if (
            row.errors
            and not committed["any"]
            and any(r.startswith(f"not valid {encoding}") for _, r in row.errors)
        ):
            reason = next(r for _, r in row.errors if r.startswith("not valid"))
            raise ImportFailed(
                f"{path.name} row {row.number} is {reason}; nothing was imported",
                field="encoding",
            )
        yield row


# --- writing -----------------------------------------------------------------------------


def _file_rows(drafts: Iterable[OrderDraft]) -> Iterator[dict[str, Any]]:
    for d in drafts:
        buyer = d.buyer_identities[0] if d.buyer_identities else (None, None)
        for n, line in enumerate(d.lines):
            yield {
                "channel": d.channel,
                "external_id": d.external_id,
                "paid_at": d.paid_at,
                "buyer_channel": buyer[0],
                "buyer_id": buyer[1],
                "member_id": d.member_id,
                "store_code": d.store_code,
                "sku": line.sku,
                "category": line.category,
                "quantity": line.quantity,
                "amount": fen_to_yuan(line.amount_fen),
                "freight": fen_to_yuan(d.freight_fen) if n == 0 and d.freight_fen else None,
            }


def write_orders_file(path: Path | str, drafts: Iterable[OrderDraft]) -> int:
    """Write orders in the import format (CSV or Parquet by the file's suffix), streaming;
    returns the number of rows. The format has one buyer identity and no discount or store
    id: a draft is written with its first identity and its ``store_code``."""
    path = Path(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _write_parquet(path, drafts)
    count = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in _file_rows(drafts):
            writer.writerow(
                [
                    row[c].isoformat() if isinstance(row[c], datetime) else _text(row[c])
                    for c in COLUMNS
                ]
            )
            count += 1
    return count


def parquet_schema(amount_scale: int = 2) -> Any:
    """The Parquet types ``write_orders_file`` writes (the types the import reads column
    by column); ``amount_scale``: decimals of the amounts (2: fen)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("channel", pa.string()),
            ("external_id", pa.string()),
            ("paid_at", pa.timestamp("us", tz="UTC")),
            ("buyer_channel", pa.string()),
            ("buyer_id", pa.string()),
            ("member_id", pa.int64()),
            ("store_code", pa.string()),
            ("sku", pa.string()),
            ("category", pa.string()),
            ("quantity", pa.int64()),
            ("amount", pa.decimal128(18, amount_scale)),
            ("freight", pa.decimal128(18, 2)),
        ]
    )


def _write_parquet(path: Path, drafts: Iterable[OrderDraft], batch_rows: int = 65_536) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict[str, Any]] = []
        for row in _file_rows(drafts):
            batch.append(row)
            if len(batch) >= batch_rows:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                count += len(batch)
                batch = []
        if batch or count == 0:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            count += len(batch)
    return count
