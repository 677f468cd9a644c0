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


@paid_app.command("kpis")
def kpis(
    month: Annotated[
        str | None, typer.Option(help="brand-local month, YYYY-MM (default: this month)")
    ] = None,
) -> None:
    """Paid membership KPIs of a month: penetration, conversion, renewal, GMV multiple, ROI."""
    from datetime import date

    from siyu.core.settings import Settings
    from siyu.paid import kpis as paid_kpis

    wanted = None
    if month:
        try:
            year, mon = (int(part) for part in month.split("-"))
            wanted = date(year, mon, 1)
        except ValueError:
            raise typer.BadParameter(f"'{month}' is not a month; write it as YYYY-MM") from None
    with _database().unit_of_work() as session:
        found = paid_kpis.kpis(session, month=wanted, tz=Settings().timezone)
    table = Table(title=f"paid membership KPIs {found.month}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in (
        ("active members", found.active_members),
        ("paid members", found.paid_members),
        ("penetration", f"{found.penetration:.2%}"),
        ("trials started / converted", f"{found.trials_started} / {found.trials_converted}"),
        ("trial conversion", f"{found.trial_conversion:.2%}"),
        ("renewals due / renewed", f"{found.renewals_due} / {found.renewed}"),
        ("renewal rate", f"{found.renewal_rate:.2%}"),
        ("churned", found.churned),
        ("card coupons issued / used", f"{found.card_coupons_issued} / {found.card_coupons_used}"),
        ("benefit usage", f"{found.benefit_usage:.2%}"),
        ("GMV per paid member (fen)", found.gmv_per_paid_fen),
        ("GMV per free member (fen)", found.gmv_per_free_fen),
        ("orders per paid / free member", f"{found.orders_per_paid} / {found.orders_per_free}"),
        ("GMV multiple (paid / free)", f"{found.gmv_multiple}x"),
        ("fee revenue (fen)", found.fee_revenue_fen),
        ("benefit cost (fen)", found.benefit_cost_fen),
        (
            "revenue / cost per card (fen)",
            f"{found.revenue_per_card_fen} / {found.cost_per_card_fen}",
        ),
        ("ROI", found.roi),
    ):
        table.add_row(label, str(value))
    console.print(table)
