"""Insight in the console (/console/insight): lifecycle transitions, the RFM grid, cohort
retention, the CLV distribution and the health diagnosis.

Every page reads what the nightly jobs materialized, through the functions the insight API
answers with (``insight.views``, ``insight.clv_api``, ``insight.kpis.cohorts_for``,
``insight.diagnosis.diagnose``), so a page is a few small indexed reads whatever the
brand's size; member lists are keyset pages of 50. When a result has not been computed
yet the page says which command or job fills it. The roles are the insight API's: admin,
operator and analyst (phones masked for analysts, as everywhere).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.api.deps import SessionDep
from siyu.core import clock
from siyu.core.auth import Principal, Role
from siyu.core.db import Database
from siyu.core.errors import NotFound
from siyu.insight import clv_api, diagnosis, kpis, views
from siyu.insight.diagnosis_rules import Finding, Outcome, Severity
from siyu.insight.models import MemberInsight
from siyu.insight.rules import RFM_GROUP_NAMES
from siyu.members.models import Member
from siyu.members.schemas import MemberRead
from siyu.web.deps import Console, ConsoleDep, PageRoute, require_role
from siyu.web.render import locale_of, render

router = APIRouter(prefix="/console", route_class=PageRoute, include_in_schema=False)

# The insight API's readers (admins may do everything).
READERS = (Role.operator, Role.analyst)

STAGES = ("prospect", "new", "active", "silent", "sleeping", "churned")
# The RFM grid: the four important groups above the four general ones, each row from the
# best (all three high) to the one to win back.
RFM_ROWS = (
    ("important_value", "important_develop", "important_keep", "important_retain"),
    ("general_value", "general_develop", "general_keep", "general_retain"),
)
# R, F and M high (True) or low for each group, as the grid's little legend shows them.
RFM_HIGHS = {
    "important_value": (True, True, True),
    "important_develop": (True, False, True),
    "important_keep": (False, True, True),
    "important_retain": (False, False, True),
    "general_value": (True, True, False),
    "general_develop": (True, False, False),
    "general_keep": (False, True, False),
    "general_retain": (False, False, False),
}
PAGE = 50  # members per page of a group's list
TOP_CLV = 20  # members in the CLV page's top list
MATRIX_MONTHS = 12
SEVERITY_ORDER = {Severity.high: 0, Severity.medium: 1, Severity.low: 2}


def _reader(console: Console) -> None:
    require_role(console, *READERS)


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _page(request: Request, console: Console, template: str, tab: str, **context: Any) -> Response:
    return render(request, template, {"user": console, "tab": tab, **context})


# --- shaping for the charts (pure) ---------------------------------------------------------


def matrix_grid(cells: list[tuple[str, str, int]]) -> dict[str, Any]:
    """One month's transition cells as a heat map: rows are the stage at the end of the
    month before ("none": not yet placed), columns the stage at the end of the month.

    Returns the row and column keys (rows without any member left out), ``data`` as
    ``[column, row, members]`` triples for ECharts, each row's total, how many stayed in
    their stage, and the largest cell (the colour scale's top)."""
    present = {f for f, _, n in cells if n}
    rows = [s for s in ("none", *STAGES) if s in present]
    cols = list(STAGES)
    counts = {(f, t): n for f, t, n in cells}
    data = [
        [ci, ri, counts.get((r, c), 0)] for ri, r in enumerate(rows) for ci, c in enumerate(cols)
    ]
    totals = {r: sum(counts.get((r, c), 0) for c in cols) for r in rows}
    stayed = sum(counts.get((s, s), 0) for s in STAGES)
    placed = sum(n for r, n in totals.items() if r != "none")
    return {
        "rows": rows,
        "cols": cols,
        "data": data,
        "totals": totals,
        "stayed": stayed,
        "placed": placed,
        "max": max((n for _, _, n in cells), default=0),
    }


def heat(value: float | None, top: float) -> float:
    """A cell's colour strength, 0 to 1 (0 for an empty cell or an empty table)."""
    if value is None or top <= 0:
        return 0.0
    return round(min(max(value / top, 0.0), 1.0), 3)


def cohort_rows(cohorts: list[kpis.Cohort]) -> tuple[list[dict[str, Any]], int]:
    """Cohorts as table rows with each month's colour strength (scaled to the highest
    retention after the join month, so month 0, always the largest, does not wash the rest
    out), and the number of month columns."""
    width = max((len(c.retention) for c in cohorts), default=0)
    later = [r for c in cohorts for r in c.retention[1:] if r is not None]
    top = max(later, default=0.0)
    rows = []
    for c in cohorts:
        cells = []
        for k, rate in enumerate(c.retention):
            buyers = c.buyers[k] if k < len(c.buyers) else None
            cells.append(
                {
                    "rate": rate,
                    "buyers": buyers,
                    "heat": 1.0 if k == 0 and rate else heat(rate, top),
                }
            )
        rows.append({"month": c.month, "members": c.members, "cells": cells})
    return rows, width


def average_curve(cohorts: list[kpis.Cohort]) -> list[float | None]:
    """Retention k months after joining, weighted by cohort size over the cohorts that
    have reached month k."""
    width = max((len(c.retention) for c in cohorts), default=0)
    out: list[float | None] = []
    for k in range(width):
        reached = [c for c in cohorts if c.members and k < len(c.buyers)]
        size = sum(c.members for c in reached)
        out.append(round(sum(c.buyers[k] for c in reached) / size, 4) if size else None)
    return out


def sorted_findings(findings: list[Finding]) -> tuple[list[Finding], list[Finding]]:
    """Findings that fired, most severe first (the checks' own order within a severity),
    and the rest (passed, then not judged for want of data)."""
    fired = sorted(
        (f for f in findings if f.outcome is Outcome.fired),
        key=lambda f: SEVERITY_ORDER.get(f.severity, 9),
    )
    rest = sorted(
        (f for f in findings if f.outcome is not Outcome.fired),
        key=lambda f: 0 if f.outcome is Outcome.passed else 1,
    )
    return fired, rest


def _members_by_id(session: Session, ids: list[int], principal: Principal) -> dict[int, MemberRead]:
    """The members of one page (at most a page's ids), shaped with the API's phone masking."""
    if not ids:
        return {}
    found = session.scalars(select(Member).where(Member.id.in_(ids)))
    return {m.id: MemberRead.of(m, principal) for m in found}


# --- pages ---------------------------------------------------------------------------------


@router.get("/insight", response_class=HTMLResponse)
def lifecycle_page(
    request: Request, session: SessionDep, console: ConsoleDep, month: str | None = None
) -> Response:
    """Stages, the month-over-month transition matrix, super users and early signals."""
    _reader(console)
    try:
        life = views.lifecycle(session)
        supers = views.super_users(session)
    except NotFound:
        life = supers = None
    months = views.matrix(session, months=MATRIX_MONTHS).months
    chosen = next((m for m in months if m.month == month), months[-1] if months else None)
    grid = (
        matrix_grid([(c.from_stage, c.to_stage, c.members) for c in chosen.cells])
        if chosen
        else None
    )
    signals = views.early_signals(session, months=24)
    return _page(
        request,
        console,
        "console/insight.html",
        "lifecycle",
        life=life,
        supers=supers,
        months=[m.month for m in months],
        chosen=chosen,
        grid=grid,
        signals=signals,
        stages=STAGES,
    )


@router.get("/insight/rfm", response_class=HTMLResponse)
def rfm_page(request: Request, session: SessionDep, console: ConsoleDep) -> Response:
    """The eight RFM groups as a grid: members, spend and their shares."""
    _reader(console)
    try:
        rfm = views.rfm(session)
    except NotFound:
        rfm = None
    groups = {g.key: g for g in rfm.groups} if rfm else {}
    return _page(
        request,
        console,
        "console/insight_rfm.html",
        "rfm",
        rfm=rfm,
        groups=groups,
        grid=RFM_ROWS,
        highs=RFM_HIGHS,
    )


@router.get("/insight/rfm/{group}", response_class=HTMLResponse)
def rfm_group_page(
    request: Request,
    session: SessionDep,
    console: ConsoleDep,
    group: str,
    after: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """One group's members, a page at a time by member id (the API's keyset)."""
    _reader(console)
    rfm = views.rfm(session)  # no refresh yet: the error page says how to run one
    page = views.rfm_members(session, group, after=after, limit=PAGE)
    people = _members_by_id(session, [i.member_id for i in page.items], console.principal)
    return _page(
        request,
        console,
        "console/insight_rfm_group.html",
        "rfm",
        rfm=rfm,
        group=group,
        summary=next(g for g in rfm.groups if g.key == group),
        rows=[(item, people.get(item.member_id)) for item in page.items],
        next_after=page.next_after,
        after=after,
        highs=RFM_HIGHS[group],
        chinese=RFM_GROUP_NAMES[group],
    )


@router.get("/insight/cohorts", response_class=HTMLResponse)
def cohorts_page(
    request: Request,
    console: ConsoleDep,
    months: Annotated[int, Query(ge=3, le=36)] = kpis.COHORT_MONTHS,
) -> Response:
    """Join-month cohorts and the share who bought in each month since joining."""
    _reader(console)
    table = kpis.cohorts_for(_db(request), tz=_tz(request), months=months)
    rows, width = cohort_rows(table.cohorts)
    joined = sum(c.members for c in table.cohorts)
    return _page(
        request,
        console,
        "console/insight_cohorts.html",
        "cohorts",
        table=table,
        rows=rows,
        width=width,
        joined=joined,
        curve=average_curve(table.cohorts),
        months=months,
    )


@router.get("/insight/clv", response_class=HTMLResponse)
def clv_page(request: Request, session: SessionDep, console: ConsoleDep) -> Response:
    """The last CLV fit: expected value by decile, P(alive) bands, the most valuable
    members and the calibration report."""
    _reader(console)
    try:
        fit = clv_api.read_clv(session, console.principal)
        spread = clv_api.read_distribution(session, console.principal)
    except NotFound:
        fit = spread = None
    top: list[tuple[MemberInsight, MemberRead | None]] = []
    if fit is not None:
        best = list(
            session.scalars(
                select(MemberInsight)
                .where(MemberInsight.expected_value_fen.is_not(None))
                .order_by(MemberInsight.expected_value_fen.desc(), MemberInsight.member_id)
                .limit(TOP_CLV)
            )
        )
        people = _members_by_id(session, [r.member_id for r in best], console.principal)
        top = [(r, people.get(r.member_id)) for r in best]
    return _page(
        request,
        console,
        "console/insight_clv.html",
        "clv",
        fit=fit,
        spread=spread,
        top=top,
        expected_total=sum(d.total_fen for d in spread.deciles) if spread else 0,
        scored=sum(spread.p_alive_bands) if spread else 0,
    )


def _diagnosis(request: Request, start: date | None, end: date | None) -> diagnosis.Diagnosis:
    today = clock.local_date(clock.now(), _tz(request))
    period = kpis.period_of(start, end, today=today, days=diagnosis.DEFAULT_DAYS)
    return diagnosis.diagnose(_db(request), period, tz=_tz(request))


@router.get("/insight/diagnosis", response_class=HTMLResponse)
def diagnosis_page(
    request: Request,
    console: ConsoleDep,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
) -> Response:
    """The health diagnosis: findings by severity with evidence and remedy, then the checks
    that passed, and the headline KPIs against the same period last year."""
    _reader(console)
    found = _diagnosis(request, start, end)
    fired, rest = sorted_findings(found.findings)
    report = found.report
    headline = [
        {
            "name": name,
            "label": zh if locale_of(request) == "zh_CN" else en,
            "now": kpis.show(name, change.value),
            "then": kpis.show(name, change.against),
            "pct": change.pct,
            "down": change.delta < 0,
        }
        for name, zh, en in kpis.HEADLINE
        for change in [report.change(name, "last_year")]
    ]
    return _page(
        request,
        console,
        "console/insight_diagnosis.html",
        "diagnosis",
        d=found,
        fired=fired,
        rest=rest,
        headline=headline,
        zh=locale_of(request) == "zh_CN",
        last_year=report.last_year.period,
    )


@router.get("/insight/diagnosis/report", response_class=HTMLResponse)
def diagnosis_report(
    request: Request,
    console: ConsoleDep,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
) -> Response:
    """The same diagnosis as the self-contained HTML report (to save or send on)."""
    _reader(console)
    return HTMLResponse(diagnosis.render_html(_diagnosis(request, start, end)))
