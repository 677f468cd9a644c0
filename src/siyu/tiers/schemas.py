"""API shapes of growth and tiers. Values on the ladder are in the basis's unit: growth
value, fen (a ``spend`` ladder, like every amount in the API), or orders (``unit`` says)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from siyu.tiers.rules import Progress

Unit = Literal["growth", "fen", "orders"]
UNITS: dict[str, Unit] = {"growth": "growth", "spend": "fen", "order_count": "orders"}


class ProgressRead(BaseModel):
    basis: str
    unit: Unit
    value: int = Field(description="in the review window ending now")
    next_code: str | None
    next_name: str | None
    threshold: int | None = Field(description="the next level's mark")
    to_next: int | None
    reach_by: date | None
    retention: int | None = Field(description="the current level's mark to keep it (保级)")
    kept_value: int = Field(description="earned so far in the window the next review reads")
    to_keep: int | None
    review_on: date | None
    floor_code: str | None = Field(description="a granted tier that holds until floor_until")
    floor_until: datetime | None
    sentence_en: str
    sentence_zh: str

    @classmethod
    def of(cls, p: Progress) -> ProgressRead:
        return cls(
            basis=p.basis,
            unit=UNITS[p.basis],
            value=p.value,
            next_code=p.next_code,
            next_name=p.next_name,
            threshold=p.threshold,
            to_next=p.to_next,
            reach_by=p.reach_by,
            retention=p.retention,
            kept_value=p.kept_value,
            to_keep=p.to_keep,
            review_on=p.review_on,
            floor_code=p.floor_code,
            floor_until=p.floor_until,
            sentence_en=p.sentence_en,
            sentence_zh=p.sentence_zh,
        )


class TierRead(BaseModel):
    member_id: int
    code: str | None
    name: str | None
    since: datetime | None
    growth_balance: int
    benefits: dict[str, Any] | None = Field(
        description="points_multiplier, discount_rate (0.95 = 95折), benefit_packs, exclusive"
    )
    progress: ProgressRead


class TierHistoryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    from_code: str | None
    to_code: str
    reason: str
    at: datetime
    note: str | None


class GrowthEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    growth: int
    spend_fen: int
    orders: int
    fact: str
    order_id: int | None
    at: datetime
    note: str | None


class GrowthPage(BaseModel):
    items: list[GrowthEntryRead]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class AdjustmentCreate(BaseModel):
    growth: int = Field(description="signed growth value to add", examples=[200, -50])
    reason: str = Field(min_length=1, max_length=500)
    key: str = Field(
        min_length=1,
        max_length=150,
        description="this adjustment's own key: the same key again changes nothing",
    )


class GrantCreate(BaseModel):
    code: str = Field(min_length=1, max_length=20, examples=["V4"])
    ends_at: datetime = Field(description="the grant is a floor until then")
    reason: str = Field(min_length=1, max_length=500)


class GrantRevoke(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class GrantRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    member_id: int
    tier_code: str
    held_code: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    actor: str
    revoked_at: datetime | None
    closed_at: datetime | None
