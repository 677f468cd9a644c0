"""A small brand whose members buy like BG/NBD customers, built through the services, for
the CLV tests."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from siyu.core import clock
from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft
from siyu.stores import service as stores

START = datetime(2025, 6, 1, 2, 0, tzinfo=clock.UTC)


def _buy(member_id: int, n: int, at: datetime, amount_fen: int) -> OrderDraft:
    return OrderDraft(
        channel="store",
        external_id=f"O{member_id}-{n}",
        paid_at=at,
        lines=[LineDraft("SKU-1", "奶粉", 1, amount_fen)],
        member_id=member_id,
        store_code="S001",
    )


def build_brand(db: Database, *, buyers: int = 150, seed: int = 7) -> dict[str, int]:
    """Members who buy like BG/NBD customers from 2025-06 to now, through the services; one
    member who only joined, one whose only order was refunded."""
    rng = np.random.default_rng(seed)
    now = clock.now()
    drafts: list[OrderDraft] = []
    with db.unit_of_work() as session:
        store = stores.create_store(session, code="S001", name="旗舰店")
        ids = [
            members.enrol(
                session,
                EnrolDraft(phone=f"1380000{i:04d}", store_id=store.id, joined_at=START),
            ).member_id
            for i in range(buyers + 2)
        ]
        for member_id in ids[:buyers]:
            first = START + timedelta(days=float(rng.uniform(0, 200)))
            rate = rng.gamma(0.8, 1 / 20)  # purchases a day while alive
            drop = rng.beta(1, 3)
            at, n = first, 0
            while at < now:
                drafts.append(_buy(member_id, n, at, int(rng.gamma(4, 5_000)) + 100))
                n += 1
                if rng.random() < drop:
                    break
                at += timedelta(days=float(rng.exponential(1 / rate)) + 1)
        refunded = ids[buyers + 1]
        drafts.append(_buy(refunded, 0, START + timedelta(days=10), 9_900))
        results = orders.ingest_orders(session, drafts)
        assert all(r.status == "created" for r in results), results[0]
    with db.unit_of_work() as session:
        orders.record_refund(
            session,
            RefundDraft(
                channel="store",
                external_id="R1",
                order_channel="store",
                order_external_id=f"O{refunded}-0",
                amount_fen=9_900,
                refunded_at=START + timedelta(days=11),
            ),
        )
    return {"prospect": ids[buyers], "refunded": refunded, "buyer": ids[0], "orders": len(drafts)}
