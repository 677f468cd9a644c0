"""``siyu jobs``: run daily jobs by hand or from cron, and see what ran."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from siyu.core.errors import InvalidInput

jobs_app = typer.Typer(
    help="Daily jobs: expiry, releases, tier review, birthdays.", no_args_is_help=True
)
console = Console()


def _day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"--date {value!r} is not a date like 2026-12-31", field="date"
        ) from None


def _db():  # type: ignore[no-untyped-def]
    from siyu.bootstrap import bootstrap

    return bootstrap()


@jobs_app.command("list")
def list_jobs() -> None:
    """The jobs this installation runs, in nightly order."""
    _db()
    from siyu.jobs import service

    table = Table("job", "what it does")
    for job in service.registered():
        table.add_row(job.name, job.description)
    console.print(table)


@jobs_app.command("run")
def run_job(
    name: Annotated[str, typer.Argument(help="a job name; see `siyu jobs list`")],
    day: Annotated[
        str | None, typer.Option("--date", help="brand-local day, default today")
    ] = None,
) -> None:
    """Run one job for one day. Running it again for the same day changes nothing."""
    from siyu.core.settings import get_settings
    from siyu.jobs import service

    db = _db()
    outcome = service.run(db, name, _day(day), tz=get_settings().timezone)
    _print([outcome])


@jobs_app.command("run-all")
def run_all(
    day: Annotated[
        str | None, typer.Option("--date", help="brand-local day, default today")
    ] = None,
) -> None:
    """Every job for one day, in order (what cron calls once a night)."""
    from siyu.core.settings import get_settings
    from siyu.jobs import service

    db = _db()
    _print(service.run_all(db, _day(day), tz=get_settings().timezone))


@jobs_app.command("history")
def job_history(
    name: Annotated[str | None, typer.Option(help="only this job")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 30,
) -> None:
    """Recent runs, newest first."""
    from siyu.jobs import service

    table = Table("job", "date", "status", "seconds", "result")
    for run in service.history(_db(), name=name, limit=limit):
        seconds = (
            f"{(run.finished_at - run.started_at).total_seconds():.1f}" if run.finished_at else ""
        )
        table.add_row(run.name, str(run.run_date), run.status, seconds, _counts(run.result))
    console.print(table)


def _counts(result: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in result.items())


def _print(outcomes: list) -> None:  # type: ignore[type-arg]
    table = Table("job", "date", "status", "result")
    for o in outcomes:
        status = "done" if o.status == "done" else "already done (nothing changed)"
        table.add_row(o.name, str(o.run_date), status, _counts(o.result))
    console.print(table)
