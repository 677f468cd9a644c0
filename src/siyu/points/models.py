"""Points (积分) ledger and lots.

Every earning is a lot with its own expiry; ``remaining`` is what is left of it. Every
change to a balance is an entry (append-only, signed), unique on ``(fact, seq)``: the fact
is the idempotency key of what happened (``order:123``, ``refund:9``, ``expire:<lot>``)
and ``seq`` numbers its entries (a spend over three lots has three). The member's cached
``points_balance`` is the sum of ``points``; ``points_debt`` the sum of ``debt``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, BigId, UTCDateTime


class PointsLot(Base):
    """Points earned at once (an order, a check-in, a grant), spent and expired as a unit.

    ``available_at`` is when frozen points become spendable (the return window);
    ``frozen`` stays true until the release job has moved them out of the member's
    cached ``points_frozen``. ``lines`` is what each order line earned, so a refund
    reverses exactly that."""

    __tablename__ = "points_lots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    source: Mapped[str] = mapped_column(String(20))
    points: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    available_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    frozen: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    fact: Mapped[str] = mapped_column(String(120), unique=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    lines: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_points_lots_member_expires", "member_id", "expires_at"),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_within"),
    )


class PointsEntry(Base):
    """One signed change of a member's points; never updated, never deleted."""

    __tablename__ = "points_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    # earn | spend | cancel | expire | reverse | settle | adjust | release
    kind: Mapped[str] = mapped_column(String(20))
    points: Mapped[int] = mapped_column(Integer)
    debt: Mapped[int] = mapped_column(Integer, default=0)
    balance_after: Mapped[int] = mapped_column(Integer)
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("points_lots.id"))
    fact: Mapped[str] = mapped_column(String(120))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        UniqueConstraint("fact", "seq"),
        Index("ix_points_entries_member_at", "member_id", "at"),
    )


class PointsReservation(Base):
    """Points held at checkout: confirmed (spent) or released, or gone when the hold ends."""

    __tablename__ = "points_reservations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    points: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10), default="held")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_points_reservations_member_status", "member_id", "status"),
        Index("ix_points_reservations_status_expires", "status", "expires_at"),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint(
            "status IN ('held', 'confirmed', 'released', 'expired')", name="status_known"
        ),
    )


class CheckInDay(Base):
    """A member's check-in (签到) on one brand-local day.

    Check-ins stay with the member who made them when members merge (``derived``: the
    merge leaves them; the points they earned are lots and entries, which do move), since
    two members may both have checked in on the same day."""

    __tablename__ = "check_ins"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    day: Mapped[date] = mapped_column(Date)
    streak: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("member_id", "day"),
        {"info": {"merge": "derived"}},
    )
