"""The programme as forms: fields named by document paths, a posted form applied to a copy
of the document, and the validation's problems placed beside their fields."""

from __future__ import annotations

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
    assert list(sections) == ["tiers", "growth", "points", "expiry", "paid"]
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
        [Problem("rfm.window_days", "bad"), Problem("growth.per_yuan", "negative")], doc
    )
    assert beside == {"growth.per_yuan": "negative"}
    assert other == [Problem("rfm.window_days", "bad")]
