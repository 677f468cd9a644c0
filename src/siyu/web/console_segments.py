"""Segments in the console (/console/segments): the condition-tree builder with a live
count, sample members, export and saved segments.

The builder is a small script (``static/segments.js``) that edits the tree as JSON; every
change posts the tree to ``/console/segments/preview``, which parses it with the same
service as the API (``segments.service.parse``) and answers the count, a sample and the
validation's problems with their paths, so the script can show each problem beside the
condition it concerns. Roles are the API's: admins, operators and analysts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.api.deps import SessionDep
from siyu.core import clock
from siyu.core.auth import Role
from siyu.core.errors import InvalidInput, Problem, SiyuError
from siyu.members.models import MemberTag
from siyu.programme import service as programmes
from siyu.segments import profile as profiles
from siyu.segments import rules, service, tags
from siyu.segments.models import Segment, SegmentSnapshot
from siyu.stores.models import Staff, Store
from siyu.web.deps import Console, ConsoleDep, ConsolePost, PageRoute, require_role
from siyu.web.i18n import N_
from siyu.web.render import gettext, render

router = APIRouter(prefix="/console", route_class=PageRoute, include_in_schema=False)

# The API's segments routes: admins, operators and analysts (a segment spans the brand).
SEGMENT_ROLES = (Role.operator, Role.analyst)
SAMPLE_SIZE = 10
TAG_CHOICES = 300  # tags offered in the builder's list (the most held first)


# Names of fields, groups, operators and values in the page's language (msgids English).
FIELD_LABELS = {
    "gender": N_("Gender"),
    "birthday": N_("Birthday"),
    "birthday_month": N_("Birthday month"),
    "child_birthday": N_("Child's birthday"),
    "joined_at": N_("Joined on"),
    "join_channel": N_("Join channel"),
    "store": N_("Store"),
    "guide": N_("Guide"),
    "scene": N_("QR scene code"),
    "status": N_("Member status"),
    "consent_sms": N_("Accepts SMS"),
    "consent_wechat": N_("Accepts WeChat messages"),
    "consent_email": N_("Accepts email"),
    "tier": N_("Tier"),
    "points_balance": N_("Points balance"),
    "growth_balance": N_("Growth value"),
    "paid": N_("Paid member now"),
    "paid_plan": N_("Paid plan"),
    "paid_state": N_("Paid card state"),
    "paid_until": N_("Paid card ends"),
    "order_count": N_("Order count"),
    "spend_fen": N_("Total spend"),
    "refund_fen": N_("Total refunds"),
    "avg_order_fen": N_("Average order value"),
    "first_order_at": N_("First purchase"),
    "last_order_at": N_("Last purchase"),
    "stage": N_("Lifecycle stage"),
    "rfm_group": N_("RFM group"),
    "r_score": N_("R score"),
    "f_score": N_("F score"),
    "m_score": N_("M score"),
    "super_user": N_("Super user"),
    "p_alive": N_("Probability still active"),
    "expected_purchases_90": N_("Expected purchases, next 90 days"),
    "expected_purchases_365": N_("Expected purchases, next 365 days"),
    "clv_fen": N_("Expected value (CLV)"),
    "tags": N_("Tags"),
    "channels": N_("Channel identities"),
}
GROUP_LABELS = {
    "attribute": N_("Member attributes"),
    "tier": N_("Tier and balances"),
    "paid": N_("Paid membership"),
    "metric": N_("Purchases"),
    "insight": N_("Insight"),
    "tag": N_("Tags and channels"),
    "channel": N_("Tags and channels"),
}
BEHAVIOUR_GROUP = N_("Behaviour")
BEHAVIOUR_LABELS = {
    "bought_category": N_("Bought a category at least N times in the last D days"),
    "no_purchase_since": N_("No purchase in the last D days"),
    "joined_never_bought": N_("Joined in the last D days and never bought"),
}
OPERATOR_LABELS = {
    "eq": N_("is"),
    "ne": N_("is not"),
    "in": N_("is one of"),
    "not_in": N_("is none of"),
    "is_null": N_("is empty"),
    "not_null": N_("is not empty"),
    "gt": N_("greater than"),
    "gte": N_("at least"),
    "lt": N_("less than"),
    "lte": N_("at most"),
    "between": N_("between"),
    "before": N_("before"),
    "after": N_("after"),
    "within_days": N_("in the last N days"),
    "more_than_days_ago": N_("more than N days ago"),
    "has": N_("has"),
    "has_any": N_("has any of"),
    "has_all": N_("has all of"),
    "has_none": N_("has none of"),
}
VALUE_LABELS = {
    "F": N_("Female"),
    "M": N_("Male"),
    "active": N_("Active"),
    "frozen": N_("Frozen"),
    "prospect": N_("Prospect"),
    "new": N_("New"),
    "silent": N_("Silent"),
    "sleeping": N_("Sleeping"),
    "churned": N_("Churned"),
    "important_value": N_("Important value"),
    "important_develop": N_("Important to develop"),
    "important_keep": N_("Important to keep"),
    "important_retain": N_("Important to win back"),
    "general_value": N_("General value"),
    "general_develop": N_("General to develop"),
    "general_keep": N_("General to keep"),
    "general_retain": N_("General to win back"),
    "store": N_("Store"),
    "mini_program": N_("Mini program"),
    "wechat": N_("WeChat"),
    "tmall": N_("Tmall"),
    "jd": N_("JD"),
    "douyin": N_("Douyin"),
    "referral": N_("Referral"),
    "import": N_("Import"),
    "order": N_("Order"),
    "phone": N_("Phone"),
    "wechat_unionid": N_("WeChat unionid"),
    "wechat_openid": N_("WeChat openid"),
    "store_card": N_("Store card"),
    "trial": N_("Trial"),
    "grace": N_("Grace period"),
    "cancelled": N_("Cancelled"),
    "expired": N_("Expired"),
    "refunded": N_("Refunded"),
}


def _where(request: Request, source: str = "profile") -> service.Where:
    settings = request.app.state.settings
    return service.Where(
        db=request.app.state.db,
        analytics_dir=settings.analytics_dir,
        tz=settings.timezone,
        source="live" if source == "live" else "profile",
    )


def _allowed(console: Console) -> None:
    require_role(console, *SEGMENT_ROLES)


# --- the catalogue the builder offers ------------------------------------------------------------


def _choices(request: Request, values: tuple[str, ...]) -> list[list[str]]:
    return [[v, gettext(request, VALUE_LABELS.get(v, v))] for v in values]


def _vocabularies(session: Session) -> dict[str, list[list[str]]]:
    """The brand's own values for the builder's selects: tiers, categories and plans of the
    programme in force; stores, guides and the tags members hold (most held first)."""
    out: dict[str, list[list[str]]] = {"tiers": [], "categories": [], "plans": []}
    version = programmes.in_force(session)
    if version is not None:
        doc = programmes.programme_of(version)
        out["tiers"] = [[lv.code, f"{lv.code} · {lv.name}"] for lv in doc.tiers.levels]
        out["categories"] = [[c, c] for c in doc.categories]
        if doc.paid:
            out["plans"] = [[p.code, f"{p.code} · {p.name}"] for p in doc.paid.plans]
    out["stores"] = [
        [code, f"{code} · {name}"]
        for code, name in session.execute(select(Store.code, Store.name).order_by(Store.code))
    ]
    out["guides"] = [
        [code, f"{code} · {name}"]
        for code, name in session.execute(
            select(Staff.code, Staff.name).where(Staff.role == "guide").order_by(Staff.code)
        )
    ]
    held = session.execute(
        select(MemberTag.tag, func.count())
        .group_by(MemberTag.tag)
        .order_by(func.count().desc(), MemberTag.tag)
        .limit(TAG_CHOICES)
    ).all()
    names = [t for t, _ in held] + [r.name for r in tags.list_rules(session)]
    out["tags"] = [[t, t] for t in dict.fromkeys(names)]
    return out


def catalogue(request: Request, session: Session) -> dict[str, Any]:
    """Everything the builder script needs: fields with their kinds, operators and choices,
    behaviours, and the labels in the page's language."""
    vocab = _vocabularies(session)
    fields = []
    for spec in rules.FIELDS.values():
        if spec.values is not None:
            choices = _choices(request, spec.values)
        elif spec.vocab is not None:
            choices = vocab.get(spec.vocab, [])
        else:
            choices = None
        fields.append(
            {
                "name": spec.name,
                "kind": spec.kind.value,
                "label": gettext(request, FIELD_LABELS.get(spec.name, spec.label)),
                "group": gettext(request, GROUP_LABELS[spec.group]),
                "ops": list(rules.OPERATORS[spec.kind]),
                "choices": choices,
                "free": spec.vocab == "tags",  # a tag may be typed (the list is the top ones)
                "integer": spec.integer,
            }
        )
    return {
        "fields": fields,
        "behaviours": [
            {"name": name, "label": gettext(request, label)}
            for name, label in BEHAVIOUR_LABELS.items()
        ],
        "behaviour_group": gettext(request, BEHAVIOUR_GROUP),
        "categories": vocab["categories"],
        "ops": {op: gettext(request, label) for op, label in OPERATOR_LABELS.items()},
    }


# --- the page ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedRow:
    """A saved segment in the list: its count now (or why it cannot be counted) and its
    last snapshot."""

    segment: Segment
    members: int | None
    problem: str | None
    snapshot: SegmentSnapshot | None


def _saved_rows(request: Request, session: Session) -> list[SavedRow]:
    where = _where(request)
    out = []
    for segment in service.list_segments(session):
        members, problem = None, None
        try:
            members = service.count(where, service.parse(session, segment.tree)).members
        except SiyuError as exc:  # the programme changed under it (a tier removed…)
            problem = exc.message
        last = service.snapshots(session, segment.id, limit=1)
        out.append(SavedRow(segment, members, problem, last[0] if last else None))
    return out


def _profile_info(request: Request) -> profiles.ProfileInfo | None:
    db, directory = request.app.state.db, request.app.state.settings.analytics_dir
    if profiles.current_path(db, directory) is None:
        return None
    cursor, info = profiles.readers.get(db, directory)
    cursor.close()
    return info


def _page(
    request: Request,
    session: Session,
    console: Console,
    *,
    opened: Segment | None = None,
    draft: dict[str, Any] | None = None,
    error: SiyuError | None = None,
    status_code: int = 200,
) -> Response:
    """The page; ``draft`` (name, description, tree) is the builder's state after a refused
    save, so nothing typed is lost."""
    rows = _saved_rows(request, session)
    if draft is None:
        draft = {
            "name": opened.name if opened else "",
            "description": opened.description if opened else "",
            "tree": opened.tree if opened else None,
        }
    return render(
        request,
        "console/segments.html",
        {
            "user": console,
            "rows": rows,
            "opened": opened,
            "draft": draft,
            "error": error,
            "catalogue": catalogue(request, session),
            "profile": _profile_info(request),
        },
        status_code=status_code,
    )


@router.get("/segments", response_class=HTMLResponse)
def segments_page(
    request: Request, session: SessionDep, console: ConsoleDep, open: int | None = None
) -> Response:
    _allowed(console)
    opened = service.get(session, open) if open is not None else None
    return _page(request, session, console, opened=opened)


# --- the live count --------------------------------------------------------------------------


def _read_tree(text: str) -> Any:
    """The builder's tree from its JSON text; a broken text is a problem of the tree."""
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidInput("tree: not JSON", field="tree") from None


@router.post("/segments/preview", response_class=HTMLResponse)
def preview(
    request: Request,
    session: SessionDep,
    console: ConsolePost,
    tree: Annotated[str, Form()] = "",
    source: Annotated[str, Form()] = "profile",
) -> Response:
    """The count and a sample of the builder's tree, or the validation's problems with
    their paths (``and[1].value``) for the script to show beside their conditions. Always
    200: htmx swaps the answer in whatever it says."""
    _allowed(console)
    context: dict[str, Any] = {"user": console, "problems": [], "found": None, "empty": False}
    raw = None
    try:
        raw = _read_tree(tree) if tree.strip() else None
    except InvalidInput as exc:
        context["problems"] = [Problem("", exc.message)]
    if raw is None or raw == {"and": []}:
        context["empty"] = not context["problems"]
    elif not context["problems"]:
        try:
            node = service.parse(session, raw)
            context["found"] = service.sample(
                session,
                _where(request, source),
                node,
                size=SAMPLE_SIZE,
                principal=console.principal,
            )
        except InvalidInput as exc:
            context["problems"] = _problems(exc)
    return render(request, "console/_segment_result.html", context)


def _problems(exc: InvalidInput) -> list[Problem]:
    """The problems of a refused tree, their paths relative to the tree (``and[0].op``)."""
    details = exc.details if isinstance(exc.details, list) else None
    if not details:
        return [Problem(exc.field or "", exc.message)]
    out = []
    for d in details:
        path = str(d.get("field", ""))
        path = path.removeprefix("tree").removeprefix(".")
        out.append(Problem(path, str(d.get("reason", ""))))
    return out


# --- saving, snapshots, export ----------------------------------------------------------------


@router.post("/segments")
def save(
    request: Request,
    session: SessionDep,
    console: ConsolePost,
    tree: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    segment_id: Annotated[str, Form()] = "",
) -> Response:
    """Save the builder's tree as a new segment, or over the opened one. A refused save
    shows the page again with the draft kept and the reason."""
    _allowed(console)
    opened = service.get(session, int(segment_id)) if segment_id.strip().isdigit() else None
    try:
        raw = _read_tree(tree)
        if opened is None:
            saved = service.create(
                session, name=name, tree=raw, description=description, principal=console.principal
            )
        else:
            saved = service.update(
                session,
                opened.id,
                principal=console.principal,
                name=name,
                tree=raw,
                description=description,
            )
    except SiyuError as exc:
        session.rollback()
        draft = {"name": name, "description": description, "tree": _json_or_none(tree)}
        opened = service.get(session, opened.id) if opened is not None else None
        return _page(
            request,
            session,
            console,
            opened=opened,
            draft=draft,
            error=exc,
            status_code=exc.status,
        )
    return RedirectResponse(f"/console/segments?open={saved.id}&done=saved", status_code=303)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


@router.post("/segments/{segment_id}/delete")
def delete(segment_id: int, session: SessionDep, console: ConsolePost) -> Response:
    _allowed(console)
    service.remove(session, segment_id, principal=console.principal)
    return RedirectResponse("/console/segments?done=deleted", status_code=303)


@router.post("/segments/{segment_id}/snapshots")
def take_snapshot(
    segment_id: int, request: Request, session: SessionDep, console: ConsolePost
) -> Response:
    """Freeze the segment's members now (a campaign works from the snapshot)."""
    _allowed(console)
    service.take_snapshot(session, _where(request), segment_id, principal=console.principal)
    return RedirectResponse(
        f"/console/segments?open={segment_id}&done=snapshot#saved", status_code=303
    )


@router.post("/segments/profile/refresh")
def refresh_profile(
    request: Request, console: ConsolePost, back: Annotated[str, Form()] = ""
) -> Response:
    """Rebuild the member profile counts read, and the rule tags (what the nightly job does)."""
    _allowed(console)
    where = _where(request)
    tags.refresh(where.db, where.analytics_dir, tz=where.tz)
    target = (
        f"/console/segments?open={back}&done=refreshed"
        if back.isdigit()
        else "/console/segments?done=refreshed"
    )
    return RedirectResponse(target, status_code=303)


def _download(request: Request, node: rules.Node, fmt: str, stem: str) -> StreamingResponse:
    if fmt not in ("csv", "parquet"):
        raise InvalidInput("format is csv or parquet", field="format")
    stamp = clock.now().strftime("%Y%m%d%H%M")
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/vnd.apache.parquet"
    return StreamingResponse(
        service.export_stream(_where(request), node, fmt),  # type: ignore[arg-type]
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{stem}-{stamp}.{fmt}"'},
    )


@router.get("/segments/{segment_id}/export")
def export_saved(
    segment_id: int,
    request: Request,
    session: SessionDep,
    console: ConsoleDep,
    format: str = "csv",
) -> Response:
    """Every member of a saved segment as CSV or Parquet (no contact data), as the API."""
    _allowed(console)
    segment = service.get(session, segment_id)
    node = service.parse(session, segment.tree)
    return _download(request, node, format, f"segment-{segment.id}")


@router.post("/segments/export")
def export_draft(
    request: Request,
    session: SessionDep,
    console: ConsolePost,
    tree: Annotated[str, Form()] = "",
    format: Annotated[str, Form()] = "csv",
) -> Response:
    """The builder's tree exported before it is saved."""
    _allowed(console)
    node = service.parse(session, _read_tree(tree))
    return _download(request, node, format, "segment")
