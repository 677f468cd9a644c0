"""The programme document as forms: which fields each section shows, and how a posted form
changes a copy of the document. Pure: the service validates and diffs the result.

Field names are the document's own paths (``tiers.levels[2].threshold``), the same paths
the validation's problems name, so a problem is shown beside the field it is about.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from siyu.core.errors import Problem
from siyu.programme import rules
from siyu.web.i18n import N_

# The choices of the document's enumerations (programme.rules' Literal types).
CHOICES: dict[str, tuple[str, ...]] = {
    "tiers.basis": ("growth", "spend", "order_count"),
    "tiers.review.window": ("rolling_12_months", "calendar_year", "days_since_change"),
    "tiers.downgrade": ("one_level", "to_qualifying"),
    "points.earn.rounding": ("down", "half_up"),
    "points.expiry.policy": ("never", "rolling_months", "end_of_month_after", "year_end"),
    "points.negative_balance": ("debt", "allow_negative"),
    "plan.period": ("month", "quarter", "year"),
    "plan.refund.after": ("pro_rata", "none"),
    "lifecycle.basis": ("days", "percentiles"),
    "rfm.scoring": ("quintiles", "thresholds"),
    "super_users.match": ("any", "all"),
}
FLAG = ("true", "false")
INTEGER_FIELDS = frozenset(
    {
        "signup_bonus",
        "frozen_days",
        "months",
        "month",
        "day",
        "points_per_yuan",
        "step",
        "trial_days",
        "grace_days",
        "points",
        "days",
        "full_within_days",
        "min_growth",
        "new_within_days",
        "silent_after_days",
        "sleeping_after_days",
        "churned_after_days",
        "silent_percentile",
        "sleeping_percentile",
        "min_repeat_buyers",
        "window_days",
        "high_from",
        "min_referrals",
    }
)
# Sections a document may leave out. Their forms are shown anyway, the model's defaults as
# placeholders: filling in any field adds the section (the rest take their defaults).
OPTIONAL_SECTIONS = ("lifecycle", "rfm", "super_users")


# Words for the choices the shared ``choice`` macro does not name (msgids).
CHOICE_LABELS: dict[str, str] = {
    "": N_("Not set"),
    "true": N_("Yes"),
    "false": N_("No"),
    "debt": N_("Record a debt"),
    "allow_negative": N_("Allow a negative balance"),
    "pro_rata": N_("By unused days"),
    "none": N_("No refund"),
    "days": N_("Days since the last purchase"),
    "percentiles": N_("Percentiles of the purchase gap"),
    "quintiles": N_("Quintiles"),
    "thresholds": N_("Fixed cut points"),
    "any": N_("Any condition"),
    "all": N_("All conditions"),
}


@dataclass(frozen=True)
class Field:
    path: str
    label: str  # an English msgid; the template translates it
    kind: str = "number"  # number | text | choice | flag (yes/no) | list (comma-separated)
    choices: tuple[str, ...] = ()
    step: str = "any"
    optional: bool = False  # a choice that may be left unset (an empty option)
    placeholder: str = ""  # the default the document takes when the field is empty

    def choice_label(self, value: str) -> str | None:
        """The msgid naming a choice, or None when the shared ``choice`` macro names it."""
        return CHOICE_LABELS.get(value)

    @property
    def options(self) -> tuple[str, ...]:
        values = FLAG if self.kind == "flag" else self.choices
        return ("", *values) if self.optional else values


@dataclass(frozen=True)
class Section:
    key: str
    title: str  # msgid
    fields: list[Field]
    rows: list[list[Field]] | None = None  # table sections (tier levels, paid plans)
    columns: list[str] | None = None  # msgids of the table's columns
    path: str | None = None  # the document part, for problems about the section as a whole
    layout: str = "table"  # table: one row per item | cards: one block per item (paid plans)
    note: str = ""  # msgid: how to read the section


def _get(doc: Any, path: str) -> Any:
    value = doc
    for part in _parts(path):
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return None
            value = value[part]
        else:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
    return value


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    return [int(i) if i else name for name, i in _PART.findall(path)]


def value_of(doc: Mapping[str, Any], path: str) -> str:
    """A field's current value as form text ('' when absent): yes/no as ``true``/``false``,
    a list of values comma-separated."""
    value = _get(doc, path)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _defaults(model: type[rules.BaseModel]) -> dict[str, Any]:
    return model().model_dump(mode="json")


def _optional_fields(
    doc: Mapping[str, Any], section: str, model: type[rules.BaseModel], spec: list[tuple[Any, ...]]
) -> list[Field]:
    """Fields of an optional section: when the document leaves it out, choices get an empty
    option and numbers show the default as a placeholder, so an untouched form adds nothing."""
    absent = _get(doc, section) is None
    defaults = _defaults(model)
    out = []
    for name, label, kind, *rest in spec:
        choices = rest[0] if rest else ()
        unset_allowed = rest[1] if len(rest) > 1 else False  # None is a meaning (no condition)
        value = defaults.get(name)
        placeholder = "" if value is None or not absent else value_of(defaults, name)
        out.append(
            Field(
                f"{section}.{name}",
                label,
                kind,
                choices,
                step="1" if name in INTEGER_FIELDS else "any",
                optional=unset_allowed or (absent and kind in ("choice", "flag")),
                placeholder=placeholder,
            )
        )
    return out


def sections(doc: Mapping[str, Any]) -> list[Section]:
    """The editable sections of a document, as many rows as it has levels and plans."""
    codes = tuple(
        value_of(doc, f"tiers.levels[{i}].code") for i in range(_count(doc, "tiers.levels"))
    )
    out = [
        Section(
            "tiers",
            N_("Tiers"),
            [
                Field("tiers.basis", N_("Basis"), "choice", CHOICES["tiers.basis"]),
                Field(
                    "tiers.review.window",
                    N_("Review window"),
                    "choice",
                    CHOICES["tiers.review.window"],
                ),
                Field("tiers.review.days", N_("Review after days (days since change)"), step="1"),
                Field("tiers.downgrade", N_("Downgrade"), "choice", CHOICES["tiers.downgrade"]),
                Field(
                    "tiers.hold_through_next_period",
                    N_("A level reached lasts through the next period"),
                    "flag",
                ),
            ],
            rows=[
                [
                    Field(f"tiers.levels[{i}].code", N_("Code"), "text"),
                    Field(f"tiers.levels[{i}].name", N_("Name"), "text"),
                    Field(f"tiers.levels[{i}].threshold", N_("Threshold")),
                    Field(f"tiers.levels[{i}].retention", N_("Retention")),
                    Field(f"tiers.levels[{i}].benefits.points_multiplier", N_("Points multiplier")),
                    Field(f"tiers.levels[{i}].benefits.discount_rate", N_("Discount rate")),
                ]
                for i in range(len(codes))
            ],
            columns=[
                N_("Code"),
                N_("Name"),
                N_("Threshold"),
                N_("Retention"),
                N_("Points multiplier"),
                N_("Discount rate"),
            ],
            path="tiers",
        ),
        Section(
            "growth",
            N_("Growth value"),
            [
                Field("growth.per_yuan", N_("Growth per yuan")),
                Field("growth.signup_bonus", N_("Signup bonus"), step="1"),
            ],
            path="growth",
        ),
        Section(
            "points",
            N_("Points"),
            [
                Field("points.earn.per_yuan", N_("Points per yuan")),
                Field(
                    "points.earn.rounding",
                    N_("Rounding"),
                    "choice",
                    CHOICES["points.earn.rounding"],
                ),
                Field("points.earn.minimum_order_amount", N_("Minimum order amount (yuan)")),
                Field("points.frozen_days", N_("Frozen days (return window)"), step="1"),
                Field(
                    "points.negative_balance",
                    N_("A refund after spending"),
                    "choice",
                    CHOICES["points.negative_balance"],
                ),
            ]
            + (
                [Field("points.events.check_in.points", N_("Check-in points"), step="1")]
                if _get(doc, "points.events.check_in") is not None
                else []
            )
            + (
                [
                    Field(
                        "points.cash_off.points_per_yuan", N_("Points per yuan of cash"), step="1"
                    ),
                    Field("points.cash_off.cap_percent", N_("Cash-off cap (percent of order)")),
                    Field("points.cash_off.step", N_("Cash-off step (points)"), step="1"),
                ]
                if _get(doc, "points.cash_off") is not None
                else []
            ),
            path="points",
        ),
        Section(
            "expiry",
            N_("Points expiry"),
            [
                Field(
                    "points.expiry.policy", N_("Policy"), "choice", CHOICES["points.expiry.policy"]
                ),
                Field("points.expiry.months", N_("Months"), step="1"),
                Field("points.expiry.month", N_("Month (year end)"), step="1"),
                Field("points.expiry.day", N_("Day (year end)"), step="1"),
            ],
            path="points.expiry",
        ),
        Section(
            "lifecycle",
            N_("Lifecycle"),
            _optional_fields(
                doc,
                "lifecycle",
                rules.Lifecycle,
                [
                    ("basis", N_("Basis"), "choice", CHOICES["lifecycle.basis"]),
                    ("new_within_days", N_("New within days of the first purchase"), "number"),
                    ("silent_after_days", N_("Silent after days"), "number"),
                    ("sleeping_after_days", N_("Sleeping after days"), "number"),
                    ("churned_after_days", N_("Churned after days"), "number"),
                    ("silent_percentile", N_("Silent from percentile of the gap"), "number"),
                    ("sleeping_percentile", N_("Sleeping from percentile of the gap"), "number"),
                    (
                        "churned_multiple",
                        N_("Churned at a multiple of the sleeping mark"),
                        "number",
                    ),
                    ("min_repeat_buyers", N_("Repeat buyers needed for percentiles"), "number"),
                ],
            ),
            path="lifecycle",
            note=N_(
                "By days: the marks as written. By percentiles: silent and sleeping from the "
                "brand's own gap between orders; the day marks apply while too few members "
                "bought twice."
            ),
        ),
        Section(
            "rfm",
            N_("RFM"),
            _optional_fields(
                doc,
                "rfm",
                rules.Rfm,
                [
                    ("window_days", N_("Window (days)"), "number"),
                    ("scoring", N_("Scoring"), "choice", CHOICES["rfm.scoring"]),
                    ("recency_days", N_("Recency cut points (days)"), "list"),
                    ("frequency", N_("Frequency cut points (orders)"), "list"),
                    ("monetary", N_("Monetary cut points (yuan)"), "list"),
                    ("high_from", N_("High from score"), "number"),
                ],
            ),
            path="rfm",
            note=N_(
                "Fixed cut points: four rising values each, separated by commas "
                "(30, 90, 180, 365); quintiles need none."
            ),
        ),
        Section(
            "super_users",
            N_("Super users"),
            [
                *_optional_fields(
                    doc,
                    "super_users",
                    rules.SuperUsers,
                    [
                        ("match", N_("A super user meets"), "choice", CHOICES["super_users.match"]),
                        ("paid_member", N_("Holds a paid membership"), "flag"),
                        ("min_tier", N_("At least the tier"), "choice", codes, True),
                        ("min_spend_12m", N_("Spend in 12 months at least (yuan)"), "number"),
                        ("min_orders_per_month", N_("Orders per month at least"), "number"),
                        ("min_spend_multiple", N_("Spend at least times the average"), "number"),
                        ("min_referrals", N_("Referrals at least"), "number"),
                    ],
                )
            ],
            path="super_users",
            note=N_("Set the conditions that count; leave the others empty."),
        ),
    ]
    plans = _count(doc, "paid.plans")
    if plans:
        out.append(
            Section(
                "paid",
                N_("Paid plans"),
                [],
                rows=[_plan_fields(i, codes) for i in range(plans)],
                path="paid",
                layout="cards",
            )
        )
    return out


def _count(doc: Mapping[str, Any], path: str) -> int:
    items = _get(doc, path)
    return len(items) if isinstance(items, list) else 0


def _plan_fields(i: int, codes: tuple[str, ...]) -> list[Field]:
    """A paid plan's fields; the first is its code (``label_of`` names the row by it)."""
    at = f"paid.plans[{i}]"
    return [
        Field(f"{at}.code", N_("Code"), "text"),
        Field(f"{at}.name", N_("Name"), "text"),
        Field(f"{at}.period", N_("Period"), "choice", CHOICES["plan.period"]),
        Field(f"{at}.price", N_("Price (yuan)")),
        Field(f"{at}.trial_days", N_("Trial days"), step="1"),
        Field(f"{at}.grace_days", N_("Grace days"), step="1"),
        Field(
            f"{at}.benefits.member_price_discount",
            N_("Member price (share of list price)"),
        ),
        Field(f"{at}.benefits.points_multiplier", N_("Points multiplier")),
        Field(f"{at}.eligibility.min_tier", N_("Open from tier"), "choice", codes, optional=True),
        Field(f"{at}.eligibility.min_growth", N_("Open from growth"), step="1"),
        Field(f"{at}.refund.full_within_days", N_("Full refund within days"), step="1"),
        Field(
            f"{at}.refund.after", N_("Refund after that"), "choice", CHOICES["plan.refund.after"]
        ),
        Field(
            f"{at}.refund.deduct_used_benefits",
            N_("Deduct benefits used from a refund"),
            "flag",
        ),
    ]


def fields(doc: Mapping[str, Any]) -> dict[str, Field]:
    """Every field of the forms by its path."""
    out: dict[str, Field] = {}
    for section in sections(doc):
        for f in section.fields:
            out[f.path] = f
        for row in section.rows or []:
            for f in row:
                out[f.path] = f
    return out


def field_paths(doc: Mapping[str, Any]) -> list[str]:
    return list(fields(doc))


_LIST_SEPARATOR = re.compile(r"[,，、\s]+")


def _number(path: str, text: str) -> Any:
    last = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
    if last in INTEGER_FIELDS and re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _typed(field: Field, text: str) -> Any:
    """Form text as a document value: empty is absent, yes/no as a bool, a list split at
    commas, integer fields as ints when they read as one, everything else as text for the
    validation to judge (decimals stay exact)."""
    text = text.strip()
    if text == "":
        return None
    if field.kind == "flag":
        return {"true": True, "false": False}.get(text, text)
    if field.kind == "list":
        items = [t for t in _LIST_SEPARATOR.split(text) if t]
        return [int(t) if re.fullmatch(r"-?\d+", t) else t for t in items]
    return _number(field.path, text)


def _set(doc: Any, path: str, value: Any) -> None:
    parts = _parts(path)
    target = doc
    for part in parts[:-1]:
        target = target[part]
    last = parts[-1]
    if value is None and isinstance(target, dict):
        target.pop(last, None)
    else:
        target[last] = value


def apply_form(doc: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``doc`` with every editable field the form carries set to its value.

    A field whose part of the document is missing is skipped, except in an optional
    section (lifecycle, RFM, super users): a value there adds the section."""
    out = copy.deepcopy(dict(doc))
    for path, field in fields(doc).items():
        if path not in form:
            continue
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        value = _typed(field, form[path])
        if _get(out, parent) is None:
            if parent not in OPTIONAL_SECTIONS or value is None:
                continue
            out[parent] = {}
        _set(out, path, value)
    return out


_LAST_PART = re.compile(r"(\[\d+\]|\.[^.\[\]]+)$")


def by_field(
    problems: list[Problem], doc: Mapping[str, Any]
) -> tuple[dict[str, str], list[Problem]]:
    """Problems beside their fields, and those no field on the forms shows (listed on top).

    A problem inside a field's value (``rfm.recency_days[2]``) goes beside that field; a
    problem about a whole section (``super_users``) beside the section's title."""
    shown = set(field_paths(doc))
    anchors = {s.path for s in sections(doc) if s.path}
    beside: dict[str, str] = {}
    other: list[Problem] = []
    for problem in problems:
        path = problem.field
        while path not in shown and _LAST_PART.search(path):
            path = _LAST_PART.sub("", path)
        if path in shown or problem.field in anchors:
            beside.setdefault(path, problem.reason)
        else:
            other.append(problem)
    return beside, other


def label_of(doc: Mapping[str, Any], path: str) -> tuple[str, str | None]:
    """A changed path in words: the field's label (a msgid) and, in a table section, the
    code of its row (``V3``, ``super``). Paths no form shows are their own label."""
    for section in sections(doc):
        for f in section.fields:
            if f.path == path:
                return f.label, None
        for row in section.rows or []:
            for f in row:
                if f.path == path:
                    return f.label, value_of(doc, row[0].path) or None
    return path, None
