"""A small brand whose members sit in known places, built through the services users call
(used by the insight fixtures in ``conftest``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft
from siyu.paid import service as paid

# days before now each member joined, and days before now of each of their orders (yuan)
PLAN: dict[str, tuple[int, list[tuple[int, int]]]] = {
    "prospect": (10, []),
    "new": (20, [(5, 300)]),
    "active": (400, [(300, 200), (200, 200), (30, 400)]),
    "silent": (500, [(400, 100), (120, 100)]),
    "sleeping": (600, [(250, 500)]),
    "churned": (800, [(700, 100), (500, 100)]),
    # joined 420 days ago, bought on day 2 and day 10 after joining, then every month
    "super": (420, [(418, 800), (410, 800), *[(d, 1500) for d in range(360, 0, -30)]]),
    "refunded": (60, [(40, 250)]),  # the only order is refunded in full: never bought
    "referrer": (100, [(95, 100), (60, 100)]),
}


@dataclass
class SmallBrand:
    db: Database
    members: dict[str, int]  # name in PLAN -> member id
    now: datetime

    def at(self, days_ago: int) -> datetime:
        return self.now - timedelta(days=days_ago)


def order_draft(member_id: int, external_id: str, paid_at: datetime, yuan: int) -> OrderDraft:
    return OrderDraft(
        channel="mini_program",
        external_id=external_id,
        paid_at=paid_at,
        member_id=member_id,
        lines=[LineDraft("SKU-1", "奶粉", 1, yuan * 100)],
    )


def build_small_brand(session: Session) -> dict[str, int]:
    now = clock.now()
    ids: dict[str, int] = {}
    drafts: list[OrderDraft] = []
    for name, (joined_days, bought) in PLAN.items():
        member_id = members.enrol(
            session,
            EnrolDraft(
                phone=f"1380013{len(ids):04d}",
                joined_at=now - timedelta(days=joined_days),
                join_channel="mini_program",
            ),
        ).member_id
        ids[name] = member_id
        for k, (days, yuan) in enumerate(bought):
            drafts.append(order_draft(member_id, f"{name}-{k}", now - timedelta(days=days), yuan))
    # two members the referrer brought in
    for k in range(2):
        ids[f"referred-{k}"] = members.enrol(
            session,
            EnrolDraft(
                phone=f"1390013{k:04d}",
                joined_at=now - timedelta(days=50),
                join_channel="mini_program",
                referrer_id=ids["referrer"],
            ),
        ).member_id
    results = orders.ingest_orders(session, drafts)
    assert all(r.status == "created" for r in results), results
    orders.record_refund(
        session,
        RefundDraft(
            channel="mini_program",
            external_id="R-refunded-0",
            order_channel="mini_program",
            order_external_id="refunded-0",
            refunded_at=now - timedelta(days=39),
        ),
    )
    paid.purchase_callback(
        session, "TX-super", ids["super"], "super", 19_900, now - timedelta(days=100)
    )
    return ids


def example_document() -> dict[str, Any]:
    """A fresh copy of the example programme document, to change in a test."""
    from importlib import resources

    from siyu.programme import rules

    text = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    raw, problems = rules.parse_text(text)
    assert not problems, problems
    return raw  # type: ignore[no-any-return]
