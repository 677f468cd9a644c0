"""The dashboard's figures, read set-based and scoped to the viewer.

Member counts, the tier distribution and points outstanding come from the members table
(one aggregate each, no member loaded into Python); paid-membership KPIs from
``siyu.paid.kpis``. Headquarters roles read lifecycle stages, RFM groups and super users
from what the nightly refresh materialized (``insight_groups`` of its last run, a few
rows whatever the brand's size) and the monthly trend from ``lifecycle_matrix`` and
``insight_early_signals``; guides and store managers, whose book is a slice the groups do
not cover, read their members' ``member_insight`` rows. The KPI comparison (this period,
the previous one, the same period last year) is ``siyu.insight.kpis``' report, the one
``GET /insight/kpis`` answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.auth import Principal, Role
from siyu.core.db import Database
from siyu.core.errors import NotFound
from siyu.insight import kpis, views
from siyu.insight.models import EarlySignal, InsightRun, LifecycleMatrix, MemberInsight
from siyu.members.models import Member
from siyu.paid import kpis as paid_kpis
from siyu.programme import service as programmes
from siyu.web import rules

# Months in the trend chart.
TREND_MONTHS = 12

# Roles that see brand-wide business figures (paid KPIs); guides and store managers see
# their own book's counts only.
BRAND_ROLES = frozenset({Role.admin, Role.operator, Role.analyst})

STAGES = ("prospect", "new", "active", "silent", "sleeping", "churned")
RFM_GROUPS = (
    "important_value",
    "important_develop",
    "important_keep",
    "important_retain",
    "general_value",
    "general_develop",
    "general_keep",
    "general_retain",
)


def scoped(query: Any, principal: Principal) -> Any:
    """Restrict a query over ``members`` to the viewer's book."""
    if principal.role is Role.guide:
        return query.where(Member.guide_id == principal.staff_id)
    if principal.role is Role.store_manager:
        return query.where(Member.store_id == principal.store_id)
    return query


@dataclass
class Dashboard:
    members: int
    active_members: int
    points_outstanding: int
    tiers: list[tuple[str, str, int]]  # code, name, members (ladder order, then unknown)
    stages: list[tuple[str, int]] | None  # None: not computed yet
    rfm: list[tuple[str, int]] | None
    super_users: int | None
    insight_at: datetime | None
    paid: paid_kpis.PaidKpis | None
    paid_trend: list[paid_kpis.PaidKpis]
    super_share: float | None = None  # of the members the refresh placed
    value_multiple: float | None = None  # a super user's 12-month spend over an ordinary one's
    trend: list[TrendMonth] = field(default_factory=list)


@dataclass(frozen=True)
class TrendMonth:
    """One brand-local month of the trend: members who joined in it, and members per
    lifecycle stage at its end (the current month: up to the last refresh)."""

    month: str
    new_members: int | None
    stages: dict[str, int]


@dataclass(frozen=True)
class KpiRow:
    name: str
    zh: str
    en: str
    current: str
    previous: str
    last_year: str
    vs_previous: kpis.Change
    vs_last_year: kpis.Change
    previous_trend: str  # up | down | flat
    last_year_trend: str


@dataclass(frozen=True)
class Comparison:
    """The KPI report of a period as the dashboard shows it."""

    report: kpis.KpiReport
    rows: list[KpiRow]

    @property
    def period(self) -> kpis.Period:
        return self.report.current.period


def compare(
    db: Database,
    choice: str,
    start: date | None,
    end: date | None,
    *,
    today: date,
    tz: str,
) -> Comparison:
    """The KPIs of the picked period beside the previous period and last year, as
    ``GET /insight/kpis`` answers them: the report the nightly KPI job stored for the
    period (the rolling periods end yesterday, as the job's do), else computed once and
    stored, so the next view reads it. Bad dates raise ``InvalidInput``."""
    first, last = rules.period_dates(choice, start, end, today=today)
    period = kpis.period_of(first, last, today=today, days=30)
    report = kpis.report_for(db, period, tz=tz)
    rows = []
    for name, zh, en, vs_previous, vs_last_year in kpis.figures_rows(report):
        rows.append(
            KpiRow(
                name,
                zh,
                en,
                kpis.show(name, vs_previous.value),
                kpis.show(name, vs_previous.against),
                kpis.show(name, vs_last_year.against),
                vs_previous,
                vs_last_year,
                rules.trend(vs_previous.delta),
                rules.trend(vs_last_year.delta),
            )
        )
    return Comparison(report, rows)


def _trend(session: Session) -> list[TrendMonth]:
    """The last months from the materialized matrix and early signals (small tables)."""
    months = sorted(
        session.scalars(
            select(LifecycleMatrix.month)
            .distinct()
            .order_by(LifecycleMatrix.month.desc())
            .limit(TREND_MONTHS)
        )
    )
    if not months:
        return []
    stages: dict[str, dict[str, int]] = {m: {} for m in months}
    for month, stage, n in session.execute(
        select(LifecycleMatrix.month, LifecycleMatrix.to_stage, func.sum(LifecycleMatrix.members))
        .where(LifecycleMatrix.month.in_(months))
        .group_by(LifecycleMatrix.month, LifecycleMatrix.to_stage)
    ):
        stages[month][stage] = int(n or 0)
    joined = dict(
        session.execute(
            select(EarlySignal.cohort, EarlySignal.members).where(EarlySignal.cohort.in_(months))
        ).all()
    )
    return [TrendMonth(m, int(joined[m]) if m in joined else None, stages[m]) for m in months]


def build(session: Session, principal: Principal, *, tz: str) -> Dashboard:
    total, active, points = session.execute(
        scoped(
            select(
                func.count(),
                func.count().filter(Member.status == "active"),
                func.coalesce(func.sum(Member.points_balance), 0),
            ).select_from(Member),
            principal,
        ).where(Member.status != "merged")
    ).one()
    by_tier = dict(
        session.execute(
            scoped(
                select(Member.tier_code, func.count())
                .select_from(Member)
                .where(Member.status != "merged"),
                principal,
            ).group_by(Member.tier_code)
        ).all()
    )
    tiers: list[tuple[str, str, int]] = []
    version = programmes.in_force(session)
    if version is not None:
        for level in programmes.programme_of(version).tiers.levels:
            tiers.append((level.code, level.name, int(by_tier.pop(level.code, 0))))
    for code, count in sorted(by_tier.items(), key=lambda kv: str(kv[0])):
        tiers.append((code or "—", code or "—", int(count)))

    stages = rfm = None
    super_users = None
    insight_at = None
    super_share = multiple = None
    trend: list[TrendMonth] = []
    if principal.role in BRAND_ROLES:
        try:
            life, groups, supers = (
                views.lifecycle(session),
                views.rfm(session),
                views.super_users(session),
            )
        except NotFound:  # no refresh has finished yet
            pass
        else:
            insight_at = life.computed_at
            stages = [(g.key, g.members) for g in life.stages]
            rfm = (
                [(g.key, g.members) for g in groups.groups]
                if any(g.members for g in groups.groups)
                else None
            )
            super_users, super_share = supers.super_users, supers.share
            multiple = supers.value_multiple
        trend = _trend(session)
    else:
        stages, rfm, super_users, insight_at = _book_insight(session, principal)
        if super_users is not None and total:
            super_share = round(super_users / int(total), 4)

    paid = None
    paid_trend: list[paid_kpis.PaidKpis] = []
    if principal.role in BRAND_ROLES:
        paid_trend = paid_kpis.kpis_by_month(session, 6, tz=tz)
        paid = paid_trend[-1] if paid_trend else None
    return Dashboard(
        members=int(total),
        active_members=int(active),
        points_outstanding=int(points),
        tiers=tiers,
        stages=stages,
        rfm=rfm,
        super_users=super_users,
        insight_at=insight_at,
        paid=paid,
        paid_trend=paid_trend,
        super_share=super_share,
        value_multiple=multiple,
        trend=trend,
    )


def _book_insight(
    session: Session, principal: Principal
) -> tuple[list[tuple[str, int]] | None, list[tuple[str, int]] | None, int | None, datetime | None]:
    """Stages, RFM groups and super users of a guide's or a store's members, from their
    ``member_insight`` rows (the materialized groups are brand-wide)."""
    stages = rfm = None
    super_users = None
    insight_at = None
    computed = session.execute(
        scoped(
            select(func.count())
            .select_from(MemberInsight)
            .join(Member, Member.id == MemberInsight.member_id)
            .where(MemberInsight.stage.is_not(None)),
            principal,
        )
    ).one()
    if computed[0]:
        # A member's row changes only when something about them did, so the refresh's
        # time is its last finished run, not the newest row.
        insight_at = session.scalar(
            select(InsightRun.finished_at)
            .where(InsightRun.step == "refresh", InsightRun.status == "done")
            .order_by(InsightRun.as_of.desc())
            .limit(1)
        )
        by_stage = dict(
            session.execute(
                scoped(
                    select(MemberInsight.stage, func.count())
                    .join(Member, Member.id == MemberInsight.member_id)
                    .group_by(MemberInsight.stage),
                    principal,
                )
            ).all()
        )
        stages = [(s, int(by_stage.get(s, 0))) for s in STAGES]
        scale = views.last_scale(session)
        group = views.rfm_group_sql(scale) if scale is not None else None
        by_group = (
            dict(
                session.execute(
                    scoped(
                        select(group, func.count())
                        .select_from(MemberInsight)
                        .join(Member, Member.id == MemberInsight.member_id)
                        .where(group.is_not(None))
                        .group_by(group),
                        principal,
                    )
                ).all()
            )
            if group is not None
            else {}
        )
        rfm = [(g, int(by_group.get(g, 0))) for g in RFM_GROUPS] if by_group else None
        super_users = int(
            session.scalar(
                scoped(
                    select(func.count())
                    .select_from(MemberInsight)
                    .join(Member, Member.id == MemberInsight.member_id)
                    .where(MemberInsight.super_user.is_(True)),
                    principal,
                )
            )
            or 0
        )
    return stages, rfm, super_users, insight_at


# Days of the stores page's figures: a month of business, ending now.
STORE_DAYS = 30


@dataclass
class StoreFigures:
    """A store's last 30 days: what its members and its guests bought, and who joined."""

    member_sales_fen: int = 0
    guest_sales_fen: int = 0
    member_orders: int = 0
    buyers: int = 0
    joined: int = 0

    @property
    def member_sales_share(self) -> float | None:
        """会销比 of the store: member revenue / all revenue, guests included."""
        total = self.member_sales_fen + self.guest_sales_fen
        return self.member_sales_fen / total if total else None


def store_figures(session: Session, *, now: datetime) -> dict[int, StoreFigures]:
    """Sales of the window by store, in two grouped queries over the window's orders (the
    ``paid_at`` index bounds them) and one over its joins (``joined_at``), never a query
    per store. Net of refunds, as the KPIs count sales."""
    from datetime import timedelta

    from siyu.orders.models import Order

    since = now - timedelta(days=STORE_DAYS)
    net = Order.amount_fen - Order.refunded_fen
    figures: dict[int, StoreFigures] = {}
    rows = session.execute(
        select(
            Order.store_id,
            Order.member_id.is_not(None),
            func.coalesce(func.sum(net), 0),
            func.count(),
            func.count(func.distinct(Order.member_id)),
        )
        .where(Order.paid_at >= since, Order.paid_at <= now, Order.store_id.is_not(None))
        .group_by(Order.store_id, Order.member_id.is_not(None))
    ).all()
    for store_id, is_member, sales, orders, buyers in rows:
        f = figures.setdefault(store_id, StoreFigures())
        if is_member:
            f.member_sales_fen, f.member_orders, f.buyers = int(sales), int(orders), int(buyers)
        else:
            f.guest_sales_fen = int(sales)
    for store_id, joined in session.execute(
        select(Member.store_id, func.count())
        .where(Member.joined_at >= since, Member.joined_at <= now, Member.store_id.is_not(None))
        .group_by(Member.store_id)
    ).all():
        figures.setdefault(store_id, StoreFigures()).joined = int(joined)
    return figures
