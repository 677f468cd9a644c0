"""The programme document: a brand's loyalty rules as data.

One document (YAML or JSON) holds the growth rules, the tier ladder, the points rules and the
brand's category list. ``check`` validates it in two passes and reports every problem at
once, each with a path into the document (``tiers.levels[2].threshold``):

1. the shape (Pydantic): types, ranges, unknown keys;
2. the meaning: thresholds that rise, categories that exist, windows that make sense.

The second pass runs on every part whose shape is sound (names that must exist, such as
categories, are even checked in the raw document), so one typo does not hide the rest.

Amounts are yuan (``Decimal``, at most two decimals) in the document;
the engine converts them with ``fen``. Multipliers are ``Decimal`` and never below zero.

Everything here is pure: no database, no clock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from siyu.core.errors import Problem

SCHEMA_VERSION = 1

Yuan = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
Multiplier = Annotated[Decimal, Field(ge=0, max_digits=8, decimal_places=4)]
Points = Annotated[int, Field(ge=0)]
Limit = Annotated[int, Field(ge=1)]
Code = Annotated[str, Field(min_length=1, max_length=50)]
Name = Annotated[str, Field(min_length=1, max_length=100)]

Basis = Literal["growth", "spend", "order_count"]
ReviewWindow = Literal["rolling_12_months", "calendar_year", "days_since_change"]
Downgrade = Literal["one_level", "to_qualifying"]
Rounding = Literal["down", "half_up"]
ExpiryPolicy = Literal["never", "rolling_months", "end_of_month_after", "year_end"]
NegativeBalance = Literal["allow_negative", "debt"]
BonusEvent = Literal[
    "birthday", "profile_completion", "review", "check_in", "referral", "first_order"
]


class _Section(BaseModel):
    """Every part of the document refuses keys it does not know: a typo is a problem."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- growth (成长值) -----------------------------------------------------------------------


class GrowthBonus(_Section):
    event: BonusEvent
    growth: Points
    per_member_limit: Limit | None = None


class Growth(_Section):
    per_yuan: Multiplier = Field(description="growth value per yuan paid")
    signup_bonus: Points = 0
    bonus_events: list[GrowthBonus] = Field(default_factory=list)


# --- tiers (等级) ---------------------------------------------------------------------------


class Exclusive(_Section):
    """Super-user benefits that are a yes/no per tier."""

    member_price: bool = False
    products: bool = False
    services: bool = False
    free_shipping: bool = False


class TierBenefits(_Section):
    points_multiplier: Multiplier = Decimal(1)
    discount_rate: Annotated[Decimal, Field(gt=0, le=1, decimal_places=4)] = Field(
        default=Decimal(1), description="price paid as a share of list price; 0.95 is 95折"
    )
    benefit_packs: list[Code] = Field(default_factory=list)
    exclusive: Exclusive = Field(default_factory=Exclusive)


class TierLevel(_Section):
    code: Code
    name: Name
    threshold: Annotated[Decimal, Field(ge=0)] = Field(
        description="the mark to reach this level, on the ladder's basis (yuan for spend)"
    )
    retention: Annotated[Decimal, Field(ge=0)] | None = Field(
        default=None, description="the mark to keep this level at review (保级); none: kept"
    )
    benefits: TierBenefits = Field(default_factory=TierBenefits)


class TierReview(_Section):
    window: ReviewWindow = "rolling_12_months"
    days: Limit | None = Field(default=None, description="N, for days_since_change only")


class Tiers(_Section):
    basis: Basis = "growth"
    review: TierReview = Field(default_factory=TierReview)
    downgrade: Downgrade = "one_level"
    hold_through_next_period: bool = Field(
        default=False, description="a level reached lasts until the end of the next period"
    )
    levels: list[TierLevel] = Field(min_length=1)


# --- points (积分) --------------------------------------------------------------------------


class Earn(_Section):
    per_yuan: Multiplier
    rounding: Rounding = "down"
    minimum_order_amount: Yuan = Decimal(0)
    excluded_categories: list[Name] = Field(default_factory=list)
    freight_excluded: bool = True
    category_multipliers: dict[str, Multiplier] = Field(default_factory=dict)
    sku_multipliers: dict[str, Multiplier] = Field(default_factory=dict)


class Campaign(_Section):
    code: Code
    name: Name
    multiplier: Multiplier
    starts_at: datetime
    ends_at: datetime
    categories: list[Name] | None = Field(default=None, description="none: every category")
    tiers: list[Code] | None = Field(default=None, description="none: every tier")


class FixedEvent(_Section):
    points: Points
    per_day_limit: Limit | None = None
    per_member_limit: Limit | None = None


class StreakBonus(_Section):
    days: Annotated[int, Field(ge=2)]
    points: Points


class CheckIn(_Section):
    points: Points
    streak_bonuses: list[StreakBonus] = Field(default_factory=list)
    per_member_limit: Limit | None = None


class PointEvents(_Section):
    signup: FixedEvent | None = None
    birthday: FixedEvent | None = None
    profile_completion: FixedEvent | None = None
    review: FixedEvent | None = None
    check_in: CheckIn | None = None


class Expiry(_Section):
    policy: ExpiryPolicy = "never"
    months: Limit | None = Field(default=None, description="rolling_months, end_of_month_after")
    month: Annotated[int, Field(ge=1, le=12)] | None = Field(default=None, description="year_end")
    day: Annotated[int, Field(ge=1, le=31)] | None = Field(default=None, description="year_end")


class CashOff(_Section):
    points_per_yuan: Limit = 100
    cap_percent: Annotated[Decimal, Field(gt=0, le=100, decimal_places=2)] = Decimal(50)
    step: Limit = Field(default=100, description="points are spent in multiples of this")


class PointsRules(_Section):
    earn: Earn
    campaigns: list[Campaign] = Field(default_factory=list)
    events: PointEvents = Field(default_factory=PointEvents)
    frozen_days: Annotated[int, Field(ge=0, le=365)] = 0
    expiry: Expiry = Field(default_factory=Expiry)
    cash_off: CashOff | None = None
    negative_balance: NegativeBalance = "debt"


# --- insight: lifecycle, RFM, super users (生命周期, RFM, 超级用户) ------------------------------


LifecycleBasis = Literal["days", "percentiles"]


class Lifecycle(_Section):
    """When a member is new, silent, sleeping, churned (生命周期), by days since a purchase.

    ``basis: days`` takes the ``*_after_days`` marks as written. ``basis: percentiles``
    derives the silent and sleeping marks from the brand's own inter-purchase time (the
    ``silent_percentile`` and ``sleeping_percentile`` of repeat buyers' average gap
    between orders) and the churned mark as ``churned_multiple`` times the sleeping mark;
    the ``*_after_days`` marks stay as the fallback while there are too few repeat buyers
    (``min_repeat_buyers``) to measure.
    """

    basis: LifecycleBasis = "days"
    new_within_days: Limit = Field(
        default=30, description="a first purchase this recent makes the member new"
    )
    silent_after_days: Limit = 90
    sleeping_after_days: Limit = 180
    churned_after_days: Limit = 365
    silent_percentile: Annotated[int, Field(ge=1, le=99)] = 80
    sleeping_percentile: Annotated[int, Field(ge=1, le=99)] = 90
    churned_multiple: Annotated[Decimal, Field(gt=1, le=20, decimal_places=2)] = Decimal(2)
    min_repeat_buyers: Limit = 100


RfmScoring = Literal["quintiles", "thresholds"]


class Rfm(_Section):
    """RFM scores 1-5 and the eight classic groups (重要价值 … 一般挽留).

    ``quintiles`` ranks members who bought in the window against each other (equal values,
    equal scores); ``thresholds`` takes four rising cut points per measure from the
    document: ``recency_days`` [30, 90, 180, 365] scores 5 up to 30 days, 1 beyond 365;
    ``frequency`` and ``monetary`` (yuan) score 2 from the first cut point, 5 from the last.
    A score of ``high_from`` or more is high in the groups.
    """

    window_days: Limit = Field(default=365, description="orders and spend are counted this far")
    scoring: RfmScoring = "quintiles"
    recency_days: list[Limit] | None = None
    frequency: list[Limit] | None = None
    monetary: list[Yuan] | None = None
    high_from: Annotated[int, Field(ge=2, le=5)] = 4


SuperUserMatch = Literal["any", "all"]


class SuperUsers(_Section):
    """Who is a super user (超级用户): the conditions set here, any or all of them.

    Spend and orders are counted over the last 12 months; ``min_orders_per_month`` is
    their monthly average; ``min_spend_multiple`` compares with the average member's
    12-month spend; ``min_tier`` takes that tier and every tier above it.
    """

    match: SuperUserMatch = "any"
    paid_member: bool = False
    min_tier: Code | None = None
    min_spend_12m: Yuan | None = None
    min_orders_per_month: Annotated[Decimal, Field(gt=0, decimal_places=2)] | None = None
    min_spend_multiple: Annotated[Decimal, Field(gt=0, decimal_places=2)] | None = None
    min_referrals: Limit | None = None

    def conditions(self) -> list[str]:
        """The names of the conditions this definition sets."""
        names = [
            "min_tier",
            "min_spend_12m",
            "min_orders_per_month",
            "min_spend_multiple",
            "min_referrals",
        ]
        return (["paid_member"] if self.paid_member else []) + [
            n for n in names if getattr(self, n) is not None
        ]


# --- paid membership (付费会员) -------------------------------------------------------------

Period = Literal["month", "quarter", "year"]
AfterFullRefund = Literal["pro_rata", "none"]


class PlanEligibility(_Section):
    """Who may buy or try the plan: a tier at least this high, growth at least this much."""

    min_tier: Code | None = None
    min_growth: Points | None = None


class PlanRefund(_Section):
    full_within_days: Annotated[int, Field(ge=0, le=366)] = 7
    after: AfterFullRefund = Field(
        default="pro_rata", description="after the full-refund window: by unused days, or nothing"
    )
    deduct_used_benefits: bool = Field(
        default=False, description="subtract the value of benefits already used from a refund"
    )


PriceRate = Annotated[Decimal, Field(gt=0, le=1, decimal_places=4)]


class PlanBenefits(_Section):
    """What the card gives. The member price of a line is the SKU's rate when the SKU has
    one, else its category's, else ``member_price_discount`` (the more specific rule wins,
    as with points multipliers)."""

    points_multiplier: Multiplier = Decimal(1)
    member_price_discount: PriceRate = Field(
        default=Decimal(1), description="price paid as a share of list price; 0.95 is 95折"
    )
    member_price_by_category: dict[Name, PriceRate] = Field(
        default_factory=dict, description="category -> rate, over the plan's rate"
    )
    member_price_by_sku: dict[Code, PriceRate] = Field(
        default_factory=dict, description="SKU -> rate, over the category's and the plan's"
    )
    cyclic_pack: Code | None = Field(default=None, description="a benefit pack each period")
    renewal_gift_pack: Code | None = Field(default=None, description="a benefit pack on renewal")

    def member_price_rate(self, sku: str, category: str | None) -> tuple[Decimal, str]:
        """The rate a line is paid at and why: ``sku``, ``category`` or ``plan``."""
        if sku in self.member_price_by_sku:
            return self.member_price_by_sku[sku], "sku"
        if category is not None and category in self.member_price_by_category:
            return self.member_price_by_category[category], "category"
        return self.member_price_discount, "plan"


class Plan(_Section):
    code: Code
    name: Name
    period: Period
    price: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)] = Field(
        description="yuan per period"
    )
    trial_days: Annotated[int, Field(ge=0, le=366)] = Field(default=0, description="0: no trial")
    eligibility: PlanEligibility = Field(default_factory=PlanEligibility)
    grace_days: Annotated[int, Field(ge=0, le=90)] = 0
    refund: PlanRefund = Field(default_factory=PlanRefund)
    benefits: PlanBenefits = Field(default_factory=PlanBenefits)


class Paid(_Section):
    plans: list[Plan] = Field(default_factory=list)

    def plan(self, code: str) -> Plan:
        for plan in self.plans:
            if plan.code == code:
                return plan
        raise KeyError(code)


class Programme(_Section):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: Name
    categories: list[Name] = Field(min_length=1)
    growth: Growth
    tiers: Tiers
    points: PointsRules
    lifecycle: Lifecycle | None = None
    rfm: Rfm | None = None
    super_users: SuperUsers | None = None
    paid: Paid | None = None

    def level(self, code: str) -> TierLevel:
        for level in self.tiers.levels:
            if level.code == code:
                return level
        raise KeyError(code)


def fen(yuan: Decimal) -> int:
    """A document amount in yuan as integer fen (the document allows two decimals at most)."""
    return int(yuan * 100)


# --- reading ---------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a programme must not."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key '{key}' appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_text(text: str, *, fmt: Literal["yaml", "json"] = "yaml") -> tuple[Any, list[Problem]]:
    """The raw document from YAML or JSON text, or the reason it cannot be read."""
    try:
        if fmt == "json":
            return json.loads(text, parse_float=Decimal), []
        return yaml.load(text, Loader=_UniqueKeyLoader), []
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        kind = "JSON" if fmt == "json" else "YAML"
        return None, [Problem("document", f"not valid {kind}: {exc}".replace("\n", " "))]


# --- validation ------------------------------------------------------------------------------


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "document"


def _shape_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors():
        reason = error.get("msg", "invalid")
        if error.get("type") == "extra_forbidden":
            reason = "unknown key; check its spelling against the example document"
        elif error.get("type") == "missing":
            reason = "required"
        problems.append(Problem(_path(tuple(error.get("loc", ()))), reason))
    return problems


_SECTIONS: dict[str, type[BaseModel]] = {
    "growth": Growth,
    "tiers": Tiers,
    "points": PointsRules,
    "lifecycle": Lifecycle,
    "rfm": Rfm,
    "super_users": SuperUsers,
    "paid": Paid,
}


def check(raw: Any) -> tuple[Programme | None, list[Problem]]:
    """Validate a raw document: the programme, or every problem found (never both)."""
    if not isinstance(raw, dict):
        return None, [Problem("document", "must be a mapping of sections (name, tiers, …)")]
    problems: list[Problem] = []
    programme: Programme | None = None
    try:
        programme = Programme.model_validate(raw)
    except ValidationError as exc:
        problems += _shape_problems(exc)
    problems += _reference_problems(raw)
    problems += _meaning_problems(_sound_parts(raw))
    problems = list(dict.fromkeys(problems))
    return (None, problems) if problems else (programme, [])


def _parse(model: Any, value: Any) -> Any:
    try:
        return TypeAdapter(model).validate_python(value)
    except ValidationError:
        return None


def _sound_parts(raw: dict[str, Any]) -> dict[str, Any]:
    """The parts whose shape is sound, parsed, for the second pass. The points section is
    taken part by part, so a typo in its earn rules does not hide a bad expiry date."""
    out: dict[str, Any] = {}
    for name, model in _SECTIONS.items():
        if raw.get(name) is not None:
            out[name] = _parse(model, raw[name])
    points = raw.get("points")
    if out.get("points") is None and isinstance(points, dict):
        for name in ("campaigns", "events", "expiry"):
            if name in points:
                field = PointsRules.model_fields[name]
                out[f"points.{name}"] = _parse(field.annotation, points[name])
    elif out.get("points") is not None:
        for name in ("campaigns", "events", "expiry"):
            out[f"points.{name}"] = getattr(out["points"], name)
    return out


def _items(value: Any) -> list[tuple[str, Any]]:
    """``[i]``-indexed items of a list, or ``.key``-named keys of a mapping, leniently."""
    if isinstance(value, list):
        return [(f"[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return [(f".{k}", k) for k in value]
    return []


def _reference_problems(raw: dict[str, Any]) -> list[Problem]:
    """Names that must exist elsewhere in the document: categories and tier codes. Read from
    the raw document, so they are reported even where the surrounding shape is broken."""
    problems: list[Problem] = []
    categories = raw.get("categories")
    if isinstance(categories, list):
        problems += _duplicates(categories, "categories", what="category")
    known = {c for c in categories if isinstance(c, str)} if isinstance(categories, list) else None
    tiers = raw.get("tiers")
    levels = tiers.get("levels") if isinstance(tiers, dict) else None
    codes = (
        {lv.get("code") for lv in levels if isinstance(lv, dict)}
        if isinstance(levels, list)
        else None
    )
    points = raw.get("points") if isinstance(raw.get("points"), dict) else {}
    earn = points.get("earn") if isinstance(points.get("earn"), dict) else {}
    refs: list[tuple[str, Any]] = []
    for name in ("excluded_categories", "category_multipliers"):
        refs += [(f"points.earn.{name}{at}", v) for at, v in _items(earn.get(name))]
    campaigns = points.get("campaigns")
    for i, campaign in enumerate(campaigns if isinstance(campaigns, list) else []):
        if isinstance(campaign, dict):
            path = f"points.campaigns[{i}]"
            refs += [(f"{path}.categories{at}", v) for at, v in _items(campaign.get("categories"))]
            for at, code in _items(campaign.get("tiers")):
                if codes is not None and isinstance(code, str) and code not in codes:
                    problems.append(
                        Problem(f"{path}.tiers{at}", f"unknown tier '{code}' (not in the ladder)")
                    )
    paid = raw.get("paid") if isinstance(raw.get("paid"), dict) else {}
    plans = paid.get("plans") if isinstance(paid.get("plans"), list) else []
    plan_codes = [p.get("code") if isinstance(p, dict) else None for p in plans]
    problems += _duplicates(plan_codes, "paid.plans", what="plan code", key="code")
    for i, plan in enumerate(plans):
        benefits = plan.get("benefits") if isinstance(plan, dict) else None
        if isinstance(benefits, dict):  # member prices name categories of the document
            path = f"paid.plans[{i}].benefits.member_price_by_category"
            by_category = benefits.get("member_price_by_category")
            refs += [(f"{path}{at}", v) for at, v in _items(by_category)]
        eligibility = plan.get("eligibility") if isinstance(plan, dict) else None
        tier = eligibility.get("min_tier") if isinstance(eligibility, dict) else None
        if codes is not None and isinstance(tier, str) and tier not in codes:
            problems.append(
                Problem(
                    f"paid.plans[{i}].eligibility.min_tier",
                    f"unknown tier '{tier}' (not in the ladder)",
                )
            )
    super_users = raw.get("super_users") if isinstance(raw.get("super_users"), dict) else {}
    top = super_users.get("min_tier")
    if codes is not None and isinstance(top, str) and top not in codes:
        problems.append(
            Problem("super_users.min_tier", f"unknown tier '{top}' (not in the ladder)")
        )
    for path, name in refs:
        if known is not None and isinstance(name, str) and name not in known:
            problems.append(
                Problem(path, f"unknown category '{name}'; add it to categories or fix the name")
            )
    excluded = earn.get("excluded_categories")
    multiplied = earn.get("category_multipliers")
    if isinstance(excluded, list) and isinstance(multiplied, dict):
        for name in multiplied:
            if name in excluded:
                problems.append(
                    Problem(
                        f"points.earn.category_multipliers.{name}",
                        "this category is excluded from earning; a multiplier has no effect",
                    )
                )
    return problems


def _meaning_problems(parts: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    if (growth := parts.get("growth")) is not None:
        events = [b.event for b in growth.bonus_events]
        problems += _duplicates(events, "growth.bonus_events", what="event", key="event")
    if (tiers := parts.get("tiers")) is not None:
        problems += _tier_problems(tiers)
    campaigns: list[Campaign] = parts.get("points.campaigns") or []
    codes = [c.code for c in campaigns]
    problems += _duplicates(codes, "points.campaigns", what="campaign code", key="code")
    for i, campaign in enumerate(campaigns):
        path = f"points.campaigns[{i}]"
        if _naive(campaign.starts_at) != _naive(campaign.ends_at):
            problems.append(
                Problem(path, "starts_at and ends_at must both have a UTC offset, or neither")
            )
        elif campaign.ends_at <= campaign.starts_at:
            problems.append(Problem(f"{path}.ends_at", "must be after starts_at"))
    events: PointEvents | None = parts.get("points.events")
    if events is not None and events.check_in is not None:
        days = [s.days for s in events.check_in.streak_bonuses]
        for i in range(1, len(days)):
            if days[i] <= days[i - 1]:
                problems.append(
                    Problem(
                        f"points.events.check_in.streak_bonuses[{i}].days",
                        f"streaks must get longer: {days[i]} follows {days[i - 1]}",
                    )
                )
    if (expiry := parts.get("points.expiry")) is not None:
        problems += _expiry_problems(expiry)
    if (lifecycle := parts.get("lifecycle")) is not None:
        problems += _lifecycle_problems(lifecycle)
    if (rfm := parts.get("rfm")) is not None:
        problems += _rfm_problems(rfm)
    if (super_users := parts.get("super_users")) is not None and not super_users.conditions():
        problems.append(
            Problem(
                "super_users",
                "sets no condition; add one (paid_member, min_tier, min_spend_12m, "
                "min_orders_per_month, min_spend_multiple, min_referrals) or remove the section",
            )
        )
    return problems


def _lifecycle_problems(lifecycle: Lifecycle) -> list[Problem]:
    problems = []
    marks = [
        ("silent_after_days", lifecycle.silent_after_days),
        ("sleeping_after_days", lifecycle.sleeping_after_days),
        ("churned_after_days", lifecycle.churned_after_days),
    ]
    for (before, a), (name, b) in pairwise(marks):
        if b <= a:
            problems.append(
                Problem(f"lifecycle.{name}", f"must be more than {before} ({a}), not {b}")
            )
    if lifecycle.sleeping_percentile <= lifecycle.silent_percentile:
        problems.append(
            Problem(
                "lifecycle.sleeping_percentile",
                f"must be more than silent_percentile ({lifecycle.silent_percentile}), "
                f"not {lifecycle.sleeping_percentile}",
            )
        )
    return problems


def _rfm_problems(rfm: Rfm) -> list[Problem]:
    problems = []
    cuts: dict[str, list[Any] | None] = {
        "recency_days": rfm.recency_days,
        "frequency": rfm.frequency,
        "monetary": rfm.monetary,
    }
    for name, values in cuts.items():
        path = f"rfm.{name}"
        if rfm.scoring == "quintiles":
            if values is not None:
                problems.append(Problem(path, "not used by quintiles scoring; remove it"))
            continue
        if values is None:
            problems.append(Problem(path, "required for thresholds scoring: four cut points"))
        elif len(values) != 4:
            problems.append(
                Problem(path, f"needs four cut points for scores 1-5, not {len(values)}")
            )
        elif any(b <= a for a, b in pairwise(values)):
            problems.append(Problem(path, f"cut points must rise: {[str(v) for v in values]}"))
    return problems


def _naive(at: datetime) -> bool:
    return at.tzinfo is None


def _duplicates(
    values: list[Any], path: str, *, what: str, key: str | None = None
) -> list[Problem]:
    seen: set[Any] = set()
    problems = []
    for i, value in enumerate(values):
        if not isinstance(value, str | int):
            continue  # a wrong type, already reported by the first pass
        if value in seen:
            where = f"{path}[{i}]" + (f".{key}" if key else "")
            problems.append(Problem(where, f"the {what} '{value}' appears twice"))
        seen.add(value)
    return problems


def _tier_problems(tiers: Tiers) -> list[Problem]:
    problems: list[Problem] = []
    levels = tiers.levels
    problems += _duplicates([lv.code for lv in levels], "tiers.levels", what="code", key="code")
    problems += _duplicates([lv.name for lv in levels], "tiers.levels", what="name", key="name")
    if levels[0].threshold != 0:
        problems.append(
            Problem(
                "tiers.levels[0].threshold",
                f"the first level is where every member starts: its threshold must be 0, "
                f"not {levels[0].threshold}",
            )
        )
    for i, level in enumerate(levels):
        path = f"tiers.levels[{i}]"
        if tiers.basis != "spend":
            for name in ("threshold", "retention"):
                value = getattr(level, name)
                if value is not None and value != value.to_integral_value():
                    problems.append(
                        Problem(
                            f"{path}.{name}",
                            f"{tiers.basis} is counted in whole units; {value} has a fraction",
                        )
                    )
        elif level.threshold.as_tuple().exponent < -2:  # type: ignore[operator]
            problems.append(Problem(f"{path}.threshold", "yuan have at most two decimals"))
        if i > 0 and level.threshold <= levels[i - 1].threshold:
            problems.append(
                Problem(
                    f"{path}.threshold",
                    f"thresholds must increase up the ladder: {level.threshold} is not above "
                    f"{levels[i - 1].code}'s {levels[i - 1].threshold}",
                )
            )
        if level.retention is not None and level.retention > level.threshold:
            problems.append(
                Problem(
                    f"{path}.retention",
                    f"keeping a level cannot ask more than reaching it ({level.retention} > "
                    f"{level.threshold})",
                )
            )
    window = tiers.review
    if window.window == "days_since_change" and window.days is None:
        problems.append(Problem("tiers.review.days", "required for days_since_change (N days)"))
    if window.window != "days_since_change" and window.days is not None:
        problems.append(Problem("tiers.review.days", f"not used by {window.window}; remove it"))
    return problems


def _expiry_problems(expiry: Expiry) -> list[Problem]:
    problems = []
    needs_months = expiry.policy in ("rolling_months", "end_of_month_after")
    needs_date = expiry.policy == "year_end"
    if needs_months and expiry.months is None:
        problems.append(Problem("points.expiry.months", f"required for {expiry.policy}"))
    if not needs_months and expiry.months is not None:
        problems.append(Problem("points.expiry.months", f"not used by {expiry.policy}; remove it"))
    for name in ("month", "day"):
        value = getattr(expiry, name)
        if needs_date and value is None:
            problems.append(Problem(f"points.expiry.{name}", "required for year_end clearing"))
        if not needs_date and value is not None:
            problems.append(
                Problem(f"points.expiry.{name}", f"not used by {expiry.policy}; remove it")
            )
    if needs_date and expiry.month is not None and expiry.day is not None:
        try:
            date(2025, expiry.month, expiry.day)  # a common year: 29 February is refused
        except ValueError:
            problems.append(
                Problem(
                    "points.expiry.day",
                    f"{expiry.month}/{expiry.day} is not a day that every year has",
                )
            )
    return problems


# --- storage form, hash and diff ---------------------------------------------------------------


def canonical(programme: Programme) -> dict[str, Any]:
    """The stored form: JSON types only (Decimals and datetimes as strings), defaults filled."""
    return programme.model_dump(mode="json")


def document_hash(document: dict[str, Any]) -> str:
    """A hash of the canonical document, the same whatever the key order or the format."""
    return hashlib.sha256(json_text(document).encode()).hexdigest()


@dataclass(frozen=True)
class Change:
    """One difference: a path in the document and its value before and after (None: absent)."""

    path: str
    old: Any
    new: Any

    @property
    def kind(self) -> Literal["added", "removed", "changed"]:
        if self.old is None:
            return "added"
        if self.new is None:
            return "removed"
        return "changed"


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{i}]", out)
    else:
        out[path] = value


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[Change]:
    """What changes from ``old`` to ``new`` (both canonical), leaf by leaf, in document order.

    Lists of plain values (categories, benefit packs) compare as one value; lists of
    sections (levels, campaigns) compare item by item by position."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if old is not None:
        _flatten(old, "", before)
    _flatten(new, "", after)
    changes = [
        Change(path, before.get(path), value)
        for path, value in after.items()
        if before.get(path) != value
    ]
    changes += [Change(path, value, None) for path, value in before.items() if path not in after]
    return changes


def json_text(document: dict[str, Any]) -> str:
    """A stored document as JSON text (for parsing it back with ``model_validate_json``)."""
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
