"""Members' page links: minted for a member (by an operator, the mini program's backend or
the CLI), opened at ``/m/enter?token=…``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session

from siyu.api.deps import SessionDep, require
from siyu.core.auth import Principal, Role
from siyu.members import service as members
from siyu.web import rules
from siyu.web.deps import now_seconds

MAX_DAYS = 30


@dataclass(frozen=True)
class MemberLink:
    member_id: int
    path: str
    expires_at: datetime


def mint(
    session: Session,
    member_id: int,
    *,
    secret: str,
    days: int = 7,
    principal: Principal | None = None,
    now: int | None = None,
) -> MemberLink:
    """A signed link to the member's pages, valid ``days`` days (1 to 30)."""
    members.get(session, member_id, principal=principal)
    days = max(1, min(days, MAX_DAYS))
    now = now if now is not None else now_seconds()
    token = rules.member_link_token(secret, member_id, now=now, seconds=days * 86400)
    return MemberLink(
        member_id,
        f"/m/enter?token={token}",
        datetime.fromtimestamp(now + days * 86400, tz=UTC),
    )


class MemberLinkRead(BaseModel):
    member_id: int
    url: str
    expires_at: datetime


api = APIRouter(tags=["members"])
Desk = Annotated[Principal, Depends(require(Role.operator, Role.service))]


@api.post("/members/{member_id}/page-link", response_model=MemberLinkRead, status_code=201)
def create_page_link(
    member_id: int,
    request: Request,
    session: SessionDep,
    who: Desk,
    days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 7,
) -> MemberLinkRead:
    """A signed link that opens the member's own pages (/m) for ``days`` days, as the mini
    program hands a logged-in member over."""
    link = mint(
        session, member_id, secret=request.app.state.settings.secret_key, days=days, principal=who
    )
    base = str(request.base_url).rstrip("/")
    return MemberLinkRead(member_id=member_id, url=base + link.path, expires_at=link.expires_at)
