"""``siyu import orders`` and ``siyu orders recompute-metrics | check-metrics``.

Each command opens its own units of work and calls the same services as the API. The lead's
``siyu.cli`` mounts ``import_app`` and ``orders_app``; ``app`` holds both for standalone use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from siyu.core.db import Database
from siyu.core.settings import get_settings

import_app = typer.Typer(help="Import data from files.", no_args_is_help=True)
orders_app = typer.Typer(help="Orders and member metrics.", no_args_is_help=True)
app = typer.Typer(help="Orders.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(orders_app, name="orders")

console = Console()


def _database() -> Database:
    from siyu.bootstrap import bootstrap

    return bootstrap()


@import_app.command("orders")
def import_orders(
    file: Annotated[Path, typer.Argument(help="a .csv or .parquet file, one row per order line")],
    encoding: Annotated[
        str, typer.Option(help="the CSV's encoding; files saved by Excel in China are often gbk")
    ] = "utf-8",
    errors: Annotated[
        Path | None,
        typer.Option(
            "--errors", help="where to write rejected rows (default: FILE.errors.csv beside it)"
        ),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="rows per transaction; an order is never split")
    ] = 5_000,
    unknown_buyer: Annotated[
        str | None,
        typer.Option(
            help="guest: keep orders of unknown buyers as guest orders; enrol: make them "
            "members (default: the SIYU_UNKNOWN_BUYER setting)"
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Import orders; exits 1 when any row was rejected (see the error report)."""
    from siyu.core.errors import InvalidInput
    from siyu.orders.importer import import_orders_file

    policy = unknown_buyer or get_settings().unknown_buyer
    if policy not in ("guest", "enrol"):
        raise InvalidInput("--unknown-buyer is 'guest' or 'enrol'", field="unknown_buyer")
    report_path = errors or file.with_name(file.name + ".errors.csv")
    report = import_orders_file(
        _database(),
        file,
        unknown_buyer=policy,  # type: ignore[arg-type]
        encoding=encoding,
        chunk_size=chunk_size,
        error_report=report_path,
        progress=progress,
    )
    table = Table(title=f"import of {file.name}", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in (
        ("rows read", f"{report.rows:,}"),
        ("orders created", f"{report.orders_created:,}"),
        ("duplicates (already stored)", f"{report.duplicates:,}"),
        ("orders rejected", f"{report.rejected_orders:,}"),
        ("rows rejected", f"{report.rejected_rows:,}"),
        ("seconds", f"{report.elapsed_seconds:,.1f}"),
        ("rows per second", f"{report.rows_per_second:,.0f}"),
    ):
        table.add_row(label, value)
    console.print(table)
    if report.sample_errors:
        sample = Table(title="first rejected rows")
        for column in ("row", "column", "reason"):
            sample.add_column(column)
        for e in report.sample_errors[:10]:
            sample.add_row(str(e.row), e.column, e.reason)
        console.print(sample)
    if report.error_report is not None:
        console.print(f"every rejected row is listed in [bold]{report.error_report}[/]")
    if not report.ok:
        raise typer.Exit(1)


@orders_app.command("recompute-metrics")
def recompute_metrics(
    member: Annotated[
        list[int] | None, typer.Option(help="only these member ids (repeatable); default all")
    ] = None,
) -> None:
    """Rebuild member metrics from orders and refunds."""
    from siyu.orders import service

    with _database().unit_of_work() as session:
        count = service.recompute_metrics(session, member or None)
    console.print(f"[green]metrics recomputed[/] for {count:,} members with orders")


@orders_app.command("check-metrics")
def check_metrics(
    limit: Annotated[int, typer.Option(min=1, help="report at most this many members")] = 50,
) -> None:
    """Compare cached member metrics with the orders; exits 1 when they drift."""
    from siyu.orders import service

    with _database().unit_of_work() as session:
        drifts = service.check_metrics(session, limit=limit)
    if not drifts:
        console.print("[green]member metrics match the orders[/]")
        return
    table = Table(title=f"members whose metrics drift (first {limit})")
    for column in ("member", "field", "cached", "from orders"):
        table.add_column(column)
    for drift in drifts:
        for name in drift.fields:
            cached = None if drift.cached is None else drift.cached.get(name)
            expected = None if drift.expected is None else drift.expected.get(name)
            table.add_row(str(drift.member_id), name, str(cached), str(expected))
    console.print(table)
    console.print("repair with [bold]siyu orders recompute-metrics[/]")
    raise typer.Exit(1)
