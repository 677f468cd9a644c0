"""The demo brand's console login: an admin account with a fresh password each time
``siyu demo`` starts (printed once, like the admin API key)."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.web import users
from siyu.web.models import ConsoleUser

DEMO_LOGIN = "demo"


def demo_operator(db: Database) -> tuple[str, str]:
    """Create the demo admin account, or give it a new password; returns (login, password)."""
    password = secrets.token_urlsafe(9)
    with db.unit_of_work() as session:
        existing = session.scalar(select(ConsoleUser).where(ConsoleUser.username == DEMO_LOGIN))
        if existing is None:
            users.create_user(
                session,
                username=DEMO_LOGIN,
                password=password,
                role=Role.admin,
                display_name="演示管理员",
            )
        else:
            users.set_password(session, existing.id, password)
    return DEMO_LOGIN, password
