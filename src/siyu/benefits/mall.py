"""The points mall (积分商城): rewards members take for points, and their fulfilment.
Services flush, never commit.

A redemption is one transaction, idempotent on the member's key: the reward row is locked
(``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers), stock,
per-member limit, tier, visibility and (for paid members' rewards) the member's paid
membership are checked under that lock, the points are spent
through the points ledger (which locks the member row: always reward, then member, then
coupon template), the stock is taken, and the coupon issued or the fulfilment recorded.
Cancelling a gift gives the points back (``points.cancel_spend``) and the stock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.benefits import coupons, rules
from siyu.benefits.models import Coupon, CouponTemplate, Redemption, Reward
from siyu.benefits.rules import RedemptionState, RewardKind
from siyu.core import audit, clock, outbox
from siyu.core.auth import Principal
from siyu.core.errors import Conflict, InvalidInput, NotFound, Problem, invalid
from siyu.members import service as members
from siyu.members.rules import MemberStatus
from siyu.programme import service as programme_service

MAX_QUANTITY = 100
MAX_KEY = 64  # the spend's fact (mall:<member>:<key>) fits the points ledger's 120


@dataclass
class RewardDraft:
    code: str
    name: str
    kind: str
    points_price: int
    cash_price_fen: int = 0
    template_code: str | None = None
    stock: int | None = None
    per_member_limit: int | None = None
    min_tier_code: str | None = None
    visible_from: datetime | None = None
    visible_until: datetime | None = None
    description: str | None = None
    paid_only: bool = False  # for paid members only (付费会员专享)
    paid_plans: list[str] | None = None  # ... of these plans only; None: any plan


UPDATABLE = (
    "name",
    "description",
    "points_price",
    "cash_price_fen",
    "stock",
    "per_member_limit",
    "min_tier_code",
    "paid_only",
    "paid_plans",
    "visible_from",
    "visible_until",
    "status",
)


def _ladder(session: Session, at: datetime | None = None) -> list[str]:
    version = programme_service.in_force(session, at)
    if version is None:
        return []
    return [level.code for level in programme_service.programme_of(version).tiers.levels]


def _plans(session: Session, at: datetime | None = None) -> list[str]:
    version = programme_service.in_force(session, at)
    paid = programme_service.programme_of(version).paid if version is not None else None
    return [p.code for p in paid.plans] if paid is not None else []


def _paid_problems(values: dict[str, Any], plans: list[str]) -> list[Problem]:
    """A reward for some plans only is a paid-only reward naming plans of the programme."""
    if "paid_only" in values and values["paid_only"] is None:
        return [Problem("paid_only", "true or false")]
    named = values.get("paid_plans")
    if named is None:
        return []
    if not named:
        return [Problem("paid_plans", "name at least one plan, or leave it out for any plan")]
    problems = [
        Problem(
            "paid_plans",
            f"'{code}' is not a paid plan of the programme in force ({', '.join(plans) or 'none'})",
        )
        for code in named
        if code not in plans
    ]
    if not values.get("paid_only"):
        problems.append(Problem("paid_plans", "plans restrict a paid-only reward: set paid_only"))
    return problems


def _reward_problems(values: dict[str, Any], ladder: list[str]) -> list[Problem]:
    problems: list[Problem] = []
    if "points_price" in values and (values["points_price"] is None or values["points_price"] < 0):
        problems.append(Problem("points_price", "0 or more points"))
    if "cash_price_fen" in values and (
        values["cash_price_fen"] is None or values["cash_price_fen"] < 0
    ):
        problems.append(Problem("cash_price_fen", "0 or more fen"))
    if values.get("stock") is not None and values["stock"] < 0:
        problems.append(Problem("stock", "must not be negative (leave it out for no limit)"))
    if values.get("per_member_limit") is not None and values["per_member_limit"] < 1:
        problems.append(Problem("per_member_limit", "at least 1 (leave it out for no limit)"))
    tier = values.get("min_tier_code")
    if tier is not None and tier not in ladder:
        problems.append(
            Problem(
                "min_tier_code",
                f"'{tier}' is not a level of the programme in force "
                f"({', '.join(ladder) or 'none'})",
            )
        )
    start, end = values.get("visible_from"), values.get("visible_until")
    if start is not None and end is not None and end <= start:
        problems.append(Problem("visible_until", "must be after visible_from"))
    if "status" in values and values["status"] not in ("active", "paused"):
        problems.append(Problem("status", "'active' or 'paused'"))
    if "name" in values and not (values["name"] or "").strip():
        problems.append(Problem("name", "required"))
    return problems


def create_reward(
    session: Session, draft: RewardDraft, *, principal: Principal
) -> tuple[Reward, bool]:
    """A new reward, or the stored one when the same code comes again with the same terms."""
    values = {f: getattr(draft, f) for f in UPDATABLE if f != "status"}
    problems = _reward_problems(values, _ladder(session))
    problems += _paid_problems(values, _plans(session))
    if not coupons.CODE_PATTERN.match(draft.code or ""):
        problems.insert(0, Problem("code", "1 to 50 letters, digits, '_' or '-'"))
    try:
        kind = RewardKind(draft.kind)
    except ValueError:
        problems.append(Problem("kind", "one of: " + ", ".join(k.value for k in RewardKind)))
        kind = None
    template_id = None
    if kind is RewardKind.coupon:
        if not draft.template_code:
            problems.append(Problem("template", "a coupon reward names its coupon template"))
        else:
            template = session.scalar(
                select(CouponTemplate).where(CouponTemplate.code == draft.template_code)
            )
            if template is None:
                problems.append(
                    Problem("template", f"no coupon template with code '{draft.template_code}'")
                )
            else:
                template_id = template.id
    elif draft.template_code:
        problems.append(Problem("template", "only coupon rewards name a template"))
    if kind is RewardKind.points_cash and draft.cash_price_fen <= 0:
        problems.append(Problem("cash_price_fen", "points plus cash needs a cash price"))
    if kind is not None and kind is not RewardKind.points_cash and draft.cash_price_fen:
        problems.append(Problem("cash_price_fen", "only points_cash rewards have a cash price"))
    if problems:
        raise invalid(problems, what="reward")
    stored = session.scalar(select(Reward).where(Reward.code == draft.code))
    if stored is not None:
        same = stored.kind == draft.kind and stored.template_id == template_id
        for f, v in values.items():
            old = getattr(stored, f)
            if isinstance(old, datetime) and isinstance(v, datetime):
                old, v = clock.as_utc(old), clock.as_utc(v)
            same = same and old == v
        if same:
            return stored, False
        raise Conflict(
            f"reward '{draft.code}' exists with other terms; change it with PATCH "
            f"/rewards/{stored.id} or use a new code",
            field="code",
            code="reward_exists",
        )
    now = clock.now()
    reward = Reward(
        code=draft.code,
        kind=draft.kind,
        template_id=template_id,
        redeemed=0,
        status="active",
        created_at=now,
        updated_at=now,
        **values,
    )
    session.add(reward)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="reward.create",
        target_type="reward",
        target_id=reward.id,
        detail={"code": reward.code, "kind": reward.kind, "points_price": reward.points_price},
    )
    return reward, True


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def update_reward(
    session: Session, reward_id: int, changes: dict[str, Any], *, principal: Principal
) -> Reward:
    """Change a reward's terms; the stock cannot go below what was already taken."""
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise InvalidInput(f"{unknown[0]} cannot be changed", field=unknown[0])
    reward = session.scalar(
        coupons.for_update(session, select(Reward).where(Reward.id == reward_id))
    )
    if reward is None:
        raise NotFound(f"no reward with id {reward_id}", field="reward_id")
    merged = {f: getattr(reward, f) for f in UPDATABLE} | changes
    problems = _reward_problems(
        {f: merged[f] for f in changes}
        | {"visible_from": merged["visible_from"], "visible_until": merged["visible_until"]},
        _ladder(session),
    )
    if "paid_only" in changes or "paid_plans" in changes:
        problems += _paid_problems(merged, _plans(session))
    if merged["stock"] is not None and merged["stock"] < reward.redeemed:
        problems.append(
            Problem("stock", f"{reward.redeemed} were taken already; the stock cannot be lower")
        )
    if problems:
        raise invalid(problems, what="reward")
    before = {f: _jsonable(getattr(reward, f)) for f in changes}
    for f, v in changes.items():
        setattr(reward, f, v)
    reward.updated_at = clock.now()
    audit.record(
        session,
        actor=principal.actor,
        action="reward.update",
        target_type="reward",
        target_id=reward.id,
        detail={"before": before, "after": {f: _jsonable(v) for f, v in changes.items()}},
    )
    session.flush()
    return reward


def get_reward(session: Session, reward_id: int) -> Reward:
    reward = session.get(Reward, reward_id)
    if reward is None:
        raise NotFound(f"no reward with id {reward_id}", field="reward_id")
    return reward


def list_rewards(session: Session, *, status: str | None = None) -> list[Reward]:
    query = select(Reward).order_by(Reward.id)
    if status is not None:
        query = query.where(Reward.status == status)
    return list(session.scalars(query))


def facts_of(reward: Reward) -> rules.RewardFacts:
    return rules.RewardFacts(
        kind=RewardKind(reward.kind),
        active=reward.status == "active",
        points_price=reward.points_price,
        stock=reward.stock,
        redeemed=reward.redeemed,
        per_member_limit=reward.per_member_limit,
        min_tier_code=reward.min_tier_code,
        visible_from=clock.as_utc(reward.visible_from) if reward.visible_from else None,
        visible_until=clock.as_utc(reward.visible_until) if reward.visible_until else None,
    )


def _held(session: Session, member_id: int, reward_ids: list[int] | None = None) -> dict[int, int]:
    """Quantities a member holds of each reward (cancelled redemptions do not count)."""
    query = (
        select(Redemption.reward_id, func.coalesce(func.sum(Redemption.quantity), 0))
        .where(
            Redemption.member_id == member_id,
            Redemption.state != RedemptionState.cancelled.value,
        )
        .group_by(Redemption.reward_id)
    )
    if reward_ids is not None:
        query = query.where(Redemption.reward_id.in_(reward_ids))
    return {r: int(q) for r, q in session.execute(query)}


# --- what a member sees --------------------------------------------------------------------


@dataclass
class MallItem:
    reward: Reward
    stock_left: int | None
    member_left: int | None
    affordable: bool
    exclusive: bool = False  # a paid members' reward, shown because the member holds a card


@dataclass
class Mall:
    member_id: int
    available_points: int
    items: list[MallItem]


def mall_of(
    session: Session,
    member_id: int,
    *,
    principal: Principal | None = None,
    affordable_only: bool = False,
) -> Mall:
    """The rewards a member may take now (visible, their level is high enough, paid members'
    rewards when their card holds benefits, not sold out, under their limit), each flagged
    with whether their points cover it and whether it is exclusive to paid members."""
    from siyu.paid import rules as paid_rules  # paid sits above benefits: imported here
    from siyu.paid import service as paid
    from siyu.points import service as points

    member = members.get(session, member_id, principal=principal)
    now = clock.now()
    ladder = _ladder(session, now)
    available = points.available(session, member_id)
    held_plan = paid.holding_plan(session, member_id, now)
    rewards = [
        r
        for r in session.scalars(
            select(Reward).where(Reward.status == "active").order_by(Reward.points_price, Reward.id)
        )
        if rules.visible(facts_of(r), now)
        and rules.tier_allows(facts_of(r), ladder, member.tier_code)
        and paid_rules.exclusive_refusal(
            paid_only=r.paid_only, plans=r.paid_plans, held_plan=held_plan
        )
        is None
    ]
    held = _held(session, member_id, [r.id for r in rewards]) if rewards else {}
    items = []
    for reward in rewards:
        left = rules.stock_left(reward.stock, reward.redeemed)
        member_left = (
            None
            if reward.per_member_limit is None
            else max(0, reward.per_member_limit - held.get(reward.id, 0))
        )
        if left == 0 or member_left == 0:
            continue
        affordable = available >= reward.points_price
        if affordable_only and not affordable:
            continue
        items.append(MallItem(reward, left, member_left, affordable, reward.paid_only))
    return Mall(member_id, available, items)


# --- redeeming -----------------------------------------------------------------------------


@dataclass
class Redeemed:
    redemption: Redemption
    created: bool  # false: this key was redeemed before (a retry); nothing changed


def _replay(session: Session, key: str, reward_id: int, quantity: int) -> Redeemed | None:
    stored = session.scalar(select(Redemption).where(Redemption.key == key))
    if stored is None:
        return None
    if stored.reward_id != reward_id or stored.quantity != quantity:
        raise Conflict(
            f"the key '{key.split(':', 2)[-1]}' was used for another redemption "
            f"(#{stored.id}); use a new key for a new redemption",
            field="key",
            code="redemption_key_reused",
        )
    return Redeemed(stored, created=False)


def redeem(
    session: Session,
    member_id: int,
    reward_id: int,
    *,
    key: str,
    quantity: int = 1,
    principal: Principal | None = None,
    tz: str = "Asia/Shanghai",
) -> Redeemed:
    """Take a reward for points, in the caller's transaction. Refusals (stock, limit, tier,
    visibility, points) change nothing; the same key again returns the first redemption."""
    from siyu.points import service as points

    if not key.strip() or len(key) > MAX_KEY:
        raise InvalidInput(f"key: 1 to {MAX_KEY} characters naming this redemption", field="key")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidInput(f"quantity is 1 to {MAX_QUANTITY}", field="quantity")
    member = members.get(session, member_id, principal=principal)
    fact = f"mall:{member_id}:{key}"
    replay = _replay(session, fact, reward_id, quantity)
    if replay is not None:
        return replay
    reward = session.scalar(
        coupons.for_update(session, select(Reward).where(Reward.id == reward_id))
    )
    if reward is None:
        raise NotFound(f"no reward with id {reward_id}", field="reward_id")
    replay = _replay(session, fact, reward_id, quantity)  # again, under the lock
    if replay is not None:
        return replay
    if member.status != MemberStatus.active.value:
        raise Conflict(
            f"member {member_id} is {member.status}; only active members redeem",
            field="member_id",
            code="member_not_active",
        )
    now = clock.now()
    refusal = rules.check_mall(
        facts_of(reward),
        quantity=quantity,
        held=_held(session, member_id, [reward.id]).get(reward.id, 0),
        ladder=_ladder(session, now),
        tier_code=member.tier_code,
        now=now,
    )
    if refusal is not None:
        raise Conflict(refusal.message, field=refusal.field, code=refusal.code)
    if reward.paid_only:
        from siyu.paid import rules as paid_rules  # paid sits above benefits: imported here
        from siyu.paid import service as paid

        exclusive = paid_rules.exclusive_refusal(
            paid_only=True,
            plans=reward.paid_plans,
            held_plan=paid.holding_plan(session, member_id, now),
        )
        if exclusive is not None:
            raise Conflict(
                f"{exclusive} (付费会员专享); the member may take it once they hold the card",
                field="reward_id",
                code="reward_paid_only",
            )
    price = reward.points_price * quantity
    if price > 0:
        points.spend(session, member_id, price, fact=fact, reason=f"points mall: {reward.name}")
    reward.redeemed += quantity
    kind = RewardKind(reward.kind)
    redemption = Redemption(
        reward_id=reward.id,
        member_id=member_id,
        quantity=quantity,
        points_spent=price,
        cash_fen=reward.cash_price_fen * quantity,
        key=fact,
        spend_fact=fact,
        state=(
            RedemptionState.issued if kind is RewardKind.coupon else RedemptionState.ordered
        ).value,
        points_returned=0,
        created_at=now,
    )
    session.add(redemption)
    session.flush()
    if kind is RewardKind.coupon:
        assert reward.template_id is not None
        issued = coupons.issue_many(
            session,
            reward.template_id,
            [coupons.Wanted(member_id, quantity, f"mall:{redemption.id}")],
            source="mall",
            partial=False,
            actor=principal.actor if principal else None,
            at=now,
            tz=tz,
        )
        if issued.created_count < quantity:
            raise Conflict(
                f"the coupon of this reward cannot be issued: {issued.skipped.get(member_id)}",
                field="reward_id",
                code="reward_limit",
            )
    outbox.emit(
        session,
        "mall.redeemed",
        {
            "redemption_id": redemption.id,
            "member_id": member_id,
            "reward_id": reward.id,
            "quantity": quantity,
            "points": price,
        },
        key=f"member:{member_id}",
    )
    session.flush()
    return Redeemed(redemption, created=True)


def coupons_of(session: Session, redemption: Redemption) -> list[Coupon]:
    if redemption.state != RedemptionState.issued:
        return []
    prefix = f"mall:{redemption.id}#"
    return list(
        session.scalars(
            select(Coupon)
            .where(Coupon.member_id == redemption.member_id, Coupon.issue_key.startswith(prefix))
            .order_by(Coupon.id)
        )
    )


def redemptions_of_member(
    session: Session, member_id: int, *, principal: Principal | None = None, limit: int = 100
) -> list[Redemption]:
    members.get(session, member_id, principal=principal)
    return list(
        session.scalars(
            select(Redemption)
            .where(Redemption.member_id == member_id)
            .order_by(Redemption.id.desc())
            .limit(max(1, min(limit, 500)))
        )
    )


def list_redemptions(
    session: Session, *, state: str | None = None, after_id: int | None = None, limit: int = 100
) -> list[Redemption]:
    """The fulfilment queue: gifts to ship, oldest first."""
    query = select(Redemption).order_by(Redemption.id).limit(max(1, min(limit, 500)))
    if state is not None:
        query = query.where(Redemption.state == state)
    if after_id is not None:
        query = query.where(Redemption.id > after_id)
    return list(session.scalars(query))


def get_redemption(
    session: Session, redemption_id: int, *, principal: Principal | None = None
) -> Redemption:
    redemption = session.get(Redemption, redemption_id)
    if redemption is None:
        raise NotFound(f"no redemption with id {redemption_id}", field="redemption_id")
    if principal is not None:
        try:
            members.get(session, redemption.member_id, principal=principal)
        except NotFound:
            raise NotFound(f"no redemption with id {redemption_id} among your members") from None
    return redemption


def _move(session: Session, redemption_id: int, target: RedemptionState) -> tuple[Redemption, bool]:
    """Lock a redemption and check the move; (redemption, False) when it is there already."""
    redemption = session.scalar(
        coupons.for_update(session, select(Redemption).where(Redemption.id == redemption_id))
    )
    if redemption is None:
        raise NotFound(f"no redemption with id {redemption_id}", field="redemption_id")
    current = RedemptionState(redemption.state)
    if current is target:
        return redemption, False
    if not rules.can_move(current, target):
        hint = (
            "coupon rewards are final once issued"
            if current is RedemptionState.issued
            else f"from {current.value} it can go to "
            + (", ".join(sorted(s.value for s in rules.FULFILMENT[current])) or "nothing else")
        )
        raise Conflict(
            f"redemption {redemption_id} is {current.value}; it cannot become {target.value} "
            f"({hint})",
            field="state",
            code="redemption_state",
        )
    return redemption, True


def _audit(session: Session, principal: Principal, redemption: Redemption, **detail: Any) -> None:
    audit.record(
        session,
        actor=principal.actor,
        action=f"redemption.{redemption.state}",
        target_type="redemption",
        target_id=redemption.id,
        detail=detail,
    )


def ship(
    session: Session, redemption_id: int, *, principal: Principal, tracking_no: str | None = None
) -> Redemption:
    redemption, moved = _move(session, redemption_id, RedemptionState.shipped)
    if moved:
        redemption.state = RedemptionState.shipped.value
        redemption.shipped_at = clock.now()
        redemption.tracking_no = tracking_no
        _audit(session, principal, redemption, tracking_no=tracking_no)
        outbox.emit(
            session,
            "mall.shipped",
            {"redemption_id": redemption.id, "member_id": redemption.member_id},
            key=f"member:{redemption.member_id}",
        )
        session.flush()
    return redemption


def deliver(session: Session, redemption_id: int, *, principal: Principal) -> Redemption:
    redemption, moved = _move(session, redemption_id, RedemptionState.delivered)
    if moved:
        redemption.state = RedemptionState.delivered.value
        redemption.delivered_at = clock.now()
        _audit(session, principal, redemption)
        session.flush()
    return redemption


def cancel(
    session: Session, redemption_id: int, *, reason: str, principal: Principal
) -> Redemption:
    """Cancel a gift not yet delivered: the points come back to the member and the stock
    to the reward. Cancelling again changes nothing."""
    from siyu.points import service as points

    if not reason.strip():
        raise InvalidInput("say why the redemption is cancelled (audit log)", field="reason")
    probe = session.get(Redemption, redemption_id)
    if probe is None:
        raise NotFound(f"no redemption with id {redemption_id}", field="redemption_id")
    # Lock in the redemption's order: reward first, as redeeming does.
    reward = session.scalar(
        coupons.for_update(session, select(Reward).where(Reward.id == probe.reward_id))
    )
    assert reward is not None
    redemption, moved = _move(session, redemption_id, RedemptionState.cancelled)
    if not moved:
        return redemption
    returned = 0
    if redemption.points_spent > 0:
        returned = points.cancel_spend(
            session, redemption.spend_fact, fact=f"mall-cancel:{redemption.id}"
        )
    reward.redeemed -= redemption.quantity
    redemption.state = RedemptionState.cancelled.value
    redemption.cancelled_at = clock.now()
    redemption.cancel_reason = reason[:200]
    redemption.points_returned = returned
    _audit(session, principal, redemption, reason=reason, points_returned=returned)
    outbox.emit(
        session,
        "mall.cancelled",
        {"redemption_id": redemption.id, "member_id": redemption.member_id, "points": returned},
        key=f"member:{redemption.member_id}",
    )
    session.flush()
    return redemption
