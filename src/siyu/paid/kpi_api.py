"""Paid membership KPIs for operators and analysts: one month, or the last N months."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from siyu.api.deps import SessionDep, require
from siyu.core.auth import Principal, Role
from siyu.core.errors import Problem, invalid
from siyu.paid import kpis as paid_kpis

router = APIRouter(tags=["paid"])

Reader = Annotated[Principal, Depends(require(Role.admin, Role.operator, Role.analyst))]


def _month(text: str) -> date:
    try:
        year, month = (int(part) for part in text.split("-"))
        return date(year, month, 1)
    except ValueError:
        raise invalid([Problem("month", f"'{text}' is not a month; write it as YYYY-MM")]) from None


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


@router.get("/paid/kpis")
def month_kpis(
    request: Request,
    session: SessionDep,
    who: Reader,
    month: Annotated[str | None, Query(description="brand-local month, YYYY-MM")] = None,
) -> dict[str, Any]:
    """Penetration, conversion, renewal, churn, benefit usage, paid vs free GMV, ROI."""
    found = paid_kpis.kpis(session, month=_month(month) if month else None, tz=_tz(request))
    return asdict(found)


@router.get("/paid/kpis/monthly")
def monthly_kpis(
    request: Request,
    session: SessionDep,
    who: Reader,
    months: Annotated[int, Query(ge=1, le=36)] = 12,
) -> list[dict[str, Any]]:
    """The KPIs of the last ``months`` months, oldest first."""
    return [asdict(k) for k in paid_kpis.kpis_by_month(session, months, tz=_tz(request))]
