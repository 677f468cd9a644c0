"""Programme versions: every document ever applied, with the instant it takes effect."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, BigId, UTCDateTime


class ProgrammeVersion(Base):
    """One version of the programme. Rows are never updated: a change is a new version.

    The version in force at an instant is the one with the latest ``effective_from`` at or
    before it (ties: the later id), so replaying history always sees the same rules."""

    __tablename__ = "programme_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    document_hash: Mapped[str] = mapped_column(String(64))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    author: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
