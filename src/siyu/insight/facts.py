"""Per-member purchase facts: the one pass over orders every part of the refresh reads.

Each function takes Ibis tables and parameters and returns an Ibis table, so the same
expression runs on DuckDB (here), PostgreSQL, Spark or ClickHouse. Instants are naive
UTC timestamps (see ``engine.Analytics.table``); day arithmetic is on epoch seconds,
which every engine agrees on.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import ibis

from siyu.insight.engine import epoch, instant
from siyu.insight.rules import DAY_SECONDS

YEAR_DAYS = 365
# Members the refresh leaves out: merged into another (their orders moved with them) and
# closed accounts.
EXCLUDED_STATUSES = ("merged", "closed")


def purchases(orders: ibis.Table, members: ibis.Table, *, as_of: datetime) -> ibis.Table:
    """Members' orders up to ``as_of`` that still count: fully refunded orders are not
    purchases; a partial refund lowers the order's net amount. Each row carries the
    buyer's join time, for the early signals."""
    counted = orders.filter(
        orders.member_id.notnull(),
        orders.paid_at <= instant(as_of),
        orders.status != "refunded",
    )
    joined = counted.join(members.select("id", "joined_at"), counted.member_id == members.id)
    return joined.select(
        member_id=joined.member_id,
        paid_at=joined.paid_at,
        paid_s=joined.paid_at.epoch_seconds(),
        net_fen=(joined.amount_fen - joined.refunded_fen).cast("int64"),
        joined_s=joined.joined_at.epoch_seconds(),
    )


def buyer_stats(purchases: ibis.Table, *, as_of: datetime, window_days: int) -> ibis.Table:
    """One row per member who bought: first and last purchase, orders and net spend over
    the RFM window and over 12 months, and the early-signal counts since joining."""
    now_s = epoch(as_of)
    window_from = now_s - window_days * DAY_SECONDS
    year_from = now_s - YEAR_DAYS * DAY_SECONDS
    p = purchases
    in_window = p.paid_s > window_from
    in_year = p.paid_s > year_from
    return p.group_by("member_id").aggregate(
        first_at=p.paid_at.min(),
        last_at=p.paid_at.max(),
        first_s=p.paid_s.min(),
        last_s=p.paid_s.max(),
        orders_all=p.count(),
        orders_window=in_window.ifelse(1, 0).sum(),
        spend_window_fen=in_window.ifelse(p.net_fen, 0).sum(),
        orders_12m=in_year.ifelse(1, 0).sum(),
        spend_12m_fen=in_year.ifelse(p.net_fen, 0).sum(),
        orders_by_join_7d=(p.paid_s <= p.joined_s + 7 * DAY_SECONDS).ifelse(1, 0).sum(),
        orders_by_join_30d=(p.paid_s <= p.joined_s + 30 * DAY_SECONDS).ifelse(1, 0).sum(),
    )


# ``buyer_stats``' columns as ``member_insight`` keeps them (``stored_stats``)
STORED = {
    "first_at": "first_order_at",
    "last_at": "last_order_at",
    "orders_all": "order_count",
    "orders_window": "frequency",
    "spend_window_fen": "monetary_fen",
    "orders_12m": "orders_12m",
    "spend_12m_fen": "spend_12m_fen",
    "orders_by_join_7d": "orders_by_join_7d",
    "orders_by_join_30d": "orders_by_join_30d",
}
WAS = "was_"  # the prefix of the last run's columns on ``member_facts``' rows


def member_facts(
    members: ibis.Table,
    fresh: ibis.Table,
    *,
    as_of: datetime,
    before: ibis.Table | None = None,
    keep_stored: bool = False,
) -> ibis.Table:
    """Every member the refresh scores (joined by ``as_of``, not merged or closed), with
    their buyer stats (nulls and zeros for members who never bought) and whole days since
    their first and last purchase.

    ``fresh``: buyer stats (``buyer_stats``' columns) computed from orders. ``before``:
    the last run's rows, ``member_insight``'s columns each named with ``WAS`` in front
    (``was_member_id`` null for a member it did not place), joined in the same pass and
    carried on every row, so the caller compares the new row with the old one without a
    second join of a million rows. With ``keep_stored`` (the nightly run), a member
    without a row in ``fresh`` keeps the aggregates stored on their last row, as
    ``stored_stats`` reads them: then ``fresh`` holds a row for every member whose
    aggregates could differ, stats null for one with no purchase left."""
    now_s = epoch(as_of)
    m = members.filter(
        ~members.status.isin(EXCLUDED_STATUSES), members.joined_at <= instant(as_of)
    ).select(
        member_id=members.id,
        tier_code=members.tier_code,
        joined_s=members.joined_at.epoch_seconds(),
    )
    f = fresh.rename(fresh_id="member_id")
    joined = m
    if before is not None:
        joined = joined.left_join(before, joined.member_id == before[f"{WAS}member_id"])
    joined = joined.left_join(f, joined.member_id == f.fresh_id)
    stats: dict[str, ibis.Value] = {name: joined[name] for name in STATS_COLUMNS[1:]}
    if keep_stored:
        assert before is not None, "stored aggregates are read from the last run's rows"
        bought = joined[f"{WAS}first_order_at"].notnull()
        stored: dict[str, ibis.Value] = {
            name: joined[f"{WAS}{column}"] for name, column in STORED.items()
        }
        stored["first_s"] = joined[f"{WAS}first_order_at"].epoch_seconds()
        stored["last_s"] = joined[f"{WAS}last_order_at"].epoch_seconds()
        is_fresh = joined.fresh_id.notnull()
        stats = {
            name: is_fresh.ifelse(value, bought.ifelse(stored[name], ibis.null(value.type())))
            for name, value in stats.items()
        }
    zero = ibis.literal(0, type="int64")
    carried = [c for c in joined.columns if c.startswith(WAS)]
    return joined.select(
        member_id=joined.member_id,
        tier_code=joined.tier_code,
        joined_s=joined.joined_s,
        first_order_at=stats["first_at"],
        last_order_at=stats["last_at"],
        first_s=stats["first_s"],
        last_s=stats["last_s"],
        days_since_first=((now_s - stats["first_s"]) // DAY_SECONDS).cast("int64"),
        days_since_last=((now_s - stats["last_s"]) // DAY_SECONDS).cast("int64"),
        orders_all=stats["orders_all"].cast("int64").fill_null(zero),
        orders_window=stats["orders_window"].cast("int64").fill_null(zero),
        spend_window_fen=stats["spend_window_fen"].cast("int64").fill_null(zero),
        orders_12m=stats["orders_12m"].cast("int64").fill_null(zero),
        spend_12m_fen=stats["spend_12m_fen"].cast("int64").fill_null(zero),
        orders_by_join_7d=stats["orders_by_join_7d"].cast("int64").fill_null(zero),
        orders_by_join_30d=stats["orders_by_join_30d"].cast("int64").fill_null(zero),
        **{c: joined[c] for c in carried},
    )


def stored_stats(insight: ibis.Table) -> ibis.Table:
    """``buyer_stats`` as kept on ``member_insight`` by the last refresh, for the members
    nothing happened to since: their rows hold the same aggregates a scan of their orders
    would give now (see ``refresh``: every member whose aggregates could differ is
    recomputed from their orders instead)."""
    kept = insight.filter(insight.first_order_at.notnull())
    return kept.select(
        member_id=kept.member_id,
        first_s=kept.first_order_at.epoch_seconds(),
        last_s=kept.last_order_at.epoch_seconds(),
        **{name: kept[column] for name, column in STORED.items()},
    ).select(*STATS_COLUMNS)


def expired_stats(
    purchases: ibis.Table, *, since: datetime, as_of: datetime, window_days: int
) -> ibis.Table:
    """Per member, the orders and net spend that were inside the RFM window and the 12
    months ``since`` (the last refresh) and are outside them ``as_of``: what the nightly
    run takes off the stored aggregates as time passes. The same edges as ``buyer_stats``
    (epoch seconds), so the stored and the recomputed windows agree to the second."""
    was_s, now_s = epoch(since), epoch(as_of)
    p = purchases

    def left(days: int) -> ibis.Value:
        return (p.paid_s > was_s - days * DAY_SECONDS) & (p.paid_s <= now_s - days * DAY_SECONDS)

    window, year = left(window_days), left(YEAR_DAYS)
    return p.group_by("member_id").aggregate(
        orders_window=window.ifelse(1, 0).sum(),
        spend_window_fen=window.ifelse(p.net_fen, 0).sum(),
        orders_12m=year.ifelse(1, 0).sum(),
        spend_12m_fen=year.ifelse(p.net_fen, 0).sum(),
    )


STATS_COLUMNS = (
    "member_id",
    "first_at",
    "last_at",
    "first_s",
    "last_s",
    "orders_all",
    "orders_window",
    "spend_window_fen",
    "orders_12m",
    "spend_12m_fen",
    "orders_by_join_7d",
    "orders_by_join_30d",
)


def average_gap_days(facts: ibis.Table) -> ibis.Table:
    """Each repeat buyer's average days between orders. One value per buyer, so the
    brand's rhythm is not set by its few heaviest buyers."""
    repeat = facts.filter(facts.orders_all >= 2)
    gap = (repeat.last_s - repeat.first_s) / (repeat.orders_all - 1) / DAY_SECONDS
    return repeat.select(member_id=repeat.member_id, gap_days=gap)


def window_start(as_of: datetime, days: int) -> datetime:
    return as_of - timedelta(days=days)
