"""Reading what the refresh materialized: the API and the CLI call these, never DuckDB, so
an answer is a few indexed rows whatever the brand's size."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, false, func, null, select, true
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.auth import Principal
from siyu.core.errors import InvalidInput, NotFound
from siyu.insight import schemas
from siyu.insight.models import (
    EarlySignal,
    InsightGroup,
    InsightRun,
    LifecycleMatrix,
    MemberInsight,
    RfmScale,
)
from siyu.insight.refresh import STEP
from siyu.insight.rules import (
    GROUP_BY_HIGHS,
    RFM_GROUP_NAMES,
    STAGE_NAMES,
    Stage,
    lift_points,
    scored_on,
    value_multiple,
)
from siyu.insight.rules import RfmScale as Scale
from siyu.members import service as members
from siyu.programme import service as programme_service

NO_REFRESH = (
    "no insight refresh has finished yet; run `siyu insight refresh` or POST /insight/refresh"
)


def last_run(session: Session) -> InsightRun:
    run = session.scalar(
        select(InsightRun)
        .where(InsightRun.step == STEP, InsightRun.status == "done")
        .order_by(InsightRun.as_of.desc(), InsightRun.id.desc())
        .limit(1)
    )
    if run is None:
        raise NotFound(NO_REFRESH, code="no_refresh")
    return run


def _detail(run: InsightRun) -> dict[str, Any]:
    try:
        value = json.loads(run.detail or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def run_read(run: InsightRun) -> schemas.RunRead:
    detail: dict[str, Any] | str = run.detail
    try:
        parsed = json.loads(run.detail) if run.detail else {}
        detail = parsed if isinstance(parsed, dict) else run.detail
    except ValueError:
        pass
    return schemas.RunRead(
        id=run.id,
        step=run.step,
        status=run.status,
        as_of=clock.as_utc(run.as_of),
        started_at=clock.as_utc(run.started_at),
        finished_at=clock.as_utc(run.finished_at) if run.finished_at else None,
        rows=run.rows,
        detail=detail,
    )


def runs(session: Session, *, limit: int = 50, step: str | None = None) -> list[schemas.RunRead]:
    stmt = select(InsightRun).order_by(InsightRun.id.desc()).limit(min(max(limit, 1), 500))
    if step:
        stmt = stmt.where(InsightRun.step == step)
    return [run_read(r) for r in session.scalars(stmt)]


def _groups(session: Session, run_id: int, dimension: str) -> dict[str, InsightGroup]:
    rows = session.scalars(
        select(InsightGroup).where(
            InsightGroup.run_id == run_id, InsightGroup.dimension == dimension
        )
    )
    return {row.key: row for row in rows}


def _group_reads(
    rows: dict[str, InsightGroup], order: list[str], names: dict[str, str]
) -> list[schemas.GroupRead]:
    members_total = sum(r.members for r in rows.values())
    spend_total = sum(r.spend_fen for r in rows.values())
    out = []
    for key in order:
        row = rows.get(key)
        n, spend, orders = (row.members, row.spend_fen, row.orders) if row else (0, 0, 0)
        out.append(
            schemas.GroupRead(
                key=key,
                name=names.get(key, key),
                members=n,
                member_share=round(n / members_total, 4) if members_total else 0.0,
                spend_fen=spend,
                spend_share=round(spend / spend_total, 4) if spend_total > 0 else 0.0,
                orders=orders,
            )
        )
    return out


def lifecycle(session: Session) -> schemas.LifecycleRead:
    run = last_run(session)
    marks = _detail(run).get("marks")
    return schemas.LifecycleRead(
        computed_at=clock.as_utc(run.finished_at or run.started_at),
        as_of=clock.as_utc(run.as_of),
        run_id=run.id,
        marks=schemas.MarksRead(**marks) if marks else None,
        stages=_group_reads(
            _groups(session, run.id, "stage"), [s.value for s in Stage], STAGE_NAMES
        ),
    )


def matrix(session: Session, *, months: int = 6) -> schemas.MatrixRead:
    if not 1 <= months <= 36:
        raise InvalidInput("months is 1 to 36", field="months")
    recent = list(
        session.scalars(
            select(LifecycleMatrix.month)
            .distinct()
            .order_by(LifecycleMatrix.month.desc())
            .limit(months)
        )
    )
    out = []
    for month in sorted(recent):
        cells = list(
            session.scalars(
                select(LifecycleMatrix)
                .where(LifecycleMatrix.month == month)
                .order_by(LifecycleMatrix.from_stage, LifecycleMatrix.to_stage)
            )
        )
        out.append(
            schemas.MatrixMonth(
                month=month,
                computed_at=clock.as_utc(max(c.computed_at for c in cells)),
                cells=[
                    schemas.MatrixCell(
                        from_stage=c.from_stage, to_stage=c.to_stage, members=c.members
                    )
                    for c in cells
                ],
            )
        )
    return schemas.MatrixRead(months=out)


def rfm(session: Session) -> schemas.RfmRead:
    run = last_run(session)
    return schemas.RfmRead(
        computed_at=clock.as_utc(run.finished_at or run.started_at),
        as_of=clock.as_utc(run.as_of),
        run_id=run.id,
        groups=_group_reads(
            _groups(session, run.id, "rfm"), list(RFM_GROUP_NAMES), RFM_GROUP_NAMES
        ),
    )


def recency_days(last_order_at: datetime | None, now: datetime) -> int | None:
    """Whole days since the last purchase, as of now: computed when read, not stored, so
    a member's row is not rewritten every night only because a day passed."""
    if last_order_at is None:
        return None
    return max(int((now - clock.as_utc(last_order_at)).total_seconds() // 86400), 0)


def last_scale(session: Session) -> Scale | None:
    """The RFM scale of the last refresh that recorded one (None: no refresh yet)."""
    row = session.scalar(select(RfmScale).order_by(RfmScale.run_id.desc()).limit(1))
    return row.rule() if row is not None else None


def member_read(
    row: MemberInsight, scale: Scale | None, now: datetime | None = None
) -> schemas.MemberInsightRead:
    """A member's insight row, with their RFM scores and group on ``scale``."""

    def at(value: Any) -> Any:
        return clock.as_utc(value) if value is not None else None

    scored = (
        scored_on(
            scale,
            last_order_at=at(row.last_order_at),
            frequency=row.frequency,
            monetary_fen=row.monetary_fen,
        )
        if scale is not None
        else None
    )
    return schemas.MemberInsightRead(
        member_id=row.member_id,
        stage=row.stage,
        stage_name=STAGE_NAMES.get(row.stage or ""),
        stage_since=at(row.stage_since),
        last_order_at=at(row.last_order_at),
        recency_days=recency_days(row.last_order_at, now or clock.now()),
        frequency=row.frequency,
        monetary_fen=row.monetary_fen,
        r_score=scored.r if scored else None,
        f_score=scored.f if scored else None,
        m_score=scored.m if scored else None,
        rfm_group=scored.group.value if scored else None,
        rfm_group_name=RFM_GROUP_NAMES.get(scored.group.value) if scored else None,
        super_user=bool(row.super_user),
        computed_at=at(row.computed_at),
        p_alive=row.p_alive,
        expected_purchases_90=row.expected_purchases_90,
        expected_purchases_365=row.expected_purchases_365,
        expected_value_fen=row.expected_value_fen,
        clv_computed_at=at(row.clv_computed_at),
    )


def rfm_group_sql(scale: Scale) -> ColumnElement[Any]:
    """A member's RFM group on ``scale`` as SQL over ``member_insight`` (null: never
    bought): high on a measure is at or past the edge of the ``high_from`` score."""
    at = scale.high_from - 2  # the edges begin at score 2
    measures = (
        (MemberInsight.last_order_at, scale.recent_from[at]),
        (MemberInsight.frequency, scale.frequency_from[at]),
        (MemberInsight.monetary_fen, scale.monetary_from[at]),
    )

    def high(column: Any, edge: Any, is_high: bool) -> ColumnElement[bool]:
        if edge is None:  # nobody reached the score
            return false() if is_high else true()
        return column >= edge if is_high else column < edge

    bought = and_(*(column.is_not(None) for column, _ in measures))
    return case(
        *(
            (
                and_(bought, *(high(c, e, h) for (c, e), h in zip(measures, highs, strict=True))),
                group.value,
            )
            for highs, group in GROUP_BY_HIGHS.items()
        ),
        else_=null(),
    )


def rfm_members(
    session: Session, group: str, *, after: int = 0, limit: int = 100
) -> schemas.MemberPage:
    """One page of a group's members by member id (keyset: pass ``next_after``). The group
    is derived, not stored (``models.RfmScale``): the page walks the members in id order
    and keeps the group's, so a small group's page reads more rows for each one kept."""
    if group not in RFM_GROUP_NAMES:
        raise InvalidInput(
            f"unknown RFM group '{group}'; one of: {', '.join(RFM_GROUP_NAMES)}", field="group"
        )
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit is 1 to 1000", field="limit")
    scale = last_scale(session)
    if scale is None:
        return schemas.MemberPage(items=[], next_after=None)
    rows = list(
        session.scalars(
            select(MemberInsight)
            .where(rfm_group_sql(scale) == group, MemberInsight.member_id > after)
            .order_by(MemberInsight.member_id)
            .limit(limit + 1)
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return schemas.MemberPage(
        items=[member_read(r, scale) for r in rows],
        next_after=rows[-1].member_id if more else None,
    )


def member(
    session: Session, member_id: int, *, principal: Principal | None = None
) -> schemas.MemberInsightRead:
    members.get(session, member_id, principal=principal)  # exists, and in the caller's scope
    row = session.get(MemberInsight, member_id)
    if row is None:
        raise NotFound(
            f"member {member_id} has no insight yet; it appears after the next refresh",
            code="no_insight",
        )
    return member_read(row, last_scale(session))


def super_users(session: Session) -> schemas.SuperUsersRead:
    run = last_run(session)
    rows = _groups(session, run.id, "super")
    supers, ordinary = rows.get("super"), rows.get("ordinary")
    n_super = supers.members if supers else 0
    n_ordinary = ordinary.members if ordinary else 0
    spend_super = supers.spend_fen if supers else 0
    spend_ordinary = ordinary.spend_fen if ordinary else 0
    version = programme_service.in_force(session, clock.as_utc(run.as_of))
    definition = None
    if version is not None:
        doc = programme_service.programme_of(version)
        if doc.super_users is not None:
            definition = doc.super_users.model_dump(mode="json", exclude_none=True)
    total = n_super + n_ordinary
    return schemas.SuperUsersRead(
        computed_at=clock.as_utc(run.finished_at or run.started_at),
        as_of=clock.as_utc(run.as_of),
        run_id=run.id,
        definition=definition,
        members=total,
        super_users=n_super,
        share=round(n_super / total, 4) if total else 0.0,
        super_spend_fen=spend_super,
        ordinary_spend_fen=spend_ordinary,
        value_multiple=value_multiple(spend_super, n_super, spend_ordinary, n_ordinary),
    )


def early_signals(session: Session, *, months: int = 24) -> schemas.EarlySignalsRead:
    rows = list(
        session.scalars(select(EarlySignal).order_by(EarlySignal.cohort.desc()).limit(months))
    )
    cohorts = []
    for row in sorted(rows, key=lambda r: r.cohort):
        other = row.members - row.early
        cohorts.append(
            schemas.EarlySignalRead(
                cohort=row.cohort,
                members=row.members,
                first_within_7d=row.first_within_7d,
                second_within_30d=row.second_within_30d,
                early=row.early,
                early_share=round(row.early / row.members, 4) if row.members else 0.0,
                early_super_rate=round(row.early_super / row.early, 4) if row.early else None,
                other_super_rate=round(row.other_super / other, 4) if other else None,
                lift_points=lift_points(row.early_super, row.early, row.other_super, other),
                mature=row.mature,
            )
        )
    mature = session.execute(
        select(
            func.sum(EarlySignal.early_super),
            func.sum(EarlySignal.early),
            func.sum(EarlySignal.other_super),
            func.sum(EarlySignal.members - EarlySignal.early),
        ).where(EarlySignal.mature.is_(True))
    ).one()
    computed = session.scalar(select(func.max(EarlySignal.computed_at)))
    return schemas.EarlySignalsRead(
        computed_at=clock.as_utc(computed) if computed else None,
        cohorts=cohorts,
        lift_points=lift_points(*(int(v or 0) for v in mature)),
    )
