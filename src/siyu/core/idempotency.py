"""Idempotency keys for mutating API calls.

Same key and same body: the first response again. Same key, another body: 409. A key whose
first request is still running: 409 too, so a client retrying too early learns to wait.
Keys are scoped to the API key that sent them.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from siyu.core import clock
from siyu.core.db import Base, BigId, UTCDateTime
from siyu.core.errors import Conflict


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("api_key_id", "key"),)


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def claim(
    session: Session, *, api_key_id: int, key: str, req_hash: str
) -> IdempotencyRecord | None:
    """Claim the key for this request. Returns the finished record to replay, or None when
    this request is the first and should run. Commits its own small transaction so that a
    concurrent duplicate sees the claim."""
    existing = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
        )
    )
    if existing is None:
        session.add(
            IdempotencyRecord(
                api_key_id=api_key_id,
                key=key,
                request_hash=req_hash,
                created_at=clock.now(),
            )
        )
        try:
            session.commit()
            return None
        except IntegrityError:
            session.rollback()
            existing = session.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
                )
            )
            assert existing is not None
    if existing.request_hash != req_hash:
        raise Conflict(
            f"Idempotency-Key '{key}' was already used with a different request; "
            "use a new key for a new request",
            field="Idempotency-Key",
            code="idempotency_key_reused",
        )
    if existing.status_code is None:
        raise Conflict(
            f"the first request with Idempotency-Key '{key}' is still running; retry shortly",
            field="Idempotency-Key",
            code="idempotency_in_progress",
        )
    return existing


def finish(session: Session, *, api_key_id: int, key: str, status_code: int, body: Any) -> None:
    record = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
        )
    )
    if record is None:  # pragma: no cover - claimed moments ago
        return
    if status_code >= 500:
        session.delete(record)  # a failure is not an answer: let the client retry
    else:
        record.status_code = status_code
        record.response_body = body
    session.commit()
