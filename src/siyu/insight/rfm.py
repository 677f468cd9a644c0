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
    scored = with_scores(buyers, rfm)
    return scored.select(
        "member_id",
        recency_days=scored.days_since_last,
        frequency=scored.frequency,
        monetary_fen=scored.monetary_fen,
        r_score=scored.r_score,
        f_score=scored.f_score,
        m_score=scored.m_score,
        rfm_group=scored.rfm_group,
    )


def with_scores(facts: ibis.Table, rfm: Rfm) -> ibis.Table:
    """Every row of ``facts`` with ``scores``' columns added (``frequency``,
    ``monetary_fen``, the three scores, ``rfm_group``), null for members who never
    bought; the ranks are those of the buyers. The refresh places every member in one
    pass over its facts with it: scoring the buyers apart and joining the scores back to
    every member cost a join of two tables of a million rows."""
    if rfm.scoring == "thresholds":
        r_cuts, f_cuts, m_cuts = rfm_cuts(rfm)
        t = facts
        r = _by_cuts(t.days_since_last, r_cuts, lower_is_better=True)
        f = _by_cuts(t.orders_window, f_cuts, lower_is_better=False)
        m = _by_cuts(t.spend_window_fen, m_cuts, lower_is_better=False)
    else:
        buyers = facts.filter(facts.days_since_last.notnull())
        ranks = {
            "r": _percent_ranks(buyers.days_since_last, "r", descending=True),
            "f": _percent_ranks(buyers.orders_window, "f", descending=False),
            "m": _percent_ranks(buyers.spend_window_fen, "m", descending=False),
        }
        t = facts
        for key, value in (
            ("r", "days_since_last"),
            ("f", "orders_window"),
            ("m", "spend_window_fen"),
        ):
            t = t.left_join(ranks[key], t[value] == ranks[key][key]).drop(key)
        r, f, m = (_quintile(t[f"{key}_pr"]) for key in ("r", "f", "m"))
    bought = t.days_since_last.notnull()
    none = ibis.null("int64")
    scored = t.mutate(
        frequency=bought.ifelse(t.orders_window, none),
        monetary_fen=bought.ifelse(t.spend_window_fen, none),
        r_score=bought.ifelse(r.cast("int64"), none),
        f_score=bought.ifelse(f.cast("int64"), none),
        m_score=bought.ifelse(m.cast("int64"), none),
    )
    if rfm.scoring != "thresholds":
        scored = scored.drop("r_pr", "f_pr", "m_pr")
    group = _group(scored.r_score, scored.f_score, scored.m_score, high=rfm.high_from)
    return scored.mutate(rfm_group=bought.ifelse(group, ibis.null("string")))


def _group(r: ibis.Value, f: ibis.Value, m: ibis.Value, *, high: int | ibis.Value) -> ibis.Value:
    """``rules.rfm_group`` as an expression: a score of ``high`` or more is high."""
    return ibis.cases(
        *[
            (((r >= high) == rh) & ((f >= high) == fh) & ((m >= high) == mh), code.value)
            for (rh, fh, mh), code in GROUP_BY_HIGHS.items()
        ],
        else_=ibis.null("string"),
    )


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


# --- scores on a run's scale (``models.RfmScale``) ----------------------------------------------

SCALE_EDGES = tuple(f"{measure}{k}_from" for measure in "rfm" for k in range(2, 6))
SCALE_SCHEMA = ibis.schema(
    {
        "high_from": "int64",
        **{name: "timestamp" if name[0] == "r" else "int64" for name in SCALE_EDGES},
    }
)


def scale_edges(scored: ibis.Table) -> ibis.Table:
    """A run's scale (one row, the ``SCALE_EDGES``) out of its scored members (``scores``
    columns with ``last_order_at``): for each score 2-5 of each measure, the least value
    that reached it, null when nobody did. Scores rise with their value, so reaching
    the k-th edge is scoring k or more."""
    measures = (("r", "last_order_at"), ("f", "frequency"), ("m", "monetary_fen"))
    return scored.aggregate(
        **{
            f"{measure}{k}_from": scored[value].min(where=scored[f"{measure}_score"] >= k)
            for measure, value in measures
            for k in range(2, 6)
        }
    )


def latest_scale(scales: ibis.Table) -> ibis.Table:
    """The last run's scale out of ``rfm_scales``, as exactly one row (all null before any
    run recorded one: every score then reads as null)."""
    last = scales.filter(scales.run_id == scales.run_id.max())
    return last.aggregate(
        high_from=last.high_from.max().cast("int64"),
        **{name: last[name].max().cast(SCALE_SCHEMA[name]) for name in SCALE_EDGES},
    )


def on_scale(
    scale: ibis.Table, *, last_order_at: ibis.Value, frequency: ibis.Value, monetary: ibis.Value
) -> dict[str, ibis.Value]:
    """``rules.scored_on`` as expressions: the three scores and the group of each row from
    its figures and the one row of ``scale`` (cross-joined with the rows)."""
    bought = (
        last_order_at.notnull()
        & frequency.notnull()
        & monetary.notnull()
        & scale.high_from.notnull()
    )

    def score(value: ibis.Value, measure: str) -> ibis.Value:
        reached = [
            (value >= scale[f"{measure}{k}_from"]).fill_null(False).ifelse(1, 0)
            for k in range(2, 6)
        ]
        return (1 + sum(reached)).cast("int64")  # type: ignore[attr-defined]

    r, f, m = score(last_order_at, "r"), score(frequency, "f"), score(monetary, "m")
    group = _group(r, f, m, high=scale.high_from)
    none = ibis.null("int64")
    return {
        "rfm_group": bought.ifelse(group, ibis.null("string")).name("rfm_group"),
        "r_score": bought.ifelse(r, none).name("r_score"),
        "f_score": bought.ifelse(f, none).name("f_score"),
        "m_score": bought.ifelse(m, none).name("m_score"),
    }
