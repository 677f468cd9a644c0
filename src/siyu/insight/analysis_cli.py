"""``siyu insight refresh | lifecycle | rfm | super-users | runs``: run the refresh with a
progress display, and read what it materialized as tables."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from siyu.core.db import Database

console = Console()


def _database() -> Database:
    from siyu.bootstrap import bootstrap

    return bootstrap()


def _yuan(fen: int) -> str:
    return f"{fen / 100:,.2f}"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def refresh_command(
    as_of: Annotated[
        datetime | None,
        typer.Option(help="evaluate as of this instant (UTC unless an offset is given)"),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="recompute every member from every order, not only what changed since the "
            "last refresh",
        ),
    ] = False,
) -> None:
    """Recompute lifecycle stages, RFM, super users and early signals now: incrementally
    from the last refresh's watermark, or in full."""
    from siyu.core.settings import get_settings
    from siyu.insight.refresh import refresh

    db = _database()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("insight refresh", total=7)
        sub = bar.add_task("writing members", total=1, visible=False)

        def report(what: str, done: int, total: int) -> None:
            if what == "writing members" and total > 1:
                bar.update(sub, completed=done, total=total, visible=True)
            else:
                bar.update(task, description=what, completed=done, total=total)

        result = refresh(db, as_of=as_of, tz=get_settings().timezone, progress=report, full=full)
    table = Table(title=f"insight refresh {result.run_id} as of {result.as_of:%Y-%m-%d %H:%M} UTC")
    table.add_column("what")
    table.add_column("value", justify="right")
    marks = result.marks
    for label, value in (
        ("mode", "full" if result.full else "incremental"),
        ("members updated from orders", f"{result.recomputed:,}"),
        ("rows written", f"{result.written:,}"),
        ("members", f"{result.members:,}"),
        ("buyers", f"{result.buyers:,}"),
        ("super users", f"{result.super_users:,}"),
        ("stage changes", f"{result.transitions:,}"),
        ("events sent", f"{result.events:,}"),
        (
            "marks (days)",
            f"new ≤{marks.new_within_days} silent >{marks.silent_after_days} "
            f"sleeping >{marks.sleeping_after_days} churned >{marks.churned_after_days} "
            f"({marks.basis})",
        ),
        ("seconds", f"{sum(result.seconds.values()):.2f}"),
    ):
        table.add_row(label, value)
    console.print(table)


def lifecycle_command(
    months: Annotated[int, typer.Option(help="months of the transition matrix")] = 3,
) -> None:
    """Members per lifecycle stage, and the month-over-month transition matrix."""
    from siyu.insight import views

    with _database().unit_of_work() as session:
        found = views.lifecycle(session)
        matrix = views.matrix(session, months=months)
    table = Table(title=f"lifecycle (生命周期), computed {found.computed_at:%Y-%m-%d %H:%M} UTC")
    for column in ("stage", "", "members", "share", "12m spend (yuan)", "share of spend"):
        table.add_column(column, justify="right" if column not in ("stage", "") else "left")
    for g in found.stages:
        table.add_row(
            g.key,
            g.name,
            f"{g.members:,}",
            _pct(g.member_share),
            _yuan(g.spend_fen),
            _pct(g.spend_share),
        )
    console.print(table)
    for month in matrix.months:
        stages = sorted({c.to_stage for c in month.cells} | {c.from_stage for c in month.cells})
        grid = Table(title=f"{month.month}: from (rows) → to (columns)")
        grid.add_column("from")
        for stage in stages:
            grid.add_column(stage, justify="right")
        cells = {(c.from_stage, c.to_stage): c.members for c in month.cells}
        for origin in stages:
            if any((origin, s) in cells for s in stages):
                grid.add_row(origin, *[f"{cells.get((origin, s), 0):,}" for s in stages])
        console.print(grid)


def rfm_command(
    group: Annotated[
        str | None, typer.Option(help="list this group's members (e.g. important_value)")
    ] = None,
    after: Annotated[int, typer.Option(help="continue after this member id")] = 0,
    limit: Annotated[int, typer.Option(help="members per page")] = 50,
) -> None:
    """The eight RFM groups, or one group's members a page at a time."""
    from siyu.insight import views

    with _database().unit_of_work() as session:
        if group:
            page = views.rfm_members(session, group, after=after, limit=limit)
            table = Table(title=f"RFM group {group}")
            for column in ("member", "recency (days)", "orders", "spend (yuan)", "R", "F", "M"):
                table.add_column(column, justify="right")
            for m in page.items:
                table.add_row(
                    str(m.member_id),
                    str(m.recency_days if m.recency_days is not None else "-"),
                    str(m.frequency),
                    _yuan(m.monetary_fen or 0),
                    str(m.r_score),
                    str(m.f_score),
                    str(m.m_score),
                )
            console.print(table)
            if page.next_after is not None:
                console.print(f"more: --group {group} --after {page.next_after}")
            return
        found = views.rfm(session)
    table = Table(title=f"RFM groups, computed {found.computed_at:%Y-%m-%d %H:%M} UTC")
    for column in ("group", "", "members", "share", "orders", "spend (yuan)", "share of spend"):
        table.add_column(column, justify="right" if column not in ("group", "") else "left")
    for g in found.groups:
        table.add_row(
            g.key,
            g.name,
            f"{g.members:,}",
            _pct(g.member_share),
            f"{g.orders:,}",
            _yuan(g.spend_fen),
            _pct(g.spend_share),
        )
    console.print(table)


def super_users_command() -> None:
    """Super users: share, value multiple, and the early signals per join cohort."""
    from siyu.insight import views

    with _database().unit_of_work() as session:
        found = views.super_users(session)
        signals = views.early_signals(session)
    multiple = f"{found.value_multiple:.1f}x" if found.value_multiple is not None else "-"
    console.print(
        f"super users (超级用户): {found.super_users:,} of {found.members:,} "
        f"({_pct(found.share)}), spending {multiple} an ordinary member (12 months); "
        f"definition {found.definition}"
    )
    table = Table(title="early signals by join cohort")
    for column in (
        "cohort",
        "members",
        "bought ≤7d",
        "again ≤30d",
        "early",
        "super if early",
        "super otherwise",
        "lift (points)",
    ):
        table.add_column(column, justify="right")
    for c in signals.cohorts:
        table.add_row(
            c.cohort + ("" if c.mature else " *"),
            f"{c.members:,}",
            f"{c.first_within_7d:,}",
            f"{c.second_within_30d:,}",
            _pct(c.early_share),
            _pct(c.early_super_rate),
            _pct(c.other_super_rate),
            "-" if c.lift_points is None else f"{c.lift_points:+.1f}",
        )
    console.print(table)
    lift = "-" if signals.lift_points is None else f"{signals.lift_points:+.1f} points"
    console.print(f"mature cohorts (* not yet a year old): early buyers super-user lift {lift}")


def runs_command(limit: Annotated[int, typer.Option(help="how many runs")] = 20) -> None:
    """Insight runs, newest first."""
    from siyu.insight import views

    with _database().unit_of_work() as session:
        found = views.runs(session, limit=limit)
    table = Table(title="insight runs")
    for column in ("id", "step", "status", "as of (UTC)", "started", "seconds", "rows"):
        table.add_column(column)
    for run in found:
        took = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
        table.add_row(
            str(run.id),
            run.step,
            run.status,
            f"{run.as_of:%Y-%m-%d %H:%M}",
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            "-" if took is None else f"{took:.1f}",
            f"{run.rows:,}",
        )
    console.print(table)


def register(insight_app: typer.Typer, report_app: typer.Typer) -> None:
    """Add this module's commands to ``siyu insight`` and ``siyu report``."""
    insight_app.command("refresh")(refresh_command)
    insight_app.command("lifecycle")(lifecycle_command)
    insight_app.command("rfm")(rfm_command)
    insight_app.command("super-users")(super_users_command)
    insight_app.command("runs")(runs_command)
