"""Coupons, benefit packs and the points mall.

Templates, packs and rewards are the brand's catalogue (operators manage them); coupons,
pack issues and redemptions belong to members and follow them through merges. Stock is a
counter on the catalogue row (``issued`` / ``redeemed``) guarded by a ``CHECK``, so no race
can take more than there is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, BigId, UTCDateTime


class CouponTemplate(Base):
    """What a coupon promises (优惠券模板): the kind and amount, the threshold, the scope,
    the validity, the stock and how many one member may hold."""

    __tablename__ = "coupon_templates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    threshold_fen: Mapped[int] = mapped_column(Integer, default=0)
    amount_off_fen: Mapped[int | None] = mapped_column(Integer)
    percent_off_bp: Mapped[int | None] = mapped_column(Integer)
    cap_fen: Mapped[int | None] = mapped_column(Integer)
    gift_name: Mapped[str | None] = mapped_column(String(100))
    validity: Mapped[str] = mapped_column(String(10))
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    valid_days: Mapped[int | None] = mapped_column(Integer)
    stock: Mapped[int | None] = mapped_column(Integer)
    issued: Mapped[int] = mapped_column(Integer, default=0)
    per_member_limit: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[list[str] | None] = mapped_column(JSON)
    categories: Mapped[list[str] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default="active")
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "kind IN ('amount_off', 'percent_off', 'freight', 'gift')", name="kind_known"
        ),
        CheckConstraint("issued >= 0 AND (stock IS NULL OR issued <= stock)", name="within_stock"),
        CheckConstraint("status IN ('active', 'paused')", name="status_known"),
    )


class Coupon(Base):
    """One coupon of one member, with a unique code. ``order_id`` and ``discount_fen`` say
    where it was used; its history is in ``coupon_events``."""

    __tablename__ = "coupons"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("coupon_templates.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    state: Mapped[str] = mapped_column(String(10))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime())
    # The fact this coupon was issued for (`issue:<key>:<member>#1`, `pack:...`, `mall:...`).
    issue_key: Mapped[str] = mapped_column(String(250), unique=True)
    source: Mapped[str] = mapped_column(String(10))  # manual | pack | mall
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    discount_fen: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)

    __table_args__ = (
        Index("ix_coupons_member_state", "member_id", "state", "valid_until"),
        Index("ix_coupons_template_member", "template_id", "member_id"),
        Index("ix_coupons_state_valid_until", "state", "valid_until"),
        CheckConstraint("state IN ('usable', 'used', 'expired')", name="state_known"),
        CheckConstraint("discount_fen >= 0", name="discount_not_negative"),
    )


class CouponEvent(Base):
    """A coupon's history: issued, redeemed (order, discount), returned (refund), expired."""

    __tablename__ = "coupon_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    coupon_id: Mapped[int] = mapped_column(ForeignKey("coupons.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    order_id: Mapped[int | None] = mapped_column(BigId)
    refund_id: Mapped[int | None] = mapped_column(BigId)
    discount_fen: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str | None] = mapped_column(String(100))


class BenefitPack(Base):
    """A bundle of coupons and points (权益包) issued together, by a trigger: join,
    birthday, tier_upgrade, monthly, or by hand (manual). ``contents`` is
    ``[{"template": CODE, "quantity": N}, ...]``."""

    __tablename__ = "benefit_packs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    trigger: Mapped[str] = mapped_column(String(20))
    contents: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    points: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(10), default="active")
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "trigger IN ('join', 'birthday', 'tier_upgrade', 'monthly', 'manual')",
            name="trigger_known",
        ),
        CheckConstraint("points >= 0", name="points_not_negative"),
        CheckConstraint("status IN ('active', 'paused')", name="status_known"),
    )


class PackIssue(Base):
    """One pack given to one member for one period; ``key`` makes it happen once."""

    __tablename__ = "pack_issues"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pack_id: Mapped[int] = mapped_column(ForeignKey("benefit_packs.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    key: Mapped[str] = mapped_column(String(250), unique=True)
    period: Mapped[str] = mapped_column(String(50))
    coupons: Mapped[int] = mapped_column(Integer, default=0)
    points: Mapped[int] = mapped_column(Integer, default=0)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_pack_issues_pack_issued", "pack_id", "issued_at"),)


class Reward(Base):
    """An item of the points mall (积分商城): a coupon, a gift, or a product for points plus
    cash, with stock, a per-member limit, a lowest tier and a window when it is shown."""

    __tablename__ = "rewards"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    points_price: Mapped[int] = mapped_column(Integer)
    cash_price_fen: Mapped[int] = mapped_column(Integer, default=0)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("coupon_templates.id"))
    stock: Mapped[int | None] = mapped_column(Integer)
    redeemed: Mapped[int] = mapped_column(Integer, default=0)
    per_member_limit: Mapped[int | None] = mapped_column(Integer)
    min_tier_code: Mapped[str | None] = mapped_column(String(20))
    # Exclusive to paid members (付费会员专享): shown to and taken by members whose paid
    # membership holds benefits, of one of ``paid_plans`` when it names plans.
    paid_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    paid_plans: Mapped[list[str] | None] = mapped_column(JSON)
    visible_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    visible_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(10), default="active")
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("kind IN ('coupon', 'gift', 'points_cash')", name="kind_known"),
        CheckConstraint(
            "redeemed >= 0 AND (stock IS NULL OR redeemed <= stock)", name="within_stock"
        ),
        CheckConstraint("points_price >= 0 AND cash_price_fen >= 0", name="prices_not_negative"),
        CheckConstraint("status IN ('active', 'paused')", name="status_known"),
    )


class Redemption(Base):
    """A member's redemption in the mall: the points it spent (``spend_fact`` in the points
    ledger), and for gifts the fulfilment (ordered → shipped → delivered, or cancelled)."""

    __tablename__ = "redemptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    points_spent: Mapped[int] = mapped_column(Integer)
    cash_fen: Mapped[int] = mapped_column(Integer, default=0)
    key: Mapped[str] = mapped_column(String(250), unique=True)
    spend_fact: Mapped[str] = mapped_column(String(250))
    state: Mapped[str] = mapped_column(String(10))
    tracking_no: Mapped[str | None] = mapped_column(String(100))
    cancel_reason: Mapped[str | None] = mapped_column(String(200))
    points_returned: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_redemptions_member_reward", "member_id", "reward_id"),
        Index("ix_redemptions_state_created", "state", "created_at"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "state IN ('issued', 'ordered', 'shipped', 'delivered', 'cancelled')",
            name="state_known",
        ),
    )
