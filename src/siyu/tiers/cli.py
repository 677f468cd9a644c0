"""``siyu tiers show MEMBER | grant MEMBER CODE --until DATE --reason TEXT | recompute``.

Each command opens its own unit of work and calls the same services as the API."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from siyu.core.db import Database
from siyu.core.errors import InvalidInput

tiers_app = typer.Typer(help="Growth value and tiers.", no_args_is_help=True)
console = Console()

MemberArg = Annotated[str, typer.Argument(help="a member id, member number or phone")]


def _database() -> Database:
    from siyu.bootstrap import bootstrap

    return bootstrap()


def _tz() -> str:
    from siyu.core.settings import get_settings

    return get_settings().timezone


@tiers_app.command("show")
def show(member: MemberArg) -> None:
    """A member's tier, progress, recent tier changes and growth entries."""
    from siyu.members import service as members
    from siyu.tiers import service

    with _database().unit_of_work() as session:
        m = members.find(session, member)
        progress = service.progress(session, m.id, tz=_tz())
        level = service.level(session, m.tier_code)
        changes = service.history(session, m.id, limit=10)
        entries = service.entries(session, m.id, limit=10)
    name = f" {level.name}" if level is not None else ""
    since = f" since {m.tier_changed_at:%Y-%m-%d}" if m.tier_changed_at else ""
    console.print(f"member {m.id}: [bold]{m.tier_code or '—'}{name}[/]{since}")
    console.print(
        f"growth value {m.growth_balance:,}; {progress.basis} in window {progress.value:,}"
    )
    console.print(progress.sentence_en)
    console.print(progress.sentence_zh)
    if changes:
        table = Table("at", "from", "to", "reason", title="tier history")
        for h in changes:
            table.add_row(f"{h.at:%Y-%m-%d %H:%M}", h.from_code or "—", h.to_code, h.reason)
        console.print(table)
    if entries:
        table = Table("at", "kind", "growth", "fact", title="growth entries (latest)")
        for e in entries:
            table.add_row(f"{e.at:%Y-%m-%d %H:%M}", e.kind, f"{e.growth:+,}", e.fact)
        console.print(table)


@tiers_app.command("grant")
def grant(
    member: MemberArg,
    code: Annotated[str, typer.Argument(help="a tier code of the ladder, e.g. V4")],
    until: Annotated[str, typer.Option("--until", help="last day of the grant, 2027-06-30")],
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the audit log)")],
) -> None:
    """Grant a tier until a brand-local day (inclusive): a floor that reviews respect."""
    from datetime import timedelta

    from siyu.core.auth import terminal_principal
    from siyu.members import service as members
    from siyu.tiers import rules, service

    try:
        last_day = date.fromisoformat(until)
    except ValueError:
        raise InvalidInput(
            f"--until {until!r} is not a date like 2027-06-30", field="until"
        ) from None
    tz = _tz()
    actor = terminal_principal()
    with _database().unit_of_work() as session:
        m = members.find(session, member)
        made = service.grant_tier(
            session,
            m.id,
            code,
            ends_at=rules.day_start(last_day + timedelta(days=1), tz),
            reason=reason,
            principal=actor,
            tz=tz,
        )
        tier_now = members.get(session, m.id).tier_code
    console.print(
        f"[green]granted {made.tier_code}[/] to member {m.id} until {last_day} "
        f"(grant #{made.id}); tier now {tier_now}"
    )


@tiers_app.command("recompute")
def recompute(
    check: Annotated[
        bool, typer.Option("--check", help="only report drift; exit 1 when there is some")
    ] = False,
) -> None:
    """Recompute cached growth balances from the growth ledger."""
    from siyu.tiers import service

    with _database().unit_of_work() as session:
        if check:
            drifts = service.check(session, limit=50)
        else:
            repaired = service.recompute(session)
    if not check:
        console.print(f"[green]growth balances recomputed[/]: {repaired:,} repaired")
        return
    if not drifts:
        console.print("[green]growth balances match the ledger[/]")
        return
    table = Table("member", "cached", "from entries", title="members whose growth drifts")
    for d in drifts:
        table.add_row(str(d.member_id), f"{d.cached:,}", f"{d.expected:,}")
    console.print(table)
    console.print("repair with [bold]siyu tiers recompute[/]")
    raise typer.Exit(1)
