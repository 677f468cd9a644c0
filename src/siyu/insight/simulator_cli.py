"""``siyu insight simulate FILE [--sample 0.1] [--from DATE] [--to DATE]``: what a draft
programme would have done, side by side with the programme in force (``insight.simulator``).

An invalid draft prints the same problem table as ``siyu programme validate`` and exits 1.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from siyu.core.money import format_yuan

console = Console()


# The table's words in Chinese first (the console's own labels), English beside them.
SECTIONS = {
    "tiers": "等级分布 tiers",
    "upgrades": "升级 upgrades",
    "downgrades": "降级 downgrades",
    "growth": "成长值 growth",
    "points": "积分 points",
    "benefits": "权益 benefits",
    "paid": "付费会员 paid",
}


def _metric(name: str) -> str:
    """Chinese first, the English beside it, as the table's other words (the names are the
    simulator's: ``simulator.name_of``); a level code names itself."""
    from siyu.insight.simulator import name_of

    text = name_of(name)
    return f"{text.zh} {text.en}" if text else name


def _number(value: int | None, unit: str) -> str:
    if value is None:
        return "—"
    return format_yuan(value) if unit == "fen" else f"{value:,}"


def _delta(value: int | None, unit: str) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "[dim]0[/]"
    sign = "+" if value > 0 else "-"
    text = format_yuan(abs(value)) if unit == "fen" else f"{abs(value):,}"
    return f"[{'green' if value > 0 else 'red'}]{sign}{text}[/]"


def simulate_command(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="the draft document (.yaml or .json)"),
    ],
    sample: Annotated[
        float | None,
        typer.Option(help="replay this share of members (0.1 = 10%, by id hash); scaled"),
    ] = None,
    start: Annotated[
        datetime | None,
        typer.Option("--from", help="count flows (issued, moved, packs) from this instant"),
    ] = None,
    end: Annotated[
        datetime | None, typer.Option("--to", help="replay up to this instant; default now")
    ] = None,
    usage_rate: Annotated[
        float | None,
        typer.Option(help="share of pack coupons used (0-1); default: from coupon history"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Replay the history under a draft programme and compare with the programme in force.

    Nothing in the database changes. Naive times are UTC."""
    from siyu.bootstrap import bootstrap
    from siyu.insight.simulator import simulate
    from siyu.programme import rules
    from siyu.programme import service as programmes
    from siyu.programme.cli import _problems_table

    fmt = "json" if file.suffix.lower() == ".json" else "yaml"
    raw, problems = rules.parse_text(file.read_text(encoding="utf-8"), fmt=fmt)
    if not problems:
        problems = programmes.validate(raw)
    if problems:
        console.print(_problems_table(file, problems))
        raise typer.Exit(1)
    draft = programmes.parse(raw)
    db = bootstrap()
    columns = (
        TextColumn("[bold]replaying members"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("replay", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = simulate(
            db,
            draft,
            start=start,
            end=end,
            sample=sample,
            usage_rate=Decimal(str(usage_rate)) if usage_rate is not None else None,
            progress=advance,
        )
    if as_json:
        console.print_json(json.dumps(result.as_dict(), default=str, ensure_ascii=False))
        return
    since = result.start.isoformat() if result.start else "the first member"
    title = (
        f"{result.draft.programme} vs {result.baseline.programme} "
        f"(version #{result.baseline_version_id})"
    )
    table = Table(title=title, caption=f"{result.members:,} members, {result.orders:,} orders; "
                  f"flows from {since} to {result.end.isoformat()}")  # fmt: skip
    table.add_column("分区 section")
    table.add_column("指标 metric")
    table.add_column("现行方案 in force", justify="right")
    table.add_column("草稿 draft", justify="right")
    table.add_column("差异 Δ", justify="right")
    section = ""
    for row in result.rows():
        shown = row.section if row.section != section else ""
        section = row.section
        table.add_row(
            SECTIONS.get(shown, shown),
            _metric(row.metric),
            _number(row.baseline, row.unit),
            _number(row.draft, row.unit),
            _delta(row.delta, row.unit),
            end_section=False,
        )
    console.print(table)
    if result.estimate:
        console.print(
            f"[yellow]估算 estimate[/]: 抽样 {result.sample:.2%} 的会员回放，各项数字按比例放大 "
            f"(a {result.sample:.2%} sample, figures scaled)"
        )
    # Chinese first, the English beneath it dimmed, as ``siyu report diagnosis`` prints.
    for note in result.notes:
        console.print(f"[dim]说明 note:[/] {escape(note.zh)}", highlight=False)
        console.print(f"           [dim]{escape(note.en)}[/]", highlight=False)


def register(insight_app: typer.Typer, report_app: typer.Typer) -> None:
    """Add this module's commands to ``siyu insight`` and ``siyu report``."""
    insight_app.command("simulate")(simulate_command)
