"""Insight results, materialized for the API with the time they were computed.

``member_insight`` is the one row per member that segments, the console and campaigns
read: lifecycle stage, RFM figures, super-user flag, CLV. Each part of the
nightly refresh fills its own columns and stamps its own ``*_at``; the table is derived
(rebuilt from orders by the refresh), so a member merge leaves it to the next refresh.

The refresh keeps each member's running purchase aggregates here too (first and last
order, order counts and net spend over the RFM window and 12 months, early orders after
joining), so the nightly run reads only the orders and refunds since its watermark (kept
on ``insight_runs``) instead of every order. Dates are stored, not values that change
every day: recency is days since ``last_order_at``, computed when read, so the row of a
member nothing happened to is not rewritten. For the same reason the RFM scores and
group are not stored either: each run records its scale (``rfm_scales``: where each
score begins), and a reader derives a member's scores from their row's figures
(``rules.scored_on``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, BigId, UTCDateTime
from siyu.insight.rules import RfmScale as RuleScale


class MemberInsight(Base):
    __tablename__ = "member_insight"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    # lifecycle (生命周期): prospect | new | active | silent | sleeping | churned
    stage: Mapped[str | None] = mapped_column(String(10))
    stage_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # purchase aggregates the nightly refresh merges new orders into (null/0: never bought)
    first_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    order_count: Mapped[int | None] = mapped_column(Integer)
    orders_12m: Mapped[int | None] = mapped_column(Integer)
    spend_12m_fen: Mapped[int | None] = mapped_column(BigInteger)
    orders_by_join_7d: Mapped[int | None] = mapped_column(Integer)
    orders_by_join_30d: Mapped[int | None] = mapped_column(Integer)
    # RFM: orders and net spend over the RFM window (recency: days since last_order_at); the
    # scores and group are derived when read, on the last run's scale (``RfmScale``)
    frequency: Mapped[int | None] = mapped_column(Integer)
    monetary_fen: Mapped[int | None] = mapped_column(BigInteger)
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
    # running | done | failed: a failed run is finished too, so it never blocks the next
    status: Mapped[str] = mapped_column(String(10), default="done", server_default="done")
    # the refresh's watermark: the highest order, refund and member-merge ids it had read,
    # and a digest of the settings its aggregates depend on (another digest: recompute all)
    order_watermark: Mapped[int | None] = mapped_column(BigInteger)
    refund_watermark: Mapped[int | None] = mapped_column(BigInteger)
    merge_watermark: Mapped[int | None] = mapped_column(BigInteger)
    settings_key: Mapped[str | None] = mapped_column(String(64))


# --- lifecycle, RFM, super users (the refresh) -----------------------------------------


class LifecycleTransition(Base):
    """A member's lifecycle stage changed (or was first placed: ``from_stage`` is null).

    The record of stages over time: a member's stage at any instant is the ``to_stage`` of
    their last transition before it, which is how the month-over-month matrix is built.
    Derived like ``member_insight``: a merge leaves the absorbed member's history with it.
    """

    __tablename__ = "lifecycle_transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    from_stage: Mapped[str | None] = mapped_column(String(10))
    to_stage: Mapped[str] = mapped_column(String(10))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    run_id: Mapped[int] = mapped_column(ForeignKey("insight_runs.id"))

    __table_args__ = (
        Index("ix_lifecycle_transitions_member_at", "member_id", "at"),
        Index("ix_lifecycle_transitions_at", "at"),
        Index("ix_lifecycle_transitions_run", "run_id"),
        {"info": {"merge": "derived"}},
    )


class LifecycleMatrix(Base):
    """Members by (stage at the end of the previous month, stage at the end of ``month``);
    the current month is counted up to the refresh (month to date)."""

    __tablename__ = "lifecycle_matrix"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM, brand-local
    from_stage: Mapped[str] = mapped_column(String(10), primary_key=True)  # "none": not placed
    to_stage: Mapped[str] = mapped_column(String(10), primary_key=True)
    members: Mapped[int] = mapped_column(BigInteger)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InsightGroup(Base):
    """One group of one refresh: members and value per lifecycle stage, RFM group, or
    super/ordinary members. Small, so the API answers without scanning members."""

    __tablename__ = "insight_groups"

    run_id: Mapped[int] = mapped_column(ForeignKey("insight_runs.id"), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(20), primary_key=True)  # stage | rfm | super
    key: Mapped[str] = mapped_column(String(20), primary_key=True)
    members: Mapped[int] = mapped_column(BigInteger)
    # net spend and orders over the last 12 months (RFM: over the RFM window)
    spend_fen: Mapped[int] = mapped_column(BigInteger)
    orders: Mapped[int] = mapped_column(BigInteger)


class RfmScale(Base):
    """Where one refresh put the RFM scores' edges (``rules.RfmScale``): for each score 2-5
    of each measure, the least value that reached it among the members it placed (null:
    nobody did). The last run's scale and a member's row give their scores and group."""

    __tablename__ = "rfm_scales"

    run_id: Mapped[int] = mapped_column(ForeignKey("insight_runs.id"), primary_key=True)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    high_from: Mapped[int] = mapped_column(Integer)
    # the earliest last purchase that scores R 2 … 5
    r2_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    r3_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    r4_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    r5_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # the fewest orders in the RFM window that score F 2 … 5
    f2_from: Mapped[int | None] = mapped_column(BigInteger)
    f3_from: Mapped[int | None] = mapped_column(BigInteger)
    f4_from: Mapped[int | None] = mapped_column(BigInteger)
    f5_from: Mapped[int | None] = mapped_column(BigInteger)
    # the least net spend (fen) in the RFM window that scores M 2 … 5
    m2_from: Mapped[int | None] = mapped_column(BigInteger)
    m3_from: Mapped[int | None] = mapped_column(BigInteger)
    m4_from: Mapped[int | None] = mapped_column(BigInteger)
    m5_from: Mapped[int | None] = mapped_column(BigInteger)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def rule(self) -> RuleScale:
        return RuleScale(
            recent_from=(self.r2_from, self.r3_from, self.r4_from, self.r5_from),
            frequency_from=(self.f2_from, self.f3_from, self.f4_from, self.f5_from),
            monetary_from=(self.m2_from, self.m3_from, self.m4_from, self.m5_from),
            high_from=self.high_from,
        )


class EarlySignal(Base):
    """Per join cohort (brand-local month): how many bought within 7 days, bought again
    within 30 days, and how often those early buyers are super users now against the rest."""

    __tablename__ = "insight_early_signals"

    cohort: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    members: Mapped[int] = mapped_column(BigInteger)
    first_within_7d: Mapped[int] = mapped_column(BigInteger)
    second_within_30d: Mapped[int] = mapped_column(BigInteger)
    early: Mapped[int] = mapped_column(BigInteger)  # both of the above
    early_super: Mapped[int] = mapped_column(BigInteger)
    other_super: Mapped[int] = mapped_column(BigInteger)
    # a year has passed since the cohort's last day: its super-user rates are comparable
    mature: Mapped[bool] = mapped_column(Boolean)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- CLV ---------------------------------------------------------------------------------

# --- KPIs and diagnosis -------------------------------------------------------------------
