"""Coupon, pack and mall routes. Operators manage the catalogue and fulfilment; the service
role acts for members (redeems coupons, takes rewards); guides and store managers read
their members' coupons, mall and redemptions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.orm import Session

from siyu.api.deps import AnyRole, SessionDep, require
from siyu.benefits import coupons, mall, packs
from siyu.benefits.models import Redemption
from siyu.benefits.rules import CouponState
from siyu.benefits.schemas import (
    CancelCreate,
    CouponDetail,
    CouponEventRead,
    CouponPage,
    CouponRead,
    IssueCreate,
    IssueRead,
    MallRead,
    PackCreate,
    PackIssueCreate,
    PackIssueRead,
    PackRead,
    RedeemCreate,
    RedemptionCreate,
    RedemptionRead,
    RewardCreate,
    RewardRead,
    RewardUpdate,
    ShipCreate,
    TemplateCreate,
    TemplateRead,
    TemplateStatus,
)
from siyu.core.auth import Principal, Role
from siyu.core.settings import get_settings

router = APIRouter(tags=["benefits"])

Operator = Annotated[Principal, Depends(require(Role.operator))]
Desk = Annotated[Principal, Depends(require(Role.operator, Role.service))]
Reader = AnyRole


def _tz() -> str:
    return get_settings().timezone


# --- templates and coupons ---------------------------------------------------------------


@router.post("/coupon-templates", response_model=TemplateRead, status_code=201)
def create_template(
    body: TemplateCreate, response: Response, session: SessionDep, who: Operator
) -> TemplateRead:
    """A coupon template. The same code and terms again answer 200 with the stored one."""
    template, created = coupons.create_template(session, body.to_draft(), principal=who)
    if not created:
        response.status_code = 200
    return TemplateRead.of(template)


@router.get("/coupon-templates", response_model=list[TemplateRead])
def list_templates(
    session: SessionDep,
    _: Reader,
    status: Annotated[str | None, Query(pattern="^(active|paused)$")] = None,
    after_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[TemplateRead]:
    found = coupons.list_templates(session, status=status, after_id=after_id, limit=limit)
    return [TemplateRead.of(t) for t in found]


@router.get("/coupon-templates/{template_id}", response_model=TemplateRead)
def read_template(template_id: int, session: SessionDep, _: Reader) -> TemplateRead:
    return TemplateRead.of(coupons.get_template(session, template_id))


@router.post("/coupon-templates/{template_id}/status", response_model=TemplateRead)
def set_template_status(
    template_id: int, body: TemplateStatus, session: SessionDep, who: Operator
) -> TemplateRead:
    """Pause a template (no more issues) or make it active again."""
    return TemplateRead.of(
        coupons.set_template_status(session, template_id, body.status, principal=who)
    )


@router.post("/coupons/issue", response_model=IssueRead)
def issue(body: IssueCreate, session: SessionDep, who: Operator) -> IssueRead:
    """Issue coupons to members. All or nothing on stock; members at their limit are
    skipped with the reason. The same key again returns the coupons of the first call."""
    result = coupons.issue(
        session,
        body.template_id,
        body.member_ids,
        key=body.key,
        reason=body.reason,
        principal=who,
        quantity=body.quantity,
        tz=_tz(),
    )
    return IssueRead.of(result, body.member_ids)


@router.get("/members/{member_id}/coupons", response_model=CouponPage)
def member_coupons(
    member_id: int,
    session: SessionDep,
    who: Reader,
    state: CouponState | None = None,
    after_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CouponPage:
    """A member's coupons: usable (still valid now), used, expired."""
    found = coupons.coupons_of_member(
        session, member_id, principal=who, state=state, after_id=after_id, limit=limit
    )
    return CouponPage(
        items=[CouponRead.of(c) for c in found],
        next_after_id=found[-1].id if len(found) == limit else None,
    )


@router.get("/coupons/{code}", response_model=CouponDetail)
def read_coupon(code: str, session: SessionDep, who: Reader) -> CouponDetail:
    coupon = coupons.get_coupon(session, code, principal=who)
    history = [
        CouponEventRead(
            kind=e.kind,
            at=e.at,
            order_id=e.order_id,
            refund_id=e.refund_id,
            discount_fen=e.discount_fen,
        )
        for e in coupons.history(session, coupon.id)
    ]
    return CouponDetail(**CouponRead.of(coupon).model_dump(), history=history)


@router.post("/coupons/{code}/redeem", response_model=CouponRead)
def redeem(
    code: str, body: RedeemCreate, response: Response, session: SessionDep, who: Desk
) -> CouponRead:
    """Use a coupon on an order of its member; again on the same order answers 200."""
    outcome = coupons.redeem(
        session,
        code,
        order_id=body.order_id,
        channel=body.channel,
        external_id=body.external_id,
        actor=who.actor,
    )
    response.status_code = 201 if outcome.created else 200
    return CouponRead.of(outcome.coupon)


# --- packs -----------------------------------------------------------------------------------


@router.post("/benefit-packs", response_model=PackRead, status_code=201)
def create_pack(
    body: PackCreate, response: Response, session: SessionDep, who: Operator
) -> PackRead:
    pack, created = packs.create_pack(session, body.to_draft(), principal=who)
    if not created:
        response.status_code = 200
    return PackRead.of(pack)


@router.get("/benefit-packs", response_model=list[PackRead])
def list_packs(session: SessionDep, _: Reader, trigger: str | None = None) -> list[PackRead]:
    return [PackRead.of(p) for p in packs.list_packs(session, trigger=trigger)]


@router.post("/benefit-packs/{code}/issue", response_model=PackIssueRead)
def issue_pack(
    code: str, body: PackIssueCreate, session: SessionDep, who: Operator
) -> PackIssueRead:
    """Give a pack by hand; the key makes a retry give nothing twice."""
    result = packs.issue_by_hand(
        session, code, body.member_ids, key=body.key, reason=body.reason, principal=who, tz=_tz()
    )
    return PackIssueRead.of(result)


# --- the mall --------------------------------------------------------------------------------


@router.post("/rewards", response_model=RewardRead, status_code=201)
def create_reward(
    body: RewardCreate, response: Response, session: SessionDep, who: Operator
) -> RewardRead:
    reward, created = mall.create_reward(session, body.to_draft(), principal=who)
    if not created:
        response.status_code = 200
    return RewardRead.of(reward)


@router.get("/rewards", response_model=list[RewardRead])
def list_rewards(
    session: SessionDep,
    _: Reader,
    status: Annotated[str | None, Query(pattern="^(active|paused)$")] = None,
) -> list[RewardRead]:
    return [RewardRead.of(r) for r in mall.list_rewards(session, status=status)]


@router.patch("/rewards/{reward_id}", response_model=RewardRead)
def update_reward(
    reward_id: int, body: RewardUpdate, session: SessionDep, who: Operator
) -> RewardRead:
    changes = body.model_dump(exclude_unset=True)
    return RewardRead.of(mall.update_reward(session, reward_id, changes, principal=who))


@router.get("/members/{member_id}/mall", response_model=MallRead)
def member_mall(
    member_id: int,
    session: SessionDep,
    who: Reader,
    affordable: Annotated[bool, Query(description="only what the member can afford")] = False,
) -> MallRead:
    """What the member may take now, each flagged with whether their points cover it."""
    return MallRead.of(mall.mall_of(session, member_id, principal=who, affordable_only=affordable))


def _read(session: Session, redemption: Redemption, created: bool | None = None) -> RedemptionRead:
    codes = [c.code for c in mall.coupons_of(session, redemption)]
    return RedemptionRead.of(redemption, codes=codes, created=created)


@router.post(
    "/members/{member_id}/mall/redemptions", response_model=RedemptionRead, status_code=201
)
def redeem_reward(
    member_id: int,
    body: RedemptionCreate,
    response: Response,
    session: SessionDep,
    who: Desk,
) -> RedemptionRead:
    """Take a reward for points: one transaction, idempotent on the key."""
    outcome = mall.redeem(
        session,
        member_id,
        body.reward_id,
        key=body.key,
        quantity=body.quantity,
        principal=who,
        tz=_tz(),
    )
    if not outcome.created:
        response.status_code = 200
    return _read(session, outcome.redemption, outcome.created)


@router.get("/members/{member_id}/mall/redemptions", response_model=list[RedemptionRead])
def member_redemptions(member_id: int, session: SessionDep, who: Reader) -> list[RedemptionRead]:
    found = mall.redemptions_of_member(session, member_id, principal=who)
    return [_read(session, r) for r in found]


@router.get("/redemptions", response_model=list[RedemptionRead])
def list_redemptions(
    session: SessionDep,
    _: Operator,
    state: str | None = None,
    after_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[RedemptionRead]:
    """The fulfilment queue (e.g. ``state=ordered``: gifts to ship), oldest first."""
    found = mall.list_redemptions(session, state=state, after_id=after_id, limit=limit)
    return [_read(session, r) for r in found]


@router.post("/redemptions/{redemption_id}/ship", response_model=RedemptionRead)
def ship(
    redemption_id: int, body: ShipCreate, session: SessionDep, who: Operator
) -> RedemptionRead:
    return _read(
        session, mall.ship(session, redemption_id, principal=who, tracking_no=body.tracking_no)
    )


@router.post("/redemptions/{redemption_id}/deliver", response_model=RedemptionRead)
def deliver(redemption_id: int, session: SessionDep, who: Operator) -> RedemptionRead:
    return _read(session, mall.deliver(session, redemption_id, principal=who))


@router.post("/redemptions/{redemption_id}/cancel", response_model=RedemptionRead)
def cancel(
    redemption_id: int, body: CancelCreate, session: SessionDep, who: Operator
) -> RedemptionRead:
    """Cancel a gift not yet delivered: points and stock come back."""
    return _read(session, mall.cancel(session, redemption_id, reason=body.reason, principal=who))
