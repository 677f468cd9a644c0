"""``siyu paid …``: the plans in force, a member's card and savings, the desk's actions
(trial, cancel, auto-renew) and payments recorded by hand."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from siyu.core.auth import terminal_principal
from siyu.core.db import Database

if TYPE_CHECKING:
    from siyu.paid.models import Subscription

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


# --- the desk and the payment provider from the terminal ---------------------------------------
#
# The same services the API calls: a desk operator starts trials, cancels and switches
# auto-renew; payments and refunds are normally the provider's callbacks, and these commands
# record one by hand (a provider outage, a reconciliation), idempotent on the transaction id.


def _when(text: str | None) -> datetime:
    from siyu.core import clock

    if not text:
        return clock.now()
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not a time; write 2026-11-23T10:00+08:00") from None
    if at.tzinfo is None:
        raise typer.BadParameter(f"'{text}' has no UTC offset; add one, e.g. +08:00")
    return clock.as_utc(at)


def _print_subscription(sub: Subscription, note: str = "") -> None:
    console.print(
        f"member {sub.member_id}: {sub.plan_code} [bold]{sub.state}[/], "
        f"{sub.current_period_start:%Y-%m-%d} → {sub.current_period_end:%Y-%m-%d} UTC, "
        f"auto-renew {'on' if sub.auto_renew else 'off'}{note}"
    )


def _print_callback(result: Any) -> None:
    note = "" if result.created else " (already recorded: nothing changed)"
    console.print(
        f"payment {result.payment.txn_id}: {result.payment.kind} {result.payment.amount_fen} fen"
    )
    _print_subscription(result.subscription, note)


Member = Annotated[str, typer.Argument(help="member id, member no. or phone")]


@paid_app.command("trial")
def trial(
    member: Member,
    plan: Annotated[str, typer.Option(help="plan code")] = "super",
) -> None:
    """Start a plan's free trial (once per person, ever)."""
    from siyu.members import service as members
    from siyu.paid import service

    with _database().unit_of_work() as session:
        found = members.find(session, member)
        sub = service.start_trial(session, found.id, plan, principal=terminal_principal())
        _print_subscription(sub)


@paid_app.command("purchase")
def purchase(
    member: Member,
    txn: Annotated[str, typer.Option("--txn", help="the provider's transaction id")],
    amount_fen: Annotated[int, typer.Option(help="amount paid, in fen (19900 = ¥199)")],
    plan: Annotated[str, typer.Option(help="plan code")] = "super",
    paid_at: Annotated[str | None, typer.Option(help="ISO time with offset; default now")] = None,
) -> None:
    """Record a purchase paid at the provider (a trial turns paid)."""
    from siyu.core.settings import get_settings
    from siyu.members import service as members
    from siyu.paid import service

    with _database().unit_of_work() as session:
        found = members.find(session, member)
        result = service.purchase_callback(
            session, txn, found.id, plan, amount_fen, _when(paid_at), tz=get_settings().timezone
        )
        _print_callback(result)


@paid_app.command("renew")
def renew(
    member: Member,
    txn: Annotated[str, typer.Option("--txn", help="the provider's transaction id")],
    amount_fen: Annotated[int, typer.Option(help="amount charged, in fen")],
    paid_at: Annotated[str | None, typer.Option(help="ISO time with offset; default now")] = None,
) -> None:
    """Record a renewal charge: the period extends without gap or overlap."""
    from siyu.core.settings import get_settings
    from siyu.members import service as members
    from siyu.paid import service

    with _database().unit_of_work() as session:
        found = members.find(session, member)
        result = service.renewal_callback(
            session, txn, found.id, amount_fen, _when(paid_at), tz=get_settings().timezone
        )
        _print_callback(result)


@paid_app.command("refund")
def refund(
    txn: Annotated[str, typer.Option("--txn", help="the refund's own transaction id")],
    payment_txn: Annotated[str, typer.Option(help="the transaction id of the payment refunded")],
    amount_fen: Annotated[int, typer.Option(help="amount refunded, in fen")],
    used_benefits_fen: Annotated[int, typer.Option(help="benefits used, deducted")] = 0,
    refunded_at: Annotated[str | None, typer.Option(help="ISO time with offset")] = None,
) -> None:
    """Record a refund of a payment; the subscription ends."""
    from siyu.paid import service

    with _database().unit_of_work() as session:
        result = service.refund_callback(
            session,
            txn,
            payment_txn,
            amount_fen,
            _when(refunded_at),
            used_benefits_fen=used_benefits_fen,
        )
        _print_callback(result)


@paid_app.command("cancel")
def cancel(
    member: Member,
    reason: Annotated[str, typer.Option(help="why, for the audit log")],
) -> None:
    """Stop renewals; benefits last to the end of the period."""
    from siyu.members import service as members
    from siyu.paid import service

    with _database().unit_of_work() as session:
        found = members.find(session, member)
        _print_subscription(
            service.cancel(session, found.id, reason=reason, principal=terminal_principal())
        )


@paid_app.command("auto-renew")
def auto_renew(
    member: Member,
    on: Annotated[bool, typer.Option("--on/--off", help="renew automatically")] = True,
) -> None:
    """Switch auto-renew on or off."""
    from siyu.members import service as members
    from siyu.paid import service

    with _database().unit_of_work() as session:
        found = members.find(session, member)
        _print_subscription(
            service.set_auto_renew(session, found.id, on, principal=terminal_principal())
        )


@paid_app.command("savings")
def savings_of(member: Member) -> None:
    """What the card saved the member, month by month, against the fee paid."""
    from siyu.core.settings import get_settings
    from siyu.members import service as members
    from siyu.paid import savings

    with _database().unit_of_work() as session:
        found = members.find(session, member)
        result = savings.summary(session, found.id, tz=get_settings().timezone)
    console.print(result.zh)
    console.print(result.en)
    table = Table(title=f"member {found.id}: saved by month (fen)")
    table.add_column("month")
    table.add_column("saved", justify="right")
    for month, saved in result.months.items():
        table.add_row(month, str(saved))
    console.print(table)
    kinds = Table(title="saved by benefit (fen)")
    kinds.add_column("benefit")
    kinds.add_column("saved", justify="right")
    for kind, saved in result.by_kind.items():
        kinds.add_row(kind, str(saved))
    console.print(kinds)
