"""Concurrent enrolment of the same phone from several connections gives one member.

Runs on both databases: on PostgreSQL the unique identity index and the savepoint retry
decide the race; on SQLite ``BEGIN IMMEDIATE`` serialises the writers.
"""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.models import Member, MemberIdentity
from siyu.members.service import EnrolDraft

THREADS = 8


def test_concurrent_enrolment_of_one_phone_gives_one_member(clean_db: Database) -> None:
    for round_no in range(5):
        phone = f"1380000{round_no:04d}"
        barrier = threading.Barrier(THREADS)
        results: list[int] = []
        errors: list[BaseException] = []

        def enrol(
            n: int,
            phone: str = phone,
            barrier: threading.Barrier = barrier,
            results: list[int] = results,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait()
                with clean_db.unit_of_work() as s:
                    result = members.enrol(
                        s, EnrolDraft(phone=phone, identities=[("douyin", f"{phone}-{n}")])
                    )
                results.append(result.member_id)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=enrol, args=(n,)) for n in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert errors == []
        assert len(set(results)) == 1
        with clean_db.unit_of_work() as s:
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(MemberIdentity)
                    .where(MemberIdentity.member_id == results[0])
                )
                == THREADS + 1
            )
    with clean_db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(Member)) == 5
