"""The file import and the single-order path write the same loyalty ledgers.

An import takes thousands of orders per statement set; an order posted alone takes one.
Whatever shortcuts the bulk path takes, a member's growth, points lots, points entries,
tier history and balances must come out the same as if each order had been posted alone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.models import Member
from siyu.members.service import EnrolDraft
from siyu.orders import service
from siyu.orders.importer import import_orders_file, write_orders_file
from siyu.orders.rules import LineDraft, OrderDraft
from siyu.points.models import PointsEntry, PointsLot
from siyu.stores import service as stores
from siyu.tiers.models import GrowthEntry, TierHistory

PHONES = ("13800138001", "13800138002")  # the file's buyer, the one-by-one buyer


def orders_of(phone: str, prefix: str) -> list[OrderDraft]:
    """Fourteen orders over the last eight months, large enough to climb several levels,
    some still inside the return window (frozen points), of one to three lines each."""
    now = clock.now()
    drafts = []
    for n in range(14):
        lines = [
            LineDraft(f"SKU-{k}", ("奶粉", "纸尿裤", "辅食")[k], k + 1, 12_345 * (n + 1) + k * 999)
            for k in range(1 + n % 3)
        ]
        drafts.append(
            OrderDraft(
                channel="tmall",
                external_id=f"{prefix}{n}",
                paid_at=now - timedelta(days=234 - 18 * n, hours=n),
                lines=lines,
                buyer_identities=[("phone", phone)],
                store_code="S001",
                freight_fen=500 if n % 2 else 0,
            )
        )
    return drafts


def ledgers(s: Session, member_id: int) -> dict[str, Any]:
    """A member's ledgers and balances, without ids (the two members' orders differ in id)."""

    def rows(query: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in s.execute(query)]

    g, lot, e, h = GrowthEntry, PointsLot, PointsEntry, TierHistory
    member = s.get(Member, member_id)
    assert member is not None
    s.refresh(member)
    return {
        "growth": rows(
            select(g.kind, g.growth, g.spend_fen, g.orders, g.at, g.note)
            .where(g.member_id == member_id)
            .order_by(g.at, g.kind)
        ),
        "lots": rows(
            select(
                lot.source,
                lot.points,
                lot.remaining,
                lot.earned_at,
                lot.available_at,
                lot.frozen,
                lot.expires_at,
                lot.lines,
            )
            .where(lot.member_id == member_id)
            .order_by(lot.earned_at)
        ),
        "entries": rows(
            select(e.kind, e.points, e.debt, e.balance_after, e.seq, e.at, e.note)
            .where(e.member_id == member_id)
            .order_by(e.at, e.seq)
        ),
        "tiers": rows(
            select(h.from_code, h.to_code, h.reason, h.at)
            .where(h.member_id == member_id)
            .order_by(h.at)
        ),
        # As stored, not as read back: the import writes instants and line snapshots
        # through its own conversions, which must spell them as SQLAlchemy does.
        "stored": rows(
            text(
                "SELECT l.lines, l.earned_at, l.available_at, l.expires_at, e.at, g.at "
                "FROM points_lots l JOIN points_entries e ON e.lot_id = l.id "
                "JOIN growth_entries g ON g.order_id = l.order_id AND g.kind = 'earn' "
                "WHERE l.member_id = :m ORDER BY l.earned_at, e.seq"
            ).bindparams(m=member_id)
        ),
        "member": (
            member.tier_code,
            member.growth_balance,
            member.points_balance,
            member.points_frozen,
            member.points_debt,
        ),
    }


def test_an_imported_file_writes_the_ledgers_that_orders_posted_one_by_one_write(
    clean_db: Database, apply_programme: Callable[..., None], tmp_path: Path
) -> None:
    # Given the example programme and two members with nothing yet
    apply_programme()
    with clean_db.unit_of_work() as s:
        stores.create_store(s, code="S001", name="旗舰店")
        ids = [members.enrol(s, EnrolDraft(phone=p)).member_id for p in PHONES]
    # When the first member's orders come in a Parquet file, in chunks of a few rows
    path = tmp_path / "orders.parquet"
    write_orders_file(path, orders_of(PHONES[0], "F"))
    report = import_orders_file(clean_db, path, chunk_size=4)
    assert (report.orders_created, report.rejected_orders) == (14, 0)
    # and the same orders of the second member are posted one at a time
    for draft in orders_of(PHONES[1], "P"):
        with clean_db.unit_of_work() as s:
            [result] = service.ingest_orders(s, [draft])
            assert result.status == "created"
    # Then both members hold the same growth, lots, entries, tiers and balances
    with clean_db.unit_of_work() as s:
        imported, posted = ledgers(s, ids[0]), ledgers(s, ids[1])
    assert len(imported["growth"]) >= 14 and len(imported["lots"]) >= 14
    assert imported["member"][0] != posted["member"][0] or imported["tiers"]  # it climbed
    assert any(lot[5] for lot in imported["lots"])  # some points are still frozen
    assert len(imported["stored"]) >= 14
    for name in ("growth", "lots", "entries", "tiers", "stored", "member"):
        assert imported[name] == posted[name], name
