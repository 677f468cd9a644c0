"""The brand's CLV, nightly: fit BG/NBD (or Pareto/NBD) and Gamma-Gamma on the live orders
and write each buyer's P(alive), expected purchases and expected value into
``member_insight``.

The RFM summary is one DuckDB query over the live database (an Ibis expression, so it
also runs on the other engines): orders that still count (not fully refunded, net of
partial refunds, members not merged or closed), one purchase per member per brand-local
day, then per member frequency, recency, T and mean repeat spend. Nothing of it passes
through Python but what the fit needs: the purchase models only see the distinct
(frequency, recency, T) with their counts, a few thousand rows whatever the number of
members; the spend model sees repeat buyers' (frequency, mean spend), sampled down to
``SPEND_SAMPLE`` on very large bases. Scoring then streams the summary in batches of
``BATCH`` members through the predictions (NumPy) into a DuckDB table; the scores are
staged and published in one transaction, set-based inside the database
(``engine.Analytics.stage``/``publish``): ``UPDATE … FROM`` the staged scores, an insert of
the buyers who have no ``member_insight`` row yet, and CLV cleared where this run did not
recompute it (the member no longer has a counted purchase). No score becomes a Python
object on the way to the live database, and readers see the whole run or none of it.

On SQLite the DuckDB part (summary, fit, scoring, staging) runs in a spawned child
process (``isolation``): DuckDB's SQLite must not read the live file where the
application's SQLite has it open.

Each run also fits the same model on the history up to ``HOLDOUT_DAYS`` before, and
compares its prediction for those last days with what members bought: the calibration
report the console shows next to the parameters. The run is an ``insight_runs`` row
(step ``clv``) whose detail holds the parameters, the report and the distribution.

Day boundaries use the brand timezone's offset at ``as_of`` (a daylight-saving change
within the history moves a purchase near midnight by a day at most; Asia/Shanghai has
none).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.errors import InvalidInput
from siyu.core.settings import get_settings
from siyu.jobs.service import job

STEP = "clv"
HOLDOUT_DAYS = 90
BATCH = 100_000  # members scored and written per transaction
SPEND_SAMPLE = 1_000_000  # repeat buyers the spend model is fitted on, at most
DAY_SECONDS = 86_400
UNIT = "week"
SCORES = ("p_alive", "expected_purchases_90", "expected_purchases_365", "expected_value_fen")


class NotEnoughHistory(InvalidInput):
    """No counted purchase, or nobody bought twice: there is nothing to fit yet."""

    code = "clv_not_enough_history"


@job("insight.clv", "CLV: P(alive), expected purchases and value per buyer", order=70)
def clv_job(db: Database, day: date) -> dict[str, Any]:
    """A brand without enough history yet is not a failure of the night: the run is
    recorded (failed, with the reason) and the jobs after this one still run."""
    tz = get_settings().timezone
    day_end = datetime.combine(day + timedelta(days=1), datetime.min.time(), ZoneInfo(tz))
    as_of = min(clock.as_utc(day_end) - timedelta(microseconds=1), clock.now())
    try:
        detail = run_clv(db, as_of=as_of, tz=tz)
    except NotEnoughHistory as exc:
        return {"members": 0, "skipped": exc.message}
    return {"members": detail["customers"], "model": detail["model"]}


def run_clv(
    db: Database,
    *,
    as_of: datetime | None = None,
    model: str = "bgnbd",
    holdout_days: int = HOLDOUT_DAYS,
    tz: str | None = None,
) -> dict[str, Any]:
    """Fit, score every buyer, record the run; returns the run's detail."""
    from siyu.insight.isolation import isolated
    from siyu.insight.models import InsightRun

    as_of = clock.as_utc(as_of) if as_of is not None else clock.now()
    if as_of > clock.now():
        raise InvalidInput(
            "as_of is in the future; compute CLV as of now or earlier", field="as_of"
        )
    if holdout_days < 7:
        raise InvalidInput("the holdout needs at least 7 days", field="holdout_days")
    tz = tz or get_settings().timezone
    started = clock.now()
    with db.unit_of_work() as session:
        run = InsightRun(step=STEP, as_of=as_of, started_at=started, rows=0, detail="")
        run.status = "running"
        session.add(run)
        session.flush()
        run_id = run.id
    work = _ClvJob(as_of=as_of, model=model, holdout_days=holdout_days, tz=tz, computed_at=started)
    try:
        with isolated(db, writes=True) as place:
            detail = place.run(_compute, work)
            began = time.perf_counter()
            with place.publish() as live:
                _publish(live, computed_at=started)
            detail["seconds"]["publish"] = round(time.perf_counter() - began, 3)
    except BaseException as exc:
        _finish(db, run_id, status="failed", rows=0, detail=f"failed: {exc}")
        raise
    detail["run_id"] = run_id
    _finish(db, run_id, status="done", rows=detail["customers"], detail=_compact(detail))
    return detail


@dataclass(frozen=True)
class _ClvJob:
    """What the DuckDB part needs, picklable for the child process that runs it on SQLite
    (which must not read the clock: the instants are the caller's)."""

    as_of: datetime
    model: str
    holdout_days: int
    tz: str
    computed_at: datetime  # stamped on every score


def _finish(db: Database, run_id: int, *, status: str, rows: int, detail: str) -> None:
    from siyu.insight.models import InsightRun

    with db.unit_of_work() as session:
        run = session.get(InsightRun, run_id)
        assert run is not None
        run.status, run.rows, run.detail = status, rows, detail[:2000]
        run.finished_at = clock.now()


def _compact(detail: dict[str, Any]) -> str:
    """The detail as JSON within the 2,000 characters of ``insight_runs.detail``."""
    text = json.dumps(detail, separators=(",", ":"))
    if len(text) > 2000:  # notes are the only open-ended part
        detail = {**detail, "notes": [n[:100] for n in detail.get("notes", [])][:3]}
        text = json.dumps(detail, separators=(",", ":"))
    return text


def local_day(at: datetime, offset_s: int) -> int:
    """Days since 1970-01-01 of an instant's brand-local date."""
    return (int(clock.as_utc(at).timestamp()) + offset_s) // DAY_SECONDS


def daily_purchases(engine: Any, *, until: datetime, offset_s: int) -> Any:
    """One row per member and brand-local purchase day with the day's net spend."""
    from siyu.insight.engine import instant
    from siyu.insight.facts import EXCLUDED_STATUSES

    orders = engine.table("orders")
    members = engine.table("members")
    counted = orders.filter(
        orders.member_id.notnull(),
        orders.paid_at <= instant(until),
        orders.status != "refunded",
    )
    active = members.filter(~members.status.isin(EXCLUDED_STATUSES)).select(buyer=members.id)
    counted = counted.join(active, counted.member_id == active.buyer)
    rows = counted.select(
        member_id=counted.member_id,
        day=((counted.paid_at.epoch_seconds() + offset_s) // DAY_SECONDS).cast("int64"),
        net=(counted.amount_fen - counted.refunded_fen).cast("int64"),
    )
    rows = rows.filter(rows.net > 0)
    return rows.group_by(["member_id", "day"]).aggregate(value=rows.net.sum())


def summary(daily: Any, *, last_day: int, holdout_last_day: int | None = None) -> Any:
    """Per member who bought by ``last_day``: frequency (repeat days), recency and T in
    days, mean repeat spend in fen, and the purchase days of the holdout when asked."""
    import ibis

    cal = daily.filter(daily.day <= last_day)
    per = cal.group_by("member_id").aggregate(
        first=cal.day.min(),
        last=cal.day.max(),
        days=cal.count(),
        total=cal.value.sum(),
        first_value=cal.value.argmin(cal.day),
    )
    result = per.select(
        member_id=per.member_id,
        frequency=(per.days - 1).cast("int64"),
        recency_days=(per["last"] - per["first"]).cast("int64"),
        t_days=(ibis.literal(last_day) - per["first"]).cast("int64"),
        monetary=(per.days > 1).ifelse(
            (per.total - per.first_value).cast("float64") / (per.days - 1), 0.0
        ),
    )
    if holdout_last_day is None:
        return result
    later = daily.filter(daily.day > last_day, daily.day <= holdout_last_day)
    bought = later.group_by("member_id").aggregate(holdout=later.count())
    joined = result.left_join(bought, result.member_id == bought.member_id)
    return joined.select(
        member_id=joined.member_id,
        frequency=joined.frequency,
        recency_days=joined.recency_days,
        t_days=joined.t_days,
        monetary=joined.monetary,
        holdout_frequency=joined.holdout.cast("int64").fill_null(0),
    )


def _fit_data(engine: Any, table: Any, *, with_holdout: bool = False) -> tuple[Any, Any]:
    """The purchase rows (distinct frequency, recency, T with counts) and the spend rows
    (repeat buyers' frequency and mean spend, counted, sampled on very large bases)."""
    t = table
    extra = {"holdout": t.holdout_frequency.sum()} if with_holdout else {}
    purchase = (
        t.group_by(["frequency", "recency_days", "t_days"])
        .aggregate(weight=t.count(), **extra)
        .to_pandas()
    )
    purchase["recency"] = purchase["recency_days"] / 7.0
    purchase["T"] = purchase["t_days"] / 7.0
    repeat = t.filter(t.frequency > 0, t.monetary > 0)
    buyers = int(repeat.count().to_pyarrow().as_py())
    if buyers > SPEND_SAMPLE:
        repeat = repeat.sample(SPEND_SAMPLE / buyers, seed=20_250_101)
    spend = (
        repeat.group_by(["frequency", "monetary"])
        .aggregate(weight=repeat.count())
        .rename(monetary_value="monetary")
        .to_pandas()
    )
    return purchase, spend


def _calibration(
    engine: Any, daily: Any, *, as_of_day: int, holdout_days: int, model: str
) -> dict[str, Any] | None:
    """Fit on the history before the holdout and compare its prediction with the holdout."""
    import numpy as np
    import pandas as pd

    from siyu.core.errors import SiyuError
    from siyu.insight import clv

    last_day = as_of_day - holdout_days
    table = engine.materialize(
        "clv_calibration", summary(daily, last_day=last_day, holdout_last_day=as_of_day)
    )
    purchase, spend = _fit_data(engine, table, with_holdout=True)
    if purchase.empty:
        return None
    try:
        fitted = clv.fit(purchase, model=model, unit=UNIT, spend_summary=spend)
    except SiyuError:
        return None
    data = pd.DataFrame(
        {
            "customer_id": np.arange(len(purchase)),
            "frequency": purchase["frequency"].to_numpy(float),
            "recency": purchase["recency"].to_numpy(float),
            "T": purchase["T"].to_numpy(float),
        }
    )
    predicted = fitted.predictor().expected_purchases(data, holdout_days / 7.0)
    bucket = np.minimum(purchase["frequency"].to_numpy(int), clv.TOP_BUCKET)
    weight = purchase["weight"].to_numpy(float)
    rows = []
    for b in sorted(set(bucket.tolist())):
        mask = bucket == b
        n = float(weight[mask].sum())
        rows.append(
            [
                f"{b}+" if b == clv.TOP_BUCKET else str(b),
                int(n),
                _r(float(purchase["holdout"].to_numpy(float)[mask].sum()) / n),
                _r(float((predicted[mask] * weight[mask]).sum()) / n),
            ]
        )
    end = date(1970, 1, 1) + timedelta(days=last_day)
    return {
        "calibration_end": end.isoformat(),
        "holdout_days": holdout_days,
        "params": {k: _r(v) for k, v in fitted.purchase.items()},
        "buckets": rows,  # [frequency, customers, actual mean, predicted mean]
    }


def _r(value: float) -> float:
    return float(f"{value:.6g}")


def _compute(engine: Any, work: _ClvJob) -> dict[str, Any]:
    """Summary, fit, calibration and scores in DuckDB, the scores staged for publishing;
    nothing live is written here."""
    from siyu.insight import clv

    timings: dict[str, float] = {}
    lap = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        timings[name] = round(now - lap, 3)
        lap = now

    as_of, model = work.as_of, work.model
    offset = ZoneInfo(work.tz).utcoffset(as_of.replace(tzinfo=None))
    offset_s = int(offset.total_seconds()) if offset is not None else 0
    as_of_day = local_day(as_of, offset_s)
    daily = engine.materialize("clv_daily", daily_purchases(engine, until=as_of, offset_s=offset_s))
    table = engine.materialize("clv_summary", summary(daily, last_day=as_of_day))
    tick("summary")
    purchase, spend = _fit_data(engine, table)
    if purchase.empty:
        raise NotEnoughHistory(
            "no member has a counted purchase yet: CLV needs order history", field="orders"
        )
    if not (purchase["frequency"] > 0).any():
        raise NotEnoughHistory(
            "no member has bought on two different days yet: CLV needs repeat purchases",
            field="orders",
        )
    fitted = clv.fit(purchase, model=model, unit=UNIT, spend_summary=spend)
    tick("fit")
    calibration = _calibration(
        engine, daily, as_of_day=as_of_day, holdout_days=work.holdout_days, model=model
    )
    if calibration is None:
        fitted.notes.append(
            f"no calibration report: too few repeat buyers before the last {work.holdout_days} days"
        )
    tick("calibration")
    scored = _score(engine, fitted)
    tick("score")
    _stage_scores(engine, work.computed_at)
    tick("stage")
    distribution = _distribution(engine)
    tick("distribution")
    return {
        "model": model,
        "unit": UNIT,
        "as_of": as_of.isoformat(),
        "computed_at": work.computed_at.isoformat(),
        "params": {k: _r(v) for k, v in fitted.purchase.items()},
        "spend_params": {k: _r(v) for k, v in fitted.spend.items()} if fitted.spend else None,
        "customers": scored,
        "repeat_customers": fitted.repeat_customers,
        "log_likelihood": _r(fitted.log_likelihood),
        "calibration": calibration,
        **distribution,
        "notes": fitted.notes,
        "seconds": timings,
    }


def _score(engine: Any, fitted: Any) -> int:
    """Score the summary batch by batch with the fitted model's predictions into the
    DuckDB table ``clv_scores``; returns the members scored."""
    import numpy as np
    import pandas as pd

    engine.sql(
        "CREATE OR REPLACE TEMP TABLE clv_scores (member_id BIGINT, p_alive DOUBLE, "
        "expected_purchases_90 DOUBLE, expected_purchases_365 DOUBLE, value_fen BIGINT)"
    )
    reader = engine.sql(
        "SELECT member_id, frequency, recency_days, t_days, monetary "
        "FROM clv_summary ORDER BY member_id"
    ).to_arrow_reader(BATCH)
    total = 0
    for batch in reader:
        frame = batch.to_pandas()
        data = pd.DataFrame(
            {
                "customer_id": frame["member_id"].to_numpy(),
                "frequency": frame["frequency"].to_numpy(float),
                "recency": frame["recency_days"].to_numpy(float) / 7.0,
                "T": frame["t_days"].to_numpy(float) / 7.0,
                "monetary_value": frame["monetary"].to_numpy(float),
            }
        )
        scores = fitted.score(data)
        value = scores["expected_value"].to_numpy(float)
        finite = np.isfinite(value)
        # rounded half to even, as Python's round() did when rows were written one by one
        value_fen = pd.array(np.where(finite, np.round(value), 0).astype("int64"), dtype="Int64")
        value_fen[~finite] = pd.NA
        engine.con.register(
            "clv_batch",
            pd.DataFrame(
                {
                    "member_id": scores["customer_id"].to_numpy().astype("int64"),
                    "p_alive": scores["p_alive"].to_numpy(float),
                    "expected_purchases_90": scores["expected_purchases_90"].to_numpy(float),
                    "expected_purchases_365": scores["expected_purchases_365"].to_numpy(float),
                    "value_fen": value_fen,
                }
            ),
        )
        engine.sql("INSERT INTO clv_scores SELECT * FROM clv_batch")
        engine.con.unregister("clv_batch")
        total += len(frame)
    return total


def _stage_scores(engine: Any, computed_at: datetime) -> None:
    at = clock.as_utc(computed_at).replace(tzinfo=None).isoformat(sep=" ")
    engine.stage(
        "clv_scores",
        "SELECT member_id, p_alive, expected_purchases_90, expected_purchases_365, "
        f"value_fen AS expected_value_fen, TIMESTAMP '{at}' AS clv_computed_at FROM clv_scores",
    )


def _publish(live: Any, *, computed_at: datetime) -> None:
    """The staged scores into ``member_insight`` in the one publishing transaction: update
    the buyers' rows, insert those who have none yet, and clear CLV this run did not
    recompute. On PostgreSQL DuckDB runs it over the attached database; on SQLite the
    application's SQLite does, with the staging file attached as ``stage``."""
    columns = (*SCORES, "clv_computed_at")
    assign = ", ".join(f"{c} = s.{c}" for c in columns)
    names = ", ".join(columns)
    cleared = ", ".join(f"{c} = NULL" for c in columns)
    at = clock.as_utc(computed_at).replace(tzinfo=None)
    if live.duck is not None:
        duck = live.duck
        duck.execute(
            f"UPDATE live.member_insight SET {assign} FROM stage_clv_scores AS s "
            "WHERE member_insight.member_id = s.member_id"
        )
        duck.execute(
            f"INSERT INTO live.member_insight (member_id, super_user, {names}) "
            f"SELECT s.member_id, false, {', '.join(f's.{c}' for c in columns)} "
            "FROM stage_clv_scores AS s ANTI JOIN live.member_insight AS m USING (member_id)"
        )
        duck.execute(
            f"UPDATE live.member_insight SET {cleared} "
            f"WHERE clv_computed_at < TIMESTAMPTZ '{at.isoformat(sep=' ')}+00'"
        )
        return
    sql = live.live.exec_driver_sql
    sql(
        f"UPDATE member_insight SET {assign} FROM stage.clv_scores AS s "
        "WHERE member_insight.member_id = s.member_id"
    )
    sql(
        f"INSERT INTO member_insight (member_id, super_user, {names}) "
        f"SELECT s.member_id, 0, {', '.join(f's.{c}' for c in columns)} "
        "FROM stage.clv_scores AS s WHERE NOT EXISTS "
        "(SELECT 1 FROM member_insight AS m WHERE m.member_id = s.member_id)"
    )
    # instants are stored as text in SQLAlchemy's spelling, which sorts as time does
    sql(
        f"UPDATE member_insight SET {cleared} WHERE clv_computed_at < ?",
        (at.strftime("%Y-%m-%d %H:%M:%S.%f"),),
    )


def _distribution(engine: Any) -> dict[str, Any]:
    """Deciles of expected value (members, lowest, highest, total fen) and P(alive) in ten
    bands, from this run's scores."""
    deciles = engine.sql(
        """
        SELECT decile, count(*), min(value_fen), max(value_fen), sum(value_fen)
        FROM (SELECT value_fen, ntile(10) OVER (ORDER BY value_fen) AS decile
              FROM clv_scores WHERE value_fen IS NOT NULL)
        GROUP BY decile ORDER BY decile
        """
    ).fetchall()
    bands = dict(
        engine.sql(
            "SELECT least(floor(p_alive * 10), 9)::INT AS band, count(*) FROM clv_scores "
            "GROUP BY band"
        ).fetchall()
    )
    return {
        "deciles": [[int(d), int(n), int(lo), int(hi), int(s)] for d, n, lo, hi, s in deciles],
        "p_alive_bands": [int(bands.get(i, 0)) for i in range(10)],
    }
