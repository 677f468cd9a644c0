"""``siyu users …``: console user accounts."""

from __future__ import annotations

import getpass
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

users_app = typer.Typer(no_args_is_help=True)
console = Console()

PASSWORD_ENV = "SIYU_USER_PASSWORD"


def _database():  # type: ignore[no-untyped-def]
    from siyu.bootstrap import bootstrap

    return bootstrap()


@users_app.command("add")
def add(
    username: Annotated[str, typer.Argument(help="the login name, e.g. li.na")],
    role: Annotated[
        str, typer.Option(help="admin, operator, analyst, store_manager or guide")
    ] = "operator",
    guide_id: Annotated[
        int | None, typer.Option(help="a guide's staff id: they see only their members")
    ] = None,
    store_id: Annotated[int | None, typer.Option(help="a store manager's store id")] = None,
    name: Annotated[str | None, typer.Option(help="the name shown in the console")] = None,
) -> None:
    """Create a console account. The password is asked for (or read from
    SIYU_USER_PASSWORD, for scripts)."""
    from siyu.web import users

    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise typer.BadParameter("the two passwords differ")
    db = _database()
    with db.unit_of_work() as session:
        user = users.create_user(
            session,
            username=username,
            password=password,
            role=role,
            display_name=name,
            staff_id=guide_id,
            store_id=store_id,
        )
        console.print(f"console user #{user.id} [bold]{user.username}[/] ({user.role}) created")


@users_app.command("list")
def list_() -> None:
    """Every console account, its role and scope."""
    from siyu.web import users

    db = _database()
    with db.unit_of_work() as session:
        table = Table(title="console users")
        for column in ("id", "username", "name", "role", "guide", "store", "last login", "status"):
            table.add_column(column)
        for user in users.list_users(session):
            table.add_row(
                str(user.id),
                user.username,
                user.display_name,
                user.role,
                str(user.staff_id or ""),
                str(user.store_id or ""),
                f"{user.last_login_at:%Y-%m-%d %H:%M}" if user.last_login_at else "",
                "disabled" if user.disabled_at else "active",
            )
        console.print(table)
