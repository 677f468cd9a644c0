"""``siyu points show | adjust | recompute``: the same services as the API, each command in
its own unit of work."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from siyu.core.auth import terminal_principal
from siyu.core.db import Database

points_app = typer.Typer(help="Points: balances, ledger, adjustments.", no_args_is_help=True)
console = Console()


def _database() -> Database:
    from siyu.bootstrap import bootstrap

    return bootstrap()


@points_app.command("show")
def show(
    member: Annotated[str, typer.Argument(help="member id, member number or phone")],
    entries: Annotated[int, typer.Option(min=0, help="latest entries to list")] = 10,
) -> None:
    """A member's points: balance, available, frozen, debt, what expires when, history."""
    from siyu.members import service as members
    from siyu.points import service

    with _database().unit_of_work() as session:
        found = members.find(session, member)
        s = service.summary(session, found.id)
        table = Table(title=f"points of member {found.id}", show_header=False)
        for label, value in (
            ("balance", s.balance),
            ("available", s.available),
            ("frozen", s.frozen),
            ("held at checkout", s.held),
            ("debt", s.debt),
            ("cash value (fen)", s.cash_value_fen),
        ):
            table.add_row(label, "" if value is None else f"{value:,}")
        for day, points in s.expiring.dates:
            table.add_row(f"expires {day.isoformat()}", f"{points:,}")
        console.print(table)
        if entries:
            history = Table(title="latest entries")
            for column in ("at", "kind", "points", "balance", "fact", "note"):
                history.add_column(column)
            for e in service.entries(session, found.id, limit=entries):
                history.add_row(
                    f"{e.at:%Y-%m-%d %H:%M}",
                    e.kind,
                    f"{e.points:+,}",
                    f"{e.balance_after:,}",
                    e.fact,
                    e.note or "",
                )
            console.print(history)


@points_app.command("adjust")
def adjust(
    member: Annotated[str, typer.Argument(help="member id, member number or phone")],
    points: Annotated[int, typer.Argument(help="points to add (or take away, negative)")],
    reason: Annotated[str, typer.Option(help="why (kept in the audit log)")],
    key: Annotated[
        str | None, typer.Option(help="idempotency key; a repeat with it changes nothing")
    ] = None,
) -> None:
    """Add or take away points by hand, with a reason. To take away, put ``--`` before the
    arguments: ``siyu points adjust --reason "…" -- 123 -50``."""
    import uuid

    from siyu.members import service as members
    from siyu.points import service

    with _database().unit_of_work() as session:
        found = members.find(session, member)
        done = service.adjust(
            session,
            found.id,
            points,
            reason=reason,
            principal=terminal_principal(),
            key=key or f"cli:{uuid.uuid4().hex}",
        )
    verb = "adjusted" if done.created else "already adjusted (nothing changed)"
    console.print(
        f"[green]{verb}[/] member {done.member_id} by {done.points:+,}; "
        f"balance {done.balance_after:,}"
    )


@points_app.command("recompute")
def recompute(
    check: Annotated[
        bool, typer.Option("--check", help="only report differences; change nothing")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="report at most this many members")] = 50,
) -> None:
    """Recompute cached balances from the ledger and report any difference; with --check,
    only report (exit 1 when something differs)."""
    from siyu.points import service

    with _database().unit_of_work() as session:
        drifts = service.check(session, limit=limit)
        if drifts:
            table = Table(title=f"members whose cached points differ (first {limit})")
            for column in ("member", "balance", "debt", "frozen"):
                table.add_column(column)
            for d in drifts:
                table.add_row(
                    str(d.member_id),
                    *(
                        f"{have} → {want}" if have != want else str(have)
                        for have, want in (d.balance, d.debt, d.frozen)
                    ),
                )
            console.print(table)
        else:
            console.print("[green]cached points match the ledger[/]")
        if check:
            if drifts:
                console.print("repair with [bold]siyu points recompute[/]")
                raise typer.Exit(1)
            return
        count = service.recompute(session)
    console.print(f"[green]points recomputed[/] for {count:,} members")
