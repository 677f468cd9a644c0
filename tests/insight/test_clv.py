"""CLV models: the published CDNOW figures, the summary, reading transaction files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from siyu.core.errors import InvalidInput
from siyu.insight import clv

CDNOW = Path(__file__).parent.parent / "data" / "CDNOW_sample.txt"
CALIBRATION_END = date(1997, 9, 30)  # 39 weeks from 1997-01-01
HOLDOUT_END = date(1998, 6, 30)


def read_cdnow() -> pd.DataFrame:
    """CDNOW's 1/10 sample: customer id, sample id, yyyymmdd, CDs bought, dollars."""
    return clv.read_transactions(
        CDNOW,
        customer_column="1",
        date_column="3",
        amount_column="5",
        separator="whitespace",
        date_format="%Y%m%d",
        header=False,
    )


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return clv.summarize(read_cdnow(), calibration_end=CALIBRATION_END, holdout_end=HOLDOUT_END)


@pytest.fixture(scope="module")
def bgnbd(cdnow: pd.DataFrame) -> clv.ClvFit:
    return clv.fit(cdnow, model="bgnbd")


def test_the_cdnow_summary_is_the_published_one(cdnow: pd.DataFrame) -> None:
    assert len(cdnow) == 2357
    assert int((cdnow["frequency"] > 0).sum()) == 946
    assert cdnow["T"].max() == pytest.approx(272 / 7)


def test_bgnbd_and_gamma_gamma_reproduce_the_published_cdnow_tables(bgnbd: clv.ClvFit) -> None:
    # Fader, Hardie & Lee (2005), table 1: r, alpha, a, b to three decimals
    p = bgnbd.purchase
    assert (round(p["r"], 3), round(p["alpha"], 3), round(p["a"], 3), round(p["b"], 3)) == (
        0.243,
        4.414,
        0.793,
        2.426,
    )
    # Fader & Hardie (2013), the Gamma-Gamma note: p, q, gamma to two decimals
    assert bgnbd.spend is not None
    s = bgnbd.spend
    assert (round(s["p"], 2), round(s["q"], 2), round(s["v"], 2)) == (6.25, 3.74, 15.44)
    assert bgnbd.customers == 2357 and bgnbd.repeat_customers == 946


def test_pareto_nbd_reproduces_the_published_cdnow_parameters(cdnow: pd.DataFrame) -> None:
    # Fader, Hardie & Lee (2005), "RFM and CLV", the Pareto/NBD on the same sample
    fitted = clv.fit(cdnow, model="pareto")
    p = fitted.purchase
    assert (round(p["r"], 3), round(p["alpha"], 3), round(p["s"], 3), round(p["beta"], 3)) == (
        0.553,
        10.578,
        0.606,
        11.669,
    )


def test_the_calibration_report_tracks_the_holdout(bgnbd: clv.ClvFit, cdnow: pd.DataFrame) -> None:
    report = bgnbd.calibration_report(cdnow, (HOLDOUT_END - CALIBRATION_END).days)
    assert [b.frequency for b in report] == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert sum(b.customers for b in report) == 2357
    # predictions rise with past frequency, as the purchases did
    predicted = [b.predicted for b in report]
    assert predicted == sorted(predicted)
    # and the total predicted repeat purchases is close to what happened (1,653 against
    # 1,882: the BG/NBD under-predicts this holdout a little, as in the literature)
    actual_total = sum(b.actual * b.customers for b in report)
    predicted_total = sum(b.predicted * b.customers for b in report)
    assert actual_total == cdnow["holdout_frequency"].sum()
    assert abs(predicted_total - actual_total) / actual_total < 0.15


def test_scores_are_probabilities_and_values(bgnbd: clv.ClvFit, cdnow: pd.DataFrame) -> None:
    scores = bgnbd.score(cdnow)
    assert len(scores) == 2357
    assert scores["p_alive"].between(0, 1).all()
    assert (scores["expected_purchases_90"] <= scores["expected_purchases_365"]).all()
    # BG/NBD: someone who never bought again cannot have dropped out yet
    assert (scores.loc[cdnow["frequency"].to_numpy() == 0, "p_alive"] == 1).all()
    # of two customers who bought four times, the one whose last purchase is long ago is
    # less likely alive, expected to buy less and worth less
    pair = pd.DataFrame(
        {
            "customer_id": ["lapsed", "recent"],
            "frequency": [3.0, 3.0],
            "recency": [5.0, 38.0],
            "T": [39.0, 39.0],
            "monetary_value": [30.0, 30.0],
        }
    )
    lapsed, recent = bgnbd.score(pair).to_dict("records")
    assert lapsed["p_alive"] < 0.5 < recent["p_alive"]
    assert lapsed["expected_purchases_365"] < recent["expected_purchases_365"]
    assert lapsed["expected_value"] < recent["expected_value"]
    np.testing.assert_allclose(
        scores["expected_value"], scores["expected_purchases_365"] * scores["expected_spend"]
    )


# --- the summary ---------------------------------------------------------------------------


def _tx(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "day": pd.to_datetime([r[1] for r in rows]),
            "amount": [r[2] for r in rows],
        }
    )


def test_closed_form_scores_equal_pymc_marketings_predictions(
    bgnbd: clv.ClvFit, cdnow: pd.DataFrame
) -> None:
    # Scoring evaluates the BG/NBD and Gamma-Gamma closed forms with NumPy for speed;
    # pymc-marketing's own predictions are the reference they must match.
    predictor = bgnbd.predictor()
    data = cdnow[["customer_id", "frequency", "recency", "T", "monetary_value"]]
    np.testing.assert_allclose(
        predictor.p_alive(data), predictor.reference_p_alive(data), rtol=1e-9
    )
    for weeks in (90 / 7, 52.0):
        np.testing.assert_allclose(
            predictor.expected_purchases(data, weeks),
            predictor.reference_expected_purchases(data, weeks),
            rtol=1e-7,
        )
    np.testing.assert_allclose(
        predictor.expected_spend(data), predictor.reference_expected_spend(data), rtol=1e-9
    )


def test_same_day_purchases_count_once_and_the_first_day_is_not_a_repeat() -> None:
    tx = _tx(
        [
            ("a", "2024-01-01", 10.0),
            ("a", "2024-01-01", 5.0),  # same day: one purchase of 15
            ("a", "2024-01-08", 20.0),
            ("a", "2024-01-15", 40.0),
            ("b", "2024-01-08", 7.0),
            ("c", "2024-02-01", 9.0),  # after the calibration: not a customer yet
            ("a", "2024-01-20", 1.0),  # holdout
            ("a", "2024-01-21", 1.0),  # after the holdout
        ]
    )
    s = clv.summarize(
        tx, calibration_end=date(2024, 1, 15), holdout_end=date(2024, 1, 20)
    ).set_index("customer_id")
    assert list(s.index) == ["a", "b"]
    assert s.loc["a", "frequency"] == 2
    assert s.loc["a", "recency"] == pytest.approx(2.0)
    assert s.loc["a", "T"] == pytest.approx(2.0)
    assert s.loc["a", "monetary_value"] == pytest.approx(30.0)  # (20 + 40) / 2, not the 15
    assert s.loc["b", "frequency"] == 0 and s.loc["b", "monetary_value"] == 0
    assert s.loc["b", "T"] == pytest.approx(1.0)
    assert s.loc["a", "holdout_frequency"] == 1 and s.loc["b", "holdout_frequency"] == 0


def test_summary_errors_say_what_to_change() -> None:
    tx = _tx([("a", "2024-01-01", 10.0)])
    with pytest.raises(InvalidInput, match="no purchases on or before") as caught:
        clv.summarize(tx, calibration_end=date(2023, 12, 31))
    assert caught.value.field == "calibration_end"
    with pytest.raises(InvalidInput, match="holdout must end after"):
        clv.summarize(tx, calibration_end=date(2024, 1, 2), holdout_end=date(2024, 1, 2))
    with pytest.raises(InvalidInput, match="unknown time unit"):
        clv.summarize(tx, calibration_end=date(2024, 1, 2), unit="month")


def test_a_fit_needs_repeat_buyers() -> None:
    tx = _tx([("a", "2024-01-01", 10.0), ("b", "2024-01-03", 10.0)])
    summary = clv.summarize(tx, calibration_end=date(2024, 3, 1))
    with pytest.raises(InvalidInput, match="repeat purchases"):
        clv.fit(summary)
    with pytest.raises(InvalidInput, match="unknown model"):
        clv.fit(summary, model="bgbb")


# --- reading files -----------------------------------------------------------------------


def test_reading_a_csv_with_own_column_names(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text("会员,下单日期,金额\nm1,2024-01-02,12.5\nm1,2024-02-03,7\n", encoding="utf-8")
    tx = clv.read_transactions(
        path, customer_column="会员", date_column="下单日期", amount_column="金额"
    )
    assert tx["customer_id"].tolist() == ["m1", "m1"]
    assert tx["amount"].tolist() == [12.5, 7.0]
    assert tx["day"].iloc[1] == pd.Timestamp("2024-02-03")


def test_bad_rows_are_all_named_by_line_and_nothing_is_read(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text(
        "customer_id,date,amount\n"
        "a,2024-01-02,10\n"
        "b,yesterday,10\n"
        "c,2024-01-03,ten\n"
        "d,2024-01-04,-5\n"
        ",2024-01-04,5\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidInput) as caught:
        clv.read_transactions(path)
    problems = caught.value.details
    assert {p["field"] for p in problems} == {"line 3", "line 4", "line 5", "line 6"}
    reasons = " ".join(p["reason"] for p in problems)
    assert "not a date" in reasons and "not a number" in reasons and "negative" in reasons
    assert "customer id is empty" in reasons


def test_a_missing_column_lists_the_columns_there_are(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text("cust,day,value\na,2024-01-02,10\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        clv.read_transactions(path, customer_column="cust")
    assert caught.value.field == "date_column"
    assert "cust, day, value" in caught.value.message
    assert len(caught.value.details) == 2  # date and amount
    with pytest.raises(InvalidInput, match="no transaction file"):
        clv.read_transactions(tmp_path / "missing.csv")
