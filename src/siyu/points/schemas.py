"""API shapes for points. Points are integers; money is integer fen (``*_fen``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from siyu.points import rules, service
from siyu.points.models import PointsEntry, PointsLot, PointsReservation

Key = Field(min_length=1, max_length=100, description="idempotency key of this fact")


class ExpiryRead(BaseModel):
    date: date
    points: int


class PointsRead(BaseModel):
    """A member's points: the balance (every entry summed), what can be spent now, what is
    frozen in the return window, held at checkout, or owed; and what expires next."""

    member_id: int
    balance: int
    available: int
    frozen: int
    held: int
    debt: int
    next_expiry_date: date | None
    next_expiry_points: int
    expiring: list[ExpiryRead]
    cash_value_fen: int | None = Field(description="what the available points are worth as cash")

    @classmethod
    def of(cls, s: service.Summary) -> PointsRead:
        return cls(
            member_id=s.member_id,
            balance=s.balance,
            available=s.available,
            frozen=s.frozen,
            held=s.held,
            debt=s.debt,
            next_expiry_date=s.expiring.next_date,
            next_expiry_points=s.expiring.next_points,
            expiring=[ExpiryRead(date=d, points=p) for d, p in s.expiring.dates],
            cash_value_fen=s.cash_value_fen,
        )


class EntryRead(BaseModel):
    id: int
    at: datetime
    kind: str
    points: int
    balance_after: int
    debt: int
    fact: str
    lot_id: int | None
    note: str | None

    @classmethod
    def of(cls, e: PointsEntry) -> EntryRead:
        return cls(
            id=e.id,
            at=e.at,
            kind=e.kind,
            points=e.points,
            balance_after=e.balance_after,
            debt=e.debt,
            fact=e.fact,
            lot_id=e.lot_id,
            note=e.note,
        )


class EntryPage(BaseModel):
    items: list[EntryRead]
    next_cursor: str | None


class LotRead(BaseModel):
    id: int
    source: str
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    frozen: bool
    expires_at: datetime | None
    expires_on: date | None = Field(description="the last brand-local day it can be spent")
    order_id: int | None

    @classmethod
    def of(cls, lot: PointsLot, *, tz: str, at: datetime) -> LotRead:
        return cls(
            id=lot.id,
            source=lot.source,
            points=lot.points,
            remaining=lot.remaining,
            earned_at=lot.earned_at,
            available_at=lot.available_at,
            frozen=lot.frozen and lot.available_at > at,
            expires_at=lot.expires_at,
            expires_on=rules.expires_on(lot.expires_at, tz),
            order_id=lot.order_id,
        )


class AdjustmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: int = Field(description="positive to add, negative to take away; not 0")
    reason: str = Field(min_length=1, max_length=400)
    key: str = Key


class AdjustmentRead(BaseModel):
    member_id: int
    points: int
    fact: str
    balance_after: int
    created: bool


class CheckInRead(BaseModel):
    member_id: int
    day: date
    streak: int
    points: int
    bonus: int
    created: bool


class CheckInDayRead(BaseModel):
    day: date
    streak: int
    points: int


class CheckInStateRead(BaseModel):
    member_id: int
    day: date
    checked_in_today: bool
    streak: int
    points_today: int
    recent: list[CheckInDayRead]


class EventCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: Literal["signup", "birthday", "profile_completion", "review"]
    key: str = Key


class EventRead(BaseModel):
    event: str
    member_id: int
    points: int
    lot_id: int | None
    reason: str | None


class ReservationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: int
    points: int = Field(gt=0)
    key: str = Key
    order_amount_fen: int | None = Field(
        default=None,
        ge=0,
        description="when the points go as cash off this order: checked "
        "against the cap and the step",
    )
    ttl_seconds: int = Field(default=900, ge=30, le=86_400)


class ReservationRead(BaseModel):
    key: str
    member_id: int
    points: int
    status: str
    expires_at: datetime
    cash_fen: int | None = None

    @classmethod
    def of(cls, r: PointsReservation, cash_fen: int | None = None) -> ReservationRead:
        return cls(
            key=r.key,
            member_id=r.member_id,
            points=r.points,
            status=r.status,
            expires_at=r.expires_at,
            cash_fen=cash_fen,
        )


class SpendRead(BaseModel):
    fact: str
    member_id: int
    points: int
    balance_after: int


class QuoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: int
    order_amount_fen: int = Field(ge=0)


class QuoteRead(BaseModel):
    member_id: int
    points: int = Field(description="the most points that can go off this order")
    cash_fen: int
    max_cash_fen: int
    available: int
    points_per_yuan: int
    step: int
