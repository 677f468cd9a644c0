"""The programme's "simulate before publish" (/console/programme/simulate): the
simulator's side-by-side result for the draft being edited; and, in the version history,
what each version changed (/console/programme/versions/{id}/changes).

The preview page of a valid draft posts the draft (the JSON it would publish) here; the
simulator replays the brand's history under it and under the programme in force, and the
page shows both columns with the differences marked. Like ``POST /programme/simulate`` the
route reads through the simulator's own read-only connection, not a unit of work, so a
replay holds no write lock on SQLite. Operators and analysts may simulate (as they may
preview); publishing stays the operator's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.api.deps import SessionDep, get_db
from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.core.errors import Problem, invalid
from siyu.insight import simulator
from siyu.insight.simulator import Simulation
from siyu.members.models import Member
from siyu.members.rules import MemberStatus
from siyu.programme import rules as programme_rules
from siyu.programme import service as programmes
from siyu.programme.models import ProgrammeVersion
from siyu.programme.rules import Programme
from siyu.web import i18n, programme_form
from siyu.web.deps import ConsoleDep, ConsolePost, PageRoute, require_role
from siyu.web.i18n import DEFAULT_LOCALE, N_
from siyu.web.render import locale_of, render

router = APIRouter(prefix="/console", route_class=PageRoute, include_in_schema=False)

DbDep = Annotated[Database, Depends(get_db)]

# Members replayed in full before the page samples: at about 2,000 members a second for
# both columns, a replay of this many answers in a few seconds.
AUTO_SAMPLE_MEMBERS = 5_000


# --- the side-by-side view ------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of the comparison: what it counts, the two columns and their difference."""

    label: str  # a msgid ('' when the code or the figure says it all)
    code: str  # a level, plan or pack code ('' for totals)
    name: str  # the level's or plan's name, from the draft or the programme in force
    baseline: int | None
    draft: int | None
    unit: str  # members | points | growth | packs | fen (shown as yuan)
    bars: tuple[float, float] | None = None  # shares of members (the tier distribution)
    # One of the simulator's named figures: its field, and its name already in the page's
    # language (``simulator.FIGURE_NAMES``, not a msgid: the template shows it as it is).
    figure: str = ""
    title: str = ""

    @property
    def delta(self) -> int | None:
        if self.baseline is None or self.draft is None:
            return None
        return self.draft - self.baseline

    @property
    def changed(self) -> bool:
        return self.baseline != self.draft


@dataclass(frozen=True)
class Group:
    key: str
    title: str  # msgid
    lines: list[Line] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return sum(1 for line in self.lines if line.changed)


def _names(*programmes_: Programme) -> dict[str, str]:
    """Level and plan names by code; the first programme that names a code wins."""
    names: dict[str, str] = {}
    for programme in reversed(programmes_):
        names.update({lv.code: lv.name for lv in programme.tiers.levels})
        names.update({p.code: p.name for p in (programme.paid.plans if programme.paid else [])})
    return names


def _share(n: int | None, total: int) -> float:
    return round(100 * (n or 0) / total, 1) if total else 0.0


def side_by_side(
    result: Simulation, baseline: Programme, draft: Programme, locale: str = DEFAULT_LOCALE
) -> list[Group]:
    """The simulator's two columns as groups of lines, in the order of ``Simulation.rows``:
    the numbers are the simulator's own (``Figures``), only arranged and named; its figures
    by the simulator's names (the same words as ``siyu insight simulate``) in ``locale``."""
    b, d = result.baseline, result.draft
    zh = i18n.normalize(locale) == "zh_CN"

    def figure(name: str, zh_name: str, en_name: str, unit: str) -> Line:
        title = zh_name if zh else en_name
        numbers = (getattr(b, name), getattr(d, name))
        return Line("", "", "", *numbers, unit, figure=name, title=title)

    names = _names(draft, baseline)
    tiers = Group("tiers", N_("Tier distribution at the end"))
    b_total, d_total = sum(b.tiers.values()), sum(d.tiers.values())
    for code in result.levels:
        label = N_("No tier") if code == simulator.NO_TIER else ""
        before, after = b.tiers.get(code), d.tiers.get(code)
        bars = (_share(before, b_total), _share(after, d_total))
        tiers.lines.append(
            Line(label, "" if label else code, names.get(code, ""), before, after, "members", bars)
        )
    moves = Group("movements", N_("Tier movements in the period"))
    for code in result.levels:
        up = (b.upgrades.get(code, 0), d.upgrades.get(code, 0))
        moves.lines.append(Line(N_("Upgraded to"), code, names.get(code, ""), *up, "members"))
    for code in result.levels:
        down = (b.downgrades.get(code, 0), d.downgrades.get(code, 0))
        moves.lines.append(Line(N_("Downgraded from"), code, names.get(code, ""), *down, "members"))
    points = Group("points", N_("Growth and points issued"))
    points.lines.extend(figure(*spec) for spec in simulator.POINT_NAMES)
    liability = Group("liability", N_("Expiry and liability"))
    liability.lines.extend(figure(*spec) for spec in simulator.LIABILITY_NAMES)
    benefits = Group("benefits", N_("Benefit cost"))
    costs: dict[tuple[str, str], list[Any]] = {}
    for column, figures in enumerate((b, d)):
        for c in figures.benefit_packs:
            costs.setdefault((c.pack, c.tier), [None, None])[column] = c
    for (pack, tier), (bc, dc) in sorted(costs.items()):
        packs = (bc.packs if bc else 0, dc.packs if dc else 0)
        cost = (bc.cost_fen if bc else 0, dc.cost_fen if dc else 0)
        trigger = (bc or dc).trigger
        where = f"{pack} · {tier}"
        benefits.lines.append(Line(_TRIGGERS.get(trigger, trigger), where, "", *packs, "packs"))
        benefits.lines.append(Line(N_("Cost (yuan)"), where, "", *cost, "fen"))
    benefits.lines.extend(figure(*spec) for spec in simulator.BENEFIT_NAMES)
    paid = Group("paid", N_("Paid plans: members eligible at the end"))
    for plan in sorted(set(b.paid_eligible) | set(d.paid_eligible)):
        eligible = (b.paid_eligible.get(plan), d.paid_eligible.get(plan))
        paid.lines.append(Line("", plan, names.get(plan, ""), *eligible, "members"))
    return [g for g in (tiers, moves, points, liability, benefits, paid) if g.lines]


_TRIGGERS = {
    "join": N_("Packs on joining"),
    "tier_upgrade": N_("Packs on a tier upgrade"),
    "monthly": N_("Monthly packs"),
    "birthday": N_("Birthday packs"),
}


# --- the route --------------------------------------------------------------------------------


def _with_read_only(db: Database, read: Callable[[Session], Any]) -> Any:
    """Read through the simulator's read-only connection (no write lock on SQLite)."""
    with simulator.read_only(db) as conn:
        session = Session(bind=conn)
        try:
            return read(session)
        finally:
            session.close()


def _sample(db: Database, text: str) -> float | None:
    """The share of members to replay: the form's choice, or (empty) every member of a
    brand up to ``AUTO_SAMPLE_MEMBERS`` and a sample of about that many above it."""
    text = text.strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 < value <= 1:
            reason = f"a share of members above 0 and at most 1 (0.1 is 10%), not '{text}'"
            raise invalid([Problem("sample", reason)], what="simulation")
        return None if value == 1 else value
    members = _with_read_only(
        db,
        lambda s: s.scalar(
            select(func.count(Member.id)).where(Member.status != MemberStatus.merged.value)
        ),
    )
    if not members or members <= AUTO_SAMPLE_MEMBERS:
        return None
    buckets = max(1, round(simulator.BUCKETS * AUTO_SAMPLE_MEMBERS / members))
    return buckets / simulator.BUCKETS


@router.post("/programme/simulate", response_class=HTMLResponse)
def programme_simulate(
    request: Request,
    db: DbDep,
    console: ConsolePost,
    document: Annotated[str, Form()],
    sample: Annotated[str, Form()] = "",
) -> Response:
    """Replay the history under the draft and the programme in force, side by side. htmx
    asks for the result alone (placed on the preview page, above its publish button);
    a plain form post gets a page with the result and its own publish button. An invalid
    draft (only a hand-made post: the button is on valid drafts) is a 422 listing its
    problems."""
    require_role(console, Role.operator, Role.analyst)
    fragment = bool(request.headers.get("HX-Request"))
    raw, problems = programme_rules.parse_text(document, fmt="json")
    if not problems:
        problems = programmes.validate(raw)
    context: dict[str, Any] = {"user": console, "draft_json": document, "problems": problems}
    template = (
        "console/_programme_simulation.html" if fragment else "console/programme_simulation.html"
    )
    if problems:
        context |= {"groups": [], "result": None}
        return render(request, template, context, status_code=422)
    draft = programmes.parse(raw)
    share = _sample(db, sample)
    result = simulator.simulate(db, draft, sample=share)
    baseline = _with_read_only(
        db, lambda s: programmes.programme_of(programmes.get(s, result.baseline_version_id))
    )
    groups = side_by_side(result, baseline, draft, locale_of(request))
    context |= {"result": result, "groups": groups}
    return render(request, template, context)


# --- version history: what each version changed ------------------------------------------------


def previous_version(session: Session, version: ProgrammeVersion) -> ProgrammeVersion | None:
    """The version just before ``version`` in the order they take effect (ties: by id)."""
    stmt = (
        select(ProgrammeVersion)
        .where(
            (ProgrammeVersion.effective_from < version.effective_from)
            | (
                (ProgrammeVersion.effective_from == version.effective_from)
                & (ProgrammeVersion.id < version.id)
            )
        )
        .order_by(ProgrammeVersion.effective_from.desc(), ProgrammeVersion.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


@router.get("/programme/versions/{version_id}/changes", response_class=HTMLResponse)
def programme_version_changes(
    version_id: int, request: Request, session: SessionDep, console: ConsoleDep
) -> Response:
    """A version of the history with what it changed against the version before it."""
    version = programmes.get(session, version_id)
    previous = previous_version(session, version)
    document = version.document
    changes = programme_rules.diff(previous.document if previous else None, document)
    return render(
        request,
        "console/programme_version.html",
        {
            "user": console,
            "version": version,
            "previous": previous,
            "changes": changes,
            "label_of": lambda path: programme_form.label_of(document, path),
            "text": yaml.safe_dump(document, allow_unicode=True, sort_keys=False),
        },
    )
