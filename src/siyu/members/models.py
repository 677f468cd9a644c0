from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, BigId, UTCDateTime


class Member(Base):
    """One person, whatever channels they reach the brand through.

    ``member_no`` is not stored: it is the id with a Luhn check digit (see
    ``members.rules.member_no``), unique by construction and free to compute on bulk
    enrolment. Brands' legacy card numbers are identities on the ``store_card`` channel.
    """

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    name: Mapped[str | None] = mapped_column(String(100), index=True)
    gender: Mapped[str | None] = mapped_column(String(1))  # F | M
    birthday: Mapped[date | None] = mapped_column(Date)
    child_birthday: Mapped[date | None] = mapped_column(Date)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    join_channel: Mapped[str] = mapped_column(String(20))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"), index=True)
    guide_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), index=True)
    referrer_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    scene_code: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10), default="active")
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    consent_sms: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_wechat: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_email: Mapped[bool] = mapped_column(Boolean, default=False)
    email: Mapped[str | None] = mapped_column(String(200))
    # Cached balances; their ledgers (loyalty engine) are the truth.
    tier_code: Mapped[str | None] = mapped_column(String(20))
    tier_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # points_balance is every entry summed; of it, points_frozen are not yet spendable
    # (the return window) and points_debt is what refunds took back beyond the balance.
    points_balance: Mapped[int] = mapped_column(Integer, default=0)
    points_frozen: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    points_debt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    growth_balance: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("status IN ('active', 'frozen', 'closed', 'merged')", name="status_known"),
        # The few members who are not active (frozen, closed, merged into another): figures
        # over active members subtract them instead of looking up every member's status.
        Index(
            "ix_members_not_active",
            "id",
            sqlite_where=text("status <> 'active'"),
            postgresql_where=text("status <> 'active'"),
        ),
    )


class MemberIdentity(Base):
    """A member's id on one channel; (channel, external_id) names one member at most."""

    __tablename__ = "member_identities"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("channel", "external_id"),)


class MemberTag(Base):
    __tablename__ = "member_tags"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(20))  # manual | scene | rule
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_member_tags_tag", "tag", "member_id"),)


class QrScene(Base):
    """A QR code's scene parameter and the tags a member who joins through it gets."""

    __tablename__ = "qr_scenes"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MemberMerge(Base):
    """An explicit merge and exactly what it moved, so unmerge can put it back."""

    __tablename__ = "member_merges"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    from_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    into_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    reason: Mapped[str] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(100))
    moved: Mapped[dict[str, Any]] = mapped_column(JSON)
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime())
    unmerged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# The member tables ``member_changes`` watches, by the code its ``source`` holds for a
# write to each (migration ``0022_member_change_sources`` spells the same codes): a copy of
# some of them follows only their changes. 0: listed before the sources were kept.
CHANGE_SOURCES = {
    "members": 1,
    "member_metrics": 2,
    "member_insight": 3,
    "paid_subscriptions": 4,
    "member_identities": 5,
    "member_tags": 6,
    "member_rule_tags": 7,
}


class MemberChange(Base):
    """One write to a member's own rows (会员变更): the member, in the order written.

    Filled by the database itself (triggers on ``members`` and on the tables keyed by a
    member that the segment profile reads: metrics, insight, paid subscriptions,
    identities, manual and rule tags; migration ``0021_member_changes``), so no write path
    can forget it: a nightly copy of those tables reads the members listed since its last
    read instead of every member (``segments.profile``, ``insight.orderbook``). A member
    is listed once per write, with the table written (``source``: ``CHANGE_SOURCES``);
    readers take the distinct ids. Append-only: rows are only ever removed below every
    reader's mark (``MemberChangesState``)."""

    __tablename__ = "member_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[int] = mapped_column(SmallInteger, server_default="0")


class MemberChangesState(Base):
    """What a reader of ``member_changes`` checks before following it: ``token``, made
    afresh whenever this row is missing (a database emptied and filled again, as the tests
    do, gets a new one, so a copy made from the old one is not followed), and
    ``pruned_upto``: every change with an id at or below it has been removed. A reader
    whose mark is below it cannot know what changed since, and reads everything."""

    __tablename__ = "member_changes_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1: one row
    token: Mapped[str] = mapped_column(String(32))
    pruned_upto: Mapped[int] = mapped_column(BigInteger, default=0)
