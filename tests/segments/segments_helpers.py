"""Helpers for segment tests (imported by the tests and the fixtures)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from siyu.core import clock
from siyu.core.db import Database
from siyu.members.models import Member

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
