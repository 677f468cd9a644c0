"""The ``siyu`` command. Each command opens its own unit of work and calls the same services
as the API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from siyu.core.errors import Conflict, SiyuError
from siyu.core.settings import get_settings

app = typer.Typer(
    name="siyu",
    help="siyu 私域: member operations for retail brands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
members_app = typer.Typer(help="Members.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(members_app, name="members")
app.add_typer(keys_app, name="keys")

console = Console()
err = Console(stderr=True)


def _mount_capabilities() -> None:
    from siyu.orders.cli import import_app, orders_app

    app.add_typer(import_app, name="import", help="Import data from files.")
    app.add_typer(orders_app, name="orders", help="Orders and member metrics.")
    from siyu.programme.cli import programme_app

    app.add_typer(
        programme_app, name="programme", help="The loyalty programme document and its versions."
    )
    from siyu.benefits.cli import benefits_app
    from siyu.jobs.cli import jobs_app
    from siyu.points.cli import points_app
    from siyu.tiers.cli import tiers_app

    app.add_typer(tiers_app, name="tiers", help="Growth value and tiers.")
    app.add_typer(points_app, name="points", help="Points: balances, ledger, adjustments.")
    app.add_typer(benefits_app, name="benefits", help="Coupons, benefit packs, the points mall.")
    from siyu.paid.cli import paid_app

    app.add_typer(paid_app, name="paid", help="Paid membership.")
    app.add_typer(jobs_app, name="jobs", help="Daily jobs: expiry, releases, review, birthdays.")
    from siyu.insight.cli import insight_app, report_app
    from siyu.segments.cli import segments_app

    app.add_typer(insight_app, name="insight", help="Lifecycle, RFM, super users, CLV, KPIs.")
    app.add_typer(segments_app, name="segments", help="Tags and segments of members.")
    app.add_typer(report_app, name="report", help="Reports: the health diagnosis.")
    from siyu.web.cli import users_app

    app.add_typer(users_app, name="users", help="Console user accounts.")


_mount_capabilities()


def _database():  # type: ignore[no-untyped-def]
    from siyu.bootstrap import bootstrap

    return bootstrap()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    from siyu.bootstrap import bootstrap

    db = bootstrap(migrate=True)
    console.print(f"[green]schema is up to date[/] ({db.dialect})")


@app.command()
def init(
    admin_name: Annotated[str, typer.Option(help="name of the first admin key")] = "admin",
) -> None:
    """Create the database schema and a first admin API key."""
    from siyu.core.auth import create_key

    db = _database()
    with db.unit_of_work() as session:
        _, secret = create_key(session, role="admin", name=admin_name)
    console.print(f"[green]database ready[/] at {get_settings().database_url}")
    console.print(f"admin API key (shown once): [bold]{secret}[/]")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Serve the API (OpenAPI docs at /docs)."""
    _serve(host, port)


def _serve(host: str | None, port: int | None) -> None:
    import uvicorn

    from siyu.api.app import create_app

    settings = get_settings()
    host = host or settings.host
    port = port or settings.port
    app_ = create_app(settings)
    scheduler = None
    if settings.scheduler:
        from siyu.jobs.scheduler import Scheduler

        scheduler = Scheduler(app_.state.db, tz=settings.timezone, at=settings.jobs_at)
        scheduler.start()
        console.print(f"daily jobs run in this process after {settings.jobs_at:%H:%M}")
    console.print(f"siyu serving on [bold]http://{host}:{port}[/] — API docs at /docs")
    try:
        uvicorn.run(app_, host=host, port=port, log_level="info")
    finally:
        if scheduler is not None:
            scheduler.stop()


@app.command()
def demo(
    members: Annotated[int, typer.Option(help="how many members the demo brand has")] = 20_000,
    seed: Annotated[int, typer.Option(help="same seed, same brand")] = 7,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve")] = True,
    reset: Annotated[bool, typer.Option(help="throw away an existing demo database")] = False,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Create a realistic demo brand (a mother-and-baby chain) and serve it."""
    from siyu.core import clock
    from siyu.core.auth import create_key
    from siyu.demo.generator import generate_brand
    from siyu.members import service as members_service

    settings = get_settings()
    if reset and settings.database_url.startswith("sqlite:///"):
        path = Path(settings.database_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = _database()
    with db.unit_of_work() as session:
        existing = members_service.count(session)
    from siyu.jobs import service as jobs

    if existing and not jobs.history(db, limit=1):
        # the build ends with the day's nightly jobs: members and no job run is a build
        # that stopped half-way (or a database that is not a demo), never a whole brand
        raise Conflict(
            f"this database has {existing:,} members but no nightly job has ever run: an "
            "earlier `siyu demo` stopped before the brand was built. Run `siyu demo "
            "--reset` to build it again (or `siyu serve` if this is not a demo database)"
        )
    if existing:
        console.print(f"demo brand already loaded ({existing:,} members); --reset to rebuild")
    else:
        summary = generate_brand(db, members=members, seed=seed, as_of=clock.now(), progress=True)
        table = Table(title="demo brand 贝贝乐母婴 (mother-and-baby chain)")
        table.add_column("what")
        table.add_column("count", justify="right")
        for name, value in vars(summary).items():
            table.add_row(name.replace("_", " "), f"{value:,}")
        console.print(table)
        # Today's nightly work (expiry, releases, the tier review, birthdays), so the brand
        # looks like one that has been running: `siyu jobs history` shows what it did.
        for outcome in jobs.run_all(db, tz=settings.timezone):
            counts = ", ".join(f"{k}={v}" for k, v in outcome.result.items())
            console.print(f"job {outcome.name}: {counts}")
    with db.unit_of_work() as session:
        _, secret = create_key(session, role="admin", name="demo-admin")
    console.print(f"admin API key: [bold]{secret}[/]")
    from siyu.web.demo import demo_operator

    login, password = demo_operator(db)
    console.print(f"console: /console — log in as [bold]{login}[/] / [bold]{password}[/]")
    if serve_api:
        _serve(host, port)


@members_app.command("show")
def members_show(
    ref: Annotated[str, typer.Argument(help="member id, member number or phone")],
) -> None:
    """Show a member: identities, tags, metrics."""
    from siyu.members import rules
    from siyu.members import service as members
    from siyu.orders.models import MemberMetrics

    db = _database()
    with db.unit_of_work() as session:
        member = members.find(session, ref)
        table = Table(title=f"member {rules.member_no(member.id)}", show_header=False)
        for label, value in (
            ("id", member.id),
            ("name", member.name),
            ("phone", member.phone),
            ("status", member.status),
            ("joined", f"{member.joined_at:%Y-%m-%d} via {member.join_channel}"),
            ("store / guide", f"{member.store_id} / {member.guide_id}"),
            ("tier", member.tier_code),
            ("points", member.points_balance),
        ):
            table.add_row(label, "" if value is None else str(value))
        for identity in members.identities_of(session, member.id):
            table.add_row(f"id:{identity.channel}", identity.external_id)
        tags = ", ".join(t.tag for t in members.tags_of(session, member.id))
        table.add_row("tags", tags)
        metrics = session.get(MemberMetrics, member.id)
        if metrics is not None:
            table.add_row("orders", str(metrics.order_count))
            table.add_row("spend (fen)", str(metrics.spend_fen))
            table.add_row("refunds (fen)", str(metrics.refund_fen))
            last = metrics.last_order_at
            table.add_row("last order", f"{last:%Y-%m-%d %H:%M}" if last else "")
        console.print(table)


@members_app.command("link")
def members_link(
    ref: Annotated[str, typer.Argument(help="member id, member number or phone")],
    days: Annotated[int, typer.Option(help="how long the link works (1 to 30 days)")] = 7,
    base_url: Annotated[str, typer.Option(help="where the app is served")] = "",
) -> None:
    """A signed link to the member's own pages (/m)."""
    from siyu.members import service as members
    from siyu.web.links import mint

    settings = get_settings()
    base = base_url.rstrip("/") or f"http://{settings.host}:{settings.port}"
    db = _database()
    with db.unit_of_work() as session:
        link = mint(session, members.find(session, ref).id, secret=settings.secret_key, days=days)
    typer.echo(f"{base}{link.path}")  # plain: a link must not be wrapped
    console.print(f"valid until {link.expires_at:%Y-%m-%d %H:%M} UTC")


@keys_app.command("create")
def keys_create(
    role: Annotated[
        str, typer.Option(help="admin, operator, analyst, store_manager, guide, service")
    ],
    name: Annotated[str, typer.Option()] = "cli",
    staff_id: Annotated[int | None, typer.Option(help="the guide's staff id")] = None,
    store_id: Annotated[int | None, typer.Option(help="the store manager's store id")] = None,
) -> None:
    """Create an API key; the key is printed once."""
    from siyu.core.auth import create_key

    db = _database()
    with db.unit_of_work() as session:
        key, secret = create_key(
            session, role=role, name=name, staff_id=staff_id, store_id=store_id
        )
    console.print(f"{key.role} key #{key.id}: [bold]{secret}[/]")


def main() -> None:
    """Entry point: domain errors print as one clear line and exit 2, without a traceback."""
    try:
        app()
    except SiyuError as exc:
        where = f" ({exc.field})" if exc.field else ""
        err.print(f"[red]error{escape(where)}:[/] {escape(exc.message)}")
        sys.exit(2)


if __name__ == "__main__":
    main()
