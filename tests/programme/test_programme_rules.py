"""The programme document without a database: shape, meaning, hash and diff."""

from __future__ import annotations

import copy
import itertools
from decimal import Decimal
from importlib import resources
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from siyu.programme import rules

EXAMPLE_TEXT = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
_EXAMPLE, _ = rules.parse_text(EXAMPLE_TEXT)


def fields(doc: dict[str, Any]) -> list[str]:
    return [p.field for p in rules.check(doc)[1]]


def test_the_example_document_is_valid_with_the_demo_figures(doc: dict[str, Any]) -> None:
    programme, problems = rules.check(doc)
    assert problems == []
    assert programme is not None
    assert programme.growth.per_yuan == 1 and programme.growth.signup_bonus == 100
    assert [lv.code for lv in programme.tiers.levels] == ["V1", "V2", "V3", "V4", "V5", "V6"]
    assert [lv.threshold for lv in programme.tiers.levels[:5]] == [0, 500, 2000, 5000, 10000]
    assert programme.level("V1").name == "新手妈妈"
    assert programme.level("V2").benefits.points_multiplier == Decimal("1.1")
    assert "奶粉" in programme.categories and len(programme.categories) == 8
    assert programme.points.cash_off is not None
    assert programme.points.cash_off.points_per_yuan == 100
    assert rules.fen(programme.points.earn.minimum_order_amount) == 0


def test_every_problem_is_listed_with_its_path(doc: dict[str, Any]) -> None:
    # given a document with five mistakes in four sections
    doc["tiers"]["levels"][2]["threshold"] = 400
    doc["points"]["earn"]["category_multipliers"]["玩具"] = "-0.5"
    doc["points"]["earn"]["excluded_categories"] = ["家电"]
    doc["points"]["expiry"] = {"policy": "rolling_months"}
    doc["growht"] = {}
    # when it is checked
    programme, problems = rules.check(doc)
    # then nothing is accepted and every mistake is named
    assert programme is None
    by_field = {p.field: p.reason for p in problems}
    assert "thresholds must increase" in by_field["tiers.levels[2].threshold"]
    assert "greater than or equal to 0" in by_field["points.earn.category_multipliers.玩具"]
    assert "unknown category '家电'" in by_field["points.earn.excluded_categories[0]"]
    assert by_field["points.expiry.months"] == "required for rolling_months"
    assert "unknown key" in by_field["growht"]


def test_unknown_categories_anywhere_are_refused(doc: dict[str, Any]) -> None:
    doc["points"]["earn"]["category_multipliers"]["家电"] = 2
    doc["points"]["campaigns"][0]["categories"] = ["奶粉", "图书"]
    doc["points"]["campaigns"][0]["tiers"] = ["V9"]
    assert fields(doc) == [
        "points.campaigns[0].tiers[0]",
        "points.earn.category_multipliers.家电",
        "points.campaigns[0].categories[1]",
    ]


def test_ladder_rules(doc: dict[str, Any]) -> None:
    levels = doc["tiers"]["levels"]
    levels[0]["threshold"] = 10
    levels[1]["retention"] = 600
    levels[3]["code"] = "V3"
    levels[4]["threshold"] = "10000.5"
    doc["tiers"]["review"] = {"window": "days_since_change"}
    assert fields(doc) == [
        "tiers.levels[3].code",
        "tiers.levels[0].threshold",
        "tiers.levels[1].retention",
        "tiers.levels[4].threshold",
        "tiers.review.days",
    ]


def test_spend_ladder_takes_yuan_with_two_decimals(doc: dict[str, Any]) -> None:
    doc["tiers"]["basis"] = "spend"
    doc["tiers"]["levels"][1]["threshold"] = "499.99"
    assert fields(doc) == []
    doc["tiers"]["levels"][1]["threshold"] = "499.999"
    assert fields(doc) == ["tiers.levels[1].threshold"]


def test_negative_multipliers_and_rates_are_refused(doc: dict[str, Any]) -> None:
    doc["tiers"]["levels"][1]["benefits"]["points_multiplier"] = -1
    doc["tiers"]["levels"][2]["benefits"]["discount_rate"] = "1.2"
    doc["points"]["campaigns"][0]["multiplier"] = "-2"
    doc["growth"]["per_yuan"] = -1
    assert sorted(fields(doc)) == [
        "growth.per_yuan",
        "points.campaigns[0].multiplier",
        "tiers.levels[1].benefits.points_multiplier",
        "tiers.levels[2].benefits.discount_rate",
    ]


def test_expiry_policies(doc: dict[str, Any]) -> None:
    doc["points"]["expiry"] = {"policy": "year_end", "month": 2, "day": 29}
    assert fields(doc) == ["points.expiry.day"]
    doc["points"]["expiry"] = {"policy": "never", "months": 12}
    assert fields(doc) == ["points.expiry.months"]
    doc["points"]["expiry"] = {"policy": "end_of_month_after", "months": 24}
    assert fields(doc) == []


def test_campaigns_streaks_lifecycle_and_duplicates(doc: dict[str, Any]) -> None:
    campaign = doc["points"]["campaigns"][0]
    campaign["ends_at"] = campaign["starts_at"]
    doc["points"]["campaigns"].append(copy.deepcopy(campaign))
    doc["points"]["events"]["check_in"]["streak_bonuses"][1]["days"] = 7
    doc["lifecycle"]["churned_after_days"] = 100
    doc["growth"]["bonus_events"].append({"event": "review", "growth": 1})
    doc["categories"].append("奶粉")
    assert fields(doc) == [
        "categories[8]",
        "growth.bonus_events[3].event",
        "points.campaigns[1].code",
        "points.campaigns[0].ends_at",
        "points.campaigns[1].ends_at",
        "points.events.check_in.streak_bonuses[1].days",
        "lifecycle.churned_after_days",
    ]


def test_not_a_mapping_and_unreadable_text() -> None:
    assert fields([1, 2]) == ["document"]  # type: ignore[arg-type]
    raw, problems = rules.parse_text("name: a\nname: b\n")
    assert raw is None and "appears twice" in problems[0].reason
    raw, problems = rules.parse_text("{", fmt="json")
    assert raw is None and problems[0].reason.startswith("not valid JSON")


def test_json_and_yaml_give_the_same_hash() -> None:
    import json

    programme, _ = rules.check(_EXAMPLE)
    assert programme is not None
    document = rules.canonical(programme)
    again, problems = rules.parse_text(json.dumps(document, ensure_ascii=False), fmt="json")
    reparsed, _ = rules.check(again)
    assert problems == [] and reparsed == programme
    assert rules.document_hash(rules.canonical(reparsed)) == rules.document_hash(document)
    assert "新手妈妈" in EXAMPLE_TEXT


def test_diff_names_changed_added_and_removed_paths(doc: dict[str, Any]) -> None:
    old = rules.canonical(rules.check(copy.deepcopy(doc))[0])  # type: ignore[arg-type]
    doc["tiers"]["levels"][5]["threshold"] = 30000
    doc["tiers"]["levels"].append(
        {"code": "V7", "name": "传奇妈妈", "threshold": 50000, "benefits": {}}
    )
    del doc["super_users"]
    new = rules.canonical(rules.check(doc)[0])  # type: ignore[arg-type]
    changes = {c.path: c for c in rules.diff(old, new)}
    assert changes["tiers.levels[5].threshold"].old == "20000"
    assert changes["tiers.levels[5].threshold"].new == "30000"
    assert changes["tiers.levels[6].code"].kind == "added"
    assert changes["super_users.min_referrals"].kind == "removed"
    assert rules.diff(old, old) == []


thresholds = st.lists(st.integers(min_value=1, max_value=10**7), min_size=1, max_size=8)


@given(thresholds)
def test_a_ladder_is_valid_exactly_when_its_thresholds_rise(marks: list[int]) -> None:
    doc = copy.deepcopy(_EXAMPLE)
    ladder = [0, *marks]
    doc["tiers"]["levels"] = [
        {"code": f"L{i}", "name": f"level {i}", "threshold": t} for i, t in enumerate(ladder)
    ]
    doc["points"]["campaigns"] = []
    problems = [f for f in fields(doc) if f.startswith("tiers")]
    rising = all(b > a for a, b in itertools.pairwise(ladder))
    assert (problems == []) == rising
    for i in range(1, len(ladder)):
        if ladder[i] <= ladder[i - 1]:
            assert f"tiers.levels[{i}].threshold" in problems


@given(st.dictionaries(st.sampled_from(_EXAMPLE["categories"]), st.decimals(-5, 5, places=2)))
def test_category_multipliers_are_valid_exactly_when_not_negative(
    multipliers: dict[str, Decimal],
) -> None:
    doc = copy.deepcopy(_EXAMPLE)
    doc["points"]["earn"]["category_multipliers"] = {k: str(v) for k, v in multipliers.items()}
    bad = {f"points.earn.category_multipliers.{k}" for k, v in multipliers.items() if v < 0}
    assert set(fields(doc)) == bad
