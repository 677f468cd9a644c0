"""Customer lifetime value (客户终身价值, CLV): who is still a customer, how often they will
buy, and what they are worth over the next year.

Two probability models of buying, fitted on each customer's summary (frequency = repeat
purchase days, recency = time from the first to the last purchase day, T = time from the
first purchase day to the end of the calibration period):

- **BG/NBD** (Fader, Hardie & Lee 2005): while alive a customer buys at a steady rate that
  varies across customers (gamma: r, alpha); after each purchase they may drop out for
  good (beta: a, b).
- **Pareto/NBD** (Schmittlein et al. 1987): the same purchase rates, with a lifetime in
  continuous time (gamma: s, beta).

and the **Gamma-Gamma** model of spend per purchase (Fader & Hardie 2013: p, q, γ, called
``v`` in pymc-marketing), fitted on repeat buyers' mean repeat spend. Purchases on the
same day count as one, with their amounts added, as in the published CDNOW tables; time is
in weeks by default (the published parameters are in weeks; ``alpha`` scales with the
unit, the other parameters do not).

The models are pymc-marketing's, fitted by maximum likelihood (flat priors, see
``clv_models``). From a fit each customer gets P(alive), expected purchases in the next 90
and 365 days, expected spend per purchase and the expected value of the next 365 days
(expected purchases × expected spend, undiscounted). The calibration report compares, by
number of repeat purchases in the calibration period, the purchases the model predicts
for the holdout period with those that happened.

This module reads transaction files and builds summaries with pandas (the ``siyu insight
clv`` command works on any file); the brand's own summary is built by DuckDB over the live
orders (``clv_jobs``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from siyu.core.errors import InvalidInput, Problem, invalid

UNITS: dict[str, float] = {"week": 7.0, "day": 1.0}  # days per time unit
HORIZONS = (90, 365)  # days ahead for expected purchases; the value is over the last one
TOP_BUCKET = 7  # the calibration report groups frequencies 0 … 6 and "7+"
MAX_LISTED = 10  # bad rows named in one error


# --- reading a transaction file ----------------------------------------------------------


def read_transactions(
    path: Path,
    *,
    customer_column: str = "customer_id",
    date_column: str = "date",
    amount_column: str = "amount",
    separator: str = ",",
    date_format: str | None = None,
    header: bool = True,
) -> pd.DataFrame:
    """Transactions as ``customer_id``, ``day`` (midnight), ``amount`` (float, ≥ 0).

    ``separator="whitespace"`` reads space-aligned files such as CDNOW's. Without a
    header line, columns are named by their 1-based position ("1", "2", …). Every bad row
    is reported (the first ten by line number) and nothing is read until all are fixed.
    """
    if not path.is_file():
        raise InvalidInput(f"no transaction file at {path}", field="transactions")
    options: dict[str, Any] = {"dtype": str, "keep_default_na": False}
    if separator == "whitespace":
        options["sep"] = r"\s+"
    else:
        options["sep"] = separator
    if not header:
        options["header"] = None
    try:
        raw = pd.read_csv(path, **options)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InvalidInput(
            f"{path.name} is not a readable delimited file ({exc}); check --separator",
            field="transactions",
        ) from None
    if not header:
        raw.columns = [str(i + 1) for i in range(raw.shape[1])]
    wanted = {
        "customer_column": customer_column,
        "date_column": date_column,
        "amount_column": amount_column,
    }
    missing = [
        Problem(
            option,
            f"the file has no column {name!r}; its columns are: {', '.join(map(str, raw.columns))}",
        )
        for option, name in wanted.items()
        if name not in raw.columns
    ]
    if missing:
        raise invalid(missing, what="transactions")
    first_line = 2 if header else 1
    customers = raw[customer_column].str.strip()
    days = pd.to_datetime(raw[date_column].str.strip(), format=date_format, errors="coerce")
    amounts = pd.to_numeric(raw[amount_column].str.strip(), errors="coerce")
    checks = [
        (customers == "", customer_column, "the customer id is empty"),
        (
            days.isna(),
            date_column,
            f"not a date{f' in the format {date_format}' if date_format else ''}",
        ),
        (amounts.isna(), amount_column, "not a number"),
        (
            amounts < 0,
            amount_column,
            "negative: leave returns out or net them against their purchase",
        ),
    ]
    problems: list[Problem] = []
    bad_rows = 0
    for mask, column, reason in checks:
        rows = np.flatnonzero(mask.to_numpy())
        bad_rows += len(rows)
        for row in rows[: MAX_LISTED - len(problems)]:
            value = raw[column].iloc[row]
            problems.append(Problem(f"line {row + first_line}", f"{column} {value!r}: {reason}"))
    if problems:
        raise invalid(problems, what="transactions")
    if raw.empty:
        raise InvalidInput(f"{path.name} has no transactions", field="transactions")
    return pd.DataFrame(
        {"customer_id": customers, "day": days.dt.normalize(), "amount": amounts.astype(float)}
    )


# --- the RFM summary ---------------------------------------------------------------------


def summarize(
    transactions: pd.DataFrame,
    *,
    calibration_end: date,
    holdout_end: date | None = None,
    unit: str = "week",
) -> pd.DataFrame:
    """One row per customer whose first purchase is on or before ``calibration_end``:
    ``frequency``, ``recency``, ``T`` (in ``unit``), ``monetary_value`` (mean repeat
    purchase-day amount; 0 without repeats), and with a holdout ``holdout_frequency``
    (purchase days after ``calibration_end`` up to ``holdout_end``, both ends inclusive)."""
    days_per_unit = _days_per_unit(unit)
    end = pd.Timestamp(calibration_end)
    if holdout_end is not None and holdout_end <= calibration_end:
        raise InvalidInput(
            f"the holdout must end after the calibration ({holdout_end} <= {calibration_end})",
            field="holdout_end",
        )
    daily = transactions.groupby(["customer_id", "day"], as_index=False, sort=True)["amount"].sum()
    calibration = daily[daily["day"] <= end]
    if calibration.empty:
        raise InvalidInput(
            f"no purchases on or before the calibration end {calibration_end}; "
            f"the file's purchases run from {daily['day'].min():%Y-%m-%d} "
            f"to {daily['day'].max():%Y-%m-%d}",
            field="calibration_end",
        )
    grouped = calibration.groupby("customer_id", sort=True)
    first = grouped["day"].min()
    last = grouped["day"].max()
    count = grouped.size()
    total = grouped["amount"].sum()
    first_amount = grouped["amount"].first()  # rows are sorted by day within a customer
    repeats = count - 1
    summary = pd.DataFrame(
        {
            "customer_id": first.index,
            "frequency": repeats.to_numpy(),
            "recency": ((last - first).dt.days / days_per_unit).to_numpy(),
            "T": ((end - first).dt.days / days_per_unit).to_numpy(),
            "monetary_value": np.where(
                repeats > 0, (total - first_amount) / repeats.clip(lower=1), 0.0
            ),
        }
    )
    if holdout_end is not None:
        after = daily[(daily["day"] > end) & (daily["day"] <= pd.Timestamp(holdout_end))]
        holdout = after.groupby("customer_id").size()
        summary["holdout_frequency"] = (
            summary["customer_id"].map(holdout).fillna(0).astype(int).to_numpy()
        )
    return summary


def _days_per_unit(unit: str) -> float:
    try:
        return UNITS[unit]
    except KeyError:
        raise InvalidInput(
            f"unknown time unit {unit!r}; use one of: {', '.join(UNITS)}", field="unit"
        ) from None


# --- fitting and scoring -----------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationBucket:
    """Customers with this many repeat purchases in the calibration period, and their mean
    repeat purchases in the holdout: what happened against what the model predicted."""

    frequency: str  # "0" … "6", "7+"
    customers: int
    actual: float
    predicted: float


@dataclass
class ClvFit:
    """A fitted purchase model (and spend model, when there are repeat buyers)."""

    model: str  # bgnbd | pareto
    unit: str
    purchase: dict[str, float]
    spend: dict[str, float] | None
    customers: int
    repeat_customers: int
    log_likelihood: float
    fit_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def predictor(self) -> Any:
        from siyu.insight.clv_models import Predictor

        cached = self.__dict__.get("_predictor")
        if cached is None:
            cached = self.__dict__["_predictor"] = Predictor(self.model, self.purchase, self.spend)
        return cached

    def score(self, summary: pd.DataFrame) -> pd.DataFrame:
        """P(alive), expected purchases in the next 90 and 365 days, expected spend per
        purchase and expected value of the next 365 days, per customer of ``summary``."""
        days_per_unit = UNITS[self.unit]
        predictor = self.predictor()
        # Purchase predictions depend on (frequency, recency, T) only. BG/NBD's closed forms
        # cost less than finding the distinct rows; Pareto/NBD's predictions (through
        # pymc-marketing) run once per distinct summary, spread back by ``codes``.
        if self.model == "bgnbd":
            codes = np.arange(len(summary))
            distinct = summary[["customer_id", "frequency", "recency", "T"]]
        else:
            codes, distinct = _distinct(summary)
        out = pd.DataFrame({"customer_id": summary["customer_id"].to_numpy()})
        out["p_alive"] = predictor.p_alive(distinct)[codes]
        for days in HORIZONS:
            expected = predictor.expected_purchases(distinct, days / days_per_unit)
            out[f"expected_purchases_{days}"] = expected[codes]
        data = summary[["customer_id", "frequency", "monetary_value"]]
        out["expected_spend"] = predictor.expected_spend(data)
        out["expected_value"] = out[f"expected_purchases_{HORIZONS[-1]}"] * out["expected_spend"]
        return out

    def calibration_report(
        self, summary: pd.DataFrame, holdout_days: int
    ) -> list[CalibrationBucket]:
        """Mean holdout purchases by calibration frequency: actual against predicted."""
        if "holdout_frequency" not in summary:
            raise InvalidInput("the summary has no holdout period", field="holdout_end")
        codes, distinct = _distinct(summary)
        predicted = self.predictor().expected_purchases(distinct, holdout_days / UNITS[self.unit])[
            codes
        ]
        frame = pd.DataFrame(
            {
                "bucket": np.minimum(summary["frequency"].to_numpy(int), TOP_BUCKET),
                "actual": summary["holdout_frequency"].to_numpy(float),
                "predicted": predicted,
            }
        )
        rows = frame.groupby("bucket").agg(
            customers=("actual", "size"), actual=("actual", "mean"), predicted=("predicted", "mean")
        )
        return [
            CalibrationBucket(
                frequency=f"{bucket}+" if bucket == TOP_BUCKET else str(bucket),
                customers=int(row.customers),
                actual=float(row.actual),
                predicted=float(row.predicted),
            )
            for bucket, row in rows.iterrows()
        ]


def _distinct(summary: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The distinct (frequency, recency, T) of a summary, numbered, and each customer's
    number: predictions per distinct row, spread back with ``values[codes]``. (NumPy's
    row-wise unique: a pandas MultiIndex factorize cost more than the predictions.)"""
    keys = np.stack(
        (
            summary["frequency"].to_numpy(float),
            summary["recency"].to_numpy(float),
            summary["T"].to_numpy(float),
        ),
        axis=1,
    )
    uniques, codes = np.unique(keys, axis=0, return_inverse=True)
    distinct = pd.DataFrame(
        {
            "customer_id": np.arange(len(uniques)),
            "frequency": uniques[:, 0],
            "recency": uniques[:, 1],
            "T": uniques[:, 2],
        }
    )
    return np.asarray(codes).reshape(-1), distinct


def fit(
    summary: pd.DataFrame,
    *,
    model: str = "bgnbd",
    unit: str = "week",
    spend_summary: pd.DataFrame | None = None,
) -> ClvFit:
    """Fit a purchase model and the Gamma-Gamma spend model on a summary as ``summarize``
    returns it. Already counted summaries work too: one row per distinct (frequency,
    recency, T) with a ``weight``, and the spend data apart in ``spend_summary`` (distinct
    (frequency, monetary_value) with a ``weight``)."""
    from siyu.insight import clv_models

    if model not in clv_models.PURCHASE_MODELS:
        raise InvalidInput(
            f"unknown model {model!r}; use one of: {', '.join(clv_models.PURCHASE_MODELS)}",
            field="model",
        )
    _days_per_unit(unit)
    started = time.perf_counter()
    data, weight = clv_models.purchase_rows(summary)
    customers = int(weight.sum())
    if customers == 0 or not (data["observed"][:, 1] > 0).any():
        raise InvalidInput(
            "a purchase model needs customers with repeat purchases; none bought twice "
            "before the calibration end",
            field="calibration_end",
        )
    purchase = clv_models.maximise(model, data, weight)
    notes: list[str] = []
    spend_data, spend_weight = clv_models.spend_rows(
        summary if spend_summary is None else spend_summary
    )
    repeat = int(spend_weight.sum())
    spend: dict[str, float] | None = None
    if repeat >= 2:
        spend = clv_models.maximise("spend", spend_data, spend_weight).params
        if spend["q"] <= 1:
            notes.append(
                f"Gamma-Gamma q = {spend['q']:.3f} <= 1: mean spend is unbounded, so no value "
                "is computed; the spend data has extreme outliers"
            )
            spend = None
    else:
        notes.append("fewer than two repeat buyers with spend: no spend model, no value")
    return ClvFit(
        model=model,
        unit=unit,
        purchase=purchase.params,
        spend=spend,
        customers=customers,
        repeat_customers=repeat,
        log_likelihood=purchase.log_likelihood,
        fit_seconds=time.perf_counter() - started,
        notes=notes,
    )
