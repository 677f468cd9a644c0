"""KPI, cohort and health-diagnosis routes for operators and analysts.

``GET /insight/kpis?from=&to=`` (brand-local dates; default the last 30 days) answers the
period's figures beside the previous period and the same period last year;
``GET /insight/cohorts`` the join-month retention table; ``GET /insight/diagnosis`` the
health diagnosis as data, or as the HTML report with ``format=html``.

Each answers the stored report (``computed_at`` says when it was computed; the nightly job
stores the standard periods), computing and storing it when there is none; ``fresh=true``
recomputes.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from siyu.api.deps import require
from siyu.core import clock
from siyu.core.auth import Principal, Role
from siyu.core.db import Database
from siyu.insight import diagnosis as diagnosis_service
from siyu.insight import kpis

router = APIRouter(tags=["insight"])

Reader = Annotated[Principal, Depends(require(Role.admin, Role.operator, Role.analyst))]
FromDate = Annotated[
    date | None, Query(alias="from", description="first brand-local day, YYYY-MM-DD")
]
ToDate = Annotated[date | None, Query(alias="to", description="last brand-local day, included")]
Fresh = Annotated[bool, Query(description="recompute now instead of answering the stored report")]


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _period(request: Request, start: date | None, end: date | None, days: int) -> kpis.Period:
    today = clock.local_date(clock.now(), _tz(request))
    return kpis.period_of(start, end, today=today, days=days)


def _change(change: kpis.Change) -> dict[str, float | None]:
    return {"against": change.against, "delta": change.delta, "pct": change.pct}


@router.get("/insight/kpis")
def period_kpis(
    request: Request,
    who: Reader,
    start: FromDate = None,
    end: ToDate = None,
    fresh: Fresh = False,
) -> dict[str, Any]:
    """The period's KPIs, the previous period's, last year's, and the changes (Δ and %)."""
    period = _period(request, start, end, 30)
    report = kpis.report_for(_db(request), period, tz=_tz(request), fresh=fresh)
    return {
        "computed_at": report.computed_at.isoformat(),
        "seconds": report.seconds,
        "timezone": report.tz,
        "current": asdict(report.current),
        "previous": asdict(report.previous),
        "last_year": asdict(report.last_year),
        "changes": {
            name: {
                "previous": _change(report.change(name, "previous")),
                "last_year": _change(report.change(name, "last_year")),
            }
            for name, _, _ in kpis.HEADLINE
        },
    }


@router.get("/insight/cohorts")
def cohort_table(
    request: Request,
    who: Reader,
    months: Annotated[int, Query(ge=1, le=36, description="join months, up to this one")] = 12,
    fresh: Fresh = False,
) -> dict[str, Any]:
    """Members by join month and the share who bought in each month since joining."""
    table = kpis.cohorts_for(_db(request), tz=_tz(request), months=months, fresh=fresh)
    return {
        "computed_at": table.computed_at.isoformat(),
        "seconds": table.seconds,
        "cohorts": [asdict(c) for c in table.cohorts],
    }


@router.get("/insight/diagnosis", response_model=None)
def health_diagnosis(
    request: Request,
    who: Reader,
    start: FromDate = None,
    end: ToDate = None,
    format: Annotated[Literal["json", "html"], Query()] = "json",
    fresh: Fresh = False,
) -> dict[str, Any] | HTMLResponse:
    """Every check over the period (default: the last twelve months) against last year."""
    period = _period(request, start, end, diagnosis_service.DEFAULT_DAYS)
    found = diagnosis_service.diagnose(_db(request), period, tz=_tz(request), fresh=fresh)
    if format == "html":
        return HTMLResponse(diagnosis_service.render_html(found))
    return diagnosis_service.as_dict(found)
