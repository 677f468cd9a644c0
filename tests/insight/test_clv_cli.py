"""``siyu insight clv`` on a transaction file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from siyu import cli
from siyu.core.errors import InvalidInput

CDNOW = Path(__file__).parent.parent / "data" / "CDNOW_sample.txt"


@pytest.fixture(scope="module")
def cdnow_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CDNOW as a brand would export it: a CSV with a header and ISO dates."""
    raw = pd.read_csv(CDNOW, sep=r"\s+", header=None, dtype=str)
    frame = pd.DataFrame(
        {
            "buyer": raw[0],
            "paid_on": pd.to_datetime(raw[2], format="%Y%m%d").dt.strftime("%Y-%m-%d"),
            "amount_yuan": raw[4],
        }
    )
    path = tmp_path_factory.mktemp("clv") / "cdnow.csv"
    frame.to_csv(path, index=False)
    return path


def test_the_command_prints_the_published_parameters_and_writes_results(
    cdnow_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "clv.csv"
    result = CliRunner().invoke(
        cli.app,
        [
            "insight",
            "clv",
            "--transactions",
            str(cdnow_csv),
            "--calibration-end",
            "1997-09-30",
            "--holdout-end",
            "1998-06-30",
            "--customer-column",
            "buyer",
            "--date-column",
            "paid_on",
            "--amount-column",
            "amount_yuan",
            "--output",
            str(out),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    for figure in ("0.2426", "4.4136", "0.7929", "2.4259", "6.2496", "3.7442", "15.4435"):
        assert figure in result.output
    assert "7+" in result.output  # the calibration report
    written = pd.read_csv(out)
    assert len(written) == 2357
    assert {"p_alive", "expected_purchases_90", "expected_purchases_365", "expected_value"} <= set(
        written.columns
    )
    assert written["holdout_frequency"].sum() == 1882


def test_the_raw_cdnow_file_reads_with_positions_and_a_date_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli.app,
        [
            "insight",
            "clv",
            "--transactions",
            str(CDNOW),
            "--calibration-end",
            "1997-09-30",
            "--no-header",
            "--separator",
            "whitespace",
            "--date-format",
            "%Y%m%d",
            "--customer-column",
            "1",
            "--date-column",
            "3",
            "--amount-column",
            "5",
            "--model",
            "pareto",
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "10.5777" in result.output  # Pareto/NBD alpha


def test_a_wrong_column_is_a_clear_error(cdnow_csv: Path) -> None:
    result = CliRunner().invoke(
        cli.app,
        ["insight", "clv", "--transactions", str(cdnow_csv), "--calibration-end", "1997-09-30"],
    )
    assert isinstance(result.exception, InvalidInput)
    assert "no column 'customer_id'" in result.exception.message
    assert "buyer, paid_on, amount_yuan" in result.exception.message


def test_a_bad_date_option_is_a_clear_error(cdnow_csv: Path) -> None:
    result = CliRunner().invoke(
        cli.app,
        ["insight", "clv", "--transactions", str(cdnow_csv), "--calibration-end", "30/09/1997"],
    )
    assert isinstance(result.exception, InvalidInput)
    assert "not a date like" in result.exception.message
