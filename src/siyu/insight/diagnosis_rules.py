"""The health diagnosis's checks (会员体系诊断): pure functions of plain data.

Each check reads a period's figures, the same period last year (and the previous period)
and facts about the programme, and returns a ``Finding``: whether it fired, how severe it
is, the evidence in numbers, and a remedy, in Chinese and English. No database, no clock:
``diagnosis`` gathers the data and these functions decide, so every check is tested both
firing and passing without a database.

The checks are the ones a health check of a top mother-and-baby brand found (DOMAIN.md,
"Diagnosis and KPIs"); ``docs/diagnosis.md`` says when each fires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

# Re-exported (``as Text``): code reading findings imports their ``Text`` from here too.
from siyu.core.text import Text as Text


class Severity(StrEnum):
    high = "high"  # 严重: fix first
    medium = "medium"  # 中等
    low = "low"  # 提示


class Outcome(StrEnum):
    fired = "fired"  # 发现问题
    passed = "passed"  # 正常
    no_data = "no_data"  # 数据不足, not judged


SEVERITY_NAMES = {"high": "严重", "medium": "中等", "low": "提示"}
OUTCOME_NAMES = {"fired": "发现问题", "passed": "正常", "no_data": "数据不足"}


@dataclass(frozen=True)
class Snapshot:
    """The figures of one period a check reads (see ``kpis.Figures`` for definitions)."""

    new_members: int = 0
    join_conversion: float = 0.0
    buyers: int = 0
    member_order_value_fen: int = 0
    purchase_frequency: float = 0.0
    price_per_order_fen: int = 0
    first_buyers: int = 0
    second_purchase_conversion: float = 0.0
    one_time_buyer_share: float = 0.0
    points_issued: int = 0
    points_redeemed: int = 0
    redemption_rate: float = 0.0
    liability_points_start: int = 0
    liability_points: int = 0
    members: int = 0
    tier_distribution: dict[str, int] = field(default_factory=dict)
    paid_renewals_due: int = 0
    paid_renewal_rate: float = 0.0


@dataclass(frozen=True)
class ProgrammeFacts:
    """What the programme and its benefits offer, as the checks need it."""

    tier_codes: list[str]  # the ladder, bottom first
    tiers_without_benefits: list[str]  # levels above the bottom that give nothing
    join_gift_items: int  # coupons and points grants in the join packs
    redeemable_rewards: int  # points-mall rewards active and in stock now
    first_purchase_offers: list[str] = field(default_factory=list)
    repeat_purchase_offers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Thresholds:
    """Where each check draws the line; a brand can pass its own."""

    redemption_rate_min: float = 0.05
    order_value_drop: float = 0.10  # member order value down this much year on year
    conversion_drop_points: float = 0.03
    one_time_rise_points: float = 0.03
    bottom_tier_share_max: float = 0.60
    liability_growth_min: float = 0.10
    renewal_drop_points: float = 0.05
    renewals_due_min: int = 10


@dataclass(frozen=True)
class Inputs:
    current: Snapshot
    last_year: Snapshot
    previous: Snapshot
    programme: ProgrammeFacts
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True)
class Finding:
    code: str
    title: Text
    outcome: Outcome
    severity: Severity
    evidence: Text
    remedy: Text
    figures: dict[str, float | int | str | None] = field(default_factory=dict)

    @property
    def fired(self) -> bool:
        return self.outcome is Outcome.fired


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _change(now: float, then: float) -> float | None:
    return (now - then) / then if then else None


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def _yuan(fen: int) -> str:
    return f"{fen / 100:,.2f}"


# --- the checks ------------------------------------------------------------------------------


def points_redemption(data: Inputs) -> Finding:
    """Points redemption near zero, or nothing in the points mall that can be redeemed."""
    now, t, p = data.current, data.thresholds, data.programme
    title = Text("积分兑换率接近零或积分商城无可兑换", "Points redemption near zero")
    remedy = Text(
        "上架积分商城(礼品、高价值优惠券、积分+现金),开通积分抵现,并在会员日推广兑换;"
        "没有用处的积分毫无价值。",
        "Stock the points mall (gifts, high-value coupons, points + cash), allow points as "
        "cash off orders and promote redemption on member day: points without a use are "
        "worthless.",
    )
    figures: dict[str, float | int | str | None] = {
        "points_issued": now.points_issued,
        "points_redeemed": now.points_redeemed,
        "redemption_rate": now.redemption_rate,
        "redeemable_rewards": p.redeemable_rewards,
    }
    evidence = Text(
        f"本期发放积分 {now.points_issued:,},兑换 {now.points_redeemed:,},"
        f"兑换率 {_pct(now.redemption_rate)};积分商城可兑换商品 {p.redeemable_rewards} 个。",
        f"{now.points_issued:,} points issued, {now.points_redeemed:,} redeemed "
        f"(redemption rate {_pct(now.redemption_rate)}); {p.redeemable_rewards} rewards "
        "redeemable in the points mall.",
    )
    if p.redeemable_rewards == 0:
        outcome, severity = Outcome.fired, Severity.high
    elif now.points_issued == 0:
        outcome, severity = Outcome.no_data, Severity.high
    elif now.redemption_rate < t.redemption_rate_min:
        outcome, severity = Outcome.fired, Severity.high
    else:
        outcome, severity = Outcome.passed, Severity.high
    return Finding("points_redemption", title, outcome, severity, evidence, remedy, figures)


def tier_benefits(data: Inputs) -> Finding:
    """Tiers that give nothing: a ladder without benefits does not make members climb."""
    p = data.programme
    above_bottom = max(len(p.tier_codes) - 1, 0)
    empty = p.tiers_without_benefits
    title = Text("会员等级缺少权益", "Tiers without benefits")
    remedy = Text(
        "为每个等级配置看得见的权益:积分倍率、会员价或折扣、生日礼、专属商品和服务,"
        "并在会员中心展示升级可得。",
        "Give every level visible benefits (points multiplier, member price or discount, "
        "birthday gift, exclusive products and services) and show members what the next "
        "level brings.",
    )
    names = "、".join(empty) or "无"
    evidence = Text(
        f"{above_bottom} 个非入门等级中 {len(empty)} 个没有任何权益({names})。",
        f"{len(empty)} of {above_bottom} levels above the bottom give no benefit "
        f"({', '.join(empty) or 'none'}).",
    )
    figures: dict[str, float | int | str | None] = {
        "levels_above_bottom": above_bottom,
        "levels_without_benefits": len(empty),
    }
    # A ladder of one level is no ladder: nothing to climb for.
    outcome = Outcome.fired if empty or above_bottom == 0 else Outcome.passed
    severity = Severity.high if len(empty) >= above_bottom else Severity.medium
    return Finding("tier_benefits", title, outcome, severity, evidence, remedy, figures)


def join_gift(data: Inputs) -> Finding:
    """A single join gift (or none): too little to turn a new member into a buyer."""
    items = data.programme.join_gift_items
    title = Text("入会礼单一", "A single join gift")
    remedy = Text(
        "丰富入会礼包:多张不同门槛和品类的优惠券、首单礼、积分,分几次发放引导首购和复购。",
        "Make the join pack richer: several coupons with different thresholds and "
        "categories, a first-order gift and points, released over the first weeks to lead "
        "to the first and second purchase.",
    )
    evidence = Text(f"入会礼包共 {items} 项。", f"The join packs hold {items} item(s).")
    outcome = Outcome.fired if items <= 1 else Outcome.passed
    severity = Severity.high if items == 0 else Severity.medium
    return Finding(
        "join_gift", title, outcome, severity, evidence, remedy, {"join_gift_items": items}
    )


def member_order_value(data: Inputs) -> Finding:
    """Member order value (spend per buyer) down year on year, decomposed into purchase
    frequency and price per order: value = frequency × price per order."""
    now, then, t = data.current, data.last_year, data.thresholds
    title = Text("会员客单价同比下降", "Member order value down year on year")
    remedy = Text(
        "频次下降:会员日、复购券、生命周期提醒拉回购买;笔单价下降:满额赠、组合装、"
        "等级门槛与升级礼提升单次购买。",
        "Lower frequency: member day, repeat-purchase coupons and lifecycle reminders bring "
        "members back; lower price per order: spend-more gifts, bundles, and tier thresholds "
        "with upgrade gifts raise each basket.",
    )
    value = _change(now.member_order_value_fen, then.member_order_value_fen)
    frequency = _change(now.purchase_frequency, then.purchase_frequency)
    price = _change(now.price_per_order_fen, then.price_per_order_fen)
    figures: dict[str, float | int | str | None] = {
        "member_order_value_fen": now.member_order_value_fen,
        "last_year_fen": then.member_order_value_fen,
        "change": value,
        "frequency_change": frequency,
        "price_per_order_change": price,
    }
    evidence = Text(
        f"会员客单价 {_yuan(now.member_order_value_fen)} 元,去年同期 "
        f"{_yuan(then.member_order_value_fen)} 元({_signed(value)});其中购买频次 "
        f"{now.purchase_frequency:.2f} 对 {then.purchase_frequency:.2f}({_signed(frequency)}),"
        f"笔单价 {_yuan(now.price_per_order_fen)} 对 {_yuan(then.price_per_order_fen)} 元"
        f"({_signed(price)})。",
        f"Member order value {_yuan(now.member_order_value_fen)} yuan against "
        f"{_yuan(then.member_order_value_fen)} a year ago ({_signed(value)}): purchase "
        f"frequency {now.purchase_frequency:.2f} against {then.purchase_frequency:.2f} "
        f"({_signed(frequency)}), price per order {_yuan(now.price_per_order_fen)} against "
        f"{_yuan(then.price_per_order_fen)} yuan ({_signed(price)}).",
    )
    if value is None or then.buyers == 0:
        outcome = Outcome.no_data
    else:
        outcome = Outcome.fired if value <= -t.order_value_drop else Outcome.passed
    severity = (
        Severity.high
        if value is not None and value <= -2 * t.order_value_drop
        else (Severity.medium)
    )
    return Finding("member_order_value", title, outcome, severity, evidence, remedy, figures)


def join_conversion(data: Inputs) -> Finding:
    """More members join but fewer of them buy: recruitment inflates the denominator."""
    now, then, t = data.current, data.last_year, data.thresholds
    title = Text("入会人数上升但入会转化下降", "Joins up while join conversion falls")
    remedy = Text(
        "检查拉新渠道质量(付费拉新、直播);对入会未购会员主动触达(短信、企微、导购任务)"
        "并发放首购券。",
        "Check the quality of recruitment channels (paid recruitment, livestreams); reach "
        "joined-but-never-bought members proactively (SMS, WeCom, guide tasks) with a "
        "first-purchase coupon.",
    )
    joins = _change(now.new_members, then.new_members)
    drop = then.join_conversion - now.join_conversion
    figures: dict[str, float | int | str | None] = {
        "new_members": now.new_members,
        "last_year_new_members": then.new_members,
        "join_conversion": now.join_conversion,
        "last_year_join_conversion": then.join_conversion,
    }
    evidence = Text(
        f"新会员 {now.new_members:,},去年同期 {then.new_members:,}({_signed(joins)});"
        f"入会30天转化率 {_pct(now.join_conversion)},去年同期 {_pct(then.join_conversion)}。",
        f"{now.new_members:,} new members against {then.new_members:,} a year ago "
        f"({_signed(joins)}); 30-day join conversion {_pct(now.join_conversion)} against "
        f"{_pct(then.join_conversion)}.",
    )
    if then.new_members == 0:
        outcome = Outcome.no_data
    elif now.new_members > then.new_members and drop >= t.conversion_drop_points:
        outcome = Outcome.fired
    else:
        outcome = Outcome.passed
    severity = Severity.high if drop >= 3 * t.conversion_drop_points else Severity.medium
    return Finding("join_conversion", title, outcome, severity, evidence, remedy, figures)


def one_time_buyers(data: Inputs) -> Finding:
    """More of the new buyers stop after their first purchase."""
    now, then, t = data.current, data.last_year, data.thresholds
    title = Text("一次性购买会员占比上升", "One-time buyers rising")
    remedy = Text(
        "首购后30天内的复购券与导购回访;把第二次购买作为核心指标跟踪。",
        "A repeat-purchase coupon and a guide's follow-up within 30 days of the first "
        "purchase; track the second purchase as a headline figure.",
    )
    rise = now.one_time_buyer_share - then.one_time_buyer_share
    evidence = Text(
        f"本期首购会员 {now.first_buyers:,},其中只买一次的占 {_pct(now.one_time_buyer_share)},"
        f"去年同期 {_pct(then.one_time_buyer_share)}。",
        f"{now.first_buyers:,} first-time buyers, {_pct(now.one_time_buyer_share)} of them "
        f"bought only once, against {_pct(then.one_time_buyer_share)} a year ago.",
    )
    figures: dict[str, float | int | str | None] = {
        "one_time_buyer_share": now.one_time_buyer_share,
        "last_year": then.one_time_buyer_share,
    }
    if then.first_buyers == 0 or now.first_buyers == 0:
        outcome = Outcome.no_data
    else:
        outcome = Outcome.fired if rise >= t.one_time_rise_points else Outcome.passed
    severity = Severity.high if rise >= 3 * t.one_time_rise_points else Severity.medium
    return Finding("one_time_buyers", title, outcome, severity, evidence, remedy, figures)


def purchase_strategy(data: Inputs) -> Finding:
    """No first-purchase or no repeat-purchase offer: "1st to 2nd purchase" is the pain
    point of most brands."""
    p, now = data.programme, data.current
    title = Text("缺少首购/复购策略", "No first- or repeat-purchase strategy")
    remedy = Text(
        "首购:入会礼中的限时首购券、首单积分/成长值奖励;复购:首购后的复购券、"
        "会员日多倍积分、按生命周期的唤醒。",
        "First purchase: a time-limited coupon in the join pack, a first-order points or "
        "growth bonus. Repeat: a coupon after the first purchase, member-day multiple points, "
        "lifecycle wake-ups.",
    )
    first = "、".join(p.first_purchase_offers) or "无"
    repeat = "、".join(p.repeat_purchase_offers) or "无"
    evidence = Text(
        f"首购激励:{first};复购激励:{repeat};首购→复购转化 "
        f"{_pct(now.second_purchase_conversion)}。",
        f"First-purchase offers: {', '.join(p.first_purchase_offers) or 'none'}; "
        f"repeat-purchase offers: {', '.join(p.repeat_purchase_offers) or 'none'}; "
        f"1st → 2nd purchase conversion {_pct(now.second_purchase_conversion)}.",
    )
    missing = (not p.first_purchase_offers) + (not p.repeat_purchase_offers)
    outcome = Outcome.fired if missing else Outcome.passed
    severity = Severity.high if missing == 2 else Severity.medium
    figures: dict[str, float | int | str | None] = {
        "first_purchase_offers": len(p.first_purchase_offers),
        "repeat_purchase_offers": len(p.repeat_purchase_offers),
        "second_purchase_conversion": now.second_purchase_conversion,
    }
    return Finding("purchase_strategy", title, outcome, severity, evidence, remedy, figures)


def tier_ladder(data: Inputs) -> Finding:
    """Most members stuck at the bottom tier, or nobody at the top."""
    p, now, t = data.programme, data.current, data.thresholds
    title = Text("等级结构失衡", "Members stuck at the bottom or nobody at the top")
    remedy = Text(
        "复核等级门槛:入门等级之上应有可达的第二级;顶级应有人能达到(参考消费分布的分位数),"
        "并定期评审门槛。",
        "Review the thresholds: the second level should be within reach of a normal buyer "
        "and the top reachable by the best (set them from the spend percentiles), and "
        "review them regularly.",
    )
    total = sum(now.tier_distribution.values())
    bottom_code = p.tier_codes[0] if p.tier_codes else ""
    top_code = p.tier_codes[-1] if p.tier_codes else ""
    bottom = now.tier_distribution.get(bottom_code, 0)
    top = now.tier_distribution.get(top_code, 0)
    share = bottom / total if total else 0.0
    evidence = Text(
        f"{total:,} 名会员中 {bottom:,} 名({_pct(share)})在最低等级 {bottom_code},"
        f"{top:,} 名在最高等级 {top_code}。",
        f"{bottom:,} of {total:,} members ({_pct(share)}) are at the bottom level "
        f"{bottom_code}; {top:,} at the top level {top_code}.",
    )
    figures: dict[str, float | int | str | None] = {
        "members": total,
        "bottom": bottom,
        "bottom_share": round(share, 4),
        "top": top,
    }
    if total == 0 or len(p.tier_codes) < 2:
        outcome = Outcome.no_data
    elif share >= t.bottom_tier_share_max or top == 0:
        outcome = Outcome.fired
    else:
        outcome = Outcome.passed
    severity = Severity.medium
    return Finding("tier_ladder", title, outcome, severity, evidence, remedy, figures)


def points_liability(data: Inputs) -> Finding:
    """Outstanding points (a liability in yuan) growing faster than redemption."""
    now, then, t = data.current, data.last_year, data.thresholds
    title = Text("积分负债增长快于兑换", "Points liability growing faster than redemption")
    remedy = Text(
        "给积分更多出口(商城、抵现、会员日兑换),设置合理的过期规则并提前提醒,"
        "按积分现金价值计提负债。",
        "Give points more outlets (mall, cash off, member-day redemption), set a sensible "
        "expiry with reminders before it, and provision the liability at the points' cash "
        "value.",
    )
    growth = _change(now.liability_points, now.liability_points_start)
    redeemed = _change(now.points_redeemed, then.points_redeemed)
    if redeemed is None:
        redeemed = 0.0 if now.points_redeemed == 0 else None  # from none to some: unbounded
    evidence = Text(
        f"未兑积分从期初 {now.liability_points_start:,} 增至期末 {now.liability_points:,}"
        f"({_signed(growth)});兑换积分 {now.points_redeemed:,},去年同期 "
        f"{then.points_redeemed:,}({_signed(redeemed)})。",
        f"Outstanding points went from {now.liability_points_start:,} to "
        f"{now.liability_points:,} ({_signed(growth)}); {now.points_redeemed:,} redeemed "
        f"against {then.points_redeemed:,} a year ago ({_signed(redeemed)}).",
    )
    figures: dict[str, float | int | str | None] = {
        "liability_start": now.liability_points_start,
        "liability_end": now.liability_points,
        "liability_growth": growth,
        "redeemed_growth": redeemed,
    }
    if growth is None:
        outcome = Outcome.no_data
    elif growth >= t.liability_growth_min and (redeemed is not None and growth > redeemed):
        outcome = Outcome.fired
    else:
        outcome = Outcome.passed
    return Finding("points_liability", title, outcome, Severity.medium, evidence, remedy, figures)


def paid_renewal(data: Inputs) -> Finding:
    """Paid membership renewal rate falling (against last year, else the previous period)."""
    now, t = data.current, data.thresholds
    against = data.last_year
    label = Text("去年同期", "a year ago")
    if against.paid_renewals_due < t.renewals_due_min:
        against, label = data.previous, Text("上期", "the previous period")
    title = Text("付费会员续费率下降", "Paid membership renewal rate falling")
    remedy = Text(
        "用省钱计算器每月告诉会员卡省了多少;到期前提醒和续费礼;检查周期权益是否被使用。",
        "Show each paid member what the card saved them every month (the savings "
        "calculator); remind before the end with a renewal gift; check the cyclic benefits "
        "are used.",
    )
    drop = against.paid_renewal_rate - now.paid_renewal_rate
    evidence = Text(
        f"续费率 {_pct(now.paid_renewal_rate)}(到期 {now.paid_renewals_due}),"
        f"{label.zh} {_pct(against.paid_renewal_rate)}(到期 {against.paid_renewals_due})。",
        f"Renewal rate {_pct(now.paid_renewal_rate)} ({now.paid_renewals_due} due) against "
        f"{_pct(against.paid_renewal_rate)} {label.en} ({against.paid_renewals_due} due).",
    )
    figures: dict[str, float | int | str | None] = {
        "renewal_rate": now.paid_renewal_rate,
        "renewals_due": now.paid_renewals_due,
        "against_rate": against.paid_renewal_rate,
        "against_due": against.paid_renewals_due,
    }
    if now.paid_renewals_due < t.renewals_due_min or against.paid_renewals_due < t.renewals_due_min:
        outcome = Outcome.no_data
    else:
        outcome = Outcome.fired if drop >= t.renewal_drop_points else Outcome.passed
    severity = Severity.high if drop >= 2 * t.renewal_drop_points else Severity.medium
    return Finding("paid_renewal", title, outcome, severity, evidence, remedy, figures)


CHECKS: Sequence[Callable[[Inputs], Finding]] = (
    points_redemption,
    tier_benefits,
    join_gift,
    member_order_value,
    join_conversion,
    one_time_buyers,
    purchase_strategy,
    tier_ladder,
    points_liability,
    paid_renewal,
)

_ORDER = {Severity.high: 0, Severity.medium: 1, Severity.low: 2}


def diagnose(data: Inputs) -> list[Finding]:
    """Every check, the fired ones first (most severe first), then passed, then no data."""
    findings = [check(data) for check in CHECKS]
    rank = {Outcome.fired: 0, Outcome.passed: 1, Outcome.no_data: 2}
    return sorted(findings, key=lambda f: (rank[f.outcome], _ORDER[f.severity]))
