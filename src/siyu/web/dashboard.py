"""The dashboard's figures: what exists today, read set-based and scoped to the viewer.

Member counts, the tier distribution and points outstanding come from the members table
(one aggregate each, no member loaded into Python); paid-membership KPIs from
``siyu.paid.kpis``; lifecycle stages and RFM groups from ``member_insight`` when the
nightly refresh has filled it, otherwise the page says they are not computed yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.auth import Principal, Role
from siyu.insight.models import MemberInsight
from siyu.members.models import Member
from siyu.paid import kpis as paid_kpis
from siyu.programme import service as programmes

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
    computed = session.execute(
        scoped(
            select(func.count(), func.max(MemberInsight.computed_at))
            .select_from(MemberInsight)
            .join(Member, Member.id == MemberInsight.member_id)
            .where(MemberInsight.stage.is_not(None)),
            principal,
        )
    ).one()
    if computed[0]:
        insight_at = computed[1]
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
        by_group = dict(
            session.execute(
                scoped(
                    select(MemberInsight.rfm_group, func.count())
                    .join(Member, Member.id == MemberInsight.member_id)
                    .where(MemberInsight.rfm_group.is_not(None))
                    .group_by(MemberInsight.rfm_group),
                    principal,
                )
            ).all()
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

    paid = None
    trend: list[paid_kpis.PaidKpis] = []
    if principal.role in BRAND_ROLES:
        trend = paid_kpis.kpis_by_month(session, 6, tz=tz)
        paid = trend[-1] if trend else None
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
        paid_trend=trend,
    )
