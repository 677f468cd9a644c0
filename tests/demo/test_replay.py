"""Replaying every order and refund of the demo brand, twice, changes no balance: the
loyalty effects of an order or a refund happen once, whatever the retries."""

from __future__ import annotations

from sqlalchemy import func, select

from siyu.core import clock
from siyu.core.db import Database
from siyu.demo.generator import generate_brand, iter_chunks, load_org_ids
from siyu.members.models import Member
from siyu.orders.service import create_refund, ingest_orders
from siyu.schema import metadata

SEED = 5
MEMBERS = 250


def _state(db: Database) -> dict[str, object]:
    """Every member's cached balances and tier, and the row count of every table."""
    with db.unit_of_work() as s:
        members = s.execute(
            select(
                Member.id,
                Member.tier_code,
                Member.growth_balance,
                Member.points_balance,
                Member.points_frozen,
                Member.points_debt,
            ).order_by(Member.id)
        ).all()
        counts = {
            t.name: s.scalar(select(func.count()).select_from(t))
            for t in metadata.sorted_tables
            if t.name not in ("outbox", "idempotency_keys")
        }
    return {"members": members, "counts": counts}


def test_replaying_the_demo_brand_twice_changes_nothing(
    clean_db: Database, fixed_clock: clock.FixedClock
) -> None:
    as_of = fixed_clock.now()
    generate_brand(clean_db, members=MEMBERS, seed=SEED, as_of=as_of)
    before = _state(clean_db)
    members = before["members"]
    assert isinstance(members, list) and members
    # The programme was in force: members earned growth and points and reached tiers.
    assert sum(m.growth_balance for m in members) > 0
    assert sum(m.points_balance for m in members) > 0
    assert len({m.tier_code for m in members}) > 1

    with clean_db.unit_of_work() as s:
        ids = load_org_ids(s)
    for _ in range(2):
        for plan in iter_chunks(SEED, MEMBERS, as_of, ids=ids):
            with clean_db.unit_of_work() as s:
                results = ingest_orders(s, plan.orders)
                assert {r.status for r in results} == {"duplicate"}
                for refund in plan.refunds:
                    create_refund(s, refund)
    assert _state(clean_db) == before
