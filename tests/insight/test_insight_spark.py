"""The same Ibis expressions on Spark: the RFM summary of the small brand, computed from
its orders and members on a local PySpark session, equals DuckDB's.

This is how a brand beyond one machine runs the refresh's computations: the expressions
take tables and return tables, whatever engine holds them.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from typing import Any

import ibis
import pytest
from insight_brand import SmallBrand

from siyu.insight import facts, rfm
from siyu.insight.engine import analytics
from siyu.programme.rules import Rfm

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java")

ORDER_COLUMNS = ["member_id", "paid_at", "amount_fen", "refunded_fen", "status"]
MEMBER_COLUMNS = ["id", "joined_at", "status", "tier_code", "referrer_id"]


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyspark.sql import SparkSession

        session = (
            SparkSession.builder.master("local[1]")
            .appName("siyu-insight-test")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "1")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.warehouse.dir", str(warehouse))
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def summary_on(backend: Any, orders: ibis.Table, members: ibis.Table, at: Any) -> list[tuple]:
    bought = facts.purchases(orders, members, as_of=at)
    stats = facts.buyer_stats(bought, as_of=at, window_days=365)
    scored = rfm.scores(facts.member_facts(members, stats, as_of=at), Rfm())
    table = backend.execute(rfm.summary(scored))
    return [
        (
            row.rfm_group,
            int(row.members),
            int(row.orders),
            int(row.spend_fen),
            round(float(row.spend_share), 9),
        )
        for row in table.sort_values("rfm_group").itertuples()
    ]


def test_the_rfm_summary_is_the_same_on_spark_and_duckdb(
    in_process_brand: SmallBrand, spark: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # Spark may still put its warehouse under the working dir
    with analytics(in_process_brand.db) as engine:
        orders = engine.table("orders").select(*ORDER_COLUMNS)
        members = engine.table("members").select(*MEMBER_COLUMNS)
        on_duckdb = summary_on(engine.backend, orders, members, in_process_brand.now)
        orders_df = engine.backend.execute(orders)
        members_df = engine.backend.execute(members)

    con = ibis.pyspark.connect(spark)
    spark_orders = con.create_table("insight_orders", orders_df, overwrite=True)
    spark_members = con.create_table("insight_members", members_df, overwrite=True)
    on_spark = summary_on(con, spark_orders, spark_members, in_process_brand.now)

    assert on_spark == on_duckdb
    assert sum(members for _, members, *_ in on_spark) == 7  # the brand's buyers
