"""The operator console (/console): dashboard, members, programme, benefits, stores.

Thin like the API's routes: every page calls the same services as the API and the CLI,
with the logged-in user's principal, so roles, scope (a guide sees only their members) and
masked phones are the API's own rules. Each request is one unit of work.
"""

from __future__ import annotations

import json
import secrets
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.api.deps import SessionDep
from siyu.benefits import coupons, mall, packs
from siyu.core import audit, clock
from siyu.core.auth import Role
from siyu.core.errors import InvalidInput, NotFound, SiyuError, Unauthorized
from siyu.insight import views as insight_views
from siyu.insight.models import MemberInsight
from siyu.members import service as members
from siyu.members.models import Member, MemberMerge
from siyu.members.schemas import MemberDetail, MemberRead
from siyu.orders import service as orders
from siyu.orders.models import Refund
from siyu.paid import savings
from siyu.paid import service as paid
from siyu.points import service as points
from siyu.programme import rules as programme_rules
from siyu.programme import service as programmes
from siyu.stores import service as stores
from siyu.stores.models import Staff
from siyu.tiers import service as tiers
from siyu.web import dashboard, i18n, member_pages, programme_form, rules, users
from siyu.web.deps import (
    SESSION_COOKIE,
    Console,
    ConsoleDep,
    ConsolePost,
    PageRoute,
    now_seconds,
    require_role,
    secret,
)
from siyu.web.render import gettext, render

router = APIRouter(prefix="/console", route_class=PageRoute, include_in_schema=False)

# Stores in the chart of members by store; the table below lists them all.
TOP_STORES = 15

# Roles that change members' balances and the programme from the console, as in the API.
OPERATORS = (Role.operator,)
# Roles that hand members over to another guide, as the API's hand-over.
HANDOVER_ROLES = (Role.operator, Role.store_manager)


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


# --- login, logout, language ---------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/console") -> Response:
    token = rules.login_form_token(secret(request), now=now_seconds())
    return render(
        request,
        "console/login.html",
        {"form_token": token, "next": rules.safe_next(next), "error": None, "username": ""},
    )


@router.post("/login")
def log_in(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    form_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/console",
) -> Response:
    key = secret(request)
    now = now_seconds()
    error = None
    user = None
    if not rules.login_form_ok(key, form_token, now=now):
        error = gettext(request, "The form expired. Please log in again.")
    else:
        try:
            user = users.log_in(session, username, password)
        except Unauthorized:
            error = gettext(request, "Wrong username or password.")
    if user is None:
        return render(
            request,
            "console/login.html",
            {
                "form_token": rules.login_form_token(key, now=now),
                "next": rules.safe_next(next),
                "error": error,
                "username": username,
            },
        )
    response = RedirectResponse(rules.safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        rules.session_cookie(key, user.id, now=now),
        max_age=rules.SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        path="/",
    )
    return response


@router.post("/logout")
def log_out(console: ConsolePost) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/lang")
def switch_language(to: str = "zh_CN", next: str = "/console") -> Response:
    response = RedirectResponse(rules.safe_next(next), status_code=303)
    response.set_cookie(
        i18n.LANG_COOKIE, i18n.normalize(to), max_age=365 * 86400, samesite="lax", path="/"
    )
    return response


# --- dashboard -----------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def dashboard_page(
    request: Request,
    session: SessionDep,
    console: ConsoleDep,
    period: str = "30",
    start: Annotated[str, Query(alias="from")] = "",
    end: Annotated[str, Query(alias="to")] = "",
) -> Response:
    """The dashboard; headquarters roles also get the KPIs of the picked period beside the
    previous period and the same period last year."""
    tz = _tz(request)
    choice = period if period in rules.PERIOD_CHOICES else "30"
    comparison = None
    period_error = None
    if console.principal.role in dashboard.BRAND_ROLES:
        try:
            comparison = dashboard.compare(
                request.app.state.db,
                choice,
                _day(start, "from"),
                _day(end, "to"),
                today=clock.local_date(clock.now(), tz),
                tz=tz,
            )
        except InvalidInput as exc:
            period_error = exc
    # After the report: on SQLite the report reads through its own connection, which must
    # not wait behind this request's write transaction (begun by the first query).
    board = dashboard.build(session, console.principal, tz=tz)
    return render(
        request,
        "console/dashboard.html",
        {
            "user": console,
            "board": board,
            "comparison": comparison,
            "period": choice,
            "period_from": start,
            "period_to": end,
            "period_error": period_error,
        },
    )


def _day(text: str, field: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"'{text}' is not a date; use YYYY-MM-DD (e.g. 2026-06-30)", field=field
        ) from None


# --- members -------------------------------------------------------------------------------


@router.get("/members", response_class=HTMLResponse)
def members_page(
    request: Request,
    session: SessionDep,
    console: ConsoleDep,
    q: str = "",
    tag: str = "",
    store_id: int | None = None,
    guide_id: int | None = None,
    after_id: int | None = None,
) -> Response:
    q, tag = q.strip(), tag.strip()
    found: list[Member] = []
    error = None
    searched = bool(q or tag)
    criteria: dict[str, Any] = {}
    if q:
        kind = rules.search_kind(q)
        criteria[kind] = q.replace(" ", "").replace("-", "") if kind != "name" else q
    if tag:
        criteria["tag"] = tag
    if store_id is not None:
        criteria["store_id"] = store_id
        searched = True
    if guide_id is not None:
        criteria["guide_id"] = guide_id
        searched = True
    try:
        found = members.search(
            session, principal=console.principal, after_id=after_id, limit=50, **criteria
        )
    except InvalidInput as exc:
        error = exc.message
    rows = [MemberRead.of(m, console.principal) for m in found]
    next_after = found[-1].id if len(found) == 50 else None
    return render(
        request,
        "console/members.html",
        {
            "user": console,
            "q": q,
            "tag": tag,
            "rows": rows,
            "searched": searched,
            "error": error,
            "next_after": next_after,
        },
    )


def _insight_of(session: Session, member_id: int) -> Any:
    """A member's insight with their RFM scores read off the last refresh's scale."""
    row = session.get(MemberInsight, member_id)
    return insight_views.member_read(row, insight_views.last_scale(session)) if row else None


def _member_context(
    request: Request, session: Session, console: Console, member_id: int
) -> dict[str, Any]:
    principal = console.principal
    member = members.get(session, member_id, principal=principal)
    tz = _tz(request)
    detail = MemberDetail.full(
        member,
        members.identities_of(session, member_id),
        members.tags_of(session, member_id),
        principal,
    )
    level = tiers.level(session, member.tier_code)
    try:
        progress = tiers.progress(session, member_id, principal=principal, tz=tz)
    except NotFound:
        progress = None  # no programme in force yet
    version = programmes.in_force(session)
    ladder = programmes.programme_of(version).tiers.levels if version is not None else []
    subscription = paid.current(session, member_id)
    saved = None
    if subscription is not None:
        saved = savings.summary(session, member_id, tz=tz)
    guide = session.get(Staff, member.guide_id) if member.guide_id else None
    store = stores.get_store(session, member.store_id) if member.store_id else None
    refunds = list(
        session.scalars(
            select(Refund)
            .where(Refund.member_id == member_id)
            .order_by(Refund.refunded_at.desc())
            .limit(20)
        )
    )
    templates = coupons.list_templates(session, status="active") if console.can(*OPERATORS) else []
    member_coupons = coupons.coupons_of_member(session, member_id, principal=principal, limit=50)

    return {
        "user": console,
        "member": detail,
        "level": level,
        "progress": progress,
        "ladder": ladder,
        "growth": tiers.entries(session, member_id, principal=principal, limit=20),
        "tier_history": tiers.history(session, member_id, principal=principal, limit=20),
        "grants": tiers.grants_of(session, member_id),
        "coupons": member_coupons,
        "coupon_names": {
            t.id: t.name
            for t in coupons.templates_by_ids(
                session, [c.template_id for c in member_coupons]
            ).values()
        },
        "subscription": subscription,
        "savings": saved,
        "orders": orders.orders_of_member(session, member_id, principal=principal, limit=20),
        "refunds": refunds,
        "guide": guide,
        "store": store,
        "insight": _insight_of(session, member_id),
        "templates": templates,
        **_points_context(session, member_id, tz),
        **_actions_context(session, console, member),
        "tz": tz,
    }


def _points_context(session: Session, member_id: int, tz: str) -> dict[str, Any]:
    summary = points.summary(session, member_id)
    return {
        "points": summary,
        "expiry": member_pages.expiry_notice(
            session, member_id, available=summary.available, tz=tz
        ),
        "lots": points.lots(session, member_id, limit=50),
        "entries": points.entries(session, member_id, limit=30),
    }


def _actions_context(session: Session, console: Console, member: Member) -> dict[str, Any]:
    """What the merge and hand-over forms need: where a merged member went, and the
    active guides this user may hand the member to (a store manager: their store's)."""
    merge_record = None
    survivor = None
    if member.status == "merged" and member.merged_into_id is not None:
        merge_record = session.scalar(
            select(MemberMerge)
            .where(MemberMerge.from_member_id == member.id, MemberMerge.unmerged_at.is_(None))
            .order_by(MemberMerge.id.desc())
            .limit(1)
        )
        survivor = MemberRead.of(members.get(session, member.merged_into_id), console.principal)
    guides: list[tuple[str, list[Staff]]] = []
    if console.can(*HANDOVER_ROLES) and member.status != "merged":
        principal = console.principal
        store_id = principal.store_id if principal.role is Role.store_manager else None
        names = {st.id: st.name for st in stores.list_stores(session)}
        by_store: dict[int | None, list[Staff]] = {}
        for person in stores.list_staff(session, store_id=store_id):
            if person.role == "guide" and person.status == "active":
                by_store.setdefault(person.store_id, []).append(person)
        # The member's own store first: handing over usually stays in the store.
        order = sorted(by_store, key=lambda k: (k != member.store_id, k is None, k or 0))
        guides = [(names.get(k, "—") if k else "—", by_store[k]) for k in order]
    return {
        "merge_record": merge_record,
        "survivor": survivor,
        "guides": guides,
        "merge": None,
        "hand_over": {},
    }


def _merge_preview(session: Session, from_id: int, into_id: int) -> dict[str, Any]:
    """What a merge of ``from_id`` into ``into_id`` will move: rows per table (as the
    merge service will move them), tags the survivor lacks, and the phone."""
    moving: list[tuple[str, int]] = []
    for table in members._member_owned_tables():  # the very tables merge() moves
        n = session.scalar(
            select(func.count()).select_from(table).where(table.c.member_id == from_id)
        )
        if n:
            moving.append((table.name, int(n)))
    source = members.get(session, from_id)
    target = members.get(session, into_id)
    target_tags = {t.tag for t in members.tags_of(session, into_id)}
    tags = [t.tag for t in members.tags_of(session, from_id) if t.tag not in target_tags]
    return {
        "tables": moving,
        "tags": tags,
        "phone": source.phone if target.phone is None and source.phone else None,
    }


@router.get("/members/{member_id}", response_class=HTMLResponse)
def member_page(
    member_id: int, request: Request, session: SessionDep, console: ConsoleDep
) -> Response:
    context = _member_context(request, session, console, member_id)
    return render(request, "console/member.html", context)


@router.post("/members/{member_id}/points", response_class=HTMLResponse)
def adjust_points(
    member_id: int,
    request: Request,
    session: SessionDep,
    console: ConsolePost,
    points_delta: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    key: Annotated[str, Form()] = "",
) -> Response:
    """Adjust points with a reason; answers the points panel (htmx swaps it in place)."""
    require_role(console, *OPERATORS)
    members.get(session, member_id, principal=console.principal)
    error = None
    message = None
    try:
        amount = int(points_delta.strip())
    except ValueError:
        amount = None
        error = gettext(request, "Enter a whole number of points, e.g. 100 or -50.")
    if amount is not None:
        try:
            done = points.adjust(
                session,
                member_id,
                amount,
                reason=reason,
                principal=console.principal,
                key=key or secrets.token_hex(8),
            )
            message = gettext(request, "Points adjusted. New balance: {balance}").format(
                balance=f"{done.balance_after:,}"
            )
        except SiyuError as exc:
            session.rollback()
            error = exc.message
    context = {
        "user": console,
        "member": MemberRead.of(members.get(session, member_id), console.principal),
        "error": error,
        "message": message,
        "form": {"points_delta": points_delta, "reason": reason} if error else {},
        **_points_context(session, member_id, _tz(request)),
    }
    if request.headers.get("HX-Request"):
        return render(request, "console/_points.html", context, status_code=200)
    if error:
        raise InvalidInput(error, field="points")
    return RedirectResponse(f"/console/members/{member_id}#points", status_code=303)


@router.post("/members/{member_id}/tier-grants")
def grant_tier(
    member_id: int,
    request: Request,
    session: SessionDep,
    console: ConsolePost,
    code: Annotated[str, Form()] = "",
    ends_on: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Grant a tier until a day (end of that day, brand-local)."""
    require_role(console, *OPERATORS)
    tz = _tz(request)
    try:
        day = date.fromisoformat(ends_on.strip())
    except ValueError:
        raise InvalidInput(
            f"'{ends_on}' is not a date; use YYYY-MM-DD (e.g. 2027-06-30)", field="ends_on"
        ) from None
    from zoneinfo import ZoneInfo

    ends_at = datetime.combine(day + timedelta(days=1), time(0), tzinfo=ZoneInfo(tz))
    tiers.grant_tier(
        session, member_id, code, ends_at=ends_at, reason=reason, principal=console.principal, tz=tz
    )
    return RedirectResponse(f"/console/members/{member_id}?done=grant#tier", status_code=303)


@router.post("/members/{member_id}/coupons")
def issue_coupon(
    member_id: int,
    request: Request,
    session: SessionDep,
    console: ConsolePost,
    template_id: Annotated[int, Form()],
    reason: Annotated[str, Form()] = "",
    key: Annotated[str, Form()] = "",
) -> Response:
    require_role(console, *OPERATORS)
    members.get(session, member_id, principal=console.principal)
    result = coupons.issue(
        session,
        template_id,
        [member_id],
        key=key or secrets.token_hex(8),
        reason=reason,
        principal=console.principal,
        tz=_tz(request),
    )
    if member_id in result.skipped:
        raise InvalidInput(result.skipped[member_id], field="template_id")
    return RedirectResponse(f"/console/members/{member_id}?done=coupon#coupons", status_code=303)


# --- merge and hand over ---------------------------------------------------------------------


def _merge_context(
    request: Request,
    session: Session,
    console: Console,
    member_id: int,
    *,
    ref: str,
    direction: str,
    reason: str = "",
    error: str | None = None,
) -> dict[str, Any]:
    """The member page with the merge step open: both members and what will move, or
    why the other member cannot be used."""
    context = _member_context(request, session, console, member_id)
    merge: dict[str, Any] = {"ref": ref, "direction": direction, "reason": reason, "error": error}
    other = None
    if ref.strip():
        try:
            found = members.find(session, ref)
            other = members.get(session, found.id, principal=console.principal)
        except SiyuError as exc:
            merge["error"] = merge["error"] or exc.message
    elif merge["error"] is None:
        merge["error"] = gettext(request, "Enter the other member's member no. or phone.")
    if other is not None:
        if other.id == member_id:
            merge["error"] = gettext(request, "That is this member; enter another one.")
            other = None
        elif other.status == "merged":
            merge["error"] = gettext(
                request, "That member was already merged into member {id}."
            ).format(id=other.merged_into_id)
            other = None
    if other is not None:
        from_id, into_id = (
            (other.id, member_id) if direction == "into_this" else (member_id, other.id)
        )
        merge.update(
            other=MemberRead.of(other, console.principal),
            other_points=other.points_balance,
            from_id=from_id,
            into_id=into_id,
            preview=_merge_preview(session, from_id, into_id),
        )
    context["merge"] = merge
    return context


@router.get("/members/{member_id}/merge", response_class=HTMLResponse)
def merge_confirm(
    member_id: int,
    request: Request,
    session: SessionDep,
    console: ConsoleDep,
    ref: str = "",
    direction: str = "into_this",
) -> Response:
    """The confirmation step: both members side by side and what the merge will move."""
    require_role(console, *OPERATORS)
    direction = direction if direction in ("into_this", "into_other") else "into_this"
    context = _merge_context(request, session, console, member_id, ref=ref, direction=direction)
    return render(request, "console/member.html", context)


@router.post("/members/{member_id}/merge", response_class=HTMLResponse)
def merge_members(
    member_id: int,
    request: Request,
    session: SessionDep,
    console: ConsolePost,
    from_member_id: Annotated[int, Form()],
    into_member_id: Annotated[int, Form()],
    ref: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Merge through ``members.merge`` with the operator's principal, as ``POST
    /members/merges`` does; then open the survivor."""
    require_role(console, *OPERATORS)
    if member_id not in (from_member_id, into_member_id):
        raise InvalidInput("a merge from this page involves this member", field="member_id")
    try:
        members.merge(
            session, from_member_id, into_member_id, reason=reason, principal=console.principal
        )
    except SiyuError as exc:
        session.rollback()
        direction = "into_this" if into_member_id == member_id else "into_other"
        context = _merge_context(
            request,
            session,
            console,
            member_id,
            ref=ref,
            direction=direction,
            reason=reason,
            error=exc.message,
        )
        return render(request, "console/member.html", context)
    return RedirectResponse(
        f"/console/members/{into_member_id}?done=merged&from={from_member_id}#profile",
        status_code=303,
    )


@router.post("/members/{member_id}/hand-over", response_class=HTMLResponse)
def hand_over(
    member_id: int,
    request: Request,
    session: SessionDep,
    console: ConsolePost,
    to_guide_id: Annotated[str, Form()] = "",
    scope: Annotated[str, Form()] = "member",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Hand this member to another guide, or (``scope=guide``) every member of this
    member's guide through ``members.hand_over``. Refusals are shown in the form."""
    require_role(console, *HANDOVER_ROLES)
    principal = console.principal
    member = members.get(session, member_id, principal=principal)
    error = None
    moved = 0
    target = session.get(Staff, int(to_guide_id)) if to_guide_id.strip().isdigit() else None
    if target is None:
        error = gettext(request, "Choose the guide to hand over to.")
    elif scope == "guide":
        if member.guide_id is None:
            error = gettext(request, "This member has no guide; hand over this member only.")
        else:
            try:
                moved = members.hand_over(
                    session, member.guide_id, target.id, principal=principal, reason=reason
                )
            except SiyuError as exc:
                session.rollback()
                error = exc.message
    else:
        error = rules.hand_over_problem(
            role=principal.role.value,
            manager_store_id=principal.store_id,
            current_guide_id=member.guide_id,
            target_id=target.id,
            target_role=target.role,
            target_status=target.status,
            target_store_id=target.store_id,
        )
        if error is None:
            before = member.guide_id
            members.update(
                session,
                member_id,
                {"guide_id": target.id, "store_id": target.store_id},
                principal=principal,
            )
            audit.record(
                session,
                actor=principal.actor,
                action="member.hand_over",
                target_type="member",
                target_id=member_id,
                detail={"from": before, "to": target.id, "reason": reason},
            )
            moved = 1
    if error is not None:
        context = _member_context(request, session, console, member_id)
        context["hand_over"] = {
            "error": error,
            "to_guide_id": to_guide_id,
            "scope": scope,
            "reason": reason,
        }
        return render(request, "console/member.html", context)
    return RedirectResponse(
        f"/console/members/{member_id}?done=handover&moved={moved}#actions", status_code=303
    )


# --- programme -----------------------------------------------------------------------------


def _programme_context(session: Session, console: Console) -> dict[str, Any]:
    version = programmes.in_force(session)
    return {
        "user": console,
        "version": version,
        "history": programmes.history(session, limit=50),
        "can_edit": console.can(*OPERATORS),
    }


@router.get("/programme", response_class=HTMLResponse)
def programme_page(request: Request, session: SessionDep, console: ConsoleDep) -> Response:
    context = _programme_context(session, console)
    doc = context["version"].document if context["version"] is not None else {}
    return render(
        request,
        "console/programme.html",
        {
            **context,
            "doc": doc,
            "sections": programme_form.sections(doc),
            "value": lambda path: programme_form.value_of(doc, path),
            "beside": {},
            "other": [],
            "changes": None,
        },
    )


@router.post("/programme/preview", response_class=HTMLResponse)
async def programme_preview(
    request: Request, session: SessionDep, console: ConsolePost
) -> Response:
    """Validate the edited document: problems beside their fields, or the diff against the
    version in force with a button to publish it."""
    require_role(console, Role.operator, Role.analyst)
    context = _programme_context(session, console)
    if context["version"] is None:
        raise NotFound("no programme in force yet; apply one with `siyu programme apply`")
    current = context["version"].document
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    draft = programme_form.apply_form(current, form)
    problems = programmes.validate(draft)
    beside, other = programme_form.by_field(problems, draft)
    changes = None
    if not problems:
        changes = programmes.diff_against_in_force(session, draft).changes
    return render(
        request,
        "console/programme.html",
        {
            **context,
            "doc": draft,
            "sections": programme_form.sections(draft),
            "value": lambda path: programme_form.value_of(draft, path),
            "beside": beside,
            "other": other,
            "changes": changes,
            "label_of": lambda path: programme_form.label_of(draft, path),
            "draft_json": json.dumps(draft, ensure_ascii=False),
        },
    )


@router.post("/programme/publish")
def programme_publish(
    session: SessionDep,
    console: ConsolePost,
    document: Annotated[str, Form()],
    note: Annotated[str, Form()] = "",
) -> Response:
    require_role(console, *OPERATORS)
    raw, problems = programme_rules.parse_text(document, fmt="json")
    if problems:
        raise InvalidInput(problems[0].reason, field="document")
    applied = programmes.apply(session, raw, author=console.principal.actor, note=note)
    return RedirectResponse(f"/console/programme?published={applied.version.id}", status_code=303)


@router.get("/programme/versions/{version_id}", response_class=HTMLResponse)
def programme_version(
    version_id: int, request: Request, session: SessionDep, console: ConsoleDep
) -> Response:
    import yaml

    version = programmes.get(session, version_id)
    text = yaml.safe_dump(version.document, allow_unicode=True, sort_keys=False)
    return render(
        request,
        "console/programme_version.html",
        {"user": console, "version": version, "text": text},
    )


# --- benefits ------------------------------------------------------------------------------


@router.get("/benefits", response_class=HTMLResponse)
def benefits_page(request: Request, session: SessionDep, console: ConsoleDep) -> Response:
    templates = coupons.list_templates(session, limit=200)
    counts = {t.id: coupons.summary(session, t.id) for t in templates}
    rewards = mall.list_rewards(session)
    redemptions = mall.list_redemptions(session, limit=50) if console.can(*OPERATORS) else []
    reward_names = {r.id: r.name for r in rewards}
    return render(
        request,
        "console/benefits.html",
        {
            "user": console,
            "templates": templates,
            "counts": counts,
            "packs": packs.list_packs(session),
            "template_names": {t.code: t.name for t in templates},
            "rewards": rewards,
            "redemptions": redemptions,
            "reward_names": reward_names,
        },
    )


# --- stores --------------------------------------------------------------------------------


@router.get("/stores", response_class=HTMLResponse)
def stores_page(request: Request, session: SessionDep, console: ConsoleDep) -> Response:
    principal = console.principal
    store_list = stores.list_stores(session)
    if principal.role in (Role.store_manager, Role.guide) and principal.store_id is not None:
        store_list = [s for s in store_list if s.id == principal.store_id]
    by_store = dict(
        session.execute(
            dashboard.scoped(
                select(Member.store_id, func.count())
                .select_from(Member)
                .where(Member.status != "merged"),
                principal,
            ).group_by(Member.store_id)
        ).all()
    )
    by_guide = dict(
        session.execute(
            dashboard.scoped(
                select(Member.guide_id, func.count())
                .select_from(Member)
                .where(Member.status != "merged", Member.guide_id.is_not(None)),
                principal,
            ).group_by(Member.guide_id)
        ).all()
    )
    staff = stores.list_staff(session)
    if principal.role is Role.guide:
        staff = [s for s in staff if s.id == principal.staff_id]
    elif principal.role is Role.store_manager:
        staff = [s for s in staff if s.store_id == principal.store_id]
    guides: dict[int | None, list[Staff]] = {}
    for person in staff:
        guides.setdefault(person.store_id, []).append(person)
    busiest = sorted(store_list, key=lambda st: (-by_store.get(st.id, 0), st.id))[:TOP_STORES]
    return render(
        request,
        "console/stores.html",
        {
            "user": console,
            "busiest": busiest,
            "stores": store_list,
            "by_store": by_store,
            "by_guide": by_guide,
            "guides": guides,
            "figures": dashboard.store_figures(session, now=clock.now()),
            "store_days": dashboard.STORE_DAYS,
        },
    )
