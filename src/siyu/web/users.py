"""Console user accounts: create, list, log in. Services flush; the caller commits."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.auth import Principal, Role
from siyu.core.errors import Conflict, InvalidInput, NotFound, Problem, Unauthorized, invalid
from siyu.stores.models import Staff, Store
from siyu.web import rules
from siyu.web.models import ConsoleUser

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")
# A password hash to compare against when the username is unknown, so a wrong username
# takes as long as a wrong password and does not reveal which usernames exist.
_DUMMY_HASH = rules.hash_password("not-a-real-password", salt=b"0" * 16)


@dataclass(frozen=True)
class ConsolePrincipal(Principal):
    """A person logged in to the console: the API's principal, named as a user in audits."""

    @property
    def actor(self) -> str:
        return f"user:{self.key_id}:{self.name}"


def principal_of(user: ConsoleUser) -> ConsolePrincipal:
    return ConsolePrincipal(
        key_id=user.id,
        name=user.username,
        role=Role(user.role),
        staff_id=user.staff_id,
        store_id=user.store_id,
    )


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: Role | str,
    display_name: str | None = None,
    staff_id: int | None = None,
    store_id: int | None = None,
) -> ConsoleUser:
    """A console account with the API's roles. A guide is tied to their staff record (and
    its store); a store manager to a store. Every problem is reported at once."""
    problems: list[Problem] = []
    if not USERNAME.match(username or ""):
        problems.append(
            Problem("username", "2 to 64 letters, digits, '.', '_' or '-' (e.g. li.na)")
        )
    reason = rules.password_problem(password or "")
    if reason:
        problems.append(Problem("password", reason))
    try:
        role = Role(role)
    except ValueError:
        problems.append(
            Problem(
                "role", f"unknown role '{role}'; use one of: {', '.join(r.value for r in Role)}"
            )
        )
        role = None  # type: ignore[assignment]
    if role is Role.service:
        problems.append(Problem("role", "service is for programs: create an API key instead"))
    if role is Role.guide:
        if staff_id is None:
            problems.append(Problem("guide_id", "a guide's account needs the guide's staff id"))
        else:
            staff = session.get(Staff, staff_id)
            if staff is None:
                problems.append(Problem("guide_id", f"no staff member with id {staff_id}"))
            elif store_id is None:
                store_id = staff.store_id
    if role is Role.store_manager:
        if store_id is None:
            problems.append(Problem("store_id", "a store manager's account needs the store id"))
        elif session.get(Store, store_id) is None:
            problems.append(Problem("store_id", f"no store with id {store_id}"))
    if problems:
        raise invalid(problems, what="user")
    if session.scalar(select(ConsoleUser.id).where(ConsoleUser.username == username)):
        raise Conflict(f"the username '{username}' is taken; choose another", field="username")
    user = ConsoleUser(
        username=username,
        display_name=(display_name or username).strip()[:100],
        password_hash=rules.hash_password(password),
        role=role.value,
        staff_id=staff_id,
        store_id=store_id,
        created_at=clock.now(),
    )
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> list[ConsoleUser]:
    return list(session.scalars(select(ConsoleUser).order_by(ConsoleUser.id)))


def get_user(session: Session, user_id: int) -> ConsoleUser:
    user = session.get(ConsoleUser, user_id)
    if user is None:
        raise NotFound(f"no console user with id {user_id}", field="user_id")
    return user


def active_user(session: Session, user_id: int) -> ConsoleUser | None:
    """The user a session cookie names, if the account still exists and is enabled."""
    user = session.get(ConsoleUser, user_id)
    if user is None or user.disabled_at is not None:
        return None
    return user


def log_in(session: Session, username: str, password: str) -> ConsoleUser:
    """The user whose password this is; the same answer for an unknown name and a wrong
    password."""
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.username == username.strip()))
    stored = user.password_hash if user is not None else _DUMMY_HASH
    matches = rules.check_password(password, stored)
    if user is None or not matches or user.disabled_at is not None:
        raise Unauthorized("wrong username or password", code="login_failed")
    user.last_login_at = clock.now()
    session.flush()
    return user


def set_password(session: Session, user_id: int, password: str) -> ConsoleUser:
    reason = rules.password_problem(password)
    if reason:
        raise InvalidInput(f"password: {reason}", field="password")
    user = get_user(session, user_id)
    user.password_hash = rules.hash_password(password)
    session.flush()
    return user
