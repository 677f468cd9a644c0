"""Request dependencies: the unit of work, the caller, and role checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from siyu.core.auth import Principal, Role, authenticate
from siyu.core.db import Database
from siyu.core.errors import Forbidden


def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def get_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    """One transaction per request: committed when the endpoint returns, rolled back on error."""
    with db.unit_of_work() as session:
        yield session


def get_principal(
    db: Annotated[Database, Depends(get_db)],
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    secret = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        secret = authorization[7:].strip()
    with db.unit_of_work() as session:
        return authenticate(session, secret)


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency that lets only these roles through (admin always)."""
    allowed = {Role.admin, *roles}

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(
                f"role '{principal.role}' may not do this; it needs one of: "
                + ", ".join(sorted(r.value for r in allowed))
            )
        return principal

    return check


# scope="function": the transaction commits before the response is sent, so a failed
# commit answers with an error instead of a 201 for something that was never stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
AnyRole = Annotated[Principal, Depends(get_principal)]
