"""Benefit packs (权益包): coupons and points given together, by hand or by the event they
belong to. Services flush, never commit.

Who gets an automatic pack is decided by the programme in force: a tier level's
``benefits.benefit_packs`` lists pack codes. A join pack listed by no level goes to every
new member; otherwise (join, birthday, monthly, tier_upgrade) a pack goes to members whose
current level lists it, a member without a level standing on the ladder's first level.
Every issue is the fact ``pack:<code>:<member>:<period>`` (period: ``join``, the year of a
birthday, the month, ``<level>@<day>`` of an upgrade, the operator's key), kept in
``pack_issues``, so an event or a job seen twice gives the pack once.

Points are granted before coupons are issued, so the member row is locked before the
template row, the same order as the mall (no deadlock between the two).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.orm import Session

from siyu.benefits import coupons, rules
from siyu.benefits.models import BenefitPack, CouponTemplate, PackIssue
from siyu.benefits.rules import PackTrigger
from siyu.core import audit, clock
from siyu.core.auth import Principal
from siyu.core.db import in_chunks
from siyu.core.errors import Conflict, NotFound, Problem, invalid
from siyu.members.models import Member
from siyu.members.rules import MemberStatus
from siyu.programme import service as programme_service
from siyu.programme.rules import Programme

BATCH = 5_000
MAX_CONTENTS = 20


@dataclass
class PackDraft:
    code: str
    name: str
    trigger: str
    contents: list[dict[str, Any]] = field(default_factory=list)  # [{template, quantity}]
    points: int = 0
    description: str | None = None


def _pack_problems(session: Session, draft: PackDraft) -> list[Problem]:
    problems: list[Problem] = []
    if not coupons.CODE_PATTERN.match(draft.code or ""):
        problems.append(Problem("code", "1 to 50 letters, digits, '_' or '-'"))
    if not draft.name.strip():
        problems.append(Problem("name", "required"))
    try:
        PackTrigger(draft.trigger)
    except ValueError:
        problems.append(Problem("trigger", "one of: " + ", ".join(t.value for t in PackTrigger)))
    if draft.points < 0:
        problems.append(Problem("points", "must not be negative"))
    if not draft.contents and draft.points == 0:
        problems.append(Problem("contents", "a pack gives at least one coupon or some points"))
    if len(draft.contents) > MAX_CONTENTS:
        problems.append(Problem("contents", f"at most {MAX_CONTENTS} kinds of coupon"))
    codes = [str(item.get("template", "")) for item in draft.contents]
    known = (
        set(session.scalars(select(CouponTemplate.code).where(CouponTemplate.code.in_(codes))))
        if codes
        else set()
    )
    for i, item in enumerate(draft.contents):
        code = str(item.get("template", ""))
        if code not in known:
            problems.append(
                Problem(f"contents[{i}].template", f"no coupon template with code '{code}'")
            )
        quantity = item.get("quantity", 1)
        if not isinstance(quantity, int) or not 1 <= quantity <= coupons.MAX_QUANTITY:
            problems.append(
                Problem(f"contents[{i}].quantity", f"1 to {coupons.MAX_QUANTITY} coupons")
            )
    if len(set(codes)) != len(codes):
        problems.append(Problem("contents", "name each template once, with its quantity"))
    return problems


def create_pack(
    session: Session, draft: PackDraft, *, principal: Principal
) -> tuple[BenefitPack, bool]:
    """A new pack, or the stored one when the same code comes again with the same content."""
    draft.contents = [
        {"template": str(i.get("template", "")), "quantity": i.get("quantity", 1)}
        for i in draft.contents
    ]
    problems = _pack_problems(session, draft)
    if problems:
        raise invalid(problems, what="benefit_pack")
    stored = session.scalar(select(BenefitPack).where(BenefitPack.code == draft.code))
    fields = ("name", "trigger", "contents", "points", "description")
    if stored is not None:
        if all(getattr(stored, f) == getattr(draft, f) for f in fields):
            return stored, False
        raise Conflict(
            f"benefit pack '{draft.code}' exists with other content; create a new code",
            field="code",
            code="pack_exists",
        )
    now = clock.now()
    pack = BenefitPack(
        code=draft.code,
        status="active",
        created_at=now,
        updated_at=now,
        **{f: getattr(draft, f) for f in fields},
    )
    session.add(pack)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="benefit_pack.create",
        target_type="benefit_pack",
        target_id=pack.id,
        detail={"code": pack.code, "trigger": pack.trigger},
    )
    return pack, True


def get_pack(session: Session, code: str) -> BenefitPack:
    pack = session.scalar(select(BenefitPack).where(BenefitPack.code == code))
    if pack is None:
        raise NotFound(f"no benefit pack with code '{code}'", field="code")
    return pack


def list_packs(session: Session, *, trigger: str | None = None) -> list[BenefitPack]:
    query = select(BenefitPack).order_by(BenefitPack.id)
    if trigger is not None:
        query = query.where(BenefitPack.trigger == trigger)
    return list(session.scalars(query))


# --- issuing -------------------------------------------------------------------------------


@dataclass
class PackResult:
    pack: str
    issued: list[int] = field(default_factory=list)  # members who got the pack now
    replayed: list[int] = field(default_factory=list)  # members who had it for this period
    coupons: int = 0
    points: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # coupons not given, by reason


def issue_pack(
    session: Session,
    pack: BenefitPack,
    member_ids: Sequence[int],
    *,
    period: str | dict[int, str],
    at: datetime | None = None,
    actor: str | None = None,
    tz: str = "Asia/Shanghai",
) -> PackResult:
    """Give a pack to members for a period, set-based. A coupon the stock or a member's
    limit cannot give is skipped (counted by reason), never failing the event that
    triggered the pack; the pack itself is recorded once per member and period.

    ``period`` is one period for everyone, or each member's own (tier-upgrade packs: the
    level and day each member reached), so a chunk of orders issues in one pass."""
    at = at or clock.now()
    result = PackResult(pack.code)
    ids = sorted(set(member_ids))
    if not ids or pack.status != "active":
        return result
    period_of = period if isinstance(period, dict) else dict.fromkeys(ids, period)
    keys = {m: rules.pack_key(pack.code, m, period_of[m]) for m in ids}
    known: set[str] = set()
    for chunk in in_chunks(list(keys.values())):
        known.update(session.scalars(select(PackIssue.key).where(PackIssue.key.in_(chunk))))
    todo = [m for m in ids if keys[m] not in known]
    result.replayed = [m for m in ids if keys[m] in known]
    if not todo:
        return result
    if pack.points > 0:
        from siyu.points import service as points  # above benefits: imported where used

        points.grant_many(
            session,
            [
                points.Grant(m, pack.points, _points_fact(keys[m]), f"benefit pack {pack.code}")
                for m in todo  # in id order: member rows are locked in a fixed order
            ],
            at=at,
        )
        result.points = pack.points * len(todo)
    given: dict[int, int] = {m: 0 for m in todo}
    if pack.contents:
        templates = {
            t.code: t
            for t in session.scalars(
                select(CouponTemplate).where(
                    CouponTemplate.code.in_([i["template"] for i in pack.contents])
                )
            )
        }
        for item in sorted(pack.contents, key=lambda i: templates[i["template"]].id):
            template = templates[item["template"]]
            wanted = [
                coupons.Wanted(m, int(item["quantity"]), f"{keys[m]}:{template.code}") for m in todo
            ]
            issued = coupons.issue_many(
                session, template.id, wanted, source="pack", partial=True, actor=actor, at=at, tz=tz
            )
            for member_id, made in issued.created.items():
                given[member_id] += len(made)
            for member_id, made in issued.replayed.items():
                given[member_id] += len(made)
            for reason in issued.skipped.values():
                label = reason.split(" (")[0]
                result.skipped[label] = result.skipped.get(label, 0) + 1
            result.coupons += issued.created_count
    session.execute(
        insert(PackIssue),
        [
            {
                "pack_id": pack.id,
                "member_id": m,
                "key": keys[m],
                "period": period_of[m],
                "coupons": given[m],
                "points": pack.points,
                "issued_at": at,
            }
            for m in todo
        ],
    )
    session.flush()
    result.issued = todo
    return result


def _points_fact(key: str) -> str:
    """The pack's fact as the points ledger keeps it (facts there are at most 120 long)."""
    if len(key) <= 120:
        return key
    return f"{key[:80]}~{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def issue_by_hand(
    session: Session,
    code: str,
    member_ids: Sequence[int],
    *,
    key: str,
    reason: str,
    principal: Principal,
    tz: str = "Asia/Shanghai",
) -> PackResult:
    """An operator gives a pack (of any trigger) to members; ``key`` names this giving,
    so a retry gives nothing twice."""
    problems = []
    if not key.strip() or len(key) > 100:
        problems.append(Problem("key", "1 to 100 characters naming this issue, for retries"))
    if not reason.strip():
        problems.append(Problem("reason", "say why the pack is given (audit log)"))
    if not member_ids or len(member_ids) > coupons.MAX_ISSUE:
        problems.append(Problem("member_ids", f"1 to {coupons.MAX_ISSUE:,} members"))
    if problems:
        raise invalid(problems, what="issue")
    pack = get_pack(session, code)
    if pack.status != "active":
        raise Conflict(f"benefit pack '{code}' is paused", field="code", code="pack_paused")
    ids = sorted(set(member_ids))
    found: set[int] = set()
    for chunk in in_chunks(ids):
        found.update(session.scalars(select(Member.id).where(Member.id.in_(chunk))))
    unknown = [m for m in ids if m not in found]
    if unknown:
        raise NotFound(f"no member with id {unknown[0]}", field="member_ids")
    result = issue_pack(session, pack, ids, period=f"manual:{key}", actor=principal.actor, tz=tz)
    if result.issued:
        audit.record(
            session,
            actor=principal.actor,
            action="benefit_pack.issue",
            target_type="benefit_pack",
            target_id=pack.id,
            detail={"key": key, "reason": reason, "members": len(result.issued)},
        )
    return result


# --- automatic packs -------------------------------------------------------------------------


def _ladder(programme: Programme | None) -> list[tuple[str, list[str]]]:
    if programme is None:
        return []
    return [(level.code, list(level.benefits.benefit_packs)) for level in programme.tiers.levels]


def _automatic(session: Session, trigger: PackTrigger) -> list[BenefitPack]:
    return list(
        session.scalars(
            select(BenefitPack)
            .where(BenefitPack.trigger == trigger.value, BenefitPack.status == "active")
            .order_by(BenefitPack.id)
        )
    )


def _tiers_of(session: Session, member_ids: Sequence[int]) -> dict[int, str | None]:
    tiers: dict[int, str | None] = {}
    for chunk in in_chunks(sorted(set(member_ids))):
        tiers.update(
            session.execute(
                select(Member.id, Member.tier_code).where(
                    Member.id.in_(chunk), Member.status == MemberStatus.active.value
                )
            ).all()
        )
    return tiers


def _recipients(
    pack: BenefitPack, ladder: list[tuple[str, list[str]]], tiers: dict[int, str | None]
) -> list[int]:
    listing = rules.levels_listing(ladder, pack.code)
    first = ladder[0][0] if ladder else None
    trigger = PackTrigger(pack.trigger)
    return [m for m, tier in tiers.items() if rules.gets_pack(trigger, listing, tier, first)]


def join_packs(
    session: Session, joined: Sequence[tuple[int, datetime]], *, tz: str = "Asia/Shanghai"
) -> int:
    """Join packs for members just enrolled (a bulk enrolment is one call). Returns how
    many packs were given."""
    packs = _automatic(session, PackTrigger.join)
    if not packs or not joined:
        return 0
    programme = programme_service.in_force(session)
    ladder = _ladder(programme_service.programme_of(programme) if programme else None)
    tiers = _tiers_of(session, [m for m, _ in joined])
    given = 0
    for pack in packs:
        result = issue_pack(session, pack, _recipients(pack, ladder, tiers), period="join", tz=tz)
        given += len(result.issued)
    return given


def upgrade_packs(
    session: Session,
    changes: Sequence[tuple[int, str, datetime]],
    *,
    tz: str = "Asia/Shanghai",
) -> int:
    """Tier-upgrade packs for ``(member, level reached, at)``: a pack the new level lists,
    once per member, level and brand-local day."""
    packs = _automatic(session, PackTrigger.tier_upgrade)
    if not packs or not changes:
        return 0
    version = programme_service.in_force(session)
    ladder = _ladder(programme_service.programme_of(version) if version else None)
    active = _tiers_of(session, [m for m, _, _ in changes])
    given = 0
    for pack in packs:
        listing = rules.levels_listing(ladder, pack.code)
        # One pass per round: a member who reached two listed levels in one chunk gets
        # the second in the next round (each member has one period per call).
        pending = [
            (member_id, rules.upgrade_period(to_code, at, tz))
            for member_id, to_code, at in changes
            if member_id in active and to_code in listing
        ]
        while pending:
            round_: dict[int, str] = {}
            later = []
            for member_id, period in pending:
                if member_id in round_:
                    later.append((member_id, period))
                else:
                    round_[member_id] = period
            given += len(issue_pack(session, pack, list(round_), period=round_, tz=tz).issued)
            pending = later
    return given


def _day_at(day: date, tz: str) -> datetime:
    """When a job's packs for ``day`` are issued: now, kept within that brand-local day."""
    start = rules.local_midnight(day, tz)
    end = rules.local_midnight(date.fromordinal(day.toordinal() + 1), tz)
    return clock.as_utc(max(start, min(clock.now(), end)))


def birthday_batch(
    session: Session, day: date, *, after_id: int = 0, batch: int = BATCH, tz: str = "Asia/Shanghai"
) -> tuple[int, int, int]:
    """Birthday packs for up to ``batch`` active members (ids above ``after_id``) born on
    ``day``'s month and day (29 February birthdays on 28 February in common years), once a
    year. Returns (members looked at, packs given, last id)."""
    days = [(day.month, day.day)]
    if (day.month, day.day) == (2, 28) and rules.birthday_matches(date(2000, 2, 29), day):
        days.append((2, 29))
    born = or_(
        *(
            and_(
                func.extract("month", Member.birthday) == m,
                func.extract("day", Member.birthday) == d,
            )
            for m, d in days
        )
    )
    rows = session.execute(
        select(Member.id, Member.tier_code)
        .where(Member.id > after_id, Member.status == MemberStatus.active.value, born)
        .order_by(Member.id)
        .limit(batch)
    ).all()
    if not rows:
        return 0, 0, after_id
    given = _periodic(session, PackTrigger.birthday, rows, str(day.year), day, tz)
    return len(rows), given, rows[-1][0]


def monthly_batch(
    session: Session, day: date, *, after_id: int = 0, batch: int = BATCH, tz: str = "Asia/Shanghai"
) -> tuple[int, int, int]:
    """Monthly packs for up to ``batch`` active members (ids above ``after_id``) whose level
    lists one; once per member and month. Returns (members looked at, packs given, last id)."""
    packs = _automatic(session, PackTrigger.monthly)
    version = programme_service.in_force(session, _day_at(day, tz))
    ladder = _ladder(programme_service.programme_of(version) if version else None)
    levels = sorted({code for p in packs for code in rules.levels_listing(ladder, p.code)})
    if not levels:
        return 0, 0, after_id
    on_level = Member.tier_code.in_(levels)
    if ladder and ladder[0][0] in levels:
        on_level = or_(on_level, Member.tier_code.is_(None))
    rows = session.execute(
        select(Member.id, Member.tier_code)
        .where(Member.id > after_id, Member.status == MemberStatus.active.value, on_level)
        .order_by(Member.id)
        .limit(batch)
    ).all()
    if not rows:
        return 0, 0, after_id
    period = f"{day.year:04d}-{day.month:02d}"
    return len(rows), _periodic(session, PackTrigger.monthly, rows, period, day, tz), rows[-1][0]


def _periodic(
    session: Session, trigger: PackTrigger, rows: Sequence[Any], period: str, day: date, tz: str
) -> int:
    at = _day_at(day, tz)
    packs = _automatic(session, trigger)
    if not packs:
        return 0
    version = programme_service.in_force(session, at)
    ladder = _ladder(programme_service.programme_of(version) if version else None)
    tiers = {row[0]: row[1] for row in rows}
    given = 0
    for pack in packs:
        recipients = _recipients(pack, ladder, tiers)
        given += len(issue_pack(session, pack, recipients, period=period, at=at, tz=tz).issued)
    return given


def issues_of_member(session: Session, member_id: int) -> list[tuple[PackIssue, str]]:
    rows = session.execute(
        select(PackIssue, BenefitPack.code)
        .join(BenefitPack, BenefitPack.id == PackIssue.pack_id)
        .where(PackIssue.member_id == member_id)
        .order_by(PackIssue.id)
    ).all()
    return [(issue, code) for issue, code in rows]
