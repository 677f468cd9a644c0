"""The brand's CLV job: summary from the live orders, fit, per-member results, the run."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from clv_brand import build_brand
from sqlalchemy import func, select

from siyu.core import clock
from siyu.core.db import Database
from siyu.insight import clv, clv_jobs, clv_models
from siyu.insight.isolation import run_isolated
from siyu.insight.models import InsightRun, MemberInsight
from siyu.jobs import service as jobs
from siyu.orders import service as orders
from siyu.orders.rules import RefundDraft


@pytest.fixture
def brand(clean_db: Database) -> dict[str, int]:
    return build_brand(clean_db)


def test_the_job_writes_every_buyers_clv_and_records_the_run(
    clean_db: Database, brand: dict[str, int]
) -> None:
    # when the nightly job runs
    outcome = jobs.run(clean_db, "insight.clv", date(2026, 11, 23), tz="Asia/Shanghai")

    # then every member with a counted purchase has CLV, the others none
    with clean_db.unit_of_work() as session:
        scored = session.scalar(
            select(func.count()).where(MemberInsight.clv_computed_at.is_not(None))
        )
        assert scored == 150 == outcome.result["members"]
        assert session.get(MemberInsight, brand["prospect"]) is None
        assert session.get(MemberInsight, brand["refunded"]) is None
        row = session.get(MemberInsight, brand["buyer"])
        assert row is not None and row.p_alive is not None
        assert 0 <= row.p_alive <= 1
        assert 0 <= row.expected_purchases_90 <= row.expected_purchases_365
        assert row.expected_value_fen is not None and row.expected_value_fen >= 0
        run = session.scalars(select(InsightRun).where(InsightRun.step == "clv")).one()
        assert run.status == "done" and run.rows == 150
        detail = json.loads(run.detail)
    assert set(detail["params"]) == {"r", "alpha", "a", "b"}
    assert set(detail["spend_params"]) == {"p", "q", "v"}
    assert sum(d[1] for d in detail["deciles"]) == 150
    assert sum(detail["p_alive_bands"]) == 150
    # the calibration report covers everyone who had bought 90 days before
    report = detail["calibration"]
    assert report["holdout_days"] == 90
    assert sum(b[1] for b in report["buckets"]) > 100
    assert all(b[2] >= 0 and b[3] >= 0 for b in report["buckets"])


def test_a_rerun_updates_in_place_and_clears_members_no_longer_buyers(
    clean_db: Database, brand: dict[str, int], fixed_clock: clock.FixedClock
) -> None:
    first = clv_jobs.run_clv(clean_db)
    # given the buyer's orders are all refunded afterwards
    with clean_db.unit_of_work() as session:
        mine = orders.orders_of_member(session, brand["buyer"])
        for i, view in enumerate(mine):
            o = view.order
            orders.record_refund(
                session,
                RefundDraft(
                    channel="store",
                    external_id=f"RB{i}",
                    order_channel="store",
                    order_external_id=o.external_id,
                    amount_fen=o.amount_fen,
                    refunded_at=clock.now(),
                ),
            )
    fixed_clock.advance(timedelta(hours=1))
    second = clv_jobs.run_clv(clean_db)
    assert second["customers"] == first["customers"] - 1
    with clean_db.unit_of_work() as session:
        row = session.get(MemberInsight, brand["buyer"])
        assert row is not None and row.p_alive is None and row.clv_computed_at is None
        assert session.scalar(select(func.count()).select_from(MemberInsight)) == 150


def test_without_orders_a_run_says_what_is_missing(clean_db: Database) -> None:
    from siyu.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="order history"):
        clv_jobs.run_clv(clean_db)
    with clean_db.unit_of_work() as session:
        run = session.scalars(select(InsightRun).where(InsightRun.step == "clv")).one()
        assert run.status == "failed" and "order history" in run.detail


def test_without_orders_the_nightly_job_skips_and_the_night_goes_on(clean_db: Database) -> None:
    outcome = jobs.run(clean_db, "insight.clv", date(2026, 11, 23), tz="Asia/Shanghai")
    assert outcome.status == "done"
    assert outcome.result["members"] == 0 and "order history" in outcome.result["skipped"]


def _reference_scores(engine: Any, as_of: datetime, tz: str) -> pd.DataFrame:
    """Each buyer's scores computed step by step in memory, the way the job scored before
    it staged and published (work for ``run_isolated``)."""
    offset = ZoneInfo(tz).utcoffset(as_of.replace(tzinfo=None))
    offset_s = int(offset.total_seconds()) if offset is not None else 0
    daily = clv_jobs.daily_purchases(engine, until=as_of, offset_s=offset_s)
    table = engine.materialize(
        "reference", clv_jobs.summary(daily, last_day=clv_jobs.local_day(as_of, offset_s))
    )
    purchase, spend = clv_jobs._fit_data(engine, table)
    fitted = clv.fit(purchase, model="bgnbd", unit=clv_jobs.UNIT, spend_summary=spend)
    frame = table.to_pandas()
    return fitted.score(
        clv_models.frame(
            frame["member_id"],
            frame["frequency"].to_numpy(float),
            frame["recency_days"].to_numpy(float) / 7.0,
            frame["t_days"].to_numpy(float) / 7.0,
            frame["monetary"].to_numpy(float),
        )
    )


def test_published_scores_equal_the_models_predictions(
    clean_db: Database, brand: dict[str, int]
) -> None:
    detail = clv_jobs.run_clv(clean_db, tz="Asia/Shanghai")
    expected = run_isolated(clean_db, _reference_scores, clock.now(), "Asia/Shanghai")
    with clean_db.unit_of_work() as session:
        rows = {r.member_id: r for r in session.scalars(select(MemberInsight))}
    assert len(expected) == detail["customers"] == len(rows) == 150
    # the fits sum their rows in the order DuckDB groups them: equal to ~1e-6, not to the bit
    for score in expected.itertuples():
        row = rows[int(score.customer_id)]
        assert row.p_alive == pytest.approx(score.p_alive, rel=1e-6)
        assert row.expected_purchases_90 == pytest.approx(score.expected_purchases_90, rel=1e-6)
        assert row.expected_purchases_365 == pytest.approx(score.expected_purchases_365, rel=1e-6)
        assert row.expected_value_fen == pytest.approx(score.expected_value, rel=1e-5, abs=1)
        assert row.clv_computed_at == clock.now() and row.stage is None
