"""Helpers for segment tests (imported by the tests and the fixtures)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.models import Member
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft, RefundLineDraft
from siyu.segments import profile

Purchase = tuple[int, int, datetime, str]  # (member_id, order_id, paid_at, category)

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=clock.UTC)


def days_ago(days: int) -> datetime:
    return NOW - timedelta(days=days)


@dataclass(frozen=True)
class Brand:
    """Member ids by name."""

    ids: dict[str, int]

    def __getitem__(self, name: str) -> int:
        return self.ids[name]

    def named(self, *names: str) -> set[int]:
        return {self.ids[n] for n in names}


def tier_of(db: Database, member_id: int) -> str | None:
    with db.unit_of_work() as s:
        return s.scalar(select(Member.tier_code).where(Member.id == member_id))


def snapshot_purchases(db: Database, analytics_dir: Path) -> list[Purchase]:
    """The current profile snapshot's purchases, sorted."""
    cursor, _ = profile.readers.get(db, analytics_dir)
    try:
        rows = cursor.execute("SELECT * FROM purchases ORDER BY ALL").fetchall()
    finally:
        cursor.close()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def refund(ref: str, order_ref: str, line_no: int | None = None) -> RefundDraft:
    """A refund of the whole store order ``order_ref``, or of one line of it."""
    return RefundDraft(
        channel="store",
        external_id=ref,
        order_channel="store",
        order_external_id=order_ref,
        refunded_at=days_ago(1),
        lines=[] if line_no is None else [RefundLineDraft(line_no, 1, 3_000)],
    )


def a_day_of_changes(db: Database, brand: Brand) -> int:
    """白 buys 洗护 and 玩具, A2's 辅食 line is refunded, B1 is refunded in full, and 丁
    (who bought 玩具) is merged into 陈; returns the merge."""
    with db.unit_of_work() as s:
        orders.ingest_orders(
            s,
            [
                OrderDraft(
                    channel="store",
                    external_id="B2",
                    paid_at=days_ago(1),
                    member_id=brand["白"],
                    lines=[
                        LineDraft("SKU-洗护", "洗护", 1, 4_000),
                        LineDraft("SKU-玩具", "玩具", 1, 6_000),
                    ],
                )
            ],
        )
        orders.record_refund(s, refund("R-A2", "A2", line_no=2))
        orders.record_refund(s, refund("R-B1", "B1"))
        return members.merge(s, brand["丁"], brand["陈"], reason="one person", principal=SYSTEM).id
