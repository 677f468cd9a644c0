"""Points routes: what a member sees (balance, expiry, history, check-in) and what the
checkout and the operators do (reservations, cash off, events, adjustments). Thin: every
route calls the same services as the CLI and the jobs."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from siyu.api.deps import AnyRole, SessionDep, require
from siyu.core import clock
from siyu.core.auth import Principal, Role
from siyu.core.settings import get_settings
from siyu.members import service as members
from siyu.orders.rules import decode_cursor, encode_cursor
from siyu.points import rules, service
from siyu.points.schemas import (
    AdjustmentCreate,
    AdjustmentRead,
    CheckInDayRead,
    CheckInRead,
    CheckInStateRead,
    EntryPage,
    EntryRead,
    EventCreate,
    EventRead,
    LotRead,
    PointsRead,
    QuoteCreate,
    QuoteRead,
    ReservationCreate,
    ReservationRead,
    SpendRead,
)

router = APIRouter(tags=["points"])

Operator = Annotated[Principal, Depends(require(Role.operator))]
# The mini program's backend (service) and operators act for members.
Desk = Annotated[Principal, Depends(require(Role.operator, Role.service))]


def _tz() -> str:
    return get_settings().timezone


@router.get("/members/{member_id}/points", response_model=PointsRead)
def read_points(member_id: int, session: SessionDep, who: AnyRole) -> PointsRead:
    """Balance, what can be spent now, frozen and held points, debt, and what expires when."""
    members.get(session, member_id, principal=who)
    return PointsRead.of(service.summary(session, member_id))


@router.get("/members/{member_id}/points/entries", response_model=EntryPage)
def read_entries(
    member_id: int,
    session: SessionDep,
    who: AnyRole,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> EntryPage:
    """Points history, newest first."""
    members.get(session, member_id, principal=who)
    before = decode_cursor(cursor) if cursor else None
    found = service.entries(session, member_id, before=before, limit=limit)
    last = found[-1] if len(found) == limit else None
    return EntryPage(
        items=[EntryRead.of(e) for e in found],
        next_cursor=encode_cursor(last.at, last.id) if last is not None else None,
    )


@router.get("/members/{member_id}/points/lots", response_model=list[LotRead])
def read_lots(
    member_id: int,
    session: SessionDep,
    who: AnyRole,
    include_empty: Annotated[bool, Query(description="also lots spent or expired")] = False,
) -> list[LotRead]:
    """The member's lots, in the order they would be spent."""
    members.get(session, member_id, principal=who)
    now, tz = clock.now(), _tz()
    return [
        LotRead.of(x, tz=tz, at=now)
        for x in service.lots(session, member_id, include_empty=include_empty)
    ]


@router.post(
    "/members/{member_id}/points/adjustments", response_model=AdjustmentRead, status_code=201
)
def create_adjustment(
    member_id: int,
    body: AdjustmentCreate,
    response: Response,
    session: SessionDep,
    who: Operator,
) -> AdjustmentRead:
    """Add or take away points by hand, with a reason (audited). Same key again: 200."""
    members.get(session, member_id, principal=who)
    done = service.adjust(
        session, member_id, body.points, reason=body.reason, principal=who, key=body.key
    )
    if not done.created:
        response.status_code = 200
    return AdjustmentRead(
        member_id=done.member_id,
        points=done.points,
        fact=done.fact,
        balance_after=done.balance_after,
        created=done.created,
    )


@router.post("/members/{member_id}/check-ins", response_model=CheckInRead, status_code=201)
def create_check_in(
    member_id: int, response: Response, session: SessionDep, who: Desk
) -> CheckInRead:
    """Check in for today (brand-local); a second check-in the same day returns the first."""
    members.get(session, member_id, principal=who)
    result = service.check_in(session, member_id, tz=_tz())
    if not result.created:
        response.status_code = 200
    return CheckInRead(
        member_id=result.member_id,
        day=result.day,
        streak=result.streak,
        points=result.points,
        bonus=result.bonus,
        created=result.created,
    )


@router.get("/members/{member_id}/check-ins", response_model=CheckInStateRead)
def read_check_ins(member_id: int, session: SessionDep, who: Desk) -> CheckInStateRead:
    """Today's state and the streak (a streak that ended yesterday is still alive today)."""
    members.get(session, member_id, principal=who)
    state = service.check_in_state(session, member_id, tz=_tz())
    return CheckInStateRead(
        member_id=state.member_id,
        day=state.day,
        checked_in_today=state.checked_in_today,
        streak=state.streak,
        points_today=state.points_today,
        recent=[CheckInDayRead(day=r.day, streak=r.streak, points=r.points) for r in state.recent],
    )


@router.post("/members/{member_id}/points/events", response_model=EventRead)
def create_event(member_id: int, body: EventCreate, session: SessionDep, who: Desk) -> EventRead:
    """Fixed points for an event (birthday, profile completion, review…), within its limits."""
    members.get(session, member_id, principal=who)
    award = service.award_event(session, member_id, body.event, key=body.key, tz=_tz())
    return EventRead(
        event=award.event,
        member_id=award.member_id,
        points=award.points,
        lot_id=award.lot_id,
        reason=award.reason,
    )


@router.post("/points/reservations", response_model=ReservationRead, status_code=201)
def create_reservation(body: ReservationCreate, session: SessionDep, who: Desk) -> ReservationRead:
    """Hold points at checkout (optionally as cash off an order, within its cap and step)."""
    members.get(session, body.member_id, principal=who)
    ttl = timedelta(seconds=body.ttl_seconds)
    cash = None
    if body.order_amount_fen is not None:
        row = service.reserve_cash_off(
            session, body.member_id, body.points, body.order_amount_fen, key=body.key, ttl=ttl
        )
        quote = service.cash_off_quote(session, body.member_id, body.order_amount_fen)
        cash = rules.cash_off_value(quote, row.points)
    else:
        row = service.reserve(session, body.member_id, body.points, key=body.key, ttl=ttl)
    return ReservationRead.of(row, cash)


@router.post("/points/reservations/{key}/confirm", response_model=SpendRead)
def confirm_reservation(key: str, session: SessionDep, who: Desk) -> SpendRead:
    """Spend the held points (the order was paid)."""
    spent = service.confirm(session, key)
    return SpendRead(
        fact=spent.fact,
        member_id=spent.member_id,
        points=spent.points,
        balance_after=spent.balance_after,
    )


@router.post("/points/reservations/{key}/release", response_model=ReservationRead)
def release_reservation(key: str, session: SessionDep, who: Desk) -> ReservationRead:
    """Let the held points go (the checkout was abandoned)."""
    return ReservationRead.of(service.release(session, key))


@router.post("/points/cash-off/quote", response_model=QuoteRead)
def quote_cash_off(body: QuoteCreate, session: SessionDep, who: Desk) -> QuoteRead:
    """The most points a member can use as cash off an order, and what they are worth."""
    members.get(session, body.member_id, principal=who)
    quote = service.cash_off_quote(session, body.member_id, body.order_amount_fen)
    return QuoteRead(
        member_id=body.member_id,
        points=quote.points,
        cash_fen=quote.cash_fen,
        max_cash_fen=quote.max_cash_fen,
        available=quote.available,
        points_per_yuan=quote.points_per_yuan,
        step=quote.step,
    )
