"""The programme as forms: fields named by document paths, a posted form applied to a copy
of the document, and the validation's problems placed beside their fields."""

from __future__ import annotations

from decimal import Decimal

from siyu.core.errors import Problem
from siyu.programme import rules as programme_rules
from siyu.web import programme_form


def example() -> dict:
    from importlib import resources

    text = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    raw, problems = programme_rules.parse_text(text)
    assert not problems
    programme, problems = programme_rules.check(raw)
    assert programme is not None, problems
    return programme_rules.canonical(programme)


def test_sections_show_every_level_and_plan() -> None:
    doc = example()
    sections = {s.key: s for s in programme_form.sections(doc)}
    assert list(sections) == [
        "tiers",
        "growth",
        "points",
        "expiry",
        "lifecycle",
        "rfm",
        "super_users",
        "paid",
    ]
    assert len(sections["tiers"].rows or []) == len(doc["tiers"]["levels"])
    assert sections["tiers"].rows[2][2].path == "tiers.levels[2].threshold"  # type: ignore[index]
    assert programme_form.value_of(doc, "tiers.levels[2].threshold") == "2000"
    assert programme_form.value_of(doc, "paid.plans[0].price") == "199"


def test_a_form_changes_only_the_fields_it_carries() -> None:
    doc = example()
    draft = programme_form.apply_form(
        doc,
        {
            "tiers.levels[2].threshold": "2500",
            "points.frozen_days": "14",
            "points.expiry.months": "",
            "not.a.field": "x",
        },
    )
    assert draft["tiers"]["levels"][2]["threshold"] == "2500"
    assert draft["points"]["frozen_days"] == 14
    assert "months" not in draft["points"]["expiry"]
    assert "not" not in draft
    assert doc["tiers"]["levels"][2]["threshold"] == "2000"  # the original is untouched
    programme, problems = programme_rules.check(draft)
    assert programme is not None, problems
    changes = programme_rules.diff(doc, programme_rules.canonical(programme))
    assert {c.path for c in changes} == {"tiers.levels[2].threshold", "points.frozen_days"}


def test_a_threshold_below_the_level_under_it_is_a_problem_beside_that_field() -> None:
    doc = example()
    draft = programme_form.apply_form(doc, {"tiers.levels[2].threshold": "100"})
    problems = programme_rules.check(draft)[1]
    beside, other = programme_form.by_field(problems, draft)
    assert "tiers.levels[2].threshold" in beside
    assert other == [p for p in problems if p.field not in programme_form.field_paths(draft)]


def test_problems_no_field_shows_are_listed_apart() -> None:
    doc = example()
    beside, other = programme_form.by_field(
        [Problem("points.campaigns[0].ends_at", "bad"), Problem("growth.per_yuan", "negative")],
        doc,
    )
    assert beside == {"growth.per_yuan": "negative"}
    assert other == [Problem("points.campaigns[0].ends_at", "bad")]


def test_every_field_posted_unchanged_gives_back_the_same_document() -> None:
    doc = example()
    form = {path: programme_form.value_of(doc, path) for path in programme_form.field_paths(doc)}
    assert {"lifecycle.basis", "rfm.scoring", "super_users.match", "paid.plans[0].price"} <= set(
        form
    )
    programme, problems = programme_rules.check(programme_form.apply_form(doc, form))
    assert programme is not None, problems
    assert programme_rules.canonical(programme) == doc


def test_lifecycle_rfm_super_users_and_plans_are_edited_through_their_fields() -> None:
    doc = example()
    draft = programme_form.apply_form(
        doc,
        {
            "lifecycle.basis": "percentiles",
            "lifecycle.silent_percentile": "75",
            "lifecycle.churned_multiple": "2.5",
            "rfm.scoring": "thresholds",
            "rfm.recency_days": "30, 90，180 365",
            "rfm.frequency": "2,3,5,8",
            "rfm.monetary": "200, 500, 1000, 3000.50",
            "super_users.match": "all",
            "super_users.paid_member": "false",
            "super_users.min_tier": "V4",
            "super_users.min_orders_per_month": "",
            "paid.plans[0].price": "99.90",
            "paid.plans[0].period": "quarter",
            "paid.plans[0].benefits.member_price_discount": "0.9",
            "paid.plans[0].benefits.points_multiplier": "3",
            "paid.plans[0].eligibility.min_tier": "V2",
            "paid.plans[0].refund.deduct_used_benefits": "false",
        },
    )
    programme, problems = programme_rules.check(draft)
    assert programme is not None, problems
    assert programme.lifecycle is not None and programme.lifecycle.basis == "percentiles"
    assert programme.lifecycle.silent_percentile == 75
    assert programme.rfm is not None and programme.rfm.recency_days == [30, 90, 180, 365]
    assert [str(m) for m in programme.rfm.monetary or []] == ["200", "500", "1000", "3000.50"]
    su = programme.super_users
    assert su is not None and su.match == "all" and su.paid_member is False
    assert su.conditions() == ["min_tier", "min_spend_12m", "min_referrals"]
    plan = programme.paid.plan("super")  # type: ignore[union-attr]
    assert (plan.price, plan.period) == (Decimal("99.90"), "quarter")
    assert plan.benefits.member_price_discount == Decimal("0.9")
    assert plan.eligibility.min_tier == "V2" and plan.refund.deduct_used_benefits is False
    changed = {c.path for c in programme_rules.diff(doc, programme_rules.canonical(programme))}
    assert "paid.plans[0].name" not in changed and "tiers.levels[0].threshold" not in changed
    assert "super_users.min_orders_per_month" in changed
    assert programme_form.label_of(doc, "paid.plans[0].price") == ("Price (yuan)", "super")


def test_an_optional_section_left_out_is_added_only_when_a_field_is_filled() -> None:
    doc = example()
    doc["super_users"] = None
    doc["rfm"] = None
    fields = programme_form.fields(doc)
    assert fields["super_users.match"].options == ("", "any", "all")  # unset by default
    assert fields["rfm.window_days"].placeholder == "365"
    untouched = {path: programme_form.value_of(doc, path) for path in fields}
    same, problems = programme_rules.check(programme_form.apply_form(doc, untouched))
    assert same is not None, problems
    assert programme_rules.canonical(same) == doc  # the sections stay out
    draft = programme_form.apply_form(doc, {**untouched, "super_users.min_referrals": "3"})
    programme, problems = programme_rules.check(draft)
    assert programme is not None, problems
    assert programme.super_users is not None and programme.super_users.conditions() == [
        "min_referrals"
    ]
    assert programme.rfm is None


def test_problems_inside_a_value_or_about_a_section_are_shown_there() -> None:
    doc = example()
    draft = programme_form.apply_form(
        doc,
        {
            "rfm.scoring": "thresholds",
            "rfm.recency_days": "30, 90, 180, 365",
            "rfm.frequency": "1, 2, 3, 4",
            "rfm.monetary": "100, lots, 300, 400",
            "lifecycle.sleeping_after_days": "60",
            "paid.plans[0].price": "0",
        },
    )
    problems = programme_rules.check(draft)[1]
    beside, other = programme_form.by_field(problems, draft)
    assert set(beside) == {"rfm.monetary", "lifecycle.sleeping_after_days", "paid.plans[0].price"}
    assert other == []

    no_condition = programme_form.apply_form(
        doc,
        {
            "super_users.paid_member": "false",
            "super_users.min_spend_12m": "",
            "super_users.min_orders_per_month": "",
            "super_users.min_referrals": "",
        },
    )
    beside, other = programme_form.by_field(programme_rules.check(no_condition)[1], no_condition)
    assert list(beside) == ["super_users"] and "no condition" in beside["super_users"]
