"""``siyu benefits templates | issue | packs | rewards | coupons | redemptions``: the same
services as the API, each command in its own units of work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from siyu.core.auth import terminal_principal
from siyu.core.db import Database
from siyu.core.errors import InvalidInput

benefits_app = typer.Typer(help="Coupons, benefit packs, the points mall.", no_args_is_help=True)
console = Console()

ISSUE_CHUNK = 5_000  # members per unit of work when issuing from a file


def _database() -> Database:
    from siyu.bootstrap import bootstrap

    return bootstrap()


def _member_ids(value: str) -> list[int]:
    """A file of member ids (one a line, or the first column of a CSV with a header), or
    ids separated by commas."""
    path = Path(value)
    raw: list[str]
    if path.is_file():
        raw = [line.split(",")[0].strip() for line in path.read_text("utf-8-sig").splitlines()]
        if raw and not raw[0].isdigit():
            raw = raw[1:]  # a header
    else:
        raw = [part.strip() for part in value.split(",")]
    raw = [r for r in raw if r]
    bad = [r for r in raw if not r.isdigit()]
    if bad or not raw:
        raise InvalidInput(
            f"--members: '{bad[0] if bad else value}' is not a member id; give a file of ids "
            "(one a line) or ids separated by commas",
            field="members",
        )
    return list(dict.fromkeys(int(r) for r in raw))


def _fen(value: int | None) -> str:
    from siyu.core.money import format_yuan

    return "" if value is None else format_yuan(value)


@benefits_app.command("templates")
def templates() -> None:
    """Coupon templates with their terms, stock and coupons by state."""
    from siyu.benefits import coupons

    with _database().unit_of_work() as session:
        table = Table("id", "code", "name", "kind", "terms", "validity", "issued", "stock")
        table.add_column("usable / used / expired")
        for t in coupons.list_templates(session, limit=500):
            if t.kind == "percent_off":
                terms = f"{t.percent_off_bp / 100:g}% off" + (
                    f", at most {_fen(t.cap_fen)}" if t.cap_fen else ""
                )
            elif t.kind == "gift":
                terms = f"gift: {t.gift_name}"
            elif t.kind == "freight":
                terms = "freight" + (f" up to {_fen(t.amount_off_fen)}" if t.amount_off_fen else "")
            else:
                terms = f"{_fen(t.amount_off_fen)} off"
            if t.threshold_fen:
                terms += f" from {_fen(t.threshold_fen)}"
            validity = (
                f"{t.valid_days} days"
                if t.validity == "relative"
                else f"until {t.valid_until:%Y-%m-%d %H:%M}"
                if t.valid_until
                else ""
            )
            counts = coupons.summary(session, t.id)
            table.add_row(
                str(t.id),
                t.code,
                t.name,
                t.kind,
                terms,
                validity,
                f"{t.issued:,}",
                "∞" if t.stock is None else f"{t.stock:,}",
                f"{counts['usable']:,} / {counts['used']:,} / {counts['expired']:,}",
            )
    console.print(table)


@benefits_app.command("issue")
def issue(
    template: Annotated[str, typer.Argument(help="template id or code")],
    members: Annotated[
        str, typer.Option("--members", help="a file of member ids, or ids like 1,2,3")
    ],
    key: Annotated[
        str, typer.Option(help="names this issue; running it again gives nothing twice")
    ],
    reason: Annotated[str, typer.Option(help="why (kept in the audit log)")],
    quantity: Annotated[int, typer.Option(min=1, max=100, help="coupons per member")] = 1,
) -> None:
    """Issue coupons to members, 5,000 members per transaction; re-running with the same key
    finishes what an interrupted run left."""
    from siyu.benefits import coupons
    from siyu.core.settings import get_settings

    ids = _member_ids(members)
    db = _database()
    operator = terminal_principal()
    created = replayed = 0
    skipped: dict[int, str] = {}
    with db.unit_of_work() as session:
        template_id = coupons.template_by_ref(session, template).id
    for start in range(0, len(ids), ISSUE_CHUNK):
        with db.unit_of_work() as session:
            result = coupons.issue(
                session,
                template_id,
                ids[start : start + ISSUE_CHUNK],
                key=key,
                reason=reason,
                principal=operator,
                quantity=quantity,
                tz=get_settings().timezone,
            )
        created += result.created_count
        replayed += sum(len(c) for c in result.replayed.values())
        skipped.update(result.skipped)
    console.print(
        f"[green]{created:,} coupons issued[/] to {len(ids) - len(skipped):,} members"
        + (f"; {replayed:,} were issued before with this key" if replayed else "")
    )
    if skipped:
        table = Table("member", "skipped because", title=f"{len(skipped):,} members skipped")
        for member_id, why in list(skipped.items())[:20]:
            table.add_row(str(member_id), why)
        console.print(table)


@benefits_app.command("packs")
def list_packs() -> None:
    """Benefit packs, their triggers and contents, and the levels that list them now."""
    from siyu.benefits import packs, rules
    from siyu.programme import service as programme

    with _database().unit_of_work() as session:
        version = programme.in_force(session)
        ladder = (
            [
                (lv.code, list(lv.benefits.benefit_packs))
                for lv in programme.programme_of(version).tiers.levels
            ]
            if version
            else []
        )
        table = Table("code", "name", "trigger", "contents", "points", "listed by", "status")
        for p in packs.list_packs(session):
            listed = rules.levels_listing(ladder, p.code)
            who = ", ".join(listed) if listed else ("everyone" if p.trigger == "join" else "—")
            contents = ", ".join(f"{i['template']} ×{i['quantity']}" for i in p.contents)
            table.add_row(p.code, p.name, p.trigger, contents, str(p.points), who, p.status)
    console.print(table)


@benefits_app.command("rewards")
def rewards(
    paid_only: Annotated[
        bool, typer.Option("--paid-only", help="only the rewards exclusive to paid members")
    ] = False,
) -> None:
    """The points mall: rewards, prices, stock and who may take them."""
    from siyu.benefits import mall

    with _database().unit_of_work() as session:
        table = Table("id", "code", "name", "kind", "points", "cash", "taken", "stock")
        for column in ("limit", "from level", "paid members", "shown", "status"):
            table.add_column(column)
        for r in mall.list_rewards(session):
            if paid_only and not r.paid_only:
                continue
            paid = (", ".join(r.paid_plans) if r.paid_plans else "any plan") if r.paid_only else ""
            shown = " – ".join(
                f"{x:%Y-%m-%d}" if x else "…" for x in (r.visible_from, r.visible_until)
            )
            table.add_row(
                str(r.id),
                r.code,
                r.name,
                r.kind,
                f"{r.points_price:,}",
                _fen(r.cash_price_fen) if r.cash_price_fen else "",
                f"{r.redeemed:,}",
                "∞" if r.stock is None else f"{r.stock:,}",
                "" if r.per_member_limit is None else str(r.per_member_limit),
                r.min_tier_code or "",
                paid,
                shown,
                r.status,
            )
    console.print(table)


@benefits_app.command("coupons")
def member_coupons(
    member: Annotated[str, typer.Argument(help="member id, member number or phone")],
    state: Annotated[str | None, typer.Option(help="usable | used | expired")] = None,
) -> None:
    """A member's coupons."""
    from siyu.benefits import coupons, rules
    from siyu.core import clock
    from siyu.members import service as members_service

    try:
        wanted = rules.CouponState(state) if state else None
    except ValueError:
        raise InvalidInput("--state is usable, used or expired", field="state") from None
    with _database().unit_of_work() as session:
        member_id = members_service.find(session, member).id
        found = coupons.coupons_of_member(session, member_id, state=wanted, limit=500)
        names = {
            t.id: t.code
            for t in coupons.templates_by_ids(session, [c.template_id for c in found]).values()
        }
        table = Table("code", "template", "state", "valid until", "order", "discount")
        for c in found:
            shown = rules.shown_state(rules.CouponState(c.state), c.valid_until, clock.now())
            table.add_row(
                c.code,
                names.get(c.template_id, str(c.template_id)),
                shown.value,
                f"{c.valid_until:%Y-%m-%d %H:%M}",
                str(c.order_id or ""),
                _fen(c.discount_fen) if c.discount_fen else "",
            )
    console.print(table)


@benefits_app.command("redemptions")
def redemptions(
    state: Annotated[
        str | None, typer.Option(help="ordered | shipped | delivered | cancelled | issued")
    ] = "ordered",
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
) -> None:
    """The fulfilment queue of the mall (default: gifts ordered, to ship)."""
    from siyu.benefits import mall

    with _database().unit_of_work() as session:
        table = Table("id", "member", "reward", "qty", "points", "state", "at", "tracking")
        for r in mall.list_redemptions(session, state=state, limit=limit):
            table.add_row(
                str(r.id),
                str(r.member_id),
                str(r.reward_id),
                str(r.quantity),
                f"{r.points_spent:,}",
                r.state,
                f"{r.created_at:%Y-%m-%d %H:%M}",
                r.tracking_no or "",
            )
    console.print(table)
