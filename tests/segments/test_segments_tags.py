"""Rule tags: defined by a tree, recomputed set-based by the refresh (and its nightly job),
written as a difference, readable by segments like any tag."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import ibis
import pytest
from segments_helpers import Brand, Purchase, a_day_of_changes, snapshot_purchases
from sqlalchemy import select

from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.errors import Conflict, InvalidInput
from siyu.core.settings import get_settings
from siyu.insight.engine import analytics_file
from siyu.insight.models import MemberInsight
from siyu.jobs import service as jobs
from siyu.members import service as members
from siyu.members.models import MemberTag
from siyu.segments import profile, service, tags
from siyu.segments.models import MemberRuleTag

MILK_BUYERS = {"behaviour": "bought_category", "category": "奶粉", "days": 30}


def _tagged(db: Database, rule_id: int) -> set[int]:
    with db.unit_of_work() as s:
        return set(
            s.scalars(select(MemberRuleTag.member_id).where(MemberRuleTag.tag_rule_id == rule_id))
        )


def _rule(db: Database, name: str, tree: dict[str, Any]) -> int:
    with db.unit_of_work() as s:
        return tags.create_rule(s, name=name, tree=tree, principal=SYSTEM).id


def test_refresh_tags_members_and_writes_only_the_difference(
    brand: Brand, clean_db: Database, analytics_dir: Path
) -> None:
    # given a rule "奶粉客" for members who bought milk powder in the last 30 days
    rule_id = _rule(clean_db, "奶粉客", MILK_BUYERS)
    # when the refresh runs
    done = tags.refresh(clean_db, analytics_dir, tz="Asia/Shanghai")
    # then 安 and 白 carry it, and the outcome says so
    assert _tagged(clean_db, rule_id) == brand.named("安", "白")
    assert [(r.name, r.members, r.added, r.removed) for r in done.rules] == [("奶粉客", 2, 2, 0)]
    with clean_db.unit_of_work() as s:
        rule = tags.get_rule(s, rule_id)
        assert rule.member_count == 2 and rule.computed_at is not None
    # a re-run changes nothing
    again = tags.refresh(clean_db, analytics_dir, tz="Asia/Shanghai")
    assert [(r.added, r.removed) for r in again.rules] == [(0, 0)]
    # when 白's insight says churned and the rule is changed to exclude churned members
    with clean_db.unit_of_work() as s:
        s.get_one(MemberInsight, brand["白"]).stage = "churned"
        tags.update_rule(
            s,
            rule_id,
            tree={
                "and": [MILK_BUYERS, {"not": {"field": "stage", "op": "eq", "value": "churned"}}]
            },
            principal=SYSTEM,
        )
    third = tags.refresh(clean_db, analytics_dir, tz="Asia/Shanghai")
    # then only 白 loses the tag
    assert [(r.added, r.removed) for r in third.rules] == [(0, 1)]
    assert _tagged(clean_db, rule_id) == brand.named("安")


def test_segments_read_rule_tags_from_the_refreshed_profile(
    brand: Brand, clean_db: Database, analytics_dir: Path, where: Any
) -> None:
    _rule(clean_db, "奶粉客", MILK_BUYERS)
    tags.refresh(clean_db, analytics_dir, tz="Asia/Shanghai")
    with clean_db.unit_of_work() as s:
        node = service.parse(s, {"and": [{"tag": "奶粉客"}, {"tag": "孕妈"}]})
    assert service.count(where(), node).members == 1
    assert service.count(where("live"), node).members == 1
    # manual tags are untouched by the refresh
    with clean_db.unit_of_work() as s:
        assert set(s.scalars(select(MemberTag.tag))) == {"孕妈", "VIP"}


def _live_purchases(db: Database) -> list[Purchase]:
    """The purchases as the live source reads them: the live orders and order lines."""
    with profile.live_backend(db) as (cursor, sources):
        query = ibis.to_sql(sources.purchases, dialect="duckdb")
        return [
            tuple(r) for r in cursor.execute(f"SELECT * FROM ({query}) ORDER BY ALL").fetchall()
        ]  # type: ignore[misc]


def test_the_profiles_purchases_from_the_order_book_are_the_live_purchases(
    brand: Brand, clean_db: Database, analytics_dir: Path
) -> None:
    # given a snapshot: its purchases came from the order book, made beside it
    tags.refresh(clean_db, analytics_dir, tz="Asia/Shanghai")
    book = analytics_file(clean_db, "orders", analytics_dir)
    assert book is not None and Path(book).exists()
    first = snapshot_purchases(clean_db, analytics_dir)
    assert first == _live_purchases(clean_db) and len(first) == 6

    # when a new order comes, a line is refunded (A2's 辅食), an order is refunded in full,
    # and 丁 is merged into 陈
    merge = a_day_of_changes(clean_db, brand)
    tags.refresh(clean_db, analytics_dir, tz="Asia/Shanghai")
    # then the snapshot's purchases are the live ones again
    second = snapshot_purchases(clean_db, analytics_dir)
    assert second == _live_purchases(clean_db)
    bought = {(member, category) for member, _, _, category in second}
    assert (brand["安"], "辅食") not in bought and (brand["白"], "奶粉") not in bought
    assert {(brand["白"], "洗护"), (brand["陈"], "玩具")} <= bought
    assert (brand["丁"], "玩具") not in bought

    # and after the merge is undone
    with clean_db.unit_of_work() as s:
        members.unmerge(s, merge, principal=SYSTEM)
    tags.refresh(clean_db, analytics_dir, tz="Asia/Shanghai")
    third = snapshot_purchases(clean_db, analytics_dir)
    assert third == _live_purchases(clean_db)
    assert (brand["丁"], "玩具") in {(member, category) for member, _, _, category in third}


def test_rule_names_and_trees_are_checked(brand: Brand, clean_db: Database) -> None:
    _rule(clean_db, "奶粉客", MILK_BUYERS)
    with clean_db.unit_of_work() as s, pytest.raises(Conflict):
        tags.create_rule(s, name="奶粉客", tree=MILK_BUYERS, principal=SYSTEM)
    with clean_db.unit_of_work() as s, pytest.raises(Conflict, match="manual tag"):
        tags.create_rule(s, name="孕妈", tree=MILK_BUYERS, principal=SYSTEM)
    # a rule cannot depend on another rule tag
    with clean_db.unit_of_work() as s, pytest.raises(InvalidInput) as caught:
        tags.create_rule(s, name="复购", tree={"tag": "奶粉客"}, principal=SYSTEM)
    assert "rule tag" in caught.value.message
    with clean_db.unit_of_work() as s, pytest.raises(InvalidInput):
        tags.create_rule(s, name=" ", tree=MILK_BUYERS, principal=SYSTEM)


def test_deleting_a_rule_takes_its_tag_away(
    brand: Brand, clean_db: Database, analytics_dir: Path
) -> None:
    rule_id = _rule(clean_db, "奶粉客", MILK_BUYERS)
    tags.refresh(clean_db, analytics_dir, tz="Asia/Shanghai")
    with clean_db.unit_of_work() as s:
        tags.remove_rule(s, rule_id, principal=SYSTEM)
    assert _tagged(clean_db, rule_id) == set()
    with clean_db.unit_of_work() as s:
        assert tags.list_rules(s) == []


def test_the_nightly_job_refreshes(
    brand: Brand, clean_db: Database, analytics_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIYU_ANALYTICS_DIR", str(analytics_dir))
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    get_settings.cache_clear()
    try:
        rule_id = _rule(clean_db, "奶粉客", MILK_BUYERS)
        outcome = jobs.run(clean_db, "segments.tags", date(2026, 11, 23))
    finally:
        get_settings.cache_clear()
    assert outcome.status == "done"
    assert outcome.result["members"] == 5 and outcome.result["tagged"] == 2
    assert outcome.result["purchase_lines"] == 6
    assert outcome.result["purchases_written"] == "whole: no previous snapshot in this format"
    assert _tagged(clean_db, rule_id) == brand.named("安", "白")
    # a merge leaves rule tags to the next refresh: the table is marked derived
    assert MemberRuleTag.__table__.info["merge"] == "derived"
