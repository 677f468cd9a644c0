"""Helpers for growth and tier tests: data built through the services users call."""

from __future__ import annotations

from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft
from siyu.programme import rules as programme_rules


def example_programme() -> dict[str, Any]:
    """A fresh copy of the example document (``programme/example.yaml``)."""
    text = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    raw, problems = programme_rules.parse_text(text)
    assert not problems, problems
    return raw  # type: ignore[no-any-return]


def at(text: str) -> datetime:
    """A Shanghai wall-clock time: ``at("2025-03-02 10:00")``."""
    return datetime.fromisoformat(text + "+08:00").astimezone(clock.UTC)


def programme(**tiers: Any) -> dict[str, Any]:
    """The example document with its ``tiers`` section changed: ``programme(basis="spend")``;
    ``window="calendar_year"`` (and ``days=N``) set the review window."""
    doc = example_programme()
    window = tiers.pop("window", None)
    days = tiers.pop("days", None)
    if window is not None:
        doc["tiers"]["review"] = {"window": window} | ({"days": days} if days else {})
    doc["tiers"].update(tiers)
    return doc


def enrol(session: Session, phone: str, joined_at: datetime | None = None) -> int:
    """A member who joined 60 days ago (before the orders tests give them), unless told."""
    draft = EnrolDraft(phone=phone, joined_at=joined_at or clock.now() - timedelta(days=60))
    return members.enrol(session, draft).member_id


def order(
    external_id: str,
    member_id: int,
    paid_at: datetime,
    *lines_fen: int,
    freight_fen: int = 0,
) -> OrderDraft:
    return OrderDraft(
        channel="tmall",
        external_id=external_id,
        paid_at=paid_at,
        member_id=member_id,
        lines=[LineDraft(f"SKU-{i}", "奶粉", 1, fen) for i, fen in enumerate(lines_fen, 1)],
        freight_fen=freight_fen,
    )


def ingest(session: Session, *drafts: OrderDraft, chunk_size: int = 1_000) -> list[int]:
    results = orders.ingest_orders(session, list(drafts), chunk_size=chunk_size)
    assert all(r.status == "created" for r in results), results
    return [r.order_id for r in results]  # type: ignore[misc]
