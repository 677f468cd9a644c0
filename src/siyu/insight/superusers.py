"""Super users (超级用户) and their early signals, as Ibis expressions.

The definition is the programme document's ``super_users`` section: conditions combined
with ``any`` or ``all``. Spend and orders count the last 12 months (``facts``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import ibis

from siyu.insight.engine import epoch
from siyu.insight.rules import DAY_SECONDS
from siyu.programme.rules import Programme, SuperUsers, fen

PAID_STATES = ("active", "grace")  # a trial is not yet a paying member


def paid_members(subscriptions: ibis.Table) -> ibis.Table:
    """Members holding a paid membership now (active or in grace)."""
    held = subscriptions.filter(subscriptions.state.isin(PAID_STATES))
    return held.select(paid_id=held.member_id).distinct()


def referrals(members: ibis.Table) -> ibis.Table:
    """How many members each member brought in (``referrer_id``)."""
    referred = members.filter(members.referrer_id.notnull())
    return referred.group_by(referrer=referred.referrer_id).aggregate(referrals=referred.count())


def with_flag(
    facts: ibis.Table,
    definition: SuperUsers,
    *,
    programme: Programme,
    paid: ibis.Table,
    referred: ibis.Table,
    average_spend_fen: float,
) -> ibis.Table:
    """Every row of ``facts`` with its ``super_user`` flag added: what the refresh places
    members from in one pass (see ``rfm.with_scores``)."""
    t = facts.left_join(paid, facts.member_id == paid.paid_id)
    t = t.left_join(referred, t.member_id == referred.referrer)
    conditions: list[ibis.Value] = []
    if definition.paid_member:
        conditions.append(t.paid_id.notnull())
    if definition.min_tier is not None:
        codes = [level.code for level in programme.tiers.levels]
        rank = t.tier_code.substitute({code: i for i, code in enumerate(codes)}, else_=-1)
        conditions.append(rank.cast("int64") >= codes.index(definition.min_tier))
    if definition.min_spend_12m is not None:
        conditions.append(t.spend_12m_fen >= fen(definition.min_spend_12m))
    if definition.min_orders_per_month is not None:
        conditions.append(t.orders_12m >= float(definition.min_orders_per_month * 12))
    if definition.min_spend_multiple is not None:
        mark = float(Decimal(average_spend_fen) * definition.min_spend_multiple)
        conditions.append((t.spend_12m_fen > 0) & (t.spend_12m_fen >= mark))
    if definition.min_referrals is not None:
        conditions.append(t.referrals.fill_null(0) >= definition.min_referrals)
    if not conditions:
        flag: ibis.Value = ibis.literal(False)
    else:
        flag = conditions[0]
        for condition in conditions[1:]:
            flag = (flag | condition) if definition.match == "any" else (flag & condition)
    return t.select(*facts.columns, super_user=flag.fill_null(False))


def early_signals(members: ibis.Table, *, as_of: datetime, utc_offset_seconds: int) -> ibis.Table:
    """Per join cohort (brand-local month): members, those who bought within 7 days of
    joining, those with a second purchase within 30 days, both (early), and how many of
    the early and of the rest are super users now. ``members``: member facts with their
    ``super_user`` flag. A cohort is mature once a year has passed since its last day, so
    ``now`` is at least a year after joining.

    Counted per brand-local day of joining first, then per month: the month's name is
    spelled once per day, not once per member (a million members joined on a thousand
    days), and a month is whole days, so the sums are the same."""
    t = members
    local = (t.joined_s + utc_offset_seconds).cast("int64")
    first7 = t.orders_by_join_7d >= 1
    second30 = t.orders_by_join_30d >= 2
    early = first7 & second30
    rows = t.select(
        day=local // DAY_SECONDS,
        first7=first7.ifelse(1, 0),
        second30=second30.ifelse(1, 0),
        early=early.ifelse(1, 0),
        early_super=(early & t.super_user).ifelse(1, 0),
        other_super=(~early & t.super_user).ifelse(1, 0),
    )
    days = rows.group_by("day").aggregate(
        members=rows.count(),
        first7=rows.first7.sum(),
        second30=rows.second30.sum(),
        early=rows.early.sum(),
        early_super=rows.early_super.sum(),
        other_super=rows.other_super.sum(),
    )
    days = days.mutate(cohort=(days.day * DAY_SECONDS).as_timestamp("s").strftime("%Y-%m"))
    year_ago = epoch(as_of) + utc_offset_seconds - 365 * DAY_SECONDS
    grouped = days.group_by("cohort").aggregate(
        members=days.members.sum(),
        first_within_7d=days.first7.sum(),
        second_within_30d=days.second30.sum(),
        early=days.early.sum(),
        early_super=days.early_super.sum(),
        other_super=days.other_super.sum(),
    )
    # mature: the cohort month ended a year ago (its last joiner joined before that)
    return grouped.mutate(
        mature=grouped.cohort < ibis.literal(year_ago).as_timestamp("s").strftime("%Y-%m")
    )
