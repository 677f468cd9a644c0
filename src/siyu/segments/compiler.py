"""A parsed condition tree compiled to one Ibis expression: the members it selects.

Every leaf becomes a boolean column expression over the profile; behaviour conditions
that need order lines become one semi-join (``member_id IN (…)``) over the purchases.
The whole tree is one filter on one table, so a segment is one query whatever its size,
and the same expression compiles to DuckDB, PostgreSQL or Spark SQL.

Each leaf is coalesced to false, so a member with no value for a field fails the
condition and ``not`` of it holds for them; ``ne``, ``not_in`` and ``has_none`` are true
for members without a value (they are not that value).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import reduce
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir

from siyu.core import clock
from siyu.segments import rules
from siyu.segments.profile import Sources
from siyu.segments.rules import (
    And,
    BoughtCategory,
    Condition,
    JoinedNeverBought,
    Kind,
    Node,
    NoPurchaseSince,
    Not,
    Or,
)

HOLDING_PAID = ("trial", "active", "grace")


@dataclass(frozen=True)
class Context:
    """The instant and the brand's timezone the tree is evaluated at."""

    now: datetime
    tz: str

    def ago(self, days: int) -> ir.TimestampScalar:
        return _instant(self.now - timedelta(days=days))

    def day_start(self, day: date) -> ir.TimestampScalar:
        """Brand-local midnight starting ``day``, as a UTC instant."""
        local = datetime.combine(day, time(0), tzinfo=ZoneInfo(self.tz))
        return _instant(local)


def _instant(at: datetime) -> ir.TimestampScalar:
    return ibis.literal(clock.as_utc(at).replace(tzinfo=None), type="timestamp")


def members(node: Node, sources: Sources, ctx: Context) -> ir.Table:
    """The profile rows of the members the tree selects."""
    return sources.profile.filter(predicate(node, sources, ctx))


def predicate(node: Node, sources: Sources, ctx: Context) -> ir.BooleanValue:
    if isinstance(node, And):
        return reduce(operator.and_, [predicate(i, sources, ctx) for i in node.items])
    if isinstance(node, Or):
        return reduce(operator.or_, [predicate(i, sources, ctx) for i in node.items])
    if isinstance(node, Not):
        return ~predicate(node.item, sources, ctx)
    return _leaf(node, sources, ctx).fill_null(False)


def _leaf(node: Node, sources: Sources, ctx: Context) -> ir.BooleanValue:
    p = sources.profile
    if isinstance(node, Condition):
        return _condition(node, p, ctx)
    if isinstance(node, NoPurchaseSince):
        return p.last_order_at.isnull() | (p.last_order_at < ctx.ago(node.days))
    if isinstance(node, JoinedNeverBought):
        return (p.joined_at >= ctx.ago(node.days)) & (p.order_count == 0)
    if isinstance(node, BoughtCategory):
        buys = sources.purchases
        recent = buys.filter(buys.category == node.category, buys.paid_at >= ctx.ago(node.days))
        if node.at_least > 1:
            counted = recent.group_by("member_id").aggregate(orders=recent.order_id.nunique())
            recent = counted.filter(counted.orders >= node.at_least)
        return p.member_id.isin(recent.member_id)
    raise TypeError(f"not a condition: {node!r}")  # pragma: no cover - the parser guards


def _condition(node: Condition, p: ir.Table, ctx: Context) -> ir.BooleanValue:
    spec = rules.FIELDS[node.field]
    op, value = node.op, node.value
    if node.field == "paid":
        holds = p.paid_state.isin(HOLDING_PAID) | (
            (p.paid_state == "cancelled") & (p.paid_until > _instant(ctx.now))
        )
        holds = holds.fill_null(False)
        return holds if value else ~holds
    if node.field == "channels":
        return _channels(p.channel_mask, op, value)
    column = p[node.field]
    if op == "is_null":
        return column.isnull()
    if op == "not_null":
        return column.notnull()
    if spec.kind is Kind.list:
        return _list(column, op, value)
    if spec.kind in (Kind.datetime, Kind.date):
        return _when(column, spec.kind, op, value, ctx)
    if spec.kind is Kind.bool:
        return column.fill_null(False) == value
    if op == "eq":
        return column == value
    if op == "ne":
        return column.isnull() | (column != value)
    if op == "in":
        return column.isin(list(value))
    if op == "not_in":
        return column.isnull() | column.notin(list(value))
    if op == "gt":
        return column > value
    if op == "gte":
        return column >= value
    if op == "lt":
        return column < value
    if op == "lte":
        return column <= value
    if op == "between":
        return column.between(value[0], value[1])
    raise ValueError(f"operator {op} on {node.field}")  # pragma: no cover - the parser guards


def _list(column: ir.ArrayValue, op: str, value: object) -> ir.BooleanValue:
    if op == "has":
        return column.contains(value)
    values = list(value)  # type: ignore[call-overload]
    contains = [column.contains(v).fill_null(False) for v in values]
    if op == "has_all":
        return reduce(operator.and_, contains)
    any_ = reduce(operator.or_, contains)
    return any_ if op == "has_any" else ~any_


def _channels(mask: ir.IntegerValue, op: str, value: object) -> ir.BooleanValue:
    """Channel identities are bits of ``channel_mask`` (see ``profile``)."""
    names = [value] if op == "has" else list(value)  # type: ignore[call-overload]
    bits = 0
    for name in names:
        bits |= 1 << rules.IDENTITY_CHANNELS.index(name)
    held = mask.fill_null(0) & bits
    if op == "has_all":
        return held == bits
    if op == "has_none":
        return held == 0
    return held != 0


def _when(column: ir.Value, kind: Kind, op: str, value: object, ctx: Context) -> ir.BooleanValue:
    if op == "within_days":
        return column >= ctx.ago(value)  # type: ignore[arg-type]
    if op == "more_than_days_ago":
        return column < ctx.ago(value)  # type: ignore[arg-type]
    if kind is Kind.date:  # calendar days compare as they are
        if op == "before":
            return column < value
        if op == "after":
            return column > value
        low, high = value  # type: ignore[misc]
        return column.between(low, high)
    # instants compare against brand-local day boundaries
    if op == "before":
        return column < ctx.day_start(value)  # type: ignore[arg-type]
    if op == "after":
        return column >= ctx.day_start(value + timedelta(days=1))  # type: ignore[operator]
    low, high = value  # type: ignore[misc]
    return (column >= ctx.day_start(low)) & (column < ctx.day_start(high + timedelta(days=1)))


def count_sql(node: Node, sources: Sources, ctx: Context, *, dialect: str = "duckdb") -> str:
    """The one query that counts a tree's members, as SQL of a dialect."""
    return str(ibis.to_sql(members(node, sources, ctx).count(), dialect=dialect))
