"""``siyu insight kpis | cohorts`` and ``siyu report diagnosis``: Rich tables with the
comparisons (Δ and %), and the diagnosis as a table or an HTML file. Each shows the stored
report with the time it was computed (computing and storing it if there is none);
``--fresh`` recomputes."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table

from siyu.core.db import Database

console = Console()

FromOption = Annotated[
    datetime | None,
    typer.Option("--from", formats=["%Y-%m-%d"], help="first brand-local day (YYYY-MM-DD)"),
]
ToOption = Annotated[
    datetime | None,
    typer.Option("--to", formats=["%Y-%m-%d"], help="last brand-local day, included"),
]
FreshOption = Annotated[
    bool, typer.Option("--fresh", help="recompute now instead of showing the stored report")
]


def _database() -> Database:
    from siyu.bootstrap import bootstrap

    return bootstrap()


def _tz() -> str:
    from siyu.core.settings import get_settings

    return get_settings().timezone


def _period(start: datetime | None, end: datetime | None, days: int):  # type: ignore[no-untyped-def]
    from siyu.core import clock
    from siyu.insight.kpis import period_of

    today = clock.local_date(clock.now(), _tz())
    first: date | None = start.date() if start else None
    last: date | None = end.date() if end else None
    return period_of(first, last, today=today, days=days)


def _computed(at: datetime, seconds: float) -> str:
    from siyu.core import clock

    local = at.astimezone(ZoneInfo(_tz()))
    age = clock.now() - at
    return (
        f"[dim]computed at {local:%Y-%m-%d %H:%M:%S %Z} ({seconds:.1f}s, "
        f"{int(age.total_seconds() // 60)} min ago); --fresh recomputes[/]"
    )


def _delta(name: str, value: float, against: float) -> str:
    from siyu.insight.kpis import RATES

    delta = value - against
    if name in RATES:
        text = f"{delta * 100:+.1f}pt"
    elif name.endswith("_fen"):
        text = f"{delta / 100:+,.2f}"
    else:
        text = f"{delta:+,.0f}" if float(delta).is_integer() else f"{delta:+,.2f}"
    pct = f" ({(value - against) / against * 100:+.1f}%)" if against else ""
    colour = "green" if delta > 0 else "red" if delta < 0 else "dim"
    return f"[{colour}]{text}{pct}[/]"


def register(insight_app: typer.Typer, report_app: typer.Typer) -> None:
    """Add this module's commands to ``siyu insight`` and ``siyu report``."""

    @insight_app.command("kpis")
    def kpis_command(
        start: FromOption = None, end: ToOption = None, fresh: FreshOption = False
    ) -> None:
        """KPIs of a period (default: the last 30 days) against the previous period and the
        same period last year."""
        from siyu.insight import kpis

        period = _period(start, end, 30)
        report = kpis.report_for(_database(), period, tz=_tz(), fresh=fresh)
        table = Table(title=f"会员经营指标 KPIs {period.label()} ({report.tz})")
        table.add_column("指标 figure")
        table.add_column("本期 now", justify="right")
        table.add_column(f"上期 previous\n{report.previous.period.label()}", justify="right")
        table.add_column("Δ previous", justify="right")
        table.add_column(f"去年同期 last year\n{report.last_year.period.label()}", justify="right")
        table.add_column("Δ last year", justify="right")
        for name, zh, en, prev, year in kpis.figures_rows(report):
            table.add_row(
                f"{zh} {en}",
                kpis.show(name, prev.value),
                kpis.show(name, prev.against),
                _delta(name, prev.value, prev.against),
                kpis.show(name, year.against),
                _delta(name, year.value, year.against),
            )
        console.print(table)

        tiers = Table(title="等级分布与迁移 tiers at the period's end, and moves during it")
        tiers.add_column("tier")
        tiers.add_column("members", justify="right")
        tiers.add_column("last year", justify="right")
        for code, n in report.current.tier_distribution.items():
            tiers.add_row(code, f"{n:,}", f"{report.last_year.tier_distribution.get(code, 0):,}")
        console.print(tiers)
        if report.current.tier_moves:
            moves = ", ".join(
                f"{m.from_code}→{m.to_code} {m.members:,}" for m in report.current.tier_moves
            )
            console.print(f"moves: {moves}")
        paid = report.current.paid
        if paid:
            console.print(
                f"付费会员 paid: {paid.paid_members:,} members, penetration "
                f"{paid.penetration:.2%}, renewal {paid.renewed}/{paid.renewals_due} "
                f"({paid.renewal_rate:.2%}), GMV multiple {paid.gmv_multiple}x"
            )
        console.print(_computed(report.computed_at, report.seconds))

    @insight_app.command("cohorts")
    def cohorts_command(
        months: Annotated[int, typer.Option(min=1, max=36, help="join months shown")] = 12,
        fresh: FreshOption = False,
    ) -> None:
        """Cohort retention: join month × months since joining (share who bought)."""
        from siyu.insight import kpis

        stored = kpis.cohorts_for(_database(), tz=_tz(), months=months, fresh=fresh)
        rows = stored.cohorts
        table = Table(title="同期群留存 cohort retention (share of the join month who bought)")
        table.add_column("joined")
        table.add_column("members", justify="right")
        for k in range(months):
            table.add_column(f"M{k}", justify="right")
        for row in rows:
            cells = ["" if r is None else f"{r:.0%}" for r in row.retention]
            table.add_row(row.month, f"{row.members:,}", *cells)
        console.print(table)
        console.print(_computed(stored.computed_at, stored.seconds))

    @report_app.command("diagnosis")
    def diagnosis_command(
        start: FromOption = None,
        end: ToOption = None,
        html: Annotated[
            Path | None, typer.Option("--html", help="also write the HTML report to this file")
        ] = None,
        fresh: FreshOption = False,
    ) -> None:
        """The health diagnosis of the programme (default: the last twelve months)."""
        from siyu.insight import diagnosis
        from siyu.insight.diagnosis_rules import OUTCOME_NAMES, SEVERITY_NAMES

        period = _period(start, end, diagnosis.DEFAULT_DAYS)
        found = diagnosis.diagnose(_database(), period, tz=_tz(), fresh=fresh)
        table = Table(
            title=f"会员体系诊断 health diagnosis {period.label()}", show_lines=True, expand=True
        )
        table.add_column("结果 outcome", no_wrap=True)
        table.add_column("检查 check")
        table.add_column("依据 evidence")
        table.add_column("建议 remedy")
        colours = {"high": "bold red", "medium": "yellow", "low": "cyan"}
        for f in found.findings:
            if f.fired:
                outcome = f"[{colours[f.severity]}]{SEVERITY_NAMES[f.severity]} {f.severity}[/]"
                remedy = f"{f.remedy.zh}\n[dim]{f.remedy.en}[/]"
            else:
                style = "green" if f.outcome == "passed" else "dim"
                outcome = f"[{style}]{OUTCOME_NAMES[f.outcome]} {f.outcome}[/]"
                remedy = ""
            table.add_row(
                outcome,
                f"{f.title.zh}\n[dim]{f.title.en}[/]",
                f"{f.evidence.zh}\n[dim]{f.evidence.en}[/]",
                remedy,
            )
        console.print(table)
        console.print(f"{len(found.fired)} of {len(found.findings)} checks found an issue")
        if html:
            html.write_text(diagnosis.render_html(found), encoding="utf-8")
            console.print(f"HTML report written to {html}")
