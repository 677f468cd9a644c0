"""Insight routes: run the refresh, and read lifecycle, RFM and super users as materialized
by it (each answer carries the time it was computed). Admin, operator and analyst keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from siyu.api.deps import SessionDep, get_db, require
from siyu.core.auth import Principal, Role
from siyu.core.db import Database
from siyu.insight import schemas, views
from siyu.insight.refresh import refresh

router = APIRouter(tags=["insight"])

Reader = Annotated[Principal, Depends(require(Role.admin, Role.operator, Role.analyst))]


@router.post("/insight/refresh", status_code=201)
def run_refresh(
    request: Request,
    db: Annotated[Database, Depends(get_db)],
    who: Reader,
    as_of: Annotated[
        datetime | None, Query(description="evaluate as of this instant (default now)")
    ] = None,
    full: Annotated[
        bool,
        Query(description="recompute every member from every order, not only what changed"),
    ] = False,
) -> schemas.RefreshRead:
    """Run the refresh now (the nightly job does the same). Answers when it is done; on a
    large brand that takes a while, so the nightly job is the usual way."""
    result = refresh(db, as_of=as_of, tz=request.app.state.settings.timezone, full=full)
    return schemas.RefreshRead(
        run_id=result.run_id,
        as_of=result.as_of,
        members=result.members,
        buyers=result.buyers,
        super_users=result.super_users,
        transitions=result.transitions,
        events=result.events,
        mode="full" if result.full else "incremental",
        recomputed=result.recomputed,
        written=result.written,
        marks=schemas.MarksRead(**result.marks.__dict__),
        seconds={k: round(v, 3) for k, v in result.seconds.items()},
    )


@router.get("/insight/runs")
def list_runs(
    session: SessionDep,
    who: Reader,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    step: str | None = None,
) -> list[schemas.RunRead]:
    """Insight computations, newest first: what ran, as of when, how long, what it found."""
    return views.runs(session, limit=limit, step=step)


@router.get("/insight/lifecycle")
def lifecycle(session: SessionDep, who: Reader) -> schemas.LifecycleRead:
    """Members per lifecycle stage (prospect … churned) and the day marks in force."""
    return views.lifecycle(session)


@router.get("/insight/lifecycle/matrix")
def lifecycle_matrix(
    session: SessionDep, who: Reader, months: Annotated[int, Query(ge=1, le=36)] = 6
) -> schemas.MatrixRead:
    """Stage at the end of the month before against stage at the end of each month."""
    return views.matrix(session, months=months)


@router.get("/insight/rfm")
def rfm_groups(session: SessionDep, who: Reader) -> schemas.RfmRead:
    """The eight RFM groups: members, orders, spend and their shares."""
    return views.rfm(session)


@router.get("/insight/rfm/{group}/members")
def rfm_group_members(
    session: SessionDep,
    who: Reader,
    group: str,
    after: Annotated[int, Query(ge=0, description="member id to continue after")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.MemberPage:
    """The members of one RFM group, by member id, a page at a time."""
    return views.rfm_members(session, group, after=after, limit=limit)


@router.get("/insight/super-users")
def super_users(session: SessionDep, who: Reader) -> schemas.SuperUsersRead:
    """Super users by the document's definition: share and value multiple."""
    return views.super_users(session)


@router.get("/insight/super-users/early-signals")
def early_signals(
    session: SessionDep, who: Reader, months: Annotated[int, Query(ge=1, le=120)] = 24
) -> schemas.EarlySignalsRead:
    """Per join cohort: bought within 7 days, again within 30, and how much more often
    those early buyers are super users (mature cohorts: a year or more ago)."""
    return views.early_signals(session, months=months)


@router.get("/insight/members/{member_id}")
def member_insight(session: SessionDep, who: Reader, member_id: int) -> schemas.MemberInsightRead:
    """One member's stage, RFM scores and group, super-user flag and CLV."""
    return views.member(session, member_id, principal=who)
