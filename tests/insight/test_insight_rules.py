"""The pure rules of the refresh (no database), and the Ibis expressions held to them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import ibis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siyu.insight import lifecycle, rfm
from siyu.insight.rules import (
    Marks,
    RfmGroup,
    RfmScale,
    Stage,
    lift_points,
    percentile_marks,
    quintile_score,
    rfm_group,
    score_on,
    scored_on,
    stage_of,
    threshold_score,
    value_multiple,
)
from siyu.programme import rules as programme_rules
from siyu.programme.rules import Lifecycle, Rfm

MARKS = Marks(
    new_within_days=30, silent_after_days=90, sleeping_after_days=180, churned_after_days=365
)


def example() -> dict[str, Any]:
    from importlib import resources

    text = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    raw, problems = programme_rules.parse_text(text)
    assert not problems
    return raw  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("first", "last", "stage"),
    [
        (None, None, Stage.prospect),
        (0, 0, Stage.new),
        (30, 30, Stage.new),  # the mark itself is still new
        (31, 31, Stage.active),
        (400, 90, Stage.active),
        (400, 91, Stage.silent),
        (400, 180, Stage.silent),
        (400, 181, Stage.sleeping),
        (400, 365, Stage.sleeping),
        (400, 366, Stage.churned),
        (20, 20, Stage.new),  # a recent first purchase is new whatever came after
    ],
)
def test_stage_by_days_since_first_and_last_purchase(
    first: int | None, last: int | None, stage: Stage
) -> None:
    assert stage_of(days_since_first=first, days_since_last=last, marks=MARKS) == stage


def test_percentile_marks_follow_the_brand_rhythm_and_fall_back_with_too_few_buyers() -> None:
    rules = Lifecycle(basis="percentiles", churned_multiple=Decimal(2), min_repeat_buyers=10)
    marks = percentile_marks(rules, silent_gap=44.2, sleeping_gap=70.0, buyers=500)
    assert (marks.silent_after_days, marks.sleeping_after_days, marks.churned_after_days) == (
        45,
        70,
        140,
    )
    assert marks.basis == "percentiles"
    few = percentile_marks(rules, silent_gap=44.2, sleeping_gap=70.0, buyers=3)
    assert few.silent_after_days == rules.silent_after_days
    assert few.basis.startswith("days")
    assert percentile_marks(Lifecycle(), silent_gap=1, sleeping_gap=2, buyers=10**6).basis == "days"


@given(
    st.floats(min_value=0, max_value=2000, allow_nan=False),
    st.floats(min_value=0, max_value=2000, allow_nan=False),
)
def test_percentile_marks_always_rise(silent: float, sleeping: float) -> None:
    rules = Lifecycle(basis="percentiles", min_repeat_buyers=1)
    marks = percentile_marks(rules, silent_gap=silent, sleeping_gap=sleeping, buyers=5)
    assert 1 <= marks.silent_after_days < marks.sleeping_after_days < marks.churned_after_days


def test_scores_and_the_eight_groups() -> None:
    assert [quintile_score(p) for p in (0, 0.19, 0.2, 0.5, 0.79, 0.8, 1.0)] == [1, 1, 2, 3, 4, 5, 5]
    assert [threshold_score(v, [2, 3, 5, 8]) for v in (0, 1, 2, 4, 5, 8, 100)] == [
        1,
        1,
        2,
        3,
        4,
        5,
        5,
    ]
    recency = [30, 90, 180, 365]
    assert [threshold_score(v, recency, lower_is_better=True) for v in (0, 30, 31, 365, 366)] == [
        5,
        5,
        4,
        2,
        1,
    ]
    assert rfm_group(5, 5, 5, high_from=4) is RfmGroup.important_value
    assert rfm_group(5, 1, 4, high_from=4) is RfmGroup.important_develop
    assert rfm_group(1, 5, 4, high_from=4) is RfmGroup.important_keep
    assert rfm_group(1, 1, 4, high_from=4) is RfmGroup.important_retain
    assert rfm_group(4, 4, 3, high_from=4) is RfmGroup.general_value
    assert rfm_group(4, 3, 3, high_from=4) is RfmGroup.general_develop
    assert rfm_group(3, 4, 3, high_from=4) is RfmGroup.general_keep
    assert rfm_group(3, 3, 3, high_from=4) is RfmGroup.general_retain
    assert rfm_group(3, 3, 3, high_from=3) is RfmGroup.important_value


def test_lift_and_value_multiple() -> None:
    assert lift_points(30, 100, 13, 100) == 17.0
    assert lift_points(1, 0, 1, 10) is None
    assert value_multiple(700, 1, 1000, 10) == 7.0
    assert value_multiple(0, 0, 10, 1) is None


# --- the expressions agree with the rules ---------------------------------------------------


days = st.one_of(st.none(), st.integers(min_value=0, max_value=2000))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(days, st.integers(min_value=0, max_value=2000)), min_size=1, max_size=40))
def test_the_stage_expression_is_the_stage_rule(rows: list[tuple[int | None, int]]) -> None:
    members = [
        {"member_id": i, "days_since_first": f, "days_since_last": None if f is None else min(f, g)}
        for i, (f, g) in enumerate(rows)
    ]
    table = ibis.memtable(
        members,
        schema={"member_id": "int64", "days_since_first": "int64", "days_since_last": "int64"},
    )
    got = ibis.duckdb.connect().execute(
        table.select("member_id", stage=lifecycle.stage(table, MARKS)).order_by("member_id")
    )
    expected = [
        stage_of(
            days_since_first=m["days_since_first"],
            days_since_last=m["days_since_last"],
            marks=MARKS,
        ).value
        for m in members
    ]
    assert list(got["stage"]) == expected


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=900),
            st.integers(min_value=0, max_value=12),
            st.integers(min_value=0, max_value=10**6),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_rfm_expressions_are_the_scoring_rules(rows: list[tuple[int, int, int]]) -> None:
    table = ibis.memtable(
        [
            {"member_id": i, "days_since_last": r, "orders_window": f, "spend_window_fen": m}
            for i, (r, f, m) in enumerate(rows)
        ],
        schema={
            "member_id": "int64",
            "days_since_last": "int64",
            "orders_window": "int64",
            "spend_window_fen": "int64",
        },
    )
    con = ibis.duckdb.connect()
    by_cuts = Rfm(
        scoring="thresholds",
        recency_days=[30, 90, 180, 365],
        frequency=[2, 3, 5, 8],
        monetary=[Decimal(100), Decimal(500), Decimal(1000), Decimal(5000)],
    )
    got = con.execute(rfm.scores(table, by_cuts).order_by("member_id"))
    for (r, f, m), row in zip(rows, got.itertuples(), strict=True):
        scores = (
            threshold_score(r, [30, 90, 180, 365], lower_is_better=True),
            threshold_score(f, [2, 3, 5, 8]),
            threshold_score(m, [10_000, 50_000, 100_000, 500_000]),
        )
        assert (row.r_score, row.f_score, row.m_score) == scores
        assert row.rfm_group == rfm_group(*scores, high_from=4).value
    quintiles = con.execute(rfm.scores(table, Rfm()).order_by("member_id"))
    for (_, f, _), row in zip(rows, quintiles.itertuples(), strict=True):
        # equal values, equal scores; more orders never scores lower
        same = quintiles[quintiles["frequency"] == f]["f_score"]
        assert set(same) == {row.f_score}
        assert all(quintiles[quintiles["frequency"] > f]["f_score"] >= row.f_score)

    # and exactly the percent rank's quintile: the rows before a value in the order (more
    # days since the last purchase rank lower), over all rows but one
    def percent_rank(values: list[int], value: int, *, descending: bool) -> float:
        before = sum(1 for v in values if (v > value if descending else v < value))
        return before / (len(values) - 1) if len(values) > 1 else 0.0

    columns = list(zip(*rows, strict=True))
    for (r, f, m), row in zip(rows, quintiles.itertuples(), strict=True):
        assert (row.r_score, row.f_score, row.m_score) == (
            quintile_score(percent_rank(list(columns[0]), r, descending=True)),
            quintile_score(percent_rank(list(columns[1]), f, descending=False)),
            quintile_score(percent_rank(list(columns[2]), m, descending=False)),
        )


@settings(deadline=None, max_examples=40)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=900),  # whole days since the last purchase
            st.integers(min_value=0, max_value=86_399),  # seconds into that day
            st.integers(min_value=0, max_value=12),
            st.integers(min_value=0, max_value=10**6),
        ),
        min_size=1,
        max_size=40,
    ),
    thresholds=st.booleans(),
    high_from=st.integers(min_value=2, max_value=5),
)
def test_scores_read_off_a_runs_scale_are_the_scores_it_computed(
    rows: list[tuple[int, int, int, int]], thresholds: bool, high_from: int
) -> None:
    """The refresh stores its scale, not the scores (``rules.RfmScale``): every member's
    scores and group derived from their figures on it, in Python and as the profile's
    expression, are the ones the run computed, under either scoring."""
    as_of = datetime(2026, 11, 24, 4, tzinfo=UTC).replace(tzinfo=None)  # naive UTC, as read
    table = ibis.memtable(
        [
            {
                "member_id": i,
                "last_order_at": as_of - timedelta(days=days, seconds=seconds),
                "days_since_last": days,
                "orders_window": f,
                "spend_window_fen": m,
            }
            for i, (days, seconds, f, m) in enumerate(rows)
        ],
        schema={
            "member_id": "int64",
            "last_order_at": "timestamp",
            "days_since_last": "int64",
            "orders_window": "int64",
            "spend_window_fen": "int64",
        },
    )
    rules = (
        Rfm(
            scoring="thresholds",
            recency_days=[30, 90, 180, 365],
            frequency=[2, 3, 5, 8],
            monetary=[Decimal(100), Decimal(500), Decimal(1000), Decimal(5000)],
            high_from=high_from,
        )
        if thresholds
        else Rfm(high_from=high_from)
    )
    con = ibis.duckdb.connect()
    scored = rfm.with_scores(table, rules)
    edges = con.execute(rfm.scale_edges(scored)).iloc[0]

    def edge(name: str) -> Any:
        value = edges[name]
        if value is None or value != value:  # None or NaN/NaT: nobody reached the score
            return None
        return value.to_pydatetime() if name[0] == "r" else int(value)

    scale = RfmScale(
        recent_from=tuple(edge(f"r{k}_from") for k in range(2, 6)),
        frequency_from=tuple(edge(f"f{k}_from") for k in range(2, 6)),
        monetary_from=tuple(edge(f"m{k}_from") for k in range(2, 6)),
        high_from=high_from,
    )
    computed = con.execute(scored.order_by("member_id"))
    for row in computed.itertuples():
        got = scored_on(
            scale,
            last_order_at=row.last_order_at.to_pydatetime(),
            frequency=int(row.frequency),
            monetary_fen=int(row.monetary_fen),
        )
        assert got is not None
        assert (got.r, got.f, got.m, got.group.value) == (
            row.r_score,
            row.f_score,
            row.m_score,
            row.rfm_group,
        )
    # the same on the profile's expression, over the scale as a one-row table
    one = scored.cross_join(rfm.scale_edges(scored).mutate(high_from=ibis.literal(high_from)))
    derived = rfm.on_scale(
        one, last_order_at=one.last_order_at, frequency=one.frequency, monetary=one.monetary_fen
    )
    again = con.execute(one.select("member_id", *derived.values()).order_by("member_id"))
    assert (
        again[["r_score", "f_score", "m_score", "rfm_group"]].values.tolist()
        == computed[["r_score", "f_score", "m_score", "rfm_group"]].values.tolist()
    )


def test_a_score_is_the_edges_its_value_reaches() -> None:
    assert score_on(None, [1, 2, 3, 4]) is None
    assert [score_on(v, [1, 2, 3, 4]) for v in (0, 1, 2, 3, 4, 9)] == [1, 2, 3, 4, 5, 5]
    # nobody reached 4 or 5: those edges are empty, and no value reaches them
    assert [score_on(v, [1, 3, None, None]) for v in (0, 2, 3, 99)] == [1, 2, 3, 3]


# --- the document's sections ------------------------------------------------------------------


def problems_of(doc: dict[str, Any]) -> dict[str, str]:
    _, problems = programme_rules.check(doc)
    return {p.field: p.reason for p in problems}


def test_the_example_document_defines_lifecycle_rfm_and_super_users() -> None:
    programme, problems = programme_rules.check(example())
    assert problems == [] and programme is not None
    assert programme.lifecycle is not None and programme.lifecycle.basis == "days"
    assert programme.rfm is not None and programme.rfm.scoring == "quintiles"
    assert programme.super_users is not None
    assert "paid_member" in programme.super_users.conditions()


def test_bad_insight_sections_are_reported_with_paths() -> None:
    doc = copy.deepcopy(example())
    doc["lifecycle"].update(silent_percentile=90, sleeping_percentile=80, basis="weekly")
    doc["rfm"] = {"scoring": "thresholds", "recency_days": [90, 30, 180, 365], "frequency": [1, 2]}
    doc["super_users"] = {"match": "any", "min_tier": "V9"}
    found = problems_of(doc)
    assert "lifecycle.basis" in found
    assert "rfm.recency_days" in found and "rise" in found["rfm.recency_days"]
    assert "four cut points" in found["rfm.frequency"]
    assert "required" in found["rfm.monetary"]
    assert "unknown tier 'V9'" in found["super_users.min_tier"]

    doc = copy.deepcopy(example())
    doc["lifecycle"].update(silent_percentile=90, sleeping_percentile=80)
    doc["rfm"] = {"scoring": "quintiles", "frequency": [1, 2, 3, 4]}
    doc["super_users"] = {"match": "all"}
    found = problems_of(doc)
    assert "must be more than silent_percentile" in found["lifecycle.sleeping_percentile"]
    assert "not used by quintiles" in found["rfm.frequency"]
    assert "sets no condition" in found["super_users"]
