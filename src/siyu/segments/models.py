"""Segment and tag tables.

A saved segment (人群) and a tag rule (规则标签) are a name and a condition tree (JSON, see
``segments.rules``). Rule tags live in ``member_rule_tags``, recomputed by the nightly
job; manual and QR-scene tags stay in ``members.member_tags``. A snapshot freezes the
members a segment held at one instant, for a campaign to work from.

``member_rule_tags`` and ``segment_members`` are marked ``merge: derived``: a member merge
does not move their rows. Rule tags are recomputed the next night from the merged member's
data; a snapshot is a record of who was in a segment when it was taken, and stays so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, BigId, UTCDateTime


class Segment(Base):
    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    tree: Mapped[dict[str, Any]] = mapped_column(JSON)
    author: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SegmentSnapshot(Base):
    """The members of a segment at ``taken_at``, evaluated on data as of ``data_as_of``."""

    __tablename__ = "segment_snapshots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime())
    data_as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(10))  # profile | live
    tree: Mapped[dict[str, Any]] = mapped_column(JSON)  # as it was when taken
    member_count: Mapped[int] = mapped_column(BigInteger)
    author: Mapped[str] = mapped_column(String(100))

    __table_args__ = (Index("ix_segment_snapshots_segment", "segment_id", "taken_at"),)


class SegmentMember(Base):
    __tablename__ = "segment_members"

    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("segment_snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)

    __table_args__ = (
        Index("ix_segment_members_member", "member_id"),
        {"info": {"merge": "derived"}},
    )


class TagRule(Base):
    """A tag that members carry while they meet its condition tree."""

    __tablename__ = "tag_rules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    tree: Mapped[dict[str, Any]] = mapped_column(JSON)
    author: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # the last recomputation: when, on data as of when, and how many members carry it
    computed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    data_as_of: Mapped[datetime | None] = mapped_column(UTCDateTime())
    member_count: Mapped[int | None] = mapped_column(BigInteger)


class MemberRuleTag(Base):
    __tablename__ = "member_rule_tags"

    tag_rule_id: Mapped[int] = mapped_column(
        ForeignKey("tag_rules.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    tagged_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_member_rule_tags_member", "member_id"),
        {"info": {"merge": "derived"}},
    )
