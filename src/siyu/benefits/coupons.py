"""Coupon templates and coupons: create templates, issue (single, bulk, from packs and the
mall), redeem against an order, give back on refund, expire. Services flush, never commit.

Issuing locks the template row first (``FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serialises writers), so the stock counter and each member's
count of the template cannot be overtaken by a concurrent issue; the ``within_stock``
``CHECK`` is the last guard. Every coupon carries the fact it was issued for
(``issue_key``, unique), so issuing again with the same key returns the same coupons.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from siyu.benefits import rules
from siyu.benefits.models import Coupon, CouponEvent, CouponTemplate
from siyu.benefits.rules import CouponKind, CouponState, Validity
from siyu.core import audit, clock, outbox
from siyu.core.auth import Principal
from siyu.core.bulk import insert_rows, next_ids
from siyu.core.db import in_chunks
from siyu.core.errors import Conflict, InvalidInput, NotFound, Problem, invalid
from siyu.members import service as members
from siyu.members.models import Member
from siyu.members.rules import MemberStatus
from siyu.orders.models import Order, OrderLine
from siyu.orders.rules import OrderStatus

CODE_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,50}$")
MAX_ISSUE = 10_000  # members per issue call; larger lists go through the CLI in chunks
MAX_QUANTITY = 100


def for_update(session: Session, query: Any) -> Any:
    """``query`` locking its rows on PostgreSQL (SQLite already serialises writers), and
    reading them afresh over anything this session holds."""
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return query.execution_options(populate_existing=True)


def check_code(code: str, *, field: str = "code") -> str:
    if not CODE_PATTERN.match(code or ""):
        raise InvalidInput(
            f"'{code}' is not a catalogue code: 1 to 50 letters, digits, '_' or '-'", field=field
        )
    return code


# --- templates ---------------------------------------------------------------------------


@dataclass
class TemplateDraft:
    code: str
    name: str
    kind: str
    validity: str = Validity.relative.value
    threshold_fen: int = 0
    amount_off_fen: int | None = None
    percent_off_bp: int | None = None
    cap_fen: int | None = None
    gift_name: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    valid_days: int | None = None
    stock: int | None = None
    per_member_limit: int | None = None
    channels: list[str] | None = None
    categories: list[str] | None = None
    description: str | None = None


_TEMPLATE_FIELDS = tuple(TemplateDraft.__dataclass_fields__)


def terms_of(template: CouponTemplate) -> rules.Terms:
    return rules.Terms(
        kind=CouponKind(template.kind),
        threshold_fen=template.threshold_fen,
        amount_off_fen=template.amount_off_fen,
        percent_off_bp=template.percent_off_bp,
        cap_fen=template.cap_fen,
        channels=tuple(template.channels) if template.channels is not None else None,
        categories=tuple(template.categories) if template.categories is not None else None,
    )


def _template_problems(draft: TemplateDraft) -> list[Problem]:
    problems: list[Problem] = []
    if not CODE_PATTERN.match(draft.code or ""):
        problems.append(Problem("code", "1 to 50 letters, digits, '_' or '-'"))
    if not draft.name.strip():
        problems.append(Problem("name", "required"))
    try:
        kind = CouponKind(draft.kind)
    except ValueError:
        return [*problems, Problem("kind", "one of: " + ", ".join(k.value for k in CouponKind))]
    try:
        validity = Validity(draft.validity)
    except ValueError:
        return [*problems, Problem("validity", "fixed or relative")]
    if kind is CouponKind.gift and not draft.gift_name:
        problems.append(Problem("gift_name", "a gift coupon names its gift"))
    terms = rules.Terms(
        kind=kind,
        threshold_fen=draft.threshold_fen,
        amount_off_fen=draft.amount_off_fen,
        percent_off_bp=draft.percent_off_bp,
        cap_fen=draft.cap_fen,
        channels=tuple(draft.channels) if draft.channels is not None else None,
        categories=tuple(draft.categories) if draft.categories is not None else None,
    )
    problems += rules.check_terms(
        terms,
        validity=validity,
        valid_from=draft.valid_from,
        valid_until=draft.valid_until,
        valid_days=draft.valid_days,
        stock=draft.stock,
        per_member_limit=draft.per_member_limit,
    )
    return problems


def _same(stored: Any, draft: Any, fields: Sequence[str]) -> bool:
    for name in fields:
        old, new = getattr(stored, name), getattr(draft, name)
        if isinstance(old, datetime) and isinstance(new, datetime):
            old, new = clock.as_utc(old), clock.as_utc(new)
        if old != new:
            return False
    return True


def create_template(
    session: Session, draft: TemplateDraft, *, principal: Principal
) -> tuple[CouponTemplate, bool]:
    """A new template, or the stored one when the same code comes again with the same
    terms (a retry); another template under a taken code is a conflict."""
    problems = _template_problems(draft)
    if problems:
        raise invalid(problems, what="coupon_template")
    stored = session.scalar(select(CouponTemplate).where(CouponTemplate.code == draft.code))
    if stored is not None:
        if _same(stored, draft, _TEMPLATE_FIELDS):
            return stored, False
        raise Conflict(
            f"coupon template '{draft.code}' exists with other terms; templates of issued "
            "coupons do not change: create one under a new code",
            field="code",
            code="template_exists",
        )
    now = clock.now()
    template = CouponTemplate(
        **{name: getattr(draft, name) for name in _TEMPLATE_FIELDS},
        issued=0,
        status="active",
        created_at=now,
        updated_at=now,
    )
    session.add(template)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="coupon_template.create",
        target_type="coupon_template",
        target_id=template.id,
        detail={"code": draft.code, "kind": draft.kind},
    )
    return template, True


def set_template_status(
    session: Session, template_id: int, status: str, *, principal: Principal
) -> CouponTemplate:
    """Pause a template (no more issues; issued coupons stay good) or make it active again."""
    if status not in ("active", "paused"):
        raise InvalidInput("status is 'active' or 'paused'", field="status")
    template = get_template(session, template_id)
    if template.status != status:
        before = template.status
        template.status = status
        template.updated_at = clock.now()
        audit.record(
            session,
            actor=principal.actor,
            action="coupon_template.status",
            target_type="coupon_template",
            target_id=template.id,
            detail={"from": before, "to": status},
        )
        session.flush()
    return template


def get_template(session: Session, template_id: int) -> CouponTemplate:
    template = session.get(CouponTemplate, template_id)
    if template is None:
        raise NotFound(f"no coupon template with id {template_id}", field="template_id")
    return template


def template_by_ref(session: Session, ref: str | int) -> CouponTemplate:
    """A template by id or code: what an operator types."""
    if isinstance(ref, int) or str(ref).isdigit():
        return get_template(session, int(ref))
    template = session.scalar(select(CouponTemplate).where(CouponTemplate.code == ref))
    if template is None:
        raise NotFound(f"no coupon template with code '{ref}'", field="template")
    return template


def list_templates(
    session: Session, *, status: str | None = None, after_id: int | None = None, limit: int = 100
) -> list[CouponTemplate]:
    query = select(CouponTemplate).order_by(CouponTemplate.id).limit(max(1, min(limit, 500)))
    if status is not None:
        query = query.where(CouponTemplate.status == status)
    if after_id is not None:
        query = query.where(CouponTemplate.id > after_id)
    return list(session.scalars(query))


# --- issuing -------------------------------------------------------------------------------


@dataclass
class IssueResult:
    """Per member: the coupons this call created, those an earlier call with the same key
    created (a replay), and why a member got none or fewer than asked."""

    template_id: int
    created: dict[int, list[Coupon]] = field(default_factory=dict)
    replayed: dict[int, list[Coupon]] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def created_count(self) -> int:
        return sum(len(c) for c in self.created.values())


@dataclass(frozen=True)
class Wanted:
    """``quantity`` coupons for a member, for the fact ``key`` (one coupon per ``key#n``)."""

    member_id: int
    quantity: int
    key: str


def issue(
    session: Session,
    template_id: int,
    member_ids: Sequence[int],
    *,
    key: str,
    reason: str,
    principal: Principal,
    quantity: int = 1,
    tz: str = "Asia/Shanghai",
) -> IssueResult:
    """Issue coupons by hand to one member or a list. All or nothing on stock: when there
    is not enough for every member, nothing is issued. Members at the template's
    per-member limit are skipped and named in the result. The same key again returns the
    coupons of the first call."""
    problems: list[Problem] = []
    if not key.strip() or len(key) > 100:
        problems.append(Problem("key", "1 to 100 characters naming this issue, for retries"))
    if not reason.strip():
        problems.append(Problem("reason", "say why these coupons are given (audit log)"))
    if not member_ids:
        problems.append(Problem("member_ids", "at least one member"))
    if len(member_ids) > MAX_ISSUE:
        problems.append(
            Problem("member_ids", f"at most {MAX_ISSUE:,} per call; use `siyu benefits issue`")
        )
    if not 1 <= quantity <= MAX_QUANTITY:
        problems.append(Problem("quantity", f"1 to {MAX_QUANTITY} coupons per member"))
    if problems:
        raise invalid(problems, what="issue")
    unique = list(dict.fromkeys(member_ids))
    wanted = [Wanted(m, quantity, f"issue:{template_id}:{key}:{m}") for m in unique]
    result = issue_many(
        session, template_id, wanted, source="manual", partial=False, actor=principal.actor, tz=tz
    )
    if result.created:
        audit.record(
            session,
            actor=principal.actor,
            action="coupon.issue",
            target_type="coupon_template",
            target_id=template_id,
            detail={
                "key": key,
                "reason": reason,
                "members": len(result.created),
                "coupons": result.created_count,
            },
        )
    return result


def issue_many(
    session: Session,
    template_id: int,
    wanted: Sequence[Wanted],
    *,
    source: str,
    partial: bool,
    actor: str | None = None,
    at: datetime | None = None,
    tz: str = "Asia/Shanghai",
) -> IssueResult:
    """The one issuing path (by hand, packs, mall), set-based: a constant number of
    statements per 500 members. With ``partial`` (packs), what the stock or the template
    cannot give is skipped with a reason instead of refusing the whole call."""
    at = at or clock.now()
    template = session.scalar(
        for_update(session, select(CouponTemplate).where(CouponTemplate.id == template_id))
    )
    if template is None:
        raise NotFound(f"no coupon template with id {template_id}", field="template_id")
    result = IssueResult(template_id)
    keys = {w.member_id: [f"{w.key}#{n}" for n in range(1, w.quantity + 1)] for w in wanted}
    all_keys = [k for ks in keys.values() for k in ks]
    existing: dict[str, Coupon] = {}
    for chunk in in_chunks(all_keys):
        for coupon in session.scalars(select(Coupon).where(Coupon.issue_key.in_(chunk))):
            existing[coupon.issue_key] = coupon
    missing: dict[int, list[str]] = {}
    for member_id, member_keys in keys.items():
        found = [existing[k] for k in member_keys if k in existing]
        if found:
            result.replayed[member_id] = found
        todo = [k for k in member_keys if k not in existing]
        if todo:
            missing[member_id] = todo
    if not missing:
        return result

    refusal = _template_refusal(template, at)
    if refusal is not None:
        if not partial:
            raise Conflict(refusal, field="template_id", code="template_unavailable")
        for member_id in missing:
            result.skipped[member_id] = refusal
        return result

    statuses: dict[int, str] = {}
    held: dict[int, int] = {}
    ids = sorted(missing)
    for chunk in in_chunks(ids):
        statuses.update(
            session.execute(select(Member.id, Member.status).where(Member.id.in_(chunk))).all()
        )
        if template.per_member_limit is not None:
            held.update(
                session.execute(
                    select(Coupon.member_id, func.count())
                    .where(Coupon.template_id == template.id, Coupon.member_id.in_(chunk))
                    .group_by(Coupon.member_id)
                ).all()
            )
    unknown = [m for m in ids if m not in statuses]
    if unknown and not partial:
        raise NotFound(
            f"no member with id {', '.join(map(str, unknown[:10]))}"
            + (f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""),
            field="member_ids",
        )
    plan: list[tuple[int, str]] = []
    for member_id in ids:
        status = statuses.get(member_id)
        if status != MemberStatus.active.value:
            result.skipped[member_id] = f"the member is {status or 'unknown'}, not active"
            continue
        todo = missing[member_id]
        already = held.get(member_id, 0)
        allowed = rules.allowance(
            len(todo), held=already, per_member_limit=template.per_member_limit
        )
        if allowed < len(todo):
            result.skipped[member_id] = (
                f"at the limit of {template.per_member_limit} per member "
                f"({already} held, {len(todo)} asked)"
            )
        plan += [(member_id, k) for k in todo[:allowed]]
    left = rules.stock_left(template.stock, template.issued)
    if left is not None and len(plan) > left:
        if not partial:
            raise Conflict(
                f"coupon template '{template.code}' has {left} coupons left in stock and this "
                f"issue needs {len(plan)}; raise the stock or issue to fewer members",
                field="template_id",
                code="out_of_stock",
            )
        for member_id, _ in plan[left:]:
            result.skipped.setdefault(member_id, "the template is out of stock")
        plan = plan[:left]
    if not plan:
        return result

    template.issued += len(plan)
    template.updated_at = at
    valid_from, valid_until = rules.validity_window(
        validity=Validity(template.validity),
        issued_at=at,
        valid_from=template.valid_from,
        valid_until=template.valid_until,
        valid_days=template.valid_days,
        tz=tz,
    )
    rows = [
        {
            "code": rules.new_code(),
            "template_id": template.id,
            "member_id": member_id,
            "state": CouponState.usable.value,
            "issued_at": at,
            "valid_from": valid_from,
            "valid_until": valid_until,
            "issue_key": issue_key,
            "source": source,
            "order_id": None,
            "discount_fen": 0,
            "used_at": None,
        }
        for member_id, issue_key in plan
    ]
    session.flush()
    # Ids reserved up front and one executemany per table (``siyu.core.bulk``): with
    # ``RETURNING`` in parameter order SQLAlchemy sent the coupons of a chunk's tier-upgrade
    # packs a few rows per statement.
    new_ids = next_ids(session, Coupon.__table__, len(rows))
    for row, coupon_id in zip(rows, new_ids, strict=True):
        row["id"] = coupon_id
    insert_rows(session, Coupon.__table__, rows)
    insert_rows(
        session,
        CouponEvent.__table__,
        [
            {
                "coupon_id": coupon_id,
                "kind": "issued",
                "at": at,
                "order_id": None,
                "refund_id": None,
                "discount_fen": None,
                "actor": actor,
            }
            for coupon_id in new_ids
        ],
    )
    by_id = {c.id: c for c in _coupons_by_ids(session, new_ids)}
    for coupon_id, (member_id, _) in zip(new_ids, plan, strict=True):
        result.created.setdefault(member_id, []).append(by_id[coupon_id])
    return result


def _coupons_by_ids(session: Session, ids: Sequence[int]) -> list[Coupon]:
    found: list[Coupon] = []
    for chunk in in_chunks(list(ids)):
        found += session.scalars(select(Coupon).where(Coupon.id.in_(chunk)))
    return found


def _template_refusal(template: CouponTemplate, at: datetime) -> str | None:
    if template.status != "active":
        return f"coupon template '{template.code}' is paused; make it active to issue"
    ended = template.valid_until
    if template.validity == Validity.fixed and ended is not None and clock.as_utc(ended) <= at:
        return (
            f"coupon template '{template.code}' was valid until "
            f"{clock.as_utc(ended).isoformat()}; nothing issued now could be used"
        )
    return None


# --- reading -------------------------------------------------------------------------------


def get_coupon(session: Session, code: str, *, principal: Principal | None = None) -> Coupon:
    coupon = session.scalar(select(Coupon).where(Coupon.code == rules.normalize_code(code)))
    if coupon is None:
        raise NotFound(f"no coupon with code '{code}'", field="code")
    if principal is not None:
        try:
            members.get(session, coupon.member_id, principal=principal)
        except NotFound:
            raise NotFound(f"no coupon with code '{code}' among your members") from None
    return coupon


def coupons_of_member(
    session: Session,
    member_id: int,
    *,
    principal: Principal | None = None,
    state: CouponState | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[Coupon]:
    """A member's coupons as the member sees them: ``usable`` are those still valid now,
    ``expired`` includes usable ones whose validity ended before the nightly job ran."""
    members.get(session, member_id, principal=principal)
    now = clock.now()
    query = select(Coupon).where(Coupon.member_id == member_id)
    if state is CouponState.usable:
        query = query.where(Coupon.state == CouponState.usable.value, Coupon.valid_until > now)
    elif state is CouponState.expired:
        query = query.where(
            (Coupon.state == CouponState.expired.value)
            | ((Coupon.state == CouponState.usable.value) & (Coupon.valid_until <= now))
        )
    elif state is CouponState.used:
        query = query.where(Coupon.state == CouponState.used.value)
    if after_id is not None:
        query = query.where(Coupon.id > after_id)
    return list(session.scalars(query.order_by(Coupon.id).limit(max(1, min(limit, 500)))))


def history(session: Session, coupon_id: int) -> list[CouponEvent]:
    return list(
        session.scalars(
            select(CouponEvent).where(CouponEvent.coupon_id == coupon_id).order_by(CouponEvent.id)
        )
    )


def templates_by_ids(session: Session, ids: Sequence[int]) -> dict[int, CouponTemplate]:
    found: dict[int, CouponTemplate] = {}
    for chunk in in_chunks(sorted(set(ids))):
        for t in session.scalars(select(CouponTemplate).where(CouponTemplate.id.in_(chunk))):
            found[t.id] = t
    return found


# --- redeeming -----------------------------------------------------------------------------


@dataclass
class Redeemed:
    coupon: Coupon
    created: bool  # false: this coupon was already redeemed on this order (a retry)


def _order_facts(session: Session, order: Order) -> rules.OrderFacts:
    lines = session.scalars(
        select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.line_no)
    )
    return rules.OrderFacts(
        order_id=order.id,
        member_id=order.member_id,
        channel=order.channel,
        paid_at=clock.as_utc(order.paid_at),
        freight_fen=order.freight_fen,
        fully_refunded=order.status == OrderStatus.refunded.value,
        lines=tuple(rules.Line(x.category, x.amount_fen, x.refunded_fen) for x in lines),
    )


def find_order(
    session: Session,
    *,
    order_id: int | None = None,
    channel: str | None = None,
    external_id: str | None = None,
) -> Order:
    if order_id is not None:
        order = session.get(Order, order_id)
        if order is None:
            raise NotFound(f"no order with id {order_id}", field="order_id")
        return order
    if not channel or not external_id:
        raise InvalidInput("name the order: order_id, or channel and external_id", field="order_id")
    order = session.scalar(
        select(Order).where(Order.channel == channel, Order.external_id == external_id)
    )
    if order is None:
        raise NotFound(f"no {channel} order {external_id}", field="external_id")
    return order


def redeem(
    session: Session,
    code: str,
    *,
    order_id: int | None = None,
    channel: str | None = None,
    external_id: str | None = None,
    actor: str | None = None,
) -> Redeemed:
    """Use a coupon on an order of its member. The coupon row is locked, so one coupon is
    never used twice; redeeming it again on the same order returns the first result."""
    order = find_order(session, order_id=order_id, channel=channel, external_id=external_id)
    coupon = session.scalar(
        for_update(session, select(Coupon).where(Coupon.code == rules.normalize_code(code)))
    )
    if coupon is None:
        raise NotFound(f"no coupon with code '{code}'", field="code")
    if coupon.state == CouponState.used and coupon.order_id == order.id:
        return Redeemed(coupon, created=False)
    template = get_template(session, coupon.template_id)
    terms = terms_of(template)
    facts = _order_facts(session, order)
    discount, refusal = rules.check_redeem(
        rules.CouponFacts(
            coupon.member_id,
            CouponState(coupon.state),
            clock.as_utc(coupon.valid_from),
            clock.as_utc(coupon.valid_until),
        ),
        terms,
        facts,
    )
    if refusal is not None:
        error = Conflict if refusal.code in ("coupon_used", "coupon_expired") else InvalidInput
        if refusal.code == "coupon_expired" and refusal.field == "order_id":
            error = InvalidInput
        raise error(refusal.message, field=refusal.field, code=refusal.code)
    now = clock.now()
    coupon.state = CouponState.used.value
    coupon.order_id = order.id
    coupon.discount_fen = discount
    coupon.used_at = now
    session.add(
        CouponEvent(
            coupon_id=coupon.id,
            kind="redeemed",
            at=now,
            order_id=order.id,
            discount_fen=discount,
            actor=actor,
        )
    )
    outbox.emit(
        session,
        "coupon.redeemed",
        {
            "coupon_id": coupon.id,
            "member_id": coupon.member_id,
            "order_id": order.id,
            "discount_fen": discount,
        },
        key=f"member:{coupon.member_id}",
    )
    session.flush()
    return Redeemed(coupon, created=True)


# --- refunds and expiry --------------------------------------------------------------------


def return_for_refund(session: Session, *, order_id: int, refund_id: int) -> list[Coupon]:
    """Give back the coupons used on an order the refund undid (see
    ``rules.returned_by_refund``): usable again while still valid, else expired."""
    used = list(
        session.scalars(
            for_update(
                session,
                select(Coupon).where(
                    Coupon.order_id == order_id, Coupon.state == CouponState.used.value
                ),
            )
        )
    )
    if not used:
        return []
    order = session.get(Order, order_id)
    assert order is not None
    facts = _order_facts(session, order)
    templates = templates_by_ids(session, [c.template_id for c in used])
    now = clock.now()
    returned = []
    for coupon in used:
        if not rules.returned_by_refund(terms_of(templates[coupon.template_id]), facts):
            continue
        coupon.state = rules.state_after_return(clock.as_utc(coupon.valid_until), now).value
        session.add(
            CouponEvent(
                coupon_id=coupon.id,
                kind="returned",
                at=now,
                order_id=order_id,
                refund_id=refund_id,
                discount_fen=coupon.discount_fen,
            )
        )
        if coupon.state == CouponState.expired:
            session.add(CouponEvent(coupon_id=coupon.id, kind="expired", at=now))
        coupon.order_id = None
        coupon.discount_fen = 0
        coupon.used_at = None
        returned.append(coupon)
    session.flush()
    return returned


def expire_batch(session: Session, *, cutoff: datetime, limit: int = 5_000) -> int:
    """Mark up to ``limit`` usable coupons whose validity ended by ``cutoff`` as expired,
    with their history; returns how many (0: nothing left)."""
    ids = list(
        session.scalars(
            select(Coupon.id)
            .where(Coupon.state == CouponState.usable.value, Coupon.valid_until <= cutoff)
            .order_by(Coupon.id)
            .limit(limit)
        )
    )
    if not ids:
        return 0
    now = clock.now()
    expired: list[int] = []
    for chunk in in_chunks(ids):
        expired += session.scalars(
            update(Coupon)
            .where(Coupon.id.in_(chunk), Coupon.state == CouponState.usable.value)
            .values(state=CouponState.expired.value)
            .returning(Coupon.id)
        )
    if not expired:
        return len(ids)
    session.execute(
        insert(CouponEvent),
        [
            {
                "coupon_id": i,
                "kind": "expired",
                "at": now,
                "order_id": None,
                "refund_id": None,
                "discount_fen": None,
                "actor": None,
            }
            for i in expired
        ],
    )
    session.flush()
    return len(ids)


def summary(session: Session, template_id: int) -> dict[str, int]:
    """How a template's coupons stand: counts by state and the discount they gave."""
    rows = session.execute(
        select(Coupon.state, func.count(), func.coalesce(func.sum(Coupon.discount_fen), 0))
        .where(Coupon.template_id == template_id)
        .group_by(Coupon.state)
    ).all()
    out = {s.value: 0 for s in CouponState}
    discount = 0
    for state, count, fen in rows:
        out[state] = count
        discount += int(fen)
    out["discount_fen"] = discount
    return out
