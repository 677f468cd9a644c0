"""``siyu insight clv``: CLV of any transaction file (a brand's export, a public data set),
without the database. The brand's own CLV is the job ``insight.clv``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from siyu.core.errors import InvalidInput

console = Console()


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{option} {value!r} is not a date like 1997-09-30", field=option
        ) from None


def clv(
    transactions: Annotated[
        Path, typer.Option(help="CSV of purchases: customer id, date, amount (one row each)")
    ],
    calibration_end: Annotated[
        str, typer.Option(help="last day of the fitting period, e.g. 1997-09-30")
    ],
    holdout_end: Annotated[
        str | None,
        typer.Option(help="last day of the holdout: adds the predicted-vs-actual report"),
    ] = None,
    model: Annotated[str, typer.Option(help="bgnbd (BG/NBD) or pareto (Pareto/NBD)")] = "bgnbd",
    output: Annotated[
        Path | None, typer.Option(help="write per-customer results to this CSV")
    ] = None,
    customer_column: Annotated[str, typer.Option(help="column of the customer id")] = "customer_id",
    date_column: Annotated[str, typer.Option(help="column of the purchase date")] = "date",
    amount_column: Annotated[str, typer.Option(help="column of the amount")] = "amount",
    separator: Annotated[
        str, typer.Option(help="field separator, or 'whitespace' for aligned columns")
    ] = ",",
    date_format: Annotated[
        str | None, typer.Option(help="strptime format such as %Y%m%d (default: ISO dates)")
    ] = None,
    header: Annotated[
        bool, typer.Option(help="--no-header: no header line; name columns 1, 2, 3 …")
    ] = True,
    unit: Annotated[str, typer.Option(help="time unit of the parameters: week or day")] = "week",
) -> None:
    """Fit BG/NBD (or Pareto/NBD) and Gamma-Gamma on a transaction file; print the
    parameters (and the calibration report with --holdout-end); write each customer's
    P(alive), expected purchases in 90 and 365 days and expected value with --output."""
    from siyu.insight import clv as clv_

    cal_end = _day(calibration_end, "calibration_end")
    hold_end = _day(holdout_end, "holdout_end")
    assert cal_end is not None
    with console.status("reading transactions"):
        data = clv_.read_transactions(
            transactions,
            customer_column=customer_column,
            date_column=date_column,
            amount_column=amount_column,
            separator=separator,
            date_format=date_format,
            header=header,
        )
        summary = clv_.summarize(data, calibration_end=cal_end, holdout_end=hold_end, unit=unit)
    with console.status(f"fitting {model} and Gamma-Gamma (the first fit compiles the model)"):
        fitted = clv_.fit(summary, model=model, unit=unit)

    params = Table(title=f"{model} on {fitted.customers:,} customers (time unit: {unit})")
    params.add_column("model")
    params.add_column("parameter")
    params.add_column("value", justify="right")
    for name, value in fitted.purchase.items():
        params.add_row(model, name, f"{value:.4f}")
    for name, value in (fitted.spend or {}).items():
        params.add_row("gamma-gamma", "gamma (v)" if name == "v" else name, f"{value:.4f}")
    console.print(params)
    console.print(
        f"repeat buyers {fitted.repeat_customers:,}; log-likelihood {fitted.log_likelihood:.2f}; "
        f"fit {fitted.fit_seconds:.2f} s"
    )
    for note in fitted.notes:
        console.print(f"[yellow]note:[/] {note}")

    if hold_end is not None:
        report = fitted.calibration_report(summary, (hold_end - cal_end).days)
        table = Table(
            title=f"holdout after {cal_end} to {hold_end}: "
            "mean repeat purchases by calibration frequency"
        )
        for column in ("frequency", "customers", "actual", "predicted"):
            table.add_column(column, justify="right")
        for row in report:
            table.add_row(
                row.frequency, f"{row.customers:,}", f"{row.actual:.3f}", f"{row.predicted:.3f}"
            )
        console.print(table)

    if output is not None:
        with console.status("scoring customers"):
            scores = fitted.score(summary)
            columns = ["customer_id", "frequency", "recency", "T", "monetary_value"]
            if "holdout_frequency" in summary:
                columns.append("holdout_frequency")
            result = summary[columns].merge(scores, on="customer_id")
            result.to_csv(output, index=False, float_format="%.6g")
        console.print(f"{len(result):,} customers written to {output}")


def register(insight_app: typer.Typer, report_app: typer.Typer) -> None:
    """Add this module's commands to ``siyu insight`` and ``siyu report``."""
    insight_app.command("clv")(clv)
