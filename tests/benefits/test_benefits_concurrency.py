"""Concurrent redemptions of one reward never oversell, and each accepted one spends points
exactly once. Runs on both databases: on PostgreSQL the reward row lock queues them; on
SQLite ``BEGIN IMMEDIATE`` serialises the writers."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from siyu.benefits import mall
from siyu.benefits.mall import RewardDraft
from siyu.benefits.models import Redemption, Reward
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.errors import Conflict
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.points import service as points
from siyu.points.models import PointsEntry

THREADS = 30
STOCK = 10


def test_thirty_members_racing_for_a_stock_of_ten(
    programme_in_force: None, clean_db: Database
) -> None:
    with clean_db.unit_of_work() as s:
        reward, _ = mall.create_reward(
            s,
            RewardDraft(code="CUP", name="吸管杯", kind="gift", points_price=500, stock=STOCK),
            principal=SYSTEM,
        )
        ids = [
            members.enrol(s, EnrolDraft(phone=f"1390000{n:04d}")).member_id for n in range(THREADS)
        ]
        for member_id in ids:
            points.grant(s, member_id, 1_000, fact=f"test:{member_id}", reason="test")
    barrier = threading.Barrier(THREADS)
    accepted: list[int] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def redeem(member_id: int) -> None:
        try:
            barrier.wait()
            with clean_db.unit_of_work() as s:
                done = mall.redeem(s, member_id, reward.id, key="race")
            accepted.append(done.redemption.id)
        except Conflict as exc:
            refused.append(exc.code)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=redeem, args=(m,)) for m in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(accepted) == STOCK and len(set(accepted)) == STOCK
    assert refused == ["out_of_stock"] * (THREADS - STOCK)
    with clean_db.unit_of_work() as s:
        stored = s.get(Reward, reward.id)
        assert stored is not None and stored.redeemed == STOCK
        assert s.scalar(select(func.count()).select_from(Redemption)) == STOCK
        spends = s.scalar(
            select(func.count(func.distinct(PointsEntry.fact))).where(
                PointsEntry.kind == "spend", PointsEntry.fact.like("mall:%")
            )
        )
        assert spends == STOCK
        spent = [points.available(s, m) for m in ids]
        assert sorted(set(spent)) == sorted({min(spent), max(spent)})
        assert spent.count(min(spent)) == STOCK and max(spent) - min(spent) == 500
