"""A small brand for segment tests, built through the services users call (member insight
rows and the RFM scale, which the nightly refresh computes, are written directly).

The clock stands at 2026-11-23 04:00 UTC (12:00 in Shanghai); the example programme is
in force (tiers V1…V6, categories 奶粉, 纸尿裤, 玩具 …, the paid plan ``super``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from segments_helpers import NOW, Brand, days_ago

from siyu.api.app import create_app
from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.settings import Settings
from siyu.insight.models import InsightRun, MemberInsight, RfmScale
from siyu.insight.refresh import STEP
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft
from siyu.paid import service as paid
from siyu.segments import service
from siyu.stores import service as stores


def _order(ref: str, member_id: int, at: datetime, *lines: tuple[str, int]) -> OrderDraft:
    return OrderDraft(
        channel="store",
        external_id=ref,
        paid_at=at,
        lines=[LineDraft(f"SKU-{c}", c, 1, fen) for c, fen in lines],
        member_id=member_id,
        store_code="S001",
    )


@pytest.fixture
def brand(clean_db: Database, programme_in_force: None) -> Brand:
    """Six members:

    - 安: F, born March, store S001 with guide G01, joined 2024-05-01 in store; bought 奶粉
      twice in the last 90 days and 纸尿裤 a year ago; tag 孕妈; phone + WeChat; paid trial;
      insight active / important_value / super user
    - 白: F, born November, store S002, joined 2025-08-01 on Tmall; one 奶粉 order 13 days
      ago; phone + Tmall; insight new / general_develop
    - 陈: M, joined 13 days ago on the mini program, never bought
    - 丁: F, joined 2023-01-01 in store S001; one 玩具 order 2025-01-05; tag VIP; insight
      churned / general_retain
    - 鄂: joined 175 days ago, never bought, frozen
    - 冯: closed (in no segment)
    """
    ids: dict[str, int] = {}
    with clean_db.unit_of_work() as s:
        s001 = stores.create_store(s, code="S001", name="旗舰店")
        s002 = stores.create_store(s, code="S002", name="二店")
        guide = stores.create_staff(s, code="G01", name="小王", role="guide", store_id=s001.id)

        def enrol(name: str, **fields: Any) -> int:
            draft = EnrolDraft(name=name, **fields)
            ids[name] = members.enrol(s, draft).member_id
            return ids[name]

        enrol(
            "安",
            phone="13800000001",
            identities=[("wechat_unionid", "u-an")],
            gender="F",
            birthday=date(1990, 3, 15),
            child_birthday=date(2025, 6, 1),
            store_id=s001.id,
            guide_id=guide.id,
            joined_at=datetime(2024, 5, 1, 2, tzinfo=clock.UTC),
            consent_sms=True,
            tags=["孕妈"],
        )
        enrol(
            "白",
            phone="13800000002",
            identities=[("tmall", "t-bai")],
            gender="F",
            birthday=date(1988, 11, 2),
            store_id=s002.id,
            join_channel="tmall",
            joined_at=datetime(2025, 8, 1, 2, tzinfo=clock.UTC),
        )
        enrol(
            "陈",
            phone="13800000003",
            gender="M",
            join_channel="mini_program",
            joined_at=days_ago(13),
        )
        enrol(
            "丁",
            phone="13800000004",
            gender="F",
            store_id=s001.id,
            joined_at=datetime(2023, 1, 1, 2, tzinfo=clock.UTC),
            tags=["VIP"],
        )
        enrol("鄂", phone="13800000005", joined_at=days_ago(175))
        enrol("冯", phone="13800000006", joined_at=days_ago(400))
    with clean_db.unit_of_work() as s:
        results = orders.ingest_orders(
            s,
            [
                _order("A1", ids["安"], days_ago(50), ("奶粉", 25_600)),
                _order("A2", ids["安"], days_ago(20), ("奶粉", 25_600), ("辅食", 3_000)),
                _order("A3", ids["安"], days_ago(360), ("纸尿裤", 9_900)),
                _order("B1", ids["白"], days_ago(13), ("奶粉", 25_600)),
                _order("D1", ids["丁"], datetime(2025, 1, 5, 6, tzinfo=clock.UTC), ("玩具", 5_000)),
            ],
        )
        assert all(r.status == "created" for r in results), results
    with clean_db.unit_of_work() as s:
        paid.start_trial(s, ids["安"], "super")
        members.set_status(s, ids["鄂"], "frozen", reason="test", principal=SYSTEM)
        members.set_status(s, ids["冯"], "closed", reason="test", principal=SYSTEM)
        # the RFM figures on a scale that puts 安 in important_value (R4 F4 M4), 白 in
        # general_develop (R5 F2 M2) and 丁 in general_retain (R1 F1 M1)
        for name, stage, figures, super_user, p_alive, clv in (
            ("安", "active", (days_ago(20), 3, 64_100), True, 0.9, 80_000),
            ("白", "new", (days_ago(13), 1, 25_600), False, 0.6, 20_000),
            ("丁", "churned", (datetime(2025, 1, 5, 6, tzinfo=clock.UTC), 0, 0), False, 0.1, 500),
        ):
            last_order_at, frequency, monetary_fen = figures
            s.add(
                MemberInsight(
                    member_id=ids[name],
                    stage=stage,
                    last_order_at=last_order_at,
                    frequency=frequency,
                    monetary_fen=monetary_fen,
                    super_user=super_user,
                    p_alive=p_alive,
                    expected_value_fen=clv,
                    computed_at=NOW,
                )
            )
        run = InsightRun(step=STEP, as_of=NOW, started_at=NOW, finished_at=NOW, status="done")
        s.add(run)
        s.flush()
        s.add(
            RfmScale(
                run_id=run.id,
                as_of=NOW,
                high_from=4,
                r2_from=days_ago(400),
                r3_from=days_ago(200),
                r4_from=days_ago(30),
                r5_from=days_ago(15),
                f2_from=1,
                f3_from=2,
                f4_from=3,
                f5_from=5,
                m2_from=10_000,
                m3_from=30_000,
                m4_from=50_000,
                m5_from=100_000,
                computed_at=NOW,
            )
        )
    return Brand(ids)


@pytest.fixture
def analytics_dir(tmp_path: Path) -> Path:
    return tmp_path / "analytics"


@pytest.fixture
def where(clean_db: Database, analytics_dir: Path):  # type: ignore[no-untyped-def]
    """``where("live")`` or ``where()`` (the profile snapshot) to evaluate trees at."""

    def make(source: str = "profile") -> service.Where:
        return service.Where(clean_db, analytics_dir, "Asia/Shanghai", source)  # type: ignore[arg-type]

    return make


@pytest.fixture
def seg_settings(clean_db: Database, analytics_dir: Path) -> Settings:
    return Settings(database_url=clean_db.url, auto_migrate=False, analytics_dir=str(analytics_dir))


@pytest.fixture
def client(clean_db: Database, seg_settings: Settings) -> Iterator[TestClient]:
    app = create_app(seg_settings, db=clean_db)
    with TestClient(app) as c:
        yield c
