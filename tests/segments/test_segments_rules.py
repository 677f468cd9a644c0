"""The condition tree's grammar and validation: pure, no database."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from siyu.segments import rules
from siyu.segments.rules import And, BoughtCategory, Condition, Not, Vocabulary

VOCAB = Vocabulary(
    tiers=frozenset({"V1", "V2", "V3"}),
    categories=frozenset({"奶粉", "纸尿裤"}),
    plans=frozenset({"super"}),
    stores=frozenset({"S001"}),
    guides=frozenset({"G01"}),
    tags=frozenset({"孕妈"}),
)


def problems(tree: Any, vocab: Vocabulary = VOCAB) -> list[tuple[str, str]]:
    node, found = rules.check(tree, vocab)
    assert (node is None) == bool(found)
    return [(p.field, p.reason) for p in found]


def test_a_tree_parses_into_typed_nodes() -> None:
    node, found = rules.check(
        {
            "and": [
                {"field": "tier", "op": "in", "value": ["V2", "V3", "V2"]},
                {"not": {"behaviour": "bought_category", "category": "奶粉", "days": 90}},
                {"field": "joined_at", "op": "after", "value": "2026-01-31"},
            ]
        },
        VOCAB,
    )
    assert found == []
    assert node == And(
        items=(
            Condition(field="tier", op="in", value=("V2", "V3")),  # duplicates dropped
            Not(item=BoughtCategory(behaviour="bought_category", category="奶粉", days=90)),
            Condition(field="joined_at", op="after", value=date(2026, 1, 31)),
        )
    )


def test_the_tag_shorthand_is_a_tags_condition() -> None:
    node, _ = rules.check({"tag": "孕妈"}, VOCAB)
    assert node == Condition(field="tags", op="has", value="孕妈")
    assert rules.dump(node) == {"field": "tags", "op": "has", "value": "孕妈"}


def test_every_problem_is_reported_with_its_path() -> None:
    found = problems(
        {
            "or": [
                {"field": "tierr", "op": "eq", "value": "V1"},
                {"field": "spend_fen", "op": "has", "value": 1},
                {"field": "tier", "op": "eq", "value": "V9"},
                {"and": []},
                {"behaviour": "bought_category", "category": "手机", "days": 30},
                {"field": "spend_fen", "op": "gt", "value": 9.5},
                {"field": "gender", "op": "eq", "value": "X"},
                {"field": "joined_at", "op": "before", "value": "2026-13-01"},
                {"field": "order_count", "op": "between", "value": [5, 1]},
                {"field": "gender", "op": "is_null", "value": "F"},
                {"tag": "没有"},
                {"field": "r_score", "op": "eq", "value": 9},
            ]
        }
    )
    paths = [p for p, _ in found]
    assert paths == [
        "or[0].field",
        "or[1].op",
        "or[2].value",
        "or[3].and",
        "or[4].category",
        "or[5].value",
        "or[6].value",
        "or[7].value",
        "or[8].value",
        "or[9].value",
        "or[10]",
        "or[11].value",
    ]
    reasons = dict(found)
    assert "unknown field 'tierr'; did you mean 'tier'?" in reasons["or[0].field"]
    assert "use one of: eq, ne" in reasons["or[1].op"]
    assert "V1, V2, V3" in reasons["or[2].value"]
    assert "empty group" in reasons["or[3].and"]
    assert "unknown category '手机'" in reasons["or[4].category"]
    assert "whole number of fen" in reasons["or[5].value"]
    assert "swap" in reasons["or[8].value"]


def test_node_shape_problems() -> None:
    assert problems([]) == [("tree", problems([])[0][1])]
    assert "exactly one" in problems({"field": "tier", "and": []})[0][1]
    assert "unknown behaviour" in problems({"behaviour": "dance", "days": 3})[0][1]
    assert problems({"behaviour": "no_purchase_since"}) == [("days", "required")]
    assert problems({"behaviour": "joined_never_bought", "days": 10, "x": 1})[0][0] == "x"
    deep: dict[str, Any] = {"field": "gender", "op": "eq", "value": "F"}
    for _ in range(rules.MAX_DEPTH + 1):
        deep = {"not": deep}
    assert "levels deep" in problems(deep)[0][1]
    many = {"or": [{"field": "gender", "op": "eq", "value": "F"}] * (rules.MAX_CONDITIONS + 1)}
    assert "conditions; at most" in problems(many)[0][1]


def test_unchecked_vocabularies_accept_any_name() -> None:
    assert problems({"field": "tier", "op": "eq", "value": "V9"}, Vocabulary()) == []


def test_rule_tags_cannot_chain() -> None:
    vocab = Vocabulary(
        tags=frozenset({"奶粉客"}), rule_tags=frozenset({"奶粉客"}), allow_rule_tags=False
    )
    assert "cannot depend on another rule tag" in problems({"tag": "奶粉客"}, vocab)[0][1]


def test_named_finds_the_names_a_raw_tree_uses() -> None:
    tree = {
        "and": [
            {"tag": "a"},
            {"field": "tags", "op": "has_any", "value": ["b", "c"]},
            {"not": {"field": "store", "op": "in", "value": ["S1"]}},
            {"behaviour": "bought_category", "category": "奶粉", "days": 3},
        ]
    }
    assert rules.named(tree, "tags") == {"a", "b", "c"}
    assert rules.named(tree, "stores") == {"S1"}
    assert rules.named(tree, "categories") == {"奶粉"}


# --- any valid tree survives dump and check unchanged ---------------------------------------

_leaves = st.one_of(
    st.builds(
        lambda v: {"field": "tier", "op": "in", "value": v},
        st.lists(st.sampled_from(["V1", "V2", "V3"]), min_size=1, max_size=3, unique=True),
    ),
    st.builds(lambda v: {"field": "spend_fen", "op": "gte", "value": v}, st.integers(0, 10**9)),
    st.builds(
        lambda lo, span: {"field": "order_count", "op": "between", "value": [lo, lo + span]},
        st.integers(0, 100),
        st.integers(0, 100),
    ),
    st.builds(
        lambda d: {"field": "last_order_at", "op": "within_days", "value": d}, st.integers(1, 3650)
    ),
    st.builds(
        lambda d: {"field": "joined_at", "op": "before", "value": d.isoformat()},
        st.dates(date(2000, 1, 1), date(2030, 12, 31)),
    ),
    st.builds(lambda b: {"field": "paid", "op": "eq", "value": b}, st.booleans()),
    st.just({"field": "tags", "op": "has", "value": "孕妈"}),
    st.builds(
        lambda n, d: {"behaviour": "bought_category", "category": "奶粉", "at_least": n, "days": d},
        st.integers(1, 20),
        st.integers(1, 3650),
    ),
    st.builds(lambda d: {"behaviour": "no_purchase_since", "days": d}, st.integers(1, 3650)),
)
_trees = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"and": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"or": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(_trees)
def test_dump_then_check_gives_the_same_tree(tree: dict[str, Any]) -> None:
    node, found = rules.check(tree, VOCAB)
    if found:  # only the depth limit can refuse a generated tree
        assert all("levels deep" in p.reason for p in found)
        return
    assert node is not None
    again, more = rules.check(rules.dump(node), VOCAB)
    assert more == [] and again == node
