"""The benchmarks run: each script end to end on a brand a few hundred times smaller than
its own, so a change that breaks one (a column renamed under the brand it builds, a
function it calls gone) fails here, and not on the day someone sits down to measure.

Nothing about time is asserted (``bench/README.md`` holds the figures); each run only has
to finish and print its table. The scripts build SQLite brands of their own, so they run
in the SQLite pass of the suite only."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.environ.get("SIYU_DATABASE_URL", "").startswith("postgresql"),
    reason="the benchmarks build SQLite brands of their own: run once, in the SQLite pass",
)


def _run(tmp_path: Path, script: str, *args: str) -> str:
    env = {
        **os.environ,
        "SIYU_ANALYTICS_DIR": str(tmp_path / "analytics"),
        "COLUMNS": "200",  # the tables print whole
    }
    env.pop("SIYU_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_insight_bench(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        "insight.py",
        "--members",
        "2000",
        "--orders",
        "20000",
        "--data-dir",
        str(tmp_path / "insight"),
        "--no-lifetimes",
    )
    assert "bare DuckDB group-by" in out
    assert "job insight.kpis" in out and "job segments.tags" in out
    assert "nightly refresh + KPIs + tags" in out


def test_segments_bench(tmp_path: Path) -> None:
    out = _run(
        tmp_path, "segments.py", "--members", "2000", "--workdir", str(tmp_path), "--repeat", "1"
    )
    assert "median" in out


def test_ingest_bench(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        "ingest.py",
        "--members",
        "300",
        "--orders",
        "3000",
        "--workdir",
        str(tmp_path),
        "--no-progress",
    )
    assert "raw" in out


@pytest.mark.skipif(
    importlib.util.find_spec("lifetimes") is None,
    reason="bench/clv.py compares with lifetimes (pip install -e .[bench])",
)
def test_clv_bench(tmp_path: Path) -> None:
    out = _run(tmp_path, "clv.py", "--customers", "2000", "--repeat", "1", "--no-find-map")
    assert "lifetimes" in out
