"""Two purchase callbacks racing for one member on PostgreSQL: one subscription, always.

Two threads, each with its own connection, meet at a barrier and send a purchase callback
for the same member at once. The member row's ``FOR UPDATE`` lock decides the race: the
second waits, then sees what the first committed. The same transaction id twice answers the
first result; two transaction ids leave one subscription and refuse the other charge with
409 ``already_subscribed`` ("already a member until …"), which the provider refunds.

PostgreSQL only (``postgres`` marker): SQLite has one writer at a time, so nothing races.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, select

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.errors import Conflict
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.paid import service
from siyu.paid.models import Payment, Subscription

pytestmark = pytest.mark.postgres
ROUNDS = 5  # races are won by either thread; several rounds exercise both orders


@pytest.fixture
def pg(clean_db: Database, programme_in_force: None) -> Database:
    if clean_db.dialect != "postgresql":
        pytest.skip("needs PostgreSQL (SIYU_DATABASE_URL=postgresql+psycopg://...)")
    return clean_db


def race(calls: list[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    """Run the calls at once (one thread each, released together by a barrier)."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results.append(call())
        except BaseException as exc:  # collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def _buy(db: Database, txn: str, member_id: int) -> tuple[int, bool]:
    with db.unit_of_work() as s:
        done = service.purchase_callback(s, txn, member_id, "super", 19_900, clock.now())
        return done.subscription.id, done.created


def _enrol(db: Database, n: int) -> int:
    with db.unit_of_work() as s:
        return members.enrol(s, EnrolDraft(phone=f"1380013{n:04d}")).member_id


def test_the_same_transaction_twice_at_once_is_one_purchase(pg: Database) -> None:
    for n in range(ROUNDS):
        member_id = _enrol(pg, n)
        txn = f"T-{n}"
        results, errors = race([partial(_buy, pg, txn, member_id)] * 2)
        assert errors == []
        assert sorted(created for _, created in results) == [False, True]
        assert len({sub_id for sub_id, _ in results}) == 1
    with pg.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(Subscription)) == ROUNDS
        assert s.scalar(select(func.count()).select_from(Payment)) == ROUNDS


def test_two_transactions_at_once_leave_one_subscription_and_refuse_the_other(
    pg: Database,
) -> None:
    for n in range(ROUNDS):
        member_id = _enrol(pg, n)
        results, errors = race(
            [partial(_buy, pg, f"A-{n}", member_id), partial(_buy, pg, f"B-{n}", member_id)]
        )
        assert len(results) == 1 and results[0][1] is True
        assert len(errors) == 1 and isinstance(errors[0], Conflict), errors
        assert errors[0].code == "already_subscribed"
        assert "already a member" in errors[0].message and "refund it" in errors[0].message
        with pg.unit_of_work() as s:
            subs = s.scalars(select(Subscription).where(Subscription.member_id == member_id))
            assert [(x.state, x.periods_paid) for x in subs] == [("active", 1)]
            paid = s.scalars(select(Payment.txn_id).where(Payment.member_id == member_id))
            assert len(list(paid)) == 1
