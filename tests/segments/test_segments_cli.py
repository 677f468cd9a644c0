"""``siyu segments …`` and ``siyu segments tags …``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from segments_helpers import Brand
from typer.testing import CliRunner

from siyu import cli
from siyu.core.db import Database
from siyu.core.settings import get_settings


@pytest.fixture
def runner(
    clean_db: Database, analytics_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    monkeypatch.setenv("SIYU_ANALYTICS_DIR", str(analytics_dir))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_create_count_sample_export_snapshot(
    runner: CliRunner, brand: Brand, tmp_path: Path
) -> None:
    tree_file = tmp_path / "buyers.json"
    tree_file.write_text(
        json.dumps(
            {
                "name": "女性买家",
                "tree": {
                    "and": [
                        {"field": "gender", "op": "eq", "value": "F"},
                        {"field": "order_count", "op": "gt", "value": 0},
                    ]
                },
            },
            ensure_ascii=False,
        ),
        "utf-8",
    )
    created = runner.invoke(cli.app, ["segments", "create", str(tree_file)])
    assert created.exit_code == 0, created.output
    assert "saved" in created.output

    listed = runner.invoke(cli.app, ["segments", "list"])
    assert "女性买家" in listed.output

    counted = runner.invoke(cli.app, ["segments", "count", "女性买家"])
    assert counted.exit_code == 0, counted.output
    assert "3 members" in counted.output and "data as of 2026-11-23 04:00" in counted.output
    # a file can be counted without saving it, on the live database
    from_file = runner.invoke(cli.app, ["segments", "count", str(tree_file), "--live"])
    assert "3 members" in from_file.output and "(live)" in from_file.output

    sample = runner.invoke(cli.app, ["segments", "sample", "1", "--size", "2"])
    assert sample.exit_code == 0, sample.output
    assert "3 members" in sample.output

    out = tmp_path / "buyers.parquet"
    exported = runner.invoke(cli.app, ["segments", "export", "1", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    assert set(pq.read_table(out).column("member_id").to_pylist()) == brand.named("安", "白", "丁")

    snapped = runner.invoke(cli.app, ["segments", "snapshot", "女性买家"])
    assert snapped.exit_code == 0, snapped.output
    assert "3 members" in snapped.output


def test_tags_and_refresh(runner: CliRunner, brand: Brand, tmp_path: Path) -> None:
    rule = tmp_path / "sleepers.yaml"
    rule.write_text("name: 沉睡客\ntree:\n  behaviour: no_purchase_since\n  days: 180\n", "utf-8")
    created = runner.invoke(cli.app, ["segments", "tags", "create", str(rule)])
    assert created.exit_code == 0, created.output
    refreshed = runner.invoke(cli.app, ["segments", "refresh"])
    assert refreshed.exit_code == 0, refreshed.output
    assert "5 members" in refreshed.output and "tag 沉睡客: 3 members (+3 -0)" in refreshed.output
    listed = runner.invoke(cli.app, ["segments", "tags", "list"])
    assert "沉睡客" in listed.output and "3" in listed.output
    deleted = runner.invoke(cli.app, ["segments", "tags", "delete", "沉睡客"])
    assert deleted.exit_code == 0 and "deleted" in deleted.output


def test_bad_input_is_one_clear_error(runner: CliRunner, brand: Brand, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"field": "tier", "op": "eq", "value": "V9"}', "utf-8")
    with pytest.raises(Exception) as caught:
        runner.invoke(
            cli.app, ["segments", "create", str(bad), "--name", "x"], catch_exceptions=False
        )
    assert "unknown tier 'V9'" in str(caught.value)
    fields = runner.invoke(cli.app, ["segments", "fields"])
    assert "bought_category" in fields.output and "rfm_group" in fields.output
