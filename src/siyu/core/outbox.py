"""The outbox: effects on the outside world are written in the same transaction as the
business fact and delivered after commit by a worker, so a rollback never sends a message
and a crash never loses one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from siyu.core import clock
from siyu.core.db import Base, BigId, UTCDateTime


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    topic: Mapped[str] = mapped_column(String(100))
    key: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_outbox_undelivered", "delivered_at", "id"),)


def emit(session: Session, topic: str, payload: dict[str, Any], *, key: str | None = None) -> None:
    """Queue an event for delivery once the surrounding transaction commits."""
    session.add(OutboxMessage(topic=topic, key=key, payload=payload, created_at=clock.now()))


def pending(session: Session, *, limit: int = 100) -> list[OutboxMessage]:
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.delivered_at.is_(None))
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
    )
