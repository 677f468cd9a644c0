"""API shapes of the insight refresh (lifecycle, RFM, super users). Read-only views of the
materialized tables, each with the time it was computed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class MarksRead(BaseModel):
    basis: str
    new_within_days: int
    silent_after_days: int
    sleeping_after_days: int
    churned_after_days: int


class RunRead(BaseModel):
    id: int
    step: str
    status: str
    as_of: datetime
    started_at: datetime
    finished_at: datetime | None
    rows: int
    detail: dict[str, Any] | str


class RefreshRead(BaseModel):
    run_id: int
    as_of: datetime
    members: int
    buyers: int
    super_users: int
    transitions: int
    events: int
    mode: str  # full | incremental (only the members touched since the last refresh)
    recomputed: int  # members whose purchase aggregates were updated from orders
    written: int  # member_insight rows written or removed (the rest did not change)
    marks: MarksRead
    seconds: dict[str, float]


class GroupRead(BaseModel):
    key: str
    name: str
    members: int
    member_share: float
    spend_fen: int
    spend_share: float
    orders: int


class LifecycleRead(BaseModel):
    computed_at: datetime
    as_of: datetime
    run_id: int
    marks: MarksRead | None
    stages: list[GroupRead]


class MatrixCell(BaseModel):
    from_stage: str
    to_stage: str
    members: int


class MatrixMonth(BaseModel):
    month: str
    computed_at: datetime
    cells: list[MatrixCell]


class MatrixRead(BaseModel):
    months: list[MatrixMonth]


class RfmRead(BaseModel):
    computed_at: datetime
    as_of: datetime
    run_id: int
    groups: list[GroupRead]


class MemberInsightRead(BaseModel):
    member_id: int
    stage: str | None
    stage_name: str | None
    stage_since: datetime | None
    last_order_at: datetime | None
    recency_days: int | None  # days since last_order_at, as of the read
    frequency: int | None
    monetary_fen: int | None
    # on the last refresh's scale (``rfm_scales``), from the figures above: the same scores
    # and group that refresh computed
    r_score: int | None
    f_score: int | None
    m_score: int | None
    rfm_group: str | None
    rfm_group_name: str | None
    super_user: bool
    computed_at: datetime | None
    p_alive: float | None = None
    expected_purchases_90: float | None = None
    expected_purchases_365: float | None = None
    expected_value_fen: int | None = None
    clv_computed_at: datetime | None = None


class MemberPage(BaseModel):
    items: list[MemberInsightRead]
    next_after: int | None  # pass as ``after`` for the next page; null on the last page


class SuperUsersRead(BaseModel):
    computed_at: datetime
    as_of: datetime
    run_id: int
    definition: dict[str, Any] | None
    members: int
    super_users: int
    share: float
    super_spend_fen: int
    ordinary_spend_fen: int
    value_multiple: float | None  # a super user's 12-month spend over an ordinary member's


class EarlySignalRead(BaseModel):
    cohort: str
    members: int
    first_within_7d: int
    second_within_30d: int
    early: int
    early_share: float
    early_super_rate: float | None
    other_super_rate: float | None
    lift_points: float | None
    mature: bool


class EarlySignalsRead(BaseModel):
    computed_at: datetime | None
    cohorts: list[EarlySignalRead]
    # over mature cohorts: how many points more often early buyers are super users now
    lift_points: float | None
