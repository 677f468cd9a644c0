"""Order files in and out: CSV and Parquet, bad rows, wrong headers, encodings, damage."""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import cli, importer, service
from siyu.orders.importer import HEADER, ImportFailed, import_orders_file, write_orders_file
from siyu.orders.models import MemberMetrics, Order, OrderLine
from siyu.orders.rules import LineDraft, OrderDraft
from siyu.stores import service as stores

Make = Callable[..., OrderDraft]


@pytest.fixture
def brand(clean_db: Database) -> int:
    """Store S001 and a member with phone 13800138000; returns the member id."""
    with clean_db.unit_of_work() as s:
        stores.create_store(s, code="S001", name="旗舰店")
        return members.enrol(s, EnrolDraft(phone="13800138000")).member_id


def orders_in(db: Database) -> int:
    with db.unit_of_work() as s:
        return int(s.scalar(select(func.count()).select_from(Order)) or 0)


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def some_orders(order: Make, n: int = 5) -> list[OrderDraft]:
    return [
        order(f"T{i}", buyer_identities=[("phone", "13800138000")] if i % 2 else [])
        for i in range(n)
    ]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_written_file_imports_and_a_second_import_changes_nothing(
    clean_db: Database, brand: int, order: Make, tmp_path: Path, suffix: str
) -> None:
    # given a file of five orders of two lines each
    path = tmp_path / f"orders{suffix}"
    assert write_orders_file(path, some_orders(order)) == 10
    # when it is imported in chunks smaller than the file
    report = import_orders_file(
        clean_db, path, chunk_size=3, error_report=tmp_path / "e.csv", progress=True
    )
    # then every order lands whole, with the member's metrics
    assert (report.rows, report.orders_created, report.rejected_rows) == (10, 5, 0)
    assert report.ok and report.error_report is None
    with clean_db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(OrderLine)) == 10
        metrics = s.get(MemberMetrics, brand)
        assert metrics is not None and metrics.order_count == 2
        assert service.check_metrics(s) == []
    # and importing the same file again only finds duplicates
    again = import_orders_file(clean_db, path)
    assert (again.orders_created, again.duplicates) == (0, 5)
    assert orders_in(clean_db) == 5


def test_a_chunk_that_hits_a_constraint_is_redone_whole_and_every_order_gets_its_outcome(
    clean_db: Database, brand: int, order: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a file of five orders, two of them stored already
    path = tmp_path / "orders.parquet"
    drafts = some_orders(order)
    write_orders_file(path, drafts)
    with clean_db.unit_of_work() as s:
        service.ingest_orders(s, drafts[1:3])
    # and a first look for stored orders that misses them, as when another connection
    # stores them between that look and the insert
    real = service._existing_orders
    looks: list[int] = []

    def blind_once(session, keys):  # type: ignore[no-untyped-def]
        looks.append(len(keys))
        return {} if len(looks) == 1 else real(session, keys)

    monkeypatch.setattr(service, "_existing_orders", blind_once)
    # When the file is imported in one chunk
    report = import_orders_file(clean_db, path, chunk_size=100)
    # Then the insert's constraint rolled the chunk back and it was done again: the three
    # new orders land once, the two stored ones are duplicates, nothing is rejected
    assert len(looks) >= 2
    assert (report.orders_created, report.duplicates, report.rejected_rows) == (3, 2, 0)
    assert orders_in(clean_db) == 5
    with clean_db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(OrderLine)) == 10
        assert service.check_metrics(s) == []


def test_bad_rows_are_reported_and_good_orders_land(
    clean_db: Database, brand: int, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        HEADER
        + "\n"
        # row 2-3: a good order of two lines, local time (Shanghai)
        + "store,P1,2026-11-20 10:00:00,phone,13800138000,,S001,SKU-1,奶粉,2,256.00,10\n"
        + "store,P1,2026-11-20 10:00:00,phone,13800138000,,S001,SKU-2,湿巾,1,9.90,\n"
        # rows 4-5: an order whose second line has a bad quantity: rejected whole
        + "store,P2,2026-11-20 11:00:00,,,,S001,SKU-1,奶粉,1,128.00,\n"
        + "store,P2,2026-11-20 11:00:00,,,,S001,SKU-3,玩具,two,5.00,\n"
        # row 6: an unknown store (found by the service)
        + "store,P3,2026-11-20 12:00:00,,,,S999,SKU-1,奶粉,1,128.00,\n"
        # row 7: an amount to a tenth of a fen
        + "store,P4,2026-11-20 12:00:00,,,,S001,SKU-1,奶粉,1,1.234,\n"
        # row 8: a good guest order
        + "store,P5,2026-11-20 13:00:00,,,,S001,SKU-1,奶粉,1,128.00,\n",
        encoding="utf-8",
    )
    report = import_orders_file(clean_db, path, error_report=tmp_path / "errors.csv")
    assert (report.rows, report.orders_created, report.rejected_orders) == (7, 2, 3)
    assert (report.rejected_rows, report.ok) == (4, False)
    rows = read_report(tmp_path / "errors.csv")
    assert [(r["row"], r["column"]) for r in rows] == [
        ("5", "quantity"),
        ("4", ""),
        ("6", "store_code"),
        ("7", "amount"),
    ]
    assert "whole number" in rows[0]["reason"] and rows[0]["sku"] == "SKU-3"
    assert "row 5" in rows[1]["reason"]
    assert "S999" in rows[2]["reason"] and rows[2]["store_code"] == "S999"
    with clean_db.unit_of_work() as s:
        p1 = s.scalar(select(Order).where(Order.external_id == "P1"))
        assert p1 is not None and p1.member_id == brand and p1.amount_fen == 27_590
        assert p1.paid_at == datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def test_a_wrong_header_is_one_clear_error_and_nothing_is_written(
    clean_db: Database, brand: int, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "channel,order_no,paid_at,store_code,sku,category,qty,amount\n"
        "store,P1,2026-11-20 10:00:00,S001,SKU-1,奶粉,2,256.00\n",
        encoding="utf-8",
    )
    with pytest.raises(ImportFailed) as caught:
        import_orders_file(clean_db, path)
    message = caught.value.message
    assert "missing columns: external_id, quantity" in message
    assert "unknown columns: 'order_no', 'qty'" in message
    assert HEADER in message
    assert orders_in(clean_db) == 0


def test_a_gbk_file_read_as_utf8_names_the_row_and_the_fix(
    clean_db: Database, brand: int, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(
        (
            HEADER + "\n"
            "store,P1,2026-11-20 10:00:00,,,,S001,SKU-1,奶粉,2,256.00,\n"
            "store,P2,2026-11-20 10:00:00,,,,S001,SKU-2,湿巾,1,9.90,\n"
        ).encode("gbk")
    )
    with pytest.raises(ImportFailed) as caught:
        import_orders_file(clean_db, path)
    assert "row 2" in caught.value.message and "--encoding gbk" in caught.value.message
    assert orders_in(clean_db) == 0
    # and with the encoding named, it imports
    report = import_orders_file(clean_db, path, encoding="gbk")
    assert report.orders_created == 2
    with clean_db.unit_of_work() as s:
        assert s.scalar(select(OrderLine.category).where(OrderLine.sku == "SKU-1")) == "奶粉"


def test_a_truncated_file_loses_only_its_last_order(
    clean_db: Database, brand: int, order: Make, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    write_orders_file(path, some_orders(order, 3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])  # cut inside the last line
    report = import_orders_file(clean_db, path, error_report=tmp_path / "errors.csv")
    assert (report.orders_created, report.rejected_orders) == (2, 1)
    rows = read_report(tmp_path / "errors.csv")
    assert rows[0]["row"] == "7" and "truncated" in rows[0]["reason"]
    assert rows[1]["row"] == "6" and "not imported" in rows[1]["reason"]
    assert len(rows) == 2


def test_a_damaged_parquet_file_is_one_clear_error(clean_db: Database, tmp_path: Path) -> None:
    path = tmp_path / "orders.parquet"
    path.write_bytes(b"PAR1" + b"\x00garbage" * 20)
    with pytest.raises(ImportFailed, match="not a readable Parquet file"):
        import_orders_file(clean_db, path)


def test_an_order_with_a_bad_row_in_parquet_is_reported_by_row(
    clean_db: Database, brand: int, order: Make, tmp_path: Path
) -> None:
    drafts = some_orders(order, 3)
    drafts[1] = order("T1", lines=[LineDraft("SKU-1", "奶粉", 1, 100), LineDraft("S", "C", 1, -5)])
    path = tmp_path / "orders.parquet"
    write_orders_file(path, drafts)
    report = import_orders_file(clean_db, path, error_report=tmp_path / "errors.csv")
    assert (report.orders_created, report.rejected_orders, report.rejected_rows) == (2, 1, 2)
    rows = read_report(tmp_path / "errors.csv")
    assert [(r["row"], r["column"]) for r in rows] == [("5", "amount"), ("4", "")]
    assert "negative" in rows[0]["reason"]


def test_the_cli_prints_a_summary_and_exits_1_when_rows_were_rejected(
    clean_db: Database, brand: int, order: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_database", lambda: clean_db)
    good = tmp_path / "good.csv"
    write_orders_file(good, some_orders(order, 2))
    runner = CliRunner()
    ok = runner.invoke(cli.app, ["import", "orders", str(good), "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert "orders created" in ok.output
    bad = tmp_path / "bad.csv"
    write_orders_file(bad, [order("X1", store_code="S999")])
    failed = runner.invoke(
        cli.app,
        ["import", "orders", str(bad), "--no-progress", "--errors", str(tmp_path / "x.csv")],
    )
    assert failed.exit_code == 1
    assert read_report(tmp_path / "x.csv")[0]["column"] == "store_code"
    checked = runner.invoke(cli.app, ["orders", "check-metrics"])
    assert checked.exit_code == 0 and "match" in checked.output
    assert runner.invoke(cli.app, ["orders", "recompute-metrics"]).exit_code == 0


@pytest.mark.usefixtures("fixed_clock")
def test_the_written_format_is_the_documented_one(order: Make, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    write_orders_file(path, [order("T1", buyer_identities=[("phone", "13800138000")])])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER == ",".join(importer.COLUMNS)
    assert lines[1].startswith("tmall,T1,2026-11-22T04:00:00+00:00,phone,13800138000,,S001,")
    assert lines[1].endswith(",2,256.00,10.00") and lines[2].endswith(",1,99.90,")


# --- Parquet read column by column -------------------------------------------------------


def _parquet(path: Path, rows: list[dict[str, object]], *, amount_scale: int = 2) -> None:
    """Write rows as a Parquet file typed as write_orders_file types it (amounts with
    ``amount_scale`` decimals)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = importer.parquet_schema(amount_scale)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _row_by_row(path: Path) -> list[tuple[OrderDraft | None, list[tuple[int, list]]]]:
    """The orders of a Parquet file as the row-by-row parse reads them (the reference)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = table.schema.names
    columns = [importer._column_values(table.column(n).combine_chunks()) for n in names]
    rows = [
        importer._Row(n, dict(zip(names, values, strict=True)))
        for n, values in enumerate(zip(*columns, strict=True), start=2)
    ]
    return [
        (o.draft, [(r.number, list(r.errors)) for r in o.rows])
        for o in importer._orders(rows, "Asia/Shanghai")
    ]


def _read(path: Path, batch: int) -> list[tuple[OrderDraft | None, list[tuple[int, list]]]]:
    _, _, orders = importer._parquet_orders(path, batch, "Asia/Shanghai")
    return [(o.draft, [(r.number, list(r.errors)) for r in o.rows]) for o in orders]


def _messy_rows() -> list[dict[str, object]]:
    """Orders of one to three lines with text to strip, buyers and stores or none, freight
    or none, members given or not: what a channel's export holds."""
    from decimal import Decimal

    rows: list[dict[str, object]] = []
    for n in range(9):
        for line in range(n % 3 + 1):
            rows.append(
                {
                    "channel": " tmall" if n % 4 == 0 else "tmall",
                    "external_id": f"T{n} " if n % 2 else f"T{n}",
                    "paid_at": datetime(2026, 11, 1 + n, 12, 30, 0, 250, tzinfo=UTC),
                    "buyer_channel": None if n % 3 else " phone ",
                    "buyer_id": None if n % 5 == 0 else f" 1380013800{n}",
                    "member_id": 7 if n == 4 else None,
                    "store_code": "S001 " if n % 2 else None,
                    "sku": f" SKU-{line}",
                    "category": "奶粉",
                    "quantity": line + 1,
                    "amount": Decimal("129.90") + line,
                    "freight": Decimal("10.00") if line == 0 and n % 2 else None,
                }
            )
    return rows


@pytest.mark.parametrize("batch", [1, 2, 3, 5, 1_000])
def test_parquet_read_by_columns_gives_the_drafts_the_row_by_row_parse_gives(
    tmp_path: Path, batch: int
) -> None:
    # Given a Parquet file of messy but valid orders, read in batches that split orders
    path = tmp_path / "orders.parquet"
    _parquet(path, _messy_rows())
    # When it is read column by column, then the drafts, rows and row numbers are those
    # of the row-by-row parse
    expected = _row_by_row(path)
    assert len(expected) == 9 and all(draft is not None for draft, _ in expected)
    assert _read(path, batch) == expected


@pytest.mark.parametrize("batch", [2, 4, 1_000])
def test_a_parquet_batch_with_a_value_to_report_is_parsed_row_by_row(
    tmp_path: Path, batch: int
) -> None:
    # Given a file where one row lacks its sku and another has a fraction of a fen
    from decimal import Decimal

    rows = _messy_rows()
    rows[3]["sku"] = "  "
    rows[7]["amount"] = Decimal("1.005")
    path = tmp_path / "orders.parquet"
    _parquet(path, rows, amount_scale=3)
    # When it is read, then the orders of those rows have no draft and the rows carry the
    # parse's errors, as row by row; the other orders are read as before
    expected = _row_by_row(path)
    got = _read(path, batch)
    assert got == expected
    errors = [(number, e) for _, rows_ in got for number, e in rows_ if e]
    assert [n for n, _ in errors] == [5, 9] and errors[0][1] == [("sku", "missing")]
