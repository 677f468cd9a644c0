"""The demo brand's benefits: coupon templates, the packs its tier ladder names
(``programme/example.yaml``) and a points mall, created through the same services an
operator's API calls use. Creating them again is a no-op (same codes, same terms)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from siyu.benefits import coupons, mall, packs
from siyu.benefits.coupons import TemplateDraft
from siyu.benefits.mall import RewardDraft
from siyu.benefits.packs import PackDraft
from siyu.core.auth import SYSTEM

TEMPLATES = [
    TemplateDraft(
        code="welcome_20",
        name="新人礼 满199减20",
        kind="amount_off",
        threshold_fen=19_900,
        amount_off_fen=2_000,
        valid_days=30,
        per_member_limit=1,
        description="入会礼包: 30天内有效",
    ),
    TemplateDraft(
        code="birthday_50",
        name="生日券 满299减50",
        kind="amount_off",
        threshold_fen=29_900,
        amount_off_fen=5_000,
        valid_days=30,
    ),
    TemplateDraft(
        code="freight_free",
        name="免运费券",
        kind="freight",
        amount_off_fen=1_500,
        valid_days=31,
    ),
    TemplateDraft(
        code="formula_95",
        name="奶粉95折券 (最高减50)",
        kind="percent_off",
        percent_off_bp=500,
        cap_fen=5_000,
        valid_days=60,
        categories=["奶粉"],
    ),
    TemplateDraft(
        code="vip_gift",
        name="钻石会员专属赠品: 婴儿洗护套装",
        kind="gift",
        gift_name="婴儿洗护套装",
        valid_days=90,
    ),
    TemplateDraft(
        code="mall_10",
        name="积分兑换 满99减10",
        kind="amount_off",
        threshold_fen=9_900,
        amount_off_fen=1_000,
        valid_days=30,
    ),
]

PACKS = [
    PackDraft(
        code="welcome",
        name="入会礼包",
        trigger="join",
        contents=[{"template": "welcome_20", "quantity": 1}],
    ),
    PackDraft(
        code="birthday_gift",
        name="生日礼包",
        trigger="birthday",
        contents=[{"template": "birthday_50", "quantity": 1}],
    ),
    PackDraft(
        code="monthly_freight",
        name="每月免运费券",
        trigger="monthly",
        contents=[{"template": "freight_free", "quantity": 2}],
    ),
    PackDraft(
        code="vip_service",
        name="升级礼包 (钻石及以上)",
        trigger="tier_upgrade",
        contents=[
            {"template": "vip_gift", "quantity": 1},
            {"template": "formula_95", "quantity": 2},
        ],
        points=500,
    ),
]

REWARDS = [
    RewardDraft(
        code="coupon_10",
        name="10元优惠券 (满99可用)",
        kind="coupon",
        points_price=800,
        template_code="mall_10",
        per_member_limit=5,
    ),
    RewardDraft(
        code="bib_set",
        name="纯棉口水巾 3条装",
        kind="gift",
        points_price=1_500,
        stock=2_000,
        per_member_limit=2,
    ),
    RewardDraft(
        code="stroller_fan",
        name="婴儿推车风扇",
        kind="points_cash",
        points_price=2_000,
        cash_price_fen=2_990,
        stock=500,
        per_member_limit=1,
        min_tier_code="V3",
    ),
    RewardDraft(
        code="early_edu_class",
        name="早教体验课 (门店)",
        kind="gift",
        points_price=5_000,
        stock=100,
        per_member_limit=1,
        min_tier_code="V5",
    ),
]


def create_benefits(session: Session) -> None:
    for template in TEMPLATES:
        coupons.create_template(session, template, principal=SYSTEM)
    for pack in PACKS:
        packs.create_pack(session, pack, principal=SYSTEM)
    for reward in REWARDS:
        mall.create_reward(session, reward, principal=SYSTEM)
