"""Growth value (成长值) ledger, tier history (等级变动), manual tier grants and review periods.

``growth_entries`` is append-only; ``members.growth_balance`` is the cached sum of a member's
entries and ``members.tier_code`` / ``tier_changed_at`` the cached current tier. Besides
growth, each entry carries what it adds to the member's net spend and order count, so the
ladder can be measured on any basis (growth, spend, order_count) with one indexed query over
the same ledger: the value of a member in a window is a SUM of entries with ``at`` in it.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, BigId, UTCDateTime


class GrowthEntry(Base):
    """One movement of a member's growth value, with the fact that caused it.

    ``fact`` is the idempotency key (``order:<id>``, ``refund:<id>``, ``signup:<member>``,
    ``bonus:<event>:<member>:<key>``, ``adjust:<key>``): a repeated fact changes nothing.
    ``at`` is when the fact happened in business time (an order's ``paid_at``, a refund's
    ``refunded_at``), so a window counts the same entries whatever the import order."""

    __tablename__ = "growth_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(10))  # earn | bonus | reverse | adjust
    growth: Mapped[int] = mapped_column(Integer)
    # What the entry adds to net spend (lines, not freight) and to the order count.
    spend_fen: Mapped[int] = mapped_column(Integer, default=0)
    orders: Mapped[int] = mapped_column(Integer, default=0)
    fact: Mapped[str] = mapped_column(String(200), unique=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_growth_entries_member_at", "member_id", "at"),)


class TierHistory(Base):
    """Every change of a member's tier, with its reason:
    join | upgrade | review | grant | grant_end | merge | adjust."""

    __tablename__ = "tier_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    from_code: Mapped[str | None] = mapped_column(String(20))
    to_code: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (Index("ix_tier_history_member_at", "member_id", "at"),)


class TierGrant(Base):
    """A tier granted by hand: a floor from ``starts_at`` until ``ends_at``.

    ``closed_at`` is set when the end (or a revocation) has been applied, so the daily job
    finds open grants that are due through ``ix_tier_grants_ends_at`` and never twice."""

    __tablename__ = "tier_grants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    tier_code: Mapped[str] = mapped_column(String(20))
    # The tier held when the grant was made: where the member returns to at its end, unless
    # their value has earned more by then.
    held_code: Mapped[str | None] = mapped_column(String(20))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    reason: Mapped[str] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(100))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TierPeriod(Base):
    """When a member's tier is next reviewed (保级): the brand-local day their current period
    ends. Kept so the daily review reads exactly the members due through an index instead of
    scanning 20 million rows. Derived per member (rebuilt on merge and unmerge)."""

    __tablename__ = "tier_periods"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    period_start: Mapped[date] = mapped_column(Date)
    review_on: Mapped[date] = mapped_column(Date, index=True)

    __table_args__ = ({"info": {"merge": "derived"}},)
