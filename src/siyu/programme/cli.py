"""``siyu programme show | validate FILE | apply FILE | diff FILE | history``.

Each command opens its own unit of work and calls the same services as the API."""

from __future__ import annotations

import getpass
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from siyu.core.db import Database
from siyu.core.errors import Problem as ProblemT
from siyu.core.errors import invalid
from siyu.programme import rules

programme_app = typer.Typer(
    help="The loyalty programme document and its versions.", no_args_is_help=True
)
console = Console()

FileArg = Annotated[
    Path,
    typer.Argument(exists=True, dir_okay=False, help="a programme document (.yaml or .json)"),
]
AtOpt = Annotated[
    datetime | None, typer.Option(help="an instant (ISO 8601, UTC if no offset); default now")
]


def _database() -> Database:
    from siyu.bootstrap import bootstrap

    return bootstrap()


def _read(file: Path) -> tuple[Any, list[ProblemT]]:
    fmt = "json" if file.suffix.lower() == ".json" else "yaml"
    return rules.parse_text(file.read_text(encoding="utf-8"), fmt=fmt)


def _load(file: Path) -> Any:
    raw, problems = _read(file)
    if problems:
        raise invalid(problems, what="programme")
    return raw


def _problems_table(file: Path, problems: list[ProblemT]) -> Table:
    table = Table(title=f"{file.name}: {len(problems)} problem(s)")
    table.add_column("#", justify="right")
    table.add_column("where")
    table.add_column("what is wrong")
    for i, problem in enumerate(problems, 1):
        table.add_row(str(i), problem.field, problem.reason)
    return table


def _short(value: Any) -> str:
    return "—" if value is None else json.dumps(value, ensure_ascii=False, default=str)


@programme_app.command("validate")
def validate(file: FileArg) -> None:
    """Check a document; lists every problem and exits 1 when it is invalid."""
    from siyu.programme import service

    raw, problems = _read(file)
    if not problems:
        problems = service.validate(raw)
    if problems:
        console.print(_problems_table(file, problems))
        raise typer.Exit(1)
    console.print(f"[green]{file.name} is a valid programme[/]")


@programme_app.command("show")
def show(
    at: AtOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="yaml or json")] = "yaml",
) -> None:
    """Print the version in force (now, or at --at) and its document."""
    from siyu.programme import service

    with _database().unit_of_work() as session:
        version = service.require_in_force(session, at)
    console.print(
        f"[bold]version #{version.id}[/] in force since {version.effective_from:%Y-%m-%d %H:%M}"
        f" UTC, by {version.author}" + (f": {version.note}" if version.note else ""),
        highlight=False,
    )
    if fmt == "json":
        text = json.dumps(version.document, ensure_ascii=False, indent=2)
    else:
        text = yaml.safe_dump(version.document, allow_unicode=True, sort_keys=False)
    console.print(text, markup=False, highlight=False)


@programme_app.command("apply")
def apply(
    file: FileArg,
    effective_from: Annotated[
        datetime | None,
        typer.Option(help="when it takes effect (ISO 8601, UTC if no offset); default now"),
    ] = None,
    note: Annotated[str, typer.Option(help="why this version")] = "",
    author: Annotated[str | None, typer.Option(help="who; default the OS user")] = None,
    backdate: Annotated[
        bool, typer.Option(help="allow an effective-from before the latest version's")
    ] = False,
) -> None:
    """Store the document as a new version (a no-op when it is the one in force)."""
    from siyu.programme import service

    raw = _load(file)
    problems = service.validate(raw)
    if problems:
        console.print(_problems_table(file, problems))
        raise typer.Exit(1)
    who = author or f"cli:{getpass.getuser()}"
    with _database().unit_of_work() as session:
        applied = service.apply(
            session, raw, author=who, note=note, effective_from=effective_from, backdate=backdate
        )
        version = applied.version
    if applied.created:
        console.print(
            f"[green]version #{version.id} stored[/], effective from "
            f"{version.effective_from:%Y-%m-%d %H:%M:%S} UTC"
        )
    else:
        console.print(f"unchanged: {file.name} is version #{version.id}, already in force")


@programme_app.command("diff")
def diff(file: FileArg, at: AtOpt = None) -> None:
    """What applying FILE would change against the version in force."""
    from siyu.programme import service

    raw = _load(file)
    with _database().unit_of_work() as session:
        result = service.diff_against_in_force(session, raw, at=at)
    against = f"version #{result.against.id}" if result.against else "no programme"
    if not result.changes:
        console.print(f"no changes against {against}")
        return
    table = Table(title=f"{file.name} against {against}: {len(result.changes)} change(s)")
    for column in ("path", "old", "new"):
        table.add_column(column)
    for change in result.changes:
        table.add_row(change.path, _short(change.old), _short(change.new))
    console.print(table)


@programme_app.command("history")
def history(limit: Annotated[int, typer.Option(min=1)] = 50) -> None:
    """Every version, the latest effective first."""
    from siyu.core import clock
    from siyu.programme import service

    with _database().unit_of_work() as session:
        versions = service.history(session, limit=limit)
        current = service.in_force(session)
    if not versions:
        console.print("no programme yet; apply one with `siyu programme apply FILE`")
        return
    table = Table(title="programme versions")
    for column in ("id", "effective from (UTC)", "author", "note", "hash", ""):
        table.add_column(column)
    now = clock.now()
    for v in versions:
        state = (
            "in force"
            if current is not None and v.id == current.id
            else ("scheduled" if v.effective_from > now else "")
        )
        table.add_row(
            str(v.id),
            f"{v.effective_from:%Y-%m-%d %H:%M:%S}",
            v.author,
            v.note,
            v.document_hash[:12],
            state,
        )
    console.print(table)
