"""``siyu segments …`` and ``siyu segments tags …``: the same services as the API, each
command in its own unit of work. A segment is named by id or name, or given as a file
(JSON or YAML) holding a tree, or ``{name, description, tree}``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from siyu.core.auth import terminal_principal
from siyu.core.db import Database
from siyu.core.errors import InvalidInput
from siyu.core.settings import get_settings
from siyu.segments.rules import Node

segments_app = typer.Typer(no_args_is_help=True)
tags_app = typer.Typer(
    help="Rule tags (规则标签): a name and a condition tree.", no_args_is_help=True
)
segments_app.add_typer(tags_app, name="tags")
console = Console()

LiveOption = Annotated[
    bool, typer.Option("--live", help="read the live database instead of the profile snapshot")
]


def _database() -> Database:
    from siyu.bootstrap import bootstrap

    return bootstrap()


def _where(db: Database, live: bool) -> Any:
    from siyu.segments import service

    settings = get_settings()
    return service.Where(
        db=db,
        analytics_dir=settings.analytics_dir,
        tz=settings.timezone,
        source="live" if live else "profile",
    )


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text("utf-8")
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path} is not valid JSON/YAML: {exc}", field="file") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{path} holds no condition tree (an object)", field="file")
    return raw


def _split(raw: dict[str, Any]) -> tuple[dict[str, Any], str | None, str]:
    """(tree, name, description) from a file holding a tree or {name, description, tree}."""
    if "tree" in raw:
        return raw["tree"], raw.get("name"), raw.get("description", "")
    return raw, None, ""


def _tree_of(session: Any, ref: str) -> tuple[Node, str]:
    """A parsed tree and a title, from a file path or a saved segment's id or name."""
    from siyu.segments import service

    path = Path(ref)
    if path.suffix.lower() in (".json", ".yaml", ".yml") and path.exists():
        tree, name, _ = _split(_read_file(path))
        return service.parse(session, tree), name or path.name
    segment = service.find(session, ref)
    return service.parse(session, segment.tree), f"#{segment.id} {segment.name}"


def _as_of(counted: Any) -> str:
    return f"data as of {counted.data_as_of:%Y-%m-%d %H:%M} UTC ({counted.source})"


# --- segments ---------------------------------------------------------------------------------


@segments_app.command("list")
def list_() -> None:
    """Saved segments."""
    from siyu.segments import service

    with _database().unit_of_work() as session:
        table = Table(title="segments")
        for column in ("id", "name", "author", "updated", "tree"):
            table.add_column(column)
        for s in service.list_segments(session):
            table.add_row(
                str(s.id),
                escape(s.name),
                s.author,
                f"{s.updated_at:%Y-%m-%d %H:%M}",
                escape(json.dumps(s.tree, ensure_ascii=False)[:80]),
            )
        console.print(table)


@segments_app.command("create")
def create(
    file: Annotated[Path, typer.Argument(help="JSON/YAML: a tree, or {name, description, tree}")],
    name: Annotated[str | None, typer.Option(help="the name (default: the file's)")] = None,
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Save a segment from a file."""
    from siyu.segments import service

    tree, file_name, file_description = _split(_read_file(file))
    chosen = name or file_name
    if not chosen:
        raise InvalidInput("name the segment with --name or a 'name' in the file", field="name")
    with _database().unit_of_work() as session:
        segment = service.create(
            session,
            name=chosen,
            tree=tree,
            description=description if description is not None else file_description,
            principal=terminal_principal(),
        )
        console.print(f"[green]segment #{segment.id}[/] {escape(segment.name)} saved")


@segments_app.command("delete")
def delete(ref: Annotated[str, typer.Argument(help="segment id or name")]) -> None:
    """Delete a saved segment and its snapshots."""
    from siyu.segments import service

    with _database().unit_of_work() as session:
        segment = service.find(session, ref)
        service.remove(session, segment.id, principal=terminal_principal())
        console.print(f"segment #{segment.id} deleted")


@segments_app.command("count")
def count(
    ref: Annotated[str, typer.Argument(help="segment id or name, or a tree file")],
    live: LiveOption = False,
) -> None:
    """How many members a segment holds, and when its data is as of."""
    from siyu.segments import service

    db = _database()
    with db.unit_of_work() as session:
        node, title = _tree_of(session, ref)
    counted = service.count(_where(db, live), node)
    console.print(
        f"{escape(title)}: [bold]{counted.members:,}[/] members — {_as_of(counted)}, "
        f"{counted.seconds * 1000:.0f} ms"
    )


@segments_app.command("sample")
def sample(
    ref: Annotated[str, typer.Argument(help="segment id or name, or a tree file")],
    size: Annotated[int, typer.Option(min=1, max=200)] = 20,
    live: LiveOption = False,
) -> None:
    """A few members of a segment with their tier, stage and spend."""
    from siyu.segments import service

    db = _database()
    with db.unit_of_work() as session:
        node, title = _tree_of(session, ref)
        found = service.sample(
            session, _where(db, live), node, size=size, principal=terminal_principal()
        )
    table = Table(title=f"{title}: {found.counted.members:,} members, {_as_of(found.counted)}")
    columns = ("member_no", "name", "phone", "tier", "stage", "rfm_group", "order_count")
    for column in (*columns, "spend (yuan)"):
        table.add_column(column)
    for m in found.members:
        table.add_row(
            *(escape(str(m[c])) if m[c] is not None else "" for c in columns),
            f"{m['spend_fen'] / 100:,.2f}",
        )
    console.print(table)


@segments_app.command("export")
def export(
    ref: Annotated[str, typer.Argument(help="segment id or name, or a tree file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="file to write (.csv or .parquet)")],
    live: LiveOption = False,
) -> None:
    """Write a segment's members to CSV or Parquet (by the file's suffix), batch by batch."""
    from siyu.segments import service

    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("csv", "parquet"):
        raise InvalidInput("--out must end in .csv or .parquet", field="out")
    db = _database()
    with db.unit_of_work() as session:
        node, _ = _tree_of(session, ref)
    written = service.export_file(_where(db, live), node, out, fmt)  # type: ignore[arg-type]
    console.print(f"[green]{written:,}[/] members written to {escape(str(out))}")


@segments_app.command("snapshot")
def snapshot(
    ref: Annotated[str, typer.Argument(help="segment id or name")],
    live: LiveOption = False,
) -> None:
    """Freeze a segment's members now, for a campaign."""
    from siyu.segments import service

    db = _database()
    with db.unit_of_work() as session:
        segment = service.find(session, ref)
        taken = service.take_snapshot(
            session, _where(db, live), segment.id, principal=terminal_principal()
        )
        console.print(
            f"[green]snapshot #{taken.id}[/] of segment #{segment.id}: "
            f"{taken.member_count:,} members, data as of {taken.data_as_of:%Y-%m-%d %H:%M} UTC"
        )


@segments_app.command("refresh")
def refresh() -> None:
    """Rebuild the member profile snapshot and recompute rule tags (the nightly job's work)."""
    from siyu.segments import tags

    settings = get_settings()
    db = _database()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("profile", total=None)
        done = tags.refresh(
            db,
            settings.analytics_dir,
            tz=settings.timezone,
            progress=lambda step: progress.update(task, description=escape(step)),
        )
    info = done.profile
    console.print(
        f"[green]profile[/]: {info.members:,} members, {info.purchases:,} purchase lines, "
        f"data as of {info.data_as_of:%Y-%m-%d %H:%M} UTC, {info.seconds:.1f} s"
    )
    for r in done.rules:
        console.print(
            f"  tag {escape(r.name)}: {r.members:,} members (+{r.added:,} -{r.removed:,})"
        )


@segments_app.command("fields")
def fields() -> None:
    """Every field a condition can name, with its operators."""
    from siyu.segments import rules

    table = Table(title="condition fields")
    for column in ("field", "label", "kind", "operators", "values"):
        table.add_column(column)
    for f in rules.FIELDS.values():
        table.add_row(
            f.name,
            f.label,
            f.kind.value,
            ", ".join(rules.OPERATORS[f.kind]),
            ", ".join(f.values) if f.values else (f.vocab or ""),
        )
    console.print(table)
    for name, label in rules.BEHAVIOURS.items():
        console.print(f"behaviour [bold]{name}[/]: {label}")


# --- rule tags ---------------------------------------------------------------------------------


@tags_app.command("list")
def tags_list() -> None:
    """Tag rules, with their last computation."""
    from siyu.segments import tags

    with _database().unit_of_work() as session:
        table = Table(title="tag rules")
        for column in ("id", "name", "members", "computed", "tree"):
            table.add_column(column)
        for r in tags.list_rules(session):
            table.add_row(
                str(r.id),
                escape(r.name),
                "" if r.member_count is None else f"{r.member_count:,}",
                "never" if r.computed_at is None else f"{r.computed_at:%Y-%m-%d %H:%M}",
                escape(json.dumps(r.tree, ensure_ascii=False)[:80]),
            )
        console.print(table)


@tags_app.command("create")
def tags_create(
    file: Annotated[Path, typer.Argument(help="JSON/YAML: a tree, or {name, description, tree}")],
    name: Annotated[str | None, typer.Option(help="the tag (default: the file's name)")] = None,
) -> None:
    """Define a rule tag; `siyu segments refresh` (or the nightly job) computes it."""
    from siyu.segments import tags

    tree, file_name, description = _split(_read_file(file))
    chosen = name or file_name
    if not chosen:
        raise InvalidInput("name the tag with --name or a 'name' in the file", field="name")
    with _database().unit_of_work() as session:
        rule = tags.create_rule(
            session, name=chosen, tree=tree, description=description, principal=terminal_principal()
        )
        console.print(f"[green]tag rule #{rule.id}[/] {escape(rule.name)} saved")


@tags_app.command("delete")
def tags_delete(ref: Annotated[str, typer.Argument(help="tag rule id or name")]) -> None:
    """Delete a tag rule; its members lose the tag."""
    from siyu.segments import tags

    with _database().unit_of_work() as session:
        rule = tags.find_rule(session, ref)
        tags.remove_rule(session, rule.id, principal=terminal_principal())
        console.print(f"tag rule #{rule.id} {escape(rule.name)} deleted")
