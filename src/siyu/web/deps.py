"""What every console and member-page request needs: the logged-in user (or the member of
a signed link), CSRF checks on POSTs, and a route class that turns domain errors into an
HTML page instead of the API's JSON."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from siyu.api.deps import get_db
from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.core.errors import Forbidden, SiyuError
from siyu.web import render, rules, users
from siyu.web.models import ConsoleUser

SESSION_COOKIE = "siyu_console"
MEMBER_COOKIE = "siyu_member"


def secret(request: Request) -> str:
    return request.app.state.settings.secret_key  # type: ignore[no-any-return]


def now_seconds() -> int:
    """Cookie and link expiry use wall-clock seconds (they are about this browser, not the
    brand's business clock)."""
    return int(time.time())


class LoginRequired(Exception):
    """No valid console session: the route class answers with a redirect to the login."""


class MemberLinkRequired(Exception):
    """No valid member link: the member pages say the link is invalid or expired."""


class PageRoute(APIRoute):
    """Routes of HTML pages: a domain error becomes an error page in the user's language
    (its HTTP status kept), a missing login a redirect. The unit of work has already
    rolled back when the error reaches here."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                if request.headers.get("HX-Request"):
                    response = Response(status_code=401)
                    response.headers["HX-Redirect"] = "/console/login"
                    return response
                return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)
            except MemberLinkRequired:
                return render.render(request, "member/invalid.html", {}, status_code=401)
            except SiyuError as exc:
                template = (
                    "member/error.html"
                    if request.url.path.startswith("/m")
                    else "console/error.html"
                )
                return render.render(
                    request,
                    template,
                    {"error": exc, "user": getattr(request.state, "console", None)},
                    status_code=exc.status,
                )

        return page


@dataclass(frozen=True)
class Console:
    """The logged-in user of a console request."""

    user: ConsoleUser
    principal: users.ConsolePrincipal
    csrf: str

    @property
    def role(self) -> Role:
        return self.principal.role

    def can(self, *roles: Role) -> bool:
        """Admins may do everything; others only what these roles may."""
        return self.role is Role.admin or self.role in roles


def console_user(request: Request, db: Annotated[Database, Depends(get_db)]) -> Console:
    session_ = rules.read_session(
        secret(request), request.cookies.get(SESSION_COOKIE), now=now_seconds()
    )
    if session_ is None:
        raise LoginRequired()
    with db.unit_of_work() as s:
        user = users.active_user(s, session_.user_id)
    if user is None:
        raise LoginRequired()
    console = Console(
        user, users.principal_of(user), rules.csrf_token(secret(request), session_.nonce)
    )
    request.state.console = console
    return console


async def console_csrf(
    request: Request, console: Annotated[Console, Depends(console_user)]
) -> Console:
    """A console POST must carry the session's CSRF token (form field or htmx header)."""
    token = request.headers.get("X-CSRF-Token")
    if token is None:
        form = await request.form()
        value = form.get("csrf_token")
        token = value if isinstance(value, str) else None
    if token is None or not hmac.compare_digest(token, console.csrf):
        raise Forbidden(
            "this form is out of date or came from another site; reload the page and try again",
            code="csrf",
        )
    return console


def require_role(console: Console, *roles: Role) -> None:
    if not console.can(*roles):
        raise Forbidden(
            f"role '{console.role}' may not do this; it needs one of: "
            + ", ".join(sorted({Role.admin.value, *(r.value for r in roles)})),
        )


@dataclass(frozen=True)
class MemberVisit:
    """A member on their own pages, by a signed link."""

    member_id: int
    token: str
    csrf: str


def member_visit(request: Request) -> MemberVisit:
    token = request.cookies.get(MEMBER_COOKIE)
    member_id = rules.read_member_link(secret(request), token, now=now_seconds())
    if member_id is None or token is None:
        raise MemberLinkRequired()
    return MemberVisit(member_id, token, rules.member_csrf(secret(request), token))


async def member_csrf(
    request: Request, visit: Annotated[MemberVisit, Depends(member_visit)]
) -> MemberVisit:
    token = request.headers.get("X-CSRF-Token")
    if token is None:
        form = await request.form()
        value = form.get("csrf_token")
        token = value if isinstance(value, str) else None
    if token is None or not hmac.compare_digest(token, visit.csrf):
        raise Forbidden("this page is out of date; open it again", code="csrf")
    return visit


ConsoleDep = Annotated[Console, Depends(console_user)]
ConsolePost = Annotated[Console, Depends(console_csrf)]
MemberDep = Annotated[MemberVisit, Depends(member_visit)]
MemberPost = Annotated[MemberVisit, Depends(member_csrf)]
