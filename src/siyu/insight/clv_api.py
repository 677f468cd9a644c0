"""CLV routes: the last fit (parameters, calibration report, distribution), one member's
CLV, and running the fit now. The fit itself lives in ``clv_jobs`` (pymc-marketing is
imported only when a fit runs, so the app starts fast)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.api.deps import AnyRole, SessionDep, require
from siyu.core.auth import Principal, Role
from siyu.core.errors import NotFound
from siyu.insight.models import InsightRun, MemberInsight
from siyu.members import service as members

router = APIRouter(tags=["insight"])

Reader = Annotated[Principal, Depends(require(Role.operator, Role.analyst))]
Runner = Annotated[Principal, Depends(require(Role.analyst))]


class CalibrationRow(BaseModel):
    frequency: str  # repeat purchases in the calibration period: "0" … "6", "7+"
    customers: int
    actual: float  # mean repeat purchases in the holdout
    predicted: float


class Calibration(BaseModel):
    calibration_end: str
    holdout_days: int
    params: dict[str, float]
    buckets: list[CalibrationRow]


class Decile(BaseModel):
    decile: int
    members: int
    min_fen: int
    max_fen: int
    total_fen: int


class ClvRunRead(BaseModel):
    run_id: int
    status: str
    as_of: datetime
    finished_at: datetime | None
    model: str | None = None
    unit: str | None = None
    params: dict[str, float] | None = None
    spend_params: dict[str, float] | None = None  # p, q, v (the γ of the literature)
    customers: int = 0
    repeat_customers: int | None = None
    log_likelihood: float | None = None
    calibration: Calibration | None = None
    notes: list[str] = []
    seconds: dict[str, float] = {}
    error: str | None = None


class DistributionRead(BaseModel):
    run_id: int
    deciles: list[Decile]  # expected value over the next 365 days, lowest decile first
    top_decile_share: float | None  # of all expected value
    p_alive_bands: list[int]  # members with P(alive) in [0, 0.1), [0.1, 0.2), … [0.9, 1]


class MemberClvRead(BaseModel):
    member_id: int
    p_alive: float
    expected_purchases_90: float
    expected_purchases_365: float
    expected_value_fen: int | None
    computed_at: datetime


class ClvRunCreate(BaseModel):
    model: Literal["bgnbd", "pareto"] = "bgnbd"
    holdout_days: int = Field(default=90, ge=7, le=730)


def _detail(run: InsightRun) -> dict[str, Any]:
    try:
        return json.loads(run.detail) if run.detail.startswith("{") else {}
    except json.JSONDecodeError:
        return {}


def _read(run: InsightRun) -> ClvRunRead:
    detail = _detail(run)
    calibration = detail.get("calibration")
    if calibration is not None:
        calibration = Calibration(
            calibration_end=calibration["calibration_end"],
            holdout_days=calibration["holdout_days"],
            params=calibration["params"],
            buckets=[
                CalibrationRow(frequency=f, customers=n, actual=a, predicted=p)
                for f, n, a, p in calibration["buckets"]
            ],
        )
    return ClvRunRead(
        run_id=run.id,
        status=run.status,
        as_of=run.as_of,
        finished_at=run.finished_at,
        model=detail.get("model"),
        unit=detail.get("unit"),
        params=detail.get("params"),
        spend_params=detail.get("spend_params"),
        customers=run.rows,
        repeat_customers=detail.get("repeat_customers"),
        log_likelihood=detail.get("log_likelihood"),
        calibration=calibration,
        notes=detail.get("notes", []),
        seconds=detail.get("seconds", {}),
        error=None if detail or run.status != "failed" else run.detail,
    )


def _last_done(session: Session) -> InsightRun:
    from siyu.insight.clv_jobs import STEP

    run = session.scalar(
        select(InsightRun)
        .where(InsightRun.step == STEP, InsightRun.status == "done")
        .order_by(InsightRun.id.desc())
        .limit(1)
    )
    if run is None:
        raise NotFound(
            "CLV has not been computed yet; POST /insight/clv/runs or run the job insight.clv"
        )
    return run


@router.get("/insight/clv", response_model=ClvRunRead)
def read_clv(session: SessionDep, who: Reader) -> ClvRunRead:
    """The last finished fit: parameters, the calibration report, run figures."""
    return _read(_last_done(session))


@router.get("/insight/clv/distribution", response_model=DistributionRead)
def read_distribution(session: SessionDep, who: Reader) -> DistributionRead:
    """How expected value is spread over members (deciles) and how many are likely alive."""
    run = _last_done(session)
    detail = _detail(run)
    deciles = [
        Decile(decile=d, members=n, min_fen=lo, max_fen=hi, total_fen=s)
        for d, n, lo, hi, s in detail.get("deciles", [])
    ]
    total = sum(d.total_fen for d in deciles)
    return DistributionRead(
        run_id=run.id,
        deciles=deciles,
        top_decile_share=(deciles[-1].total_fen / total) if deciles and total > 0 else None,
        p_alive_bands=detail.get("p_alive_bands", []),
    )


@router.get("/insight/clv/members/{member_id}", response_model=MemberClvRead)
def read_member_clv(member_id: int, session: SessionDep, who: AnyRole) -> MemberClvRead:
    """One member's CLV from the last fit (guides see only their own members)."""
    members.get(session, member_id, principal=who)
    row = session.get(MemberInsight, member_id)
    if row is None or row.clv_computed_at is None or row.p_alive is None:
        raise NotFound(
            f"member {member_id} has no CLV: it is computed for members with a purchase "
            "by the last CLV run",
            field="member_id",
        )
    return MemberClvRead(
        member_id=member_id,
        p_alive=row.p_alive,
        expected_purchases_90=row.expected_purchases_90 or 0.0,
        expected_purchases_365=row.expected_purchases_365 or 0.0,
        expected_value_fen=row.expected_value_fen,
        computed_at=row.clv_computed_at,
    )


@router.get("/insight/clv/runs", response_model=list[ClvRunRead])
def list_runs(
    session: SessionDep, who: Reader, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[ClvRunRead]:
    """Recent CLV runs, newest first, failed ones with their error."""
    from siyu.insight.clv_jobs import STEP

    runs = session.scalars(
        select(InsightRun)
        .where(InsightRun.step == STEP)
        .order_by(InsightRun.id.desc())
        .limit(limit)
    )
    return [_read(run) for run in runs]


@router.post("/insight/clv/runs", response_model=ClvRunRead, status_code=201)
def run_now(request: Request, who: Runner, body: ClvRunCreate | None = None) -> ClvRunRead:
    """Fit and score now (it takes seconds on a demo brand, minutes on millions of members;
    the first fit in a process also compiles the model)."""
    from siyu.insight.clv_jobs import run_clv

    body = body or ClvRunCreate()
    db = request.app.state.db
    detail = run_clv(db, model=body.model, holdout_days=body.holdout_days)
    with db.unit_of_work() as session:
        run = session.get(InsightRun, detail["run_id"])
        assert run is not None
        return _read(run)
