"""The member's own pages (H5, /m): opened by a signed link, as a WeChat or mini-program
login would hand over. The card with tier and progress, points and what expires next,
coupons, the paid card's savings (or the offer to join), today's check-in, the points mall.

Every action calls the same services as the API's service role (check-in, redemption),
idempotent on a key derived from the request, so a double tap does nothing twice.
"""

from __future__ import annotations

import secrets
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.api.deps import SessionDep
from siyu.benefits import coupons, mall
from siyu.benefits.rules import CouponState
from siyu.core import clock
from siyu.core.errors import NotFound, SiyuError
from siyu.members import service as members
from siyu.paid import savings
from siyu.paid import service as paid
from siyu.paid.schemas import PlanRead
from siyu.points import rules as points_rules
from siyu.points import service as points
from siyu.points.models import PointsLot
from siyu.programme import service as programmes
from siyu.tiers import service as tiers
from siyu.web import rules
from siyu.web.deps import MEMBER_COOKIE, MemberDep, MemberPost, PageRoute, now_seconds, secret
from siyu.web.render import gettext, render

router = APIRouter(prefix="/m", route_class=PageRoute, include_in_schema=False)


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


@router.get("/enter")
def enter(request: Request, token: str = "") -> Response:
    """The signed link's landing: keep the token in a cookie and open the card."""
    if rules.read_member_link(secret(request), token, now=now_seconds()) is None:
        return render(request, "member/invalid.html", {}, status_code=401)
    response = RedirectResponse("/m", status_code=303)
    response.set_cookie(
        MEMBER_COOKIE, token, httponly=True, samesite="lax", path="/m", max_age=7 * 86400
    )
    return response


def _card(request: Request, session: Session, member_id: int) -> dict[str, Any]:
    tz = _tz(request)
    member = members.get(session, member_id)
    level = tiers.level(session, member.tier_code)
    try:
        progress = tiers.progress(session, member_id, tz=tz)
    except NotFound:
        progress = None
    bar = 100
    if progress is not None and progress.threshold:
        bar = rules.percent(progress.value, progress.threshold)
    return {"member": member, "level": level, "progress": progress, "bar": bar}


# Lots read for the expiry notice: the earliest-expiring ones are all it needs.
EXPIRY_LOTS = 200


def expiry_notice(
    session: Session, member_id: int, *, available: int, tz: str
) -> rules.ExpiryNotice:
    """What expires next, spendable points apart from frozen ones (the console's points
    panel shows the same). ``points.summary``'s ``expiring`` counts every lot, frozen
    ones too, so it could promise more points than the member can spend."""
    now = clock.now()
    rows = session.execute(
        select(PointsLot.expires_at, PointsLot.remaining, PointsLot.frozen, PointsLot.available_at)
        .where(
            PointsLot.member_id == member_id,
            PointsLot.remaining > 0,
            PointsLot.expires_at.is_not(None),
            PointsLot.expires_at > now,
        )
        .order_by(PointsLot.expires_at, PointsLot.id)
        .limit(EXPIRY_LOTS)
    ).all()
    lots: list[tuple[date, int, bool]] = []
    for expires, remaining, frozen, available_at in rows:
        day = points_rules.expires_on(clock.as_utc(expires), tz)
        if day is not None:
            usable = not frozen or clock.as_utc(available_at) <= now
            lots.append((day, int(remaining), usable))
    return rules.expiry_notice(lots, available)


def _check_in(request: Request, session: Session, member_id: int) -> dict[str, Any]:
    state = points.check_in_state(session, member_id, tz=_tz(request))
    version = programmes.in_force(session)
    rule = programmes.programme_of(version).points.events.check_in if version else None
    return {"check_in": state, "check_in_rule": rule}


@router.get("", response_class=HTMLResponse)
def home(request: Request, session: SessionDep, visit: MemberDep) -> Response:
    """The member card, points, coupons, the paid card and today's check-in."""
    member_id = visit.member_id
    tz = _tz(request)
    summary = points.summary(session, member_id)
    usable = coupons.coupons_of_member(session, member_id, state=CouponState.usable, limit=50)
    names = coupons.templates_by_ids(session, [c.template_id for c in usable])
    subscription = paid.current(session, member_id)
    saved = None
    if subscription is not None:
        saved = savings.summary(session, member_id, tz=tz)
    plans = [PlanRead.of(p) for p in paid.plans(session)] if subscription is None else []
    return render(
        request,
        "member/home.html",
        {
            "visit": visit,
            **_card(request, session, member_id),
            **_check_in(request, session, member_id),
            "points": summary,
            "expiry": expiry_notice(session, member_id, available=summary.available, tz=tz),
            "coupons": usable,
            "templates": names,
            "subscription": subscription,
            "savings": saved,
            "plans": plans,
        },
    )


@router.post("/check-in", response_class=HTMLResponse)
def check_in(request: Request, session: SessionDep, visit: MemberPost) -> Response:
    """Check in for today; a second tap the same day shows the first result."""
    result = points.check_in(session, visit.member_id, tz=_tz(request))
    context = {
        "visit": visit,
        **_check_in(request, session, visit.member_id),
        "result": result,
        "points": points.summary(session, visit.member_id),
    }
    if request.headers.get("HX-Request"):
        return render(request, "member/_check_in.html", context)
    return RedirectResponse("/m", status_code=303)


def _mall_context(session: Session, visit: Any) -> dict[str, Any]:
    shop = mall.mall_of(session, visit.member_id)
    return {
        "visit": visit,
        "mall": shop,
        "redemptions": mall.redemptions_of_member(session, visit.member_id)[:10],
        "reward_names": {r.id: r.name for r in mall.list_rewards(session)},
    }


@router.get("/mall", response_class=HTMLResponse)
def mall_page(request: Request, session: SessionDep, visit: MemberDep) -> Response:
    """The points mall: what the member may take, the affordable first."""
    context = _mall_context(session, visit)
    context["key"] = secrets.token_urlsafe(12)
    return render(request, "member/mall.html", {**context, "message": None, "error": None})


@router.post("/mall/{reward_id}", response_class=HTMLResponse)
def redeem(
    reward_id: int,
    request: Request,
    session: SessionDep,
    visit: MemberPost,
    key: Annotated[str, Form()] = "",
) -> Response:
    """Take a reward for points. The form's key makes a double tap one redemption."""
    message = error = None
    try:
        outcome = mall.redeem(
            session,
            visit.member_id,
            reward_id,
            key=f"m:{visit.member_id}:{key or secrets.token_urlsafe(12)}",
            tz=_tz(request),
        )
        reward = mall.get_reward(session, reward_id)
        message = gettext(request, "Redeemed: {name} for {points} points.").format(
            name=reward.name, points=f"{outcome.redemption.points_spent:,}"
        )
    except SiyuError as exc:
        session.rollback()
        error = exc.message
    context = _mall_context(session, visit)
    context["key"] = secrets.token_urlsafe(12)
    return render(
        request,
        "member/mall.html",
        {**context, "message": message, "error": error},
    )


@router.get("/savings", response_class=HTMLResponse)
def savings_page(request: Request, session: SessionDep, visit: MemberDep) -> Response:
    """What the paid card saved, month by month; the offer to join for others."""
    subscription = paid.current(session, visit.member_id)
    saved = savings.summary(session, visit.member_id, tz=_tz(request)) if subscription else None
    plans = [PlanRead.of(p) for p in paid.plans(session)]
    return render(
        request,
        "member/savings.html",
        {"visit": visit, "subscription": subscription, "savings": saved, "plans": plans},
    )
