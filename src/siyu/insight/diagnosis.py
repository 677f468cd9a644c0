"""The health diagnosis (会员体系诊断): the KPIs and the programme, checked.

``diagnose`` gathers plain data (the period's KPIs beside last year's and the previous
period's, and what the programme and its benefits offer) and hands it to the pure checks
in ``diagnosis_rules``. ``render_html`` turns the findings into a self-contained HTML
report (Chinese first, English beside it) from ``templates/diagnosis.html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.benefits.models import BenefitPack, Reward
from siyu.core import clock
from siyu.core.db import Database
from siyu.insight import diagnosis_rules as rules
from siyu.insight.kpis import HEADLINE, RATES, Figures, KpiReport, Period, report_for, show
from siyu.programme import service as programme_service
from siyu.programme.rules import Programme, TierBenefits

DEFAULT_DAYS = 365  # the diagnosis looks at the last twelve months unless told otherwise


@dataclass(frozen=True)
class Diagnosis:
    period: Period
    computed_at: datetime
    programme_name: str
    findings: list[rules.Finding]
    report: KpiReport

    @property
    def fired(self) -> list[rules.Finding]:
        return [f for f in self.findings if f.fired]


def snapshot(figures: Figures) -> rules.Snapshot:
    """The figures a check reads, from a KPI period."""
    return rules.Snapshot(
        new_members=figures.new_members,
        join_conversion=figures.join_conversion,
        buyers=figures.buyers,
        member_order_value_fen=figures.member_order_value_fen,
        purchase_frequency=figures.purchase_frequency,
        price_per_order_fen=figures.price_per_order_fen,
        first_buyers=figures.first_buyers,
        second_purchase_conversion=figures.second_purchase_conversion,
        one_time_buyer_share=figures.one_time_buyer_share,
        points_issued=figures.points_issued,
        points_redeemed=figures.points_redeemed,
        redemption_rate=figures.redemption_rate,
        liability_points_start=figures.liability_points_start,
        liability_points=figures.liability_points,
        members=figures.members,
        tier_distribution=figures.tier_distribution,
        paid_renewals_due=figures.paid.renewals_due if figures.paid else 0,
        paid_renewal_rate=figures.paid.renewal_rate if figures.paid else 0.0,
    )


def has_benefits(benefits: TierBenefits) -> bool:
    """A level gives something when any of its benefits differs from nothing."""
    exclusive = benefits.exclusive
    return bool(
        benefits.points_multiplier > 1
        or benefits.discount_rate < 1
        or benefits.benefit_packs
        or exclusive.member_price
        or exclusive.products
        or exclusive.services
        or exclusive.free_shipping
    )


def programme_facts(
    session: Session, programme: Programme, *, period: tuple[datetime, datetime]
) -> rules.ProgrammeFacts:
    """What the programme document and the benefits tables offer (a few small reads: packs
    and rewards are a brand's catalogue, not its members)."""
    now = clock.now()
    levels = programme.tiers.levels
    packs = list(session.scalars(select(BenefitPack).where(BenefitPack.status == "active")))
    join_packs = [p for p in packs if p.trigger == "join"]
    join_items = sum(
        sum(int(item.get("quantity", 1)) for item in p.contents) + (1 if p.points > 0 else 0)
        for p in join_packs
    )
    rewards = session.scalars(select(Reward).where(Reward.status == "active"))
    redeemable = sum(
        1
        for r in rewards
        if (r.stock is None or r.redeemed < r.stock)
        and (r.visible_from is None or clock.as_utc(r.visible_from) <= now)
        and (r.visible_until is None or clock.as_utc(r.visible_until) > now)
    )

    first: list[str] = [f"入会券 {p.code}" for p in join_packs if p.contents]
    first += [
        f"首单成长值 +{bonus.growth}"
        for bonus in programme.growth.bonus_events
        if bonus.event == "first_order" and bonus.growth > 0
    ]
    # Repeat offers: points campaigns running in the period, and cyclic packs on the two
    # lowest levels, where one-time buyers are.
    start, end = period
    repeat = [
        f"积分活动 {c.code}"
        for c in programme.points.campaigns
        if clock.as_utc(c.starts_at) < end and clock.as_utc(c.ends_at) > start
    ]
    monthly = {p.code for p in packs if p.trigger == "monthly"}
    for level in levels[:2]:
        repeat += [f"{level.code} 月度礼包 {code}" for code in level.benefits.benefit_packs
                   if code in monthly]  # fmt: skip
    return rules.ProgrammeFacts(
        tier_codes=[level.code for level in levels],
        tiers_without_benefits=[lv.code for lv in levels[1:] if not has_benefits(lv.benefits)],
        join_gift_items=join_items,
        redeemable_rewards=redeemable,
        first_purchase_offers=first,
        repeat_purchase_offers=repeat,
    )


def diagnose(
    db: Database,
    period: Period,
    *,
    tz: str,
    thresholds: rules.Thresholds | None = None,
    fresh: bool = False,
) -> Diagnosis:
    """Run every check over the period (against the same period last year), on the
    period's stored KPI report when there is one (``fresh`` recomputes it)."""
    report = report_for(db, period, tz=tz, fresh=fresh)
    with db.unit_of_work() as session:
        programme = programme_service.programme_at(session, clock.now())
        facts = programme_facts(session, programme, period=period.bounds(tz))
    data = rules.Inputs(
        current=snapshot(report.current),
        last_year=snapshot(report.last_year),
        previous=snapshot(report.previous),
        programme=facts,
        thresholds=thresholds or rules.Thresholds(),
    )
    return Diagnosis(
        period=period,
        computed_at=report.computed_at,
        programme_name=programme.name,
        findings=rules.diagnose(data),
        report=report,
    )


def as_dict(diagnosis: Diagnosis) -> dict[str, Any]:
    """The diagnosis as JSON-ready data (the API's answer)."""
    return {
        "from": diagnosis.period.start.isoformat(),
        "to": diagnosis.period.end.isoformat(),
        "computed_at": diagnosis.computed_at.isoformat(),
        "programme": diagnosis.programme_name,
        "fired": len(diagnosis.fired),
        "findings": [
            {
                "code": f.code,
                "outcome": f.outcome.value,
                "severity": f.severity.value,
                "title": {"zh": f.title.zh, "en": f.title.en},
                "evidence": {"zh": f.evidence.zh, "en": f.evidence.en},
                "remedy": {"zh": f.remedy.zh, "en": f.remedy.en},
                "figures": f.figures,
            }
            for f in diagnosis.findings
        ],
    }


_env = Environment(
    loader=PackageLoader("siyu.insight", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(diagnosis: Diagnosis) -> str:
    """A self-contained HTML report: no script, no external font or stylesheet."""
    report = diagnosis.report
    rows = []
    for name, zh, en in HEADLINE:
        change = report.change(name, "last_year")
        rows.append(
            {
                "zh": zh,
                "en": en,
                "now": show(name, change.value),
                "then": show(name, change.against),
                "pct": "—" if change.pct is None else f"{change.pct * 100:+.1f}%",
                "down": change.delta < 0,
                "rate": name in RATES,
            }
        )
    return _env.get_template("diagnosis.html").render(
        d=diagnosis,
        rows=rows,
        severity_names=rules.SEVERITY_NAMES,
        outcome_names=rules.OUTCOME_NAMES,
        last_year=report.last_year.period,
    )
