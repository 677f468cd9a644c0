"""RFM (recency, frequency, monetary) as Ibis expressions: scores 1-5 and the eight groups.

Quintile scores are percent ranks, not ``ntile``: members with equal values get equal
scores, and every engine (DuckDB, Spark, PostgreSQL) ranks ties the same way, so the same
members land in the same groups wherever the expression runs.
"""

from __future__ import annotations

import ibis

from siyu.insight.rules import GROUP_BY_HIGHS, rfm_cuts
from siyu.programme.rules import Rfm


def _quintile(percent_rank: ibis.Value) -> ibis.Value:
    return ibis.least((percent_rank * 5).floor().cast("int64") + 1, 5)


def _percent_ranks(values: ibis.Value, name: str, *, descending: bool) -> ibis.Table:
    """``percent_rank()`` of every distinct value of a column (table ``name``, ``{name}_pr``),
    computed over the distinct values instead of sorting every row: a value's rank is one
    more than the rows before it in the order, so its percent rank is those rows over all
    rows but one (0 when there is one row), the same division ``percent_rank`` does, so
    the same float. Recency and frequency have a few hundred distinct values among a
    million buyers; the three window sorts over every buyer were most of the scoring."""
    table = values.as_table()
    column = table.columns[0]
    counts = table.group_by(table[column].name(name)).aggregate(rows=table.count())
    order = ibis.desc(counts[name]) if descending else counts[name]
    through = counts.rows.sum().over(ibis.cumulative_window(order_by=order))
    total = counts.rows.sum().over()
    before = (through - counts.rows).cast("float64")
    rank = ibis.ifelse(total > 1, before / (total - 1).cast("float64"), 0.0)
    return counts.select(counts[name], **{f"{name}_pr": rank})


def _by_cuts(value: ibis.Value, cuts: list[float], *, lower_is_better: bool) -> ibis.Value:
    """``rules.threshold_score`` as an expression."""
    if lower_is_better:
        return 5 - sum((value > cut).ifelse(1, 0) for cut in cuts)  # type: ignore[return-value]
    return 1 + sum((value >= cut).ifelse(1, 0) for cut in cuts)  # type: ignore[return-value]


def scores(facts: ibis.Table, rfm: Rfm) -> ibis.Table:
    """Members who ever bought, with recency, frequency, monetary and their scores and
    group. Frequency and monetary count the RFM window (``orders_window``,
    ``spend_window_fen``); a member who bought only before it scores 1 on both."""
    buyers = facts.filter(facts.days_since_last.notnull())
    recency = buyers.days_since_last
    frequency = buyers.orders_window
    monetary = buyers.spend_window_fen
    if rfm.scoring == "thresholds":
        r_cuts, f_cuts, m_cuts = rfm_cuts(rfm)
        r = _by_cuts(recency, r_cuts, lower_is_better=True)
        f = _by_cuts(frequency, f_cuts, lower_is_better=False)
        m = _by_cuts(monetary, m_cuts, lower_is_better=False)
    else:
        ranks = {
            "r": _percent_ranks(recency, "r", descending=True),
            "f": _percent_ranks(frequency, "f", descending=False),
            "m": _percent_ranks(monetary, "m", descending=False),
        }
        joined = buyers
        for key, value in (
            ("r", "days_since_last"),
            ("f", "orders_window"),
            ("m", "spend_window_fen"),
        ):
            joined = joined.left_join(ranks[key], joined[value] == ranks[key][key]).drop(key)
        buyers = joined
        recency = buyers.days_since_last
        frequency = buyers.orders_window
        monetary = buyers.spend_window_fen
        r, f, m = (_quintile(buyers[f"{key}_pr"]) for key in ("r", "f", "m"))
    scored = buyers.select(
        member_id=buyers.member_id,
        recency_days=recency,
        frequency=frequency,
        monetary_fen=monetary,
        r_score=r.cast("int64"),
        f_score=f.cast("int64"),
        m_score=m.cast("int64"),
    )
    high = rfm.high_from
    group = ibis.cases(
        *[
            (
                ((scored.r_score >= high) == rh)
                & ((scored.f_score >= high) == fh)
                & ((scored.m_score >= high) == mh),
                code.value,
            )
            for (rh, fh, mh), code in GROUP_BY_HIGHS.items()
        ]
    )
    return scored.mutate(rfm_group=group)


def summary(scored: ibis.Table) -> ibis.Table:
    """Members, orders and spend per group over the RFM window, with each group's share of
    members and of spend (0-1). The spend share is of all scored members' spend."""
    groups = scored.group_by("rfm_group").aggregate(
        members=scored.count(),
        orders=scored.frequency.sum(),
        spend_fen=scored.monetary_fen.sum(),
    )
    total_members = groups.members.sum().over()
    total_spend = groups.spend_fen.sum().over()
    return groups.mutate(
        member_share=groups.members / total_members,
        spend_share=ibis.ifelse(total_spend > 0, groups.spend_fen / total_spend, 0.0),
    ).order_by("rfm_group")
