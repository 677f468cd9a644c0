"""Trees evaluated on the brand of ``conftest``: every kind of condition, on the profile
snapshot and on the live database, gives the same members."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from segments_helpers import Brand, tier_of
from sqlalchemy import select

from siyu.core.auth import SYSTEM, Principal, Role
from siyu.core.db import Database
from siyu.core.errors import InvalidInput
from siyu.members import service as members
from siyu.segments import compiler, rules, service, tags
from siyu.segments import profile as profiles
from siyu.segments.models import SegmentMember

# (tree, the members it selects)
CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"field": "gender", "op": "eq", "value": "F"}, {"安", "白", "丁"}),
    ({"field": "gender", "op": "ne", "value": "F"}, {"陈", "鄂"}),  # no gender is not F
    ({"field": "gender", "op": "is_null"}, {"鄂"}),
    ({"field": "birthday_month", "op": "in", "value": [3, 4]}, {"安"}),
    ({"field": "child_birthday", "op": "after", "value": "2025-01-01"}, {"安"}),
    ({"field": "joined_at", "op": "within_days", "value": 30}, {"陈"}),
    ({"field": "joined_at", "op": "before", "value": "2024-01-01"}, {"丁"}),
    # joined 2024-05-01 10:00 in Shanghai: that local day, both ends included
    ({"field": "joined_at", "op": "between", "value": ["2024-05-01", "2024-05-01"]}, {"安"}),
    ({"field": "join_channel", "op": "in", "value": ["tmall", "mini_program"]}, {"白", "陈"}),
    ({"field": "store", "op": "eq", "value": "S001"}, {"安", "丁"}),
    ({"field": "guide", "op": "eq", "value": "G01"}, {"安"}),
    ({"field": "status", "op": "eq", "value": "frozen"}, {"鄂"}),
    ({"field": "consent_sms", "op": "eq", "value": True}, {"安"}),
    ({"field": "paid", "op": "eq", "value": True}, {"安"}),
    ({"field": "paid", "op": "eq", "value": False}, {"白", "陈", "丁", "鄂"}),
    ({"field": "paid_state", "op": "eq", "value": "trial"}, {"安"}),
    ({"field": "order_count", "op": "gte", "value": 2}, {"安"}),
    ({"field": "order_count", "op": "eq", "value": 0}, {"陈", "鄂"}),
    ({"field": "spend_fen", "op": "between", "value": [5_000, 30_000]}, {"白", "丁"}),
    ({"field": "avg_order_fen", "op": "gt", "value": 22_000}, {"白"}),
    ({"field": "last_order_at", "op": "more_than_days_ago", "value": 365}, {"丁"}),
    ({"field": "stage", "op": "in", "value": ["active", "new"]}, {"安", "白"}),
    ({"field": "stage", "op": "not_in", "value": ["active"]}, {"白", "陈", "丁", "鄂"}),
    ({"field": "rfm_group", "op": "eq", "value": "important_value"}, {"安"}),
    ({"field": "super_user", "op": "eq", "value": True}, {"安"}),
    ({"field": "p_alive", "op": "lt", "value": 0.5}, {"丁"}),
    ({"field": "clv_fen", "op": "gte", "value": 20_000}, {"安", "白"}),
    ({"tag": "孕妈"}, {"安"}),
    ({"field": "tags", "op": "has_any", "value": ["孕妈", "VIP"]}, {"安", "丁"}),
    ({"field": "tags", "op": "has_none", "value": ["孕妈", "VIP"]}, {"白", "陈", "鄂"}),
    ({"field": "channels", "op": "has", "value": "tmall"}, {"白"}),
    ({"field": "channels", "op": "has_all", "value": ["phone", "wechat_unionid"]}, {"安"}),
    ({"behaviour": "bought_category", "category": "奶粉", "at_least": 2, "days": 90}, {"安"}),
    ({"behaviour": "bought_category", "category": "奶粉", "days": 30}, {"安", "白"}),
    ({"behaviour": "bought_category", "category": "纸尿裤", "days": 90}, set()),
    ({"behaviour": "no_purchase_since", "days": 30}, {"陈", "丁", "鄂"}),
    ({"behaviour": "joined_never_bought", "days": 30}, {"陈"}),
    (
        {
            "and": [
                {"field": "gender", "op": "eq", "value": "F"},
                {"or": [{"tag": "孕妈"}, {"field": "store", "op": "eq", "value": "S002"}]},
                {"not": {"behaviour": "no_purchase_since", "days": 30}},
            ]
        },
        {"安", "白"},
    ),
    ({"not": {"field": "stage", "op": "eq", "value": "active"}}, {"白", "陈", "丁", "鄂"}),
]


def _node(db: Database, tree: dict[str, Any]) -> rules.Node:
    with db.unit_of_work() as s:
        return service.parse(s, tree)


def _ids(where: service.Where, node: rules.Node) -> set[int]:
    with service.selected_ids(where, node) as (_, batches):
        return {m for batch in batches for m in batch}


@pytest.mark.parametrize("source", ["profile", "live"])
def test_each_condition_selects_the_right_members(
    source: str, brand: Brand, clean_db: Database, where: Any
) -> None:
    at = where(source)
    if source == "profile":
        tags.refresh(clean_db, at.analytics_dir, tz=at.tz)
    wrong = {}
    for tree, expected in CASES:
        node = _node(clean_db, tree)
        got = _ids(at, node)
        counted = service.count(at, node)
        if got != brand.named(*expected) or counted.members != len(expected):
            names = {v: k for k, v in brand.ids.items()}
            wrong[str(tree)] = (sorted(names[i] for i in got), sorted(expected))
    assert wrong == {}


def test_tier_conditions_follow_the_tier_engine(
    brand: Brand, clean_db: Database, where: Any
) -> None:
    # given tiers the loyalty engine gave (安 spent most)
    tiers = {name: tier_of(clean_db, brand[name]) for name in ("安", "白", "陈", "丁", "鄂")}
    top = tiers["安"]
    assert top is not None and top != tiers["陈"]
    # when counting members at 安's tier, live
    node = _node(clean_db, {"field": "tier", "op": "eq", "value": top})
    got = _ids(where("live"), node)
    # then exactly the members holding it
    assert got == {brand[n] for n, t in tiers.items() if t == top}


def test_the_profile_carries_its_time_and_a_refresh_sees_new_data(
    brand: Brand, clean_db: Database, where: Any
) -> None:
    at = where()
    node = _node(clean_db, {"tag": "VIP"})
    # the first count builds the snapshot
    first = service.count(at, node)
    assert first.members == 1 and first.source == "profile"
    # a tag added afterwards is not in the snapshot until it is refreshed
    with clean_db.unit_of_work() as s:
        members.add_tags(s, brand["白"], ["VIP"], principal=SYSTEM)
    assert service.count(at, node).members == 1
    assert service.count(where("live"), node).members == 2
    tags.refresh(clean_db, at.analytics_dir, tz=at.tz)
    again = service.count(at, node)
    assert again.members == 2 and again.data_as_of >= first.data_as_of


def test_relative_conditions_read_the_snapshot_time(
    brand: Brand, clean_db: Database, where: Any
) -> None:
    """A snapshot taken 13 days ago saw 陈 join today: 'joined in the last day' counts him."""
    from siyu.core import clock

    at = where()
    fixed = clock.FixedClock(clock.now() - timedelta(days=13))
    previous = clock.set_clock(fixed)
    try:
        tags.refresh(clean_db, at.analytics_dir, tz=at.tz)
    finally:
        clock.set_clock(previous)
    node = _node(clean_db, {"field": "joined_at", "op": "within_days", "value": 1})
    counted = service.count(at, node)
    assert counted.members == 1
    assert counted.data_as_of == fixed.now()


def test_sample_masks_phones_for_analysts(brand: Brand, clean_db: Database, where: Any) -> None:
    node = _node(clean_db, {"field": "gender", "op": "eq", "value": "F"})
    analyst = Principal(key_id=1, name="ana", role=Role.analyst)
    with clean_db.unit_of_work() as s:
        found = service.sample(s, where("live"), node, size=2, principal=analyst)
        full = service.sample(s, where("live"), node, size=5, principal=SYSTEM)
    assert found.counted.members == 3 and len(found.members) == 2
    assert all("****" in m["phone"] for m in found.members)
    assert {m["member_id"] for m in full.members} == brand.named("安", "白", "丁")
    an = next(m for m in full.members if m["member_id"] == brand["安"])
    assert an["phone"] == "13800000001" and an["name"] == "安" and an["order_count"] == 3
    assert an["member_no"].startswith(f"{brand['安']:09d}")
    with clean_db.unit_of_work() as s, pytest.raises(InvalidInput):
        service.sample(s, where("live"), node, size=1_000, principal=SYSTEM)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_streams_every_member(
    fmt: str, brand: Brand, clean_db: Database, where: Any, tmp_path: Path
) -> None:
    node = _node(clean_db, {"field": "order_count", "op": "gt", "value": 0})
    body = b"".join(service.export_stream(where(), node, fmt))  # type: ignore[arg-type]
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        ids = {int(r["member_id"]) for r in rows}
        an = next(r for r in rows if int(r["member_id"]) == brand["安"])
        assert an["member_no"][:9] == f"{brand['安']:09d}" and an["order_count"] == "3"
        assert "phone" not in rows[0]
    else:
        path = tmp_path / "out.parquet"
        path.write_bytes(body)
        table = pq.read_table(path)
        ids = set(table.column("member_id").to_pylist())
        assert "member_no" in table.column_names and "phone" not in table.column_names
    assert ids == brand.named("安", "白", "丁")
    # and the file form writes the same, counting them
    out = tmp_path / f"again.{fmt}"
    assert service.export_file(where(), node, out, fmt) == 3  # type: ignore[arg-type]


def test_export_of_nobody_still_has_the_columns(
    brand: Brand, clean_db: Database, where: Any, tmp_path: Path
) -> None:
    node = _node(clean_db, {"field": "order_count", "op": "gt", "value": 100})
    text = b"".join(service.export_stream(where(), node, "csv")).decode()
    assert text.splitlines() == [text.splitlines()[0]] and "member_no" in text
    out = tmp_path / "none.parquet"
    assert service.export_file(where(), node, out, "parquet") == 0
    assert pq.read_table(out).num_rows == 0


def test_a_snapshot_freezes_the_members_with_its_time(
    brand: Brand, clean_db: Database, where: Any
) -> None:
    with clean_db.unit_of_work() as s:
        segment = service.create(
            s,
            name="近期买奶粉",
            tree={"behaviour": "bought_category", "category": "奶粉", "days": 30},
            principal=SYSTEM,
        )
    with clean_db.unit_of_work() as s:
        taken = service.take_snapshot(s, where("live"), segment.id, principal=SYSTEM)
    with clean_db.unit_of_work() as s:
        frozen = set(
            s.scalars(select(SegmentMember.member_id).where(SegmentMember.snapshot_id == taken.id))
        )
        assert frozen == brand.named("安", "白") and taken.member_count == 2
        assert service.snapshot_members(s, taken.id, limit=1) == [min(frozen)]
        assert service.snapshot_members(s, taken.id, after=min(frozen)) == [max(frozen)]
        assert [x.id for x in service.snapshots(s, segment.id)] == [taken.id]
    # deleting the segment deletes its snapshots
    with clean_db.unit_of_work() as s:
        service.remove(s, segment.id, principal=SYSTEM)
    with clean_db.unit_of_work() as s:
        assert s.scalar(select(SegmentMember.member_id)) is None


def test_validation_names_every_problem_with_its_path(brand: Brand, clean_db: Database) -> None:
    tree = {
        "and": [
            {"field": "tier", "op": "eq", "value": "V9"},
            {"behaviour": "bought_category", "category": "手机", "days": 30},
            {"tag": "没人有的标签"},
            {"field": "store", "op": "eq", "value": "S999"},
        ]
    }
    with clean_db.unit_of_work() as s, pytest.raises(InvalidInput) as caught:
        service.create(s, name="x", tree=tree, principal=SYSTEM)
    fields = [d["field"] for d in caught.value.details]
    assert fields == [
        "tree.and[0].value",
        "tree.and[1].category",
        "tree.and[2]",
        "tree.and[3].value",
    ]
    assert "V1" in caught.value.details[0]["reason"]  # the tiers in force are listed


def test_the_same_tree_compiles_to_postgresql_sql() -> None:
    node, _ = rules.check(
        {
            "and": [
                {"tag": "孕妈"},
                {"behaviour": "bought_category", "category": "奶粉", "at_least": 2, "days": 90},
            ]
        }
    )
    assert node is not None
    from datetime import UTC, datetime

    ctx = compiler.Context(now=datetime(2026, 11, 23, tzinfo=UTC), tz="Asia/Shanghai")
    sql = compiler.count_sql(node, profiles.unbound(), ctx, dialect="postgres")
    assert "COUNT(DISTINCT" in sql and "@>" in sql
