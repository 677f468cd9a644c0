"""Growth and tier routes: reads for every role in scope, changes for operators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from siyu.api.deps import AnyRole, SessionDep, require
from siyu.core.auth import Principal, Role
from siyu.members import service as members
from siyu.orders.rules import decode_cursor, encode_cursor
from siyu.tiers import service
from siyu.tiers.schemas import (
    AdjustmentCreate,
    GrantCreate,
    GrantRead,
    GrantRevoke,
    GrowthEntryRead,
    GrowthPage,
    ProgressRead,
    TierHistoryRead,
    TierRead,
)

router = APIRouter(tags=["tiers"])

Operator = Annotated[Principal, Depends(require(Role.operator))]


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


@router.get("/members/{member_id}/tier", response_model=TierRead)
def read_tier(member_id: int, request: Request, session: SessionDep, who: AnyRole) -> TierRead:
    """The member's tier, its benefits, and what reaches the next level or keeps this one."""
    member = members.get(session, member_id, principal=who)
    progress = service.progress(session, member_id, principal=who, tz=_tz(request))
    level = service.level(session, member.tier_code)
    return TierRead(
        member_id=member.id,
        code=member.tier_code,
        name=level.name if level is not None else None,
        since=member.tier_changed_at,
        growth_balance=member.growth_balance,
        benefits=level.benefits.model_dump(mode="json") if level is not None else None,
        progress=ProgressRead.of(progress),
    )


@router.get("/members/{member_id}/tier/history", response_model=list[TierHistoryRead])
def tier_history(
    member_id: int,
    session: SessionDep,
    who: AnyRole,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> object:
    """Every change of the member's tier with its reason, newest first."""
    return service.history(session, member_id, principal=who, limit=limit)


@router.get("/members/{member_id}/growth", response_model=GrowthPage)
def growth_entries(
    member_id: int,
    session: SessionDep,
    who: AnyRole,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> GrowthPage:
    """The member's growth ledger, newest first."""
    before = decode_cursor(cursor) if cursor else None
    rows = service.entries(session, member_id, principal=who, before=before, limit=limit)
    last = rows[-1] if len(rows) == limit else None
    return GrowthPage(
        items=[GrowthEntryRead.model_validate(r) for r in rows],
        next_cursor=encode_cursor(last.at, last.id) if last is not None else None,
    )


@router.post(
    "/members/{member_id}/growth/adjustments", response_model=GrowthEntryRead, status_code=201
)
def adjust_growth(
    member_id: int, body: AdjustmentCreate, request: Request, session: SessionDep, who: Operator
) -> object:
    """Add or take growth value by hand, with a reason (audited). The body's ``key`` makes
    the adjustment a fact: the same key again returns the first entry."""
    return service.adjust(
        session,
        member_id,
        body.growth,
        reason=body.reason,
        principal=who,
        key=body.key,
        tz=_tz(request),
    )


@router.post("/members/{member_id}/tier/grants", response_model=GrantRead, status_code=201)
def grant_tier(
    member_id: int, body: GrantCreate, request: Request, session: SessionDep, who: Operator
) -> object:
    """Grant a tier until ``ends_at``: applied now if above the member's tier, and a floor
    that reviews respect until it ends (audited)."""
    return service.grant_tier(
        session,
        member_id,
        body.code,
        ends_at=body.ends_at,
        reason=body.reason,
        principal=who,
        tz=_tz(request),
    )


@router.get("/members/{member_id}/tier/grants", response_model=list[GrantRead])
def list_grants(member_id: int, session: SessionDep, who: AnyRole) -> object:
    members.get(session, member_id, principal=who)
    return service.grants_of(session, member_id)


@router.post("/tier-grants/{grant_id}/revoke", response_model=GrantRead)
def revoke_grant(
    grant_id: int, body: GrantRevoke, request: Request, session: SessionDep, who: Operator
) -> object:
    """End a grant now; the member settles as at a grant's natural end."""
    return service.revoke_grant(
        session, grant_id, reason=body.reason, principal=who, tz=_tz(request)
    )
