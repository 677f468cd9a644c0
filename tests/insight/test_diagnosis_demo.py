"""The diagnosis on a small demo brand: it finds what the seeds' case study found (the
demo's last year is that downturn), and the same brand without the downturn passes the
checks over its figures. Programme checks fire or pass the same on both."""

from __future__ import annotations

from datetime import timedelta

import pytest

from siyu.core import clock
from siyu.core.db import Database
from siyu.demo.generator import generate_brand
from siyu.insight.diagnosis import diagnose, render_html
from siyu.insight.kpis import Period

MEMBERS = 400
SEED = 11
TZ = "Asia/Shanghai"
# What the programme of the demo offers decides these, whatever the figures.
PROGRAMME_FIRES = {"join_gift", "purchase_strategy", "points_redemption"}
PROGRAMME_PASSES = {"tier_benefits"}
# The case study's figures: the downturn of the demo's last year.
CASE_STUDY = {"member_order_value", "join_conversion", "one_time_buyers", "points_liability"}


def _diagnose(db: Database) -> dict[str, str]:
    today = clock.local_date(clock.now(), TZ)
    found = diagnose(db, Period(today - timedelta(days=364), today), tz=TZ)
    assert "会员体系诊断" in render_html(found)
    return {f.code: f.outcome.value for f in found.findings}


@pytest.mark.parametrize("downturn", [True, False], ids=["case-study", "growing"])
def test_the_diagnosis_on_the_demo_brand(
    clean_db: Database, fixed_clock: clock.FixedClock, downturn: bool
) -> None:
    generate_brand(clean_db, members=MEMBERS, seed=SEED, as_of=fixed_clock.now(), downturn=downturn)
    outcomes = _diagnose(clean_db)
    assert {c for c in PROGRAMME_FIRES if outcomes[c] == "fired"} == PROGRAMME_FIRES
    assert {c for c in PROGRAMME_PASSES if outcomes[c] == "passed"} == PROGRAMME_PASSES
    # the demo's paid card is young: too few renewals a year ago to compare
    assert outcomes["paid_renewal"] == "no_data"
    if downturn:
        assert {c for c in CASE_STUDY if outcomes[c] == "fired"} == CASE_STUDY
    else:
        passed = {c for c in CASE_STUDY - {"points_liability"} if outcomes[c] == "passed"}
        assert passed == CASE_STUDY - {"points_liability"}
