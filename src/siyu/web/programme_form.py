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

# The choices of the document's enumerations (programme.rules' Literal types).
CHOICES: dict[str, tuple[str, ...]] = {
    "tiers.basis": ("growth", "spend", "order_count"),
    "tiers.review.window": ("rolling_12_months", "calendar_year", "days_since_change"),
    "tiers.downgrade": ("one_level", "to_qualifying"),
    "points.earn.rounding": ("down", "half_up"),
    "points.expiry.policy": ("never", "rolling_months", "end_of_month_after", "year_end"),
    "plan.period": ("month", "quarter", "year"),
}
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
    }
)


def N_(message: str) -> str:
    """Marks a label for the message catalogue; the template translates it."""
    return message


@dataclass(frozen=True)
class Field:
    path: str
    label: str  # an English msgid; the template translates it
    kind: str = "number"  # number | text | choice
    choices: tuple[str, ...] = ()
    step: str = "any"


@dataclass(frozen=True)
class Section:
    key: str
    title: str  # msgid
    fields: list[Field]
    rows: list[list[Field]] | None = None  # table sections (tier levels, paid plans)
    columns: list[str] | None = None  # msgids of the table's columns


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
    """A field's current value as form text ('' when absent)."""
    value = _get(doc, path)
    return "" if value is None else str(value)


def sections(doc: Mapping[str, Any]) -> list[Section]:
    """The editable sections of a document, as many rows as it has levels and plans."""
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
                Field("tiers.downgrade", N_("Downgrade"), "choice", CHOICES["tiers.downgrade"]),
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
                for i in range(len(_get(doc, "tiers.levels") or []))
            ],
            columns=[
                N_("Code"),
                N_("Name"),
                N_("Threshold"),
                N_("Retention"),
                N_("Points multiplier"),
                N_("Discount rate"),
            ],
        ),
        Section(
            "growth",
            N_("Growth value"),
            [
                Field("growth.per_yuan", N_("Growth per yuan")),
                Field("growth.signup_bonus", N_("Signup bonus"), step="1"),
            ],
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
        ),
    ]
    plans = _get(doc, "paid.plans") or []
    if plans:
        out.append(
            Section(
                "paid",
                N_("Paid plans"),
                [],
                rows=[
                    [
                        Field(f"paid.plans[{i}].code", N_("Code"), "text"),
                        Field(f"paid.plans[{i}].name", N_("Name"), "text"),
                        Field(
                            f"paid.plans[{i}].period",
                            N_("Period"),
                            "choice",
                            CHOICES["plan.period"],
                        ),
                        Field(f"paid.plans[{i}].price", N_("Price (yuan)")),
                        Field(f"paid.plans[{i}].trial_days", N_("Trial days"), step="1"),
                        Field(f"paid.plans[{i}].grace_days", N_("Grace days"), step="1"),
                    ]
                    for i in range(len(plans))
                ],
                columns=[
                    N_("Code"),
                    N_("Name"),
                    N_("Period"),
                    N_("Price (yuan)"),
                    N_("Trial days"),
                    N_("Grace days"),
                ],
            )
        )
    return out


def field_paths(doc: Mapping[str, Any]) -> list[str]:
    paths = []
    for section in sections(doc):
        paths += [f.path for f in section.fields]
        for row in section.rows or []:
            paths += [f.path for f in row]
    return paths


def _typed(path: str, text: str) -> Any:
    """Form text as a document value: empty is absent, integer fields as ints when they
    read as one, everything else as text for the validation to judge (decimals stay exact)."""
    text = text.strip()
    if text == "":
        return None
    last = path.rsplit(".", 1)[-1]
    if last in INTEGER_FIELDS and re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


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
    """A copy of ``doc`` with every editable field the form carries set to its value."""
    out = copy.deepcopy(dict(doc))
    for path in field_paths(doc):
        if path in form and _get(out, path.rsplit(".", 1)[0] if "." in path else "") is not None:
            _set(out, path, _typed(path, form[path]))
    return out


def by_field(
    problems: list[Problem], doc: Mapping[str, Any]
) -> tuple[dict[str, str], list[Problem]]:
    """Problems beside their fields, and those no field on the forms shows (listed on top)."""
    shown = set(field_paths(doc))
    beside: dict[str, str] = {}
    other: list[Problem] = []
    for problem in problems:
        if problem.field in shown:
            beside.setdefault(problem.field, problem.reason)
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
