"""``siyu paid plans | show MEMBER``: the plans in force and a member's subscription."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from siyu.core.db import Database

paid_app = typer.Typer(help="Paid membership.", no_args_is_help=True)
console = Console()


def _database() -> Database:
    from siyu.bootstrap import bootstrap

    return bootstrap()


@paid_app.command("plans")
def plans() -> None:
    """The paid plans of the programme in force."""
    from siyu.paid import service
    from siyu.programme.rules import fen

    with _database().unit_of_work() as session:
        found = service.plans(session)
    if not found:
        console.print("no paid plans in the programme in force")
        return
    table = Table(title="paid plans")
    for column in ("code", "name", "period", "price (fen)", "trial days", "grace days"):
        table.add_column(column)
    for p in found:
        table.add_row(
            p.code, p.name, p.period, str(fen(p.price)), str(p.trial_days), str(p.grace_days)
        )
    console.print(table)


@paid_app.command("show")
def show(member: Annotated[str, typer.Argument(help="member id, member no. or phone")]) -> None:
    """A member's paid membership and its payments."""
    from siyu.members import service as members
    from siyu.paid import service

    with _database().unit_of_work() as session:
        found = members.find(session, member)
        sub = service.get_for_member(session, found.id)
        payments = service.payments_of(session, sub.id)
    table = Table(title=f"member {found.id}: {sub.plan_code}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for label, value in (
        ("state", sub.state),
        ("auto-renew", "on" if sub.auto_renew else "off"),
        (
            "period",
            f"{sub.current_period_start:%Y-%m-%d %H:%M} → "
            f"{sub.current_period_end:%Y-%m-%d %H:%M} UTC",
        ),
        ("grace until", f"{sub.grace_until:%Y-%m-%d}" if sub.grace_until else "-"),
    ):
        table.add_row(label, value)
    console.print(table)
    if payments:
        ledger = Table(title="payments")
        for column in ("txn", "kind", "amount (fen)", "at"):
            ledger.add_column(column)
        for p in payments:
            ledger.add_row(p.txn_id, p.kind, str(p.amount_fen), f"{p.at:%Y-%m-%d %H:%M}")
        console.print(ledger)
