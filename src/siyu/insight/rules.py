"""The pure rules of the insight refresh: lifecycle stages, RFM scores and groups, and the
marks a brand's own purchase rhythm gives. No database, no clock.

The refresh computes the same rules set-based (Ibis expressions in ``lifecycle``, ``rfm``
and ``superusers``); the tests hold both to the same answers.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple

from siyu.programme.rules import Lifecycle, Rfm

DAY_SECONDS = 86_400


class Stage(StrEnum):
    """Lifecycle stages (生命周期), in the order a member moves through them."""

    prospect = "prospect"  # 潜客: joined, never bought
    new = "new"  # 新客: first purchase recently
    active = "active"  # 活跃
    silent = "silent"  # 沉默
    sleeping = "sleeping"  # 沉睡
    churned = "churned"  # 流失


STAGE_NAMES: dict[str, str] = {
    "prospect": "潜客",
    "new": "新客",
    "active": "活跃",
    "silent": "沉默",
    "sleeping": "沉睡",
    "churned": "流失",
}


@dataclass(frozen=True)
class Marks:
    """The day marks in force for one refresh, and where they came from."""

    new_within_days: int
    silent_after_days: int
    sleeping_after_days: int
    churned_after_days: int
    basis: str = "days"  # days | percentiles | days (too few repeat buyers)


def days_marks(lifecycle: Lifecycle) -> Marks:
    return Marks(
        lifecycle.new_within_days,
        lifecycle.silent_after_days,
        lifecycle.sleeping_after_days,
        lifecycle.churned_after_days,
    )


def percentile_marks(
    lifecycle: Lifecycle, *, silent_gap: float | None, sleeping_gap: float | None, buyers: int
) -> Marks:
    """Marks from the brand's inter-purchase time: the silent and sleeping percentiles of
    repeat buyers' average gap (days), churned at ``churned_multiple`` x the sleeping mark.

    Each mark is at least a day after the one before, so the stages stay in order even when
    the brand's rhythm is very regular. With fewer than ``min_repeat_buyers`` repeat buyers
    the gaps say little: the day marks of the document apply.
    """
    if lifecycle.basis != "percentiles":
        return days_marks(lifecycle)
    if buyers < lifecycle.min_repeat_buyers or silent_gap is None or sleeping_gap is None:
        return Marks(**{**days_marks(lifecycle).__dict__, "basis": "days (too few repeat buyers)"})
    silent = max(1, math.ceil(silent_gap))
    sleeping = max(silent + 1, math.ceil(sleeping_gap))
    churned = max(sleeping + 1, math.ceil(Decimal(sleeping) * lifecycle.churned_multiple))
    return Marks(lifecycle.new_within_days, silent, sleeping, churned, basis="percentiles")


def stage_of(*, days_since_first: int | None, days_since_last: int | None, marks: Marks) -> Stage:
    """A member's stage from whole days since their first and last purchase (None: never
    bought). A recent first purchase makes a member new whatever came after it."""
    if days_since_first is None or days_since_last is None:
        return Stage.prospect
    if days_since_first <= marks.new_within_days:
        return Stage.new
    if days_since_last <= marks.silent_after_days:
        return Stage.active
    if days_since_last <= marks.sleeping_after_days:
        return Stage.silent
    if days_since_last <= marks.churned_after_days:
        return Stage.sleeping
    return Stage.churned


# --- RFM ---------------------------------------------------------------------------------------


class RfmGroup(StrEnum):
    """The eight classic RFM groups by high/low recency, frequency, monetary."""

    important_value = "important_value"  # 重要价值: R high, F high, M high
    important_develop = "important_develop"  # 重要发展: R high, F low, M high
    important_keep = "important_keep"  # 重要保持: R low, F high, M high
    important_retain = "important_retain"  # 重要挽留: R low, F low, M high
    general_value = "general_value"  # 一般价值: R high, F high, M low
    general_develop = "general_develop"  # 一般发展: R high, F low, M low
    general_keep = "general_keep"  # 一般保持: R low, F high, M low
    general_retain = "general_retain"  # 一般挽留: R low, F low, M low


RFM_GROUP_NAMES: dict[str, str] = {
    "important_value": "重要价值",
    "important_develop": "重要发展",
    "important_keep": "重要保持",
    "important_retain": "重要挽留",
    "general_value": "一般价值",
    "general_develop": "一般发展",
    "general_keep": "一般保持",
    "general_retain": "一般挽留",
}

# (R high, F high, M high) -> group
GROUP_BY_HIGHS: dict[tuple[bool, bool, bool], RfmGroup] = {
    (True, True, True): RfmGroup.important_value,
    (True, False, True): RfmGroup.important_develop,
    (False, True, True): RfmGroup.important_keep,
    (False, False, True): RfmGroup.important_retain,
    (True, True, False): RfmGroup.general_value,
    (True, False, False): RfmGroup.general_develop,
    (False, True, False): RfmGroup.general_keep,
    (False, False, False): RfmGroup.general_retain,
}


def rfm_group(r: int, f: int, m: int, *, high_from: int) -> RfmGroup:
    return GROUP_BY_HIGHS[(r >= high_from, f >= high_from, m >= high_from)]


@dataclass(frozen=True)
class RfmScale:
    """Where one refresh put the RFM scores' edges, so a reader derives any member's
    scores and group from the purchase figures stored on their row (``member_insight``:
    ``last_order_at``, ``frequency``, ``monetary_fen``) instead of the refresh storing
    them.

    Stored scores changed for about 57,000 of a million members a night (each day's
    buyers move to the front of the recency order and push their neighbours across a
    quintile's edge) while their purchase figures stood still; the row was written again
    for a derived number. The edges are the run's own: for each score 2-5, the least
    value among the members who reached it (``recent_from``: the earliest last purchase),
    None when nobody did. Scores rise with their value under either scoring (quintiles or
    the document's thresholds), so a member reaches score k exactly when their value is
    at or past the k-th edge: the scores a reader derives are the ones the run computed,
    for every member the run placed."""

    recent_from: tuple[datetime | None, ...]  # last purchase at or after: R 2, 3, 4, 5
    frequency_from: tuple[int | None, ...]  # orders in the RFM window: F 2 … 5
    monetary_from: tuple[int | None, ...]  # net spend in fen in the window: M 2 … 5
    high_from: int


class Scored(NamedTuple):
    r: int
    f: int
    m: int
    group: RfmGroup


def score_on(value: Any, edges: Sequence[Any]) -> int | None:
    """Score 1-5 of a value against a scale's four edges (None: nobody reached that
    score, nor any above it)."""
    if value is None:
        return None
    return 1 + sum(1 for edge in edges if edge is not None and value >= edge)


def scored_on(
    scale: RfmScale,
    *,
    last_order_at: datetime | None,
    frequency: int | None,
    monetary_fen: int | None,
) -> Scored | None:
    """A member's three scores and group on a refresh's scale; None: never bought."""
    if last_order_at is None or frequency is None or monetary_fen is None:
        return None
    r = score_on(last_order_at, scale.recent_from)
    f = score_on(frequency, scale.frequency_from)
    m = score_on(monetary_fen, scale.monetary_from)
    assert r is not None and f is not None and m is not None
    return Scored(r, f, m, rfm_group(r, f, m, high_from=scale.high_from))


def quintile_score(percent_rank: float) -> int:
    """Score 1-5 from a member's percent rank (0 lowest, 1 highest; equal values share a
    rank, so equal values share a score)."""
    return min(5, int(percent_rank * 5) + 1)


def threshold_score(value: float, cuts: Sequence[float], *, lower_is_better: bool = False) -> int:
    """Score 1-5 against four rising cut points. For frequency and monetary a value at a
    cut point reaches its score (2 from the first, 5 from the last); for recency, fewer
    days is better: up to the first cut point scores 5, beyond the last scores 1."""
    if lower_is_better:
        return 5 - sum(1 for cut in cuts if value > cut)
    return 1 + bisect_right(list(cuts), value)


def rfm_cuts(rfm: Rfm) -> tuple[list[float], list[float], list[float]]:
    """The document's cut points in the units stored: days, orders, fen."""
    assert rfm.recency_days and rfm.frequency and rfm.monetary
    return (
        [float(v) for v in rfm.recency_days],
        [float(v) for v in rfm.frequency],
        [float(v * 100) for v in rfm.monetary],
    )


# --- early signals and super users -------------------------------------------------------------


def lift_points(early_super: int, early: int, other_super: int, other: int) -> float | None:
    """How many percentage points more often early buyers are super users than the rest."""
    if early == 0 or other == 0:
        return None
    return round(100 * (early_super / early - other_super / other), 1)


def value_multiple(
    super_spend: int, supers: int, ordinary_spend: int, ordinary: int
) -> float | None:
    """Average spend of a super user over the average spend of an ordinary member."""
    if supers == 0 or ordinary == 0 or ordinary_spend <= 0:
        return None
    return round((super_spend / supers) / (ordinary_spend / ordinary), 2)
