"""Fifty concurrent spends against one balance never overdraw, and every accepted spend
appears once in the ledger.

Runs on both databases; on PostgreSQL the member row's ``FOR UPDATE`` lock decides the
race (the real test), on SQLite ``BEGIN IMMEDIATE`` serialises the writers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from siyu.core.db import Database
from siyu.core.errors import Conflict
from siyu.members import service as members
from siyu.members.models import Member
from siyu.members.service import EnrolDraft
from siyu.points import service
from siyu.points.models import PointsEntry, PointsLot

THREADS = 50
BALANCE = 1_000
EACH = 70  # 14 spends fit, 36 must be refused


def test_concurrent_spends_never_overdraw(
    clean_db: Database, apply_programme: Callable[..., None], doc: dict[str, Any]
) -> None:
    apply_programme(doc)
    with clean_db.unit_of_work() as s:
        member = members.enrol(s, EnrolDraft(phone="13800138000")).member_id
        for i in range(4):  # several lots, so spends cross lot boundaries
            service.grant(s, member, BALANCE // 4, fact=f"gift:{i}", reason="r")
    barrier = threading.Barrier(THREADS)
    accepted: list[str] = []
    refused: list[int] = []
    errors: list[BaseException] = []

    def spend(n: int) -> None:
        try:
            barrier.wait()
            with clean_db.unit_of_work() as s:
                service.spend(s, member, EACH, fact=f"mall:{n}", reason="gift")
            accepted.append(f"mall:{n}")
        except Conflict as exc:
            assert exc.code == "insufficient_points"
            refused.append(n)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(accepted) == BALANCE // EACH and len(refused) == THREADS - len(accepted)
    with clean_db.unit_of_work() as s:
        spent = dict(
            s.execute(
                select(PointsEntry.fact, func.sum(PointsEntry.points))
                .where(PointsEntry.kind == "spend")
                .group_by(PointsEntry.fact)
            ).all()
        )
        assert sorted(spent) == sorted(accepted)
        assert all(points == -EACH for points in spent.values())
        member_row = s.get(Member, member)
        assert member_row is not None
        assert member_row.points_balance == BALANCE - EACH * len(accepted)
        assert s.scalar(select(func.min(PointsLot.remaining))) >= 0
        assert service.check(s) == []
