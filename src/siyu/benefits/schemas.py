"""API shapes for coupons, packs and the mall. Amounts are integer fen (``*_fen``), a
percentage off is basis points (``percent_off_bp``: 1500 is 15% off, 85折); times are ISO
8601 with an offset."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from siyu.benefits import rules
from siyu.benefits.coupons import IssueResult, TemplateDraft
from siyu.benefits.mall import Mall, RewardDraft
from siyu.benefits.models import BenefitPack, Coupon, CouponTemplate, Redemption, Reward
from siyu.benefits.packs import PackDraft, PackResult
from siyu.core import clock

Fen = Field(ge=0, le=1_000_000_000)


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=50, examples=["FULL200-20"])
    name: str = Field(max_length=100, examples=["满200减20"])
    kind: rules.CouponKind
    threshold_fen: int = Field(default=0, ge=0, description="eligible lines must reach this")
    amount_off_fen: int | None = Field(
        default=None, ge=0, description="amount_off: the amount; freight: an optional cap"
    )
    percent_off_bp: int | None = Field(
        default=None, ge=1, le=9_999, description="percent_off: basis points off (1500 = 15%)"
    )
    cap_fen: int | None = Field(default=None, ge=1, description="percent_off: the most it takes")
    gift_name: str | None = Field(default=None, max_length=100)
    validity: rules.Validity = rules.Validity.relative
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    valid_days: int | None = Field(
        default=None, description="relative: brand-local days counting the day of issue"
    )
    stock: int | None = Field(default=None, ge=0, description="none: no limit")
    per_member_limit: int | None = Field(default=None, ge=1)
    channels: list[str] | None = Field(default=None, description="none: every channel")
    categories: list[str] | None = Field(default=None, description="none: every category")
    description: str | None = Field(default=None, max_length=500)

    def to_draft(self) -> TemplateDraft:
        data = self.model_dump()
        data["kind"] = self.kind.value
        data["validity"] = self.validity.value
        return TemplateDraft(**data)


class TemplateRead(BaseModel):
    id: int
    code: str
    name: str
    kind: str
    threshold_fen: int
    amount_off_fen: int | None
    percent_off_bp: int | None
    cap_fen: int | None
    gift_name: str | None
    validity: str
    valid_from: datetime | None
    valid_until: datetime | None
    valid_days: int | None
    stock: int | None
    issued: int
    stock_left: int | None
    per_member_limit: int | None
    channels: list[str] | None
    categories: list[str] | None
    status: str
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, t: CouponTemplate) -> TemplateRead:
        return cls(
            **{name: getattr(t, name) for name in cls.model_fields if name != "stock_left"},
            stock_left=rules.stock_left(t.stock, t.issued),
        )


class TemplateStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["active", "paused"]


class IssueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template_id: int
    member_ids: list[int] = Field(min_length=1, max_length=10_000)
    key: str = Field(min_length=1, max_length=100, description="names this issue; retries reuse it")
    reason: str = Field(min_length=1, max_length=200, description="why (audit log)")
    quantity: int = Field(default=1, ge=1, le=100, description="coupons per member")


class CouponRead(BaseModel):
    id: int
    code: str
    template_id: int
    member_id: int
    state: str = Field(description="usable | used | expired, as the member sees it now")
    issued_at: datetime
    valid_from: datetime
    valid_until: datetime
    source: str
    order_id: int | None
    discount_fen: int
    used_at: datetime | None

    @classmethod
    def of(cls, c: Coupon) -> CouponRead:
        shown = rules.shown_state(
            rules.CouponState(c.state), clock.as_utc(c.valid_until), clock.now()
        )
        return cls(
            **{name: getattr(c, name) for name in cls.model_fields if name != "state"},
            state=shown.value,
        )


class IssueMemberRead(BaseModel):
    member_id: int
    status: Literal["created", "replayed", "skipped", "partial"]
    codes: list[str]
    reason: str | None = None


class IssueRead(BaseModel):
    template_id: int
    created: int = Field(description="coupons this call created")
    members: list[IssueMemberRead]

    @classmethod
    def of(cls, result: IssueResult, member_ids: list[int]) -> IssueRead:
        items = []
        for m in dict.fromkeys(member_ids):
            created = result.created.get(m, [])
            replayed = result.replayed.get(m, [])
            reason = result.skipped.get(m)
            if created and reason:
                status = "partial"
            elif created:
                status = "created"
            elif replayed:
                status = "replayed"
            else:
                status = "skipped"
            items.append(
                IssueMemberRead(
                    member_id=m,
                    status=status,
                    codes=[c.code for c in [*replayed, *created]],
                    reason=reason,
                )
            )
        return cls(template_id=result.template_id, created=result.created_count, members=items)


class CouponPage(BaseModel):
    items: list[CouponRead]
    next_after_id: int | None


class RedeemCreate(BaseModel):
    """Name the order by ``order_id``, or by ``channel`` and ``external_id``."""

    model_config = ConfigDict(extra="forbid")

    order_id: int | None = None
    channel: str | None = Field(default=None, max_length=20)
    external_id: str | None = Field(default=None, max_length=128)


class CouponEventRead(BaseModel):
    kind: str
    at: datetime
    order_id: int | None
    refund_id: int | None
    discount_fen: int | None


class CouponDetail(CouponRead):
    history: list[CouponEventRead]


# --- packs -----------------------------------------------------------------------------------


class PackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str = Field(description="a coupon template's code")
    quantity: int = Field(default=1, ge=1, le=100)


class PackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=50, examples=["birthday_gift"])
    name: str = Field(max_length=100)
    trigger: rules.PackTrigger
    contents: list[PackItem] = Field(default_factory=list, max_length=20)
    points: int = Field(default=0, ge=0)
    description: str | None = Field(default=None, max_length=500)

    def to_draft(self) -> PackDraft:
        return PackDraft(
            code=self.code,
            name=self.name,
            trigger=self.trigger.value,
            contents=[i.model_dump() for i in self.contents],
            points=self.points,
            description=self.description,
        )


class PackRead(BaseModel):
    id: int
    code: str
    name: str
    trigger: str
    contents: list[dict[str, Any]]
    points: int
    status: str
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, p: BenefitPack) -> PackRead:
        return cls(**{name: getattr(p, name) for name in cls.model_fields})


class PackIssueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_ids: list[int] = Field(min_length=1, max_length=10_000)
    key: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=200)


class PackIssueRead(BaseModel):
    pack: str
    issued: list[int]
    replayed: list[int]
    coupons: int
    points: int
    skipped: dict[str, int]

    @classmethod
    def of(cls, r: PackResult) -> PackIssueRead:
        return cls(
            pack=r.pack,
            issued=r.issued,
            replayed=r.replayed,
            coupons=r.coupons,
            points=r.points,
            skipped=r.skipped,
        )


# --- the mall --------------------------------------------------------------------------------


class RewardCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=50)
    name: str = Field(max_length=100)
    kind: rules.RewardKind
    points_price: int = Field(ge=0)
    cash_price_fen: int = Field(default=0, ge=0)
    template: str | None = Field(default=None, description="coupon rewards: the template code")
    stock: int | None = Field(default=None, ge=0)
    per_member_limit: int | None = Field(default=None, ge=1)
    min_tier_code: str | None = Field(default=None, max_length=20)
    visible_from: AwareDatetime | None = None
    visible_until: AwareDatetime | None = None
    description: str | None = Field(default=None, max_length=500)
    paid_only: bool = Field(default=False, description="for paid members only (付费会员专享)")
    paid_plans: list[str] | None = Field(
        default=None, description="paid-only rewards: these plan codes only (none: any plan)"
    )

    def to_draft(self) -> RewardDraft:
        data = self.model_dump(exclude={"template", "kind"})
        return RewardDraft(kind=self.kind.value, template_code=self.template, **data)


class RewardUpdate(BaseModel):
    """Only the fields sent change (``exclude_unset``); send null to lift a limit."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    points_price: int | None = Field(default=None, ge=0)
    cash_price_fen: int | None = Field(default=None, ge=0)
    stock: int | None = Field(default=None, ge=0)
    per_member_limit: int | None = Field(default=None, ge=1)
    min_tier_code: str | None = Field(default=None, max_length=20)
    visible_from: AwareDatetime | None = None
    visible_until: AwareDatetime | None = None
    status: Literal["active", "paused"] | None = None
    paid_only: bool | None = None
    paid_plans: list[str] | None = None


class RewardRead(BaseModel):
    id: int
    code: str
    name: str
    kind: str
    points_price: int
    cash_price_fen: int
    template_id: int | None
    stock: int | None
    redeemed: int
    stock_left: int | None
    per_member_limit: int | None
    min_tier_code: str | None
    paid_only: bool
    paid_plans: list[str] | None
    visible_from: datetime | None
    visible_until: datetime | None
    status: str
    description: str | None

    @classmethod
    def of(cls, r: Reward) -> RewardRead:
        return cls(
            **{name: getattr(r, name) for name in cls.model_fields if name != "stock_left"},
            stock_left=rules.stock_left(r.stock, r.redeemed),
        )


class MallItemRead(BaseModel):
    reward: RewardRead
    member_left: int | None = Field(description="how many more this member may take")
    affordable: bool = Field(description="the member's available points cover one")
    exclusive: bool = Field(
        default=False, description="a paid members' reward (付费会员专享), shown as such"
    )


class MallRead(BaseModel):
    member_id: int
    available_points: int
    items: list[MallItemRead]

    @classmethod
    def of(cls, m: Mall) -> MallRead:
        return cls(
            member_id=m.member_id,
            available_points=m.available_points,
            items=[
                MallItemRead(
                    reward=RewardRead.of(i.reward),
                    member_left=i.member_left,
                    affordable=i.affordable,
                    exclusive=i.exclusive,
                )
                for i in m.items
            ],
        )


class RedemptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reward_id: int
    quantity: int = Field(default=1, ge=1, le=100)
    key: str = Field(
        min_length=1, max_length=64, description="names this redemption; retries reuse it"
    )


class RedemptionRead(BaseModel):
    id: int
    reward_id: int
    member_id: int
    quantity: int
    points_spent: int
    cash_fen: int
    state: str
    tracking_no: str | None
    cancel_reason: str | None
    points_returned: int
    created_at: datetime
    shipped_at: datetime | None
    delivered_at: datetime | None
    cancelled_at: datetime | None
    coupon_codes: list[str] = Field(default_factory=list)
    created: bool | None = Field(default=None, description="false when this call replayed a key")

    @classmethod
    def of(
        cls, r: Redemption, *, codes: list[str] | None = None, created: bool | None = None
    ) -> RedemptionRead:
        return cls(
            **{
                name: getattr(r, name)
                for name in cls.model_fields
                if name not in ("coupon_codes", "created")
            },
            coupon_codes=codes or [],
            created=created,
        )


class ShipCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_no: str | None = Field(default=None, max_length=100)


class CancelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=200)
