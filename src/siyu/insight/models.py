"""Insight results, materialized for the API with the time they were computed.

``member_insight`` is the one row per member that segments, the console and campaigns
read: lifecycle stage, RFM scores and group, super-user flag, CLV. Each part of the
nightly refresh fills its own columns and stamps its own ``*_at``; the table is derived
(rebuilt from orders by the refresh), so a member merge leaves it to the next refresh.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, BigId, UTCDateTime


class MemberInsight(Base):
    __tablename__ = "member_insight"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    # lifecycle (生命周期): prospect | new | active | silent | sleeping | churned
    stage: Mapped[str | None] = mapped_column(String(10))
    stage_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # RFM: days since the last purchase, orders and net spend over the RFM window
    recency_days: Mapped[int | None] = mapped_column(Integer)
    frequency: Mapped[int | None] = mapped_column(Integer)
    monetary_fen: Mapped[int | None] = mapped_column(BigInteger)
    r_score: Mapped[int | None] = mapped_column(Integer)
    f_score: Mapped[int | None] = mapped_column(Integer)
    m_score: Mapped[int | None] = mapped_column(Integer)
    # the eight classic groups: important_value … general_retain (重要价值 … 一般挽留)
    rfm_group: Mapped[str | None] = mapped_column(String(20))
    super_user: Mapped[bool] = mapped_column(Boolean, default=False)
    computed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # CLV (BG/NBD + Gamma-Gamma), filled by its own step
    p_alive: Mapped[float | None] = mapped_column(Float)
    expected_purchases_90: Mapped[float | None] = mapped_column(Float)
    expected_purchases_365: Mapped[float | None] = mapped_column(Float)
    expected_value_fen: Mapped[int | None] = mapped_column(BigInteger)
    clv_computed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_member_insight_stage", "stage"),
        Index("ix_member_insight_rfm_group", "rfm_group"),
        {"info": {"merge": "derived"}},
    )


class InsightRun(Base):
    """One computation of an insight step: what ran, when, over how many rows, how long."""

    __tablename__ = "insight_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    step: Mapped[str] = mapped_column(String(40), index=True)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    detail: Mapped[str] = mapped_column(String(2000), default="")


# --- lifecycle, RFM, super users (the refresh) -----------------------------------------

# --- CLV ---------------------------------------------------------------------------------

# --- KPIs and diagnosis -------------------------------------------------------------------
