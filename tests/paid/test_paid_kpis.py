"""Paid membership KPIs on a small brand built by hand, with every figure known."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft
from siyu.paid import kpis as paid_kpis
from siyu.paid import savings
from siyu.paid import service as paid

PRICE = 19_900


def at(month: int, day: int, year: int = 2026) -> datetime:
    return datetime(year, month, day, 2, tzinfo=UTC)


def buy(session: Session, member: int, txn: str, when: datetime) -> None:
    paid.purchase_callback(session, txn, member, "super", PRICE, when)


def spend(session: Session, member: int, key: str, fen: int, when: datetime) -> None:
    draft = OrderDraft(
        channel="tmall",
        external_id=key,
        paid_at=when,
        member_id=member,
        lines=[LineDraft("SKU-1", "奶粉", 1, fen)],
    )
    [result] = orders.ingest_orders(session, [draft])
    assert not result.problems, result.problems


@pytest.fixture
def brand(
    clean_db: Database, fixed_clock: clock.FixedClock, programme_in_force: None
) -> dict[str, int]:
    """Given eight members in November 2026 (now is 23 November, Shanghai):
    A and B bought this month; C trialled on the 10th and bought on the 12th; D trials since
    the 20th; G bought a year ago and renewed; H bought a year ago and let it lapse (grace
    ended the 22nd); E and F never paid."""
    now = clock.now()
    with clean_db.unit_of_work() as s:
        ids = {
            name: members.enrol(s, EnrolDraft(phone=f"1380013800{i}")).member_id
            for i, name in enumerate("ABCDEFGH")
        }
        buy(s, ids["A"], "t-a", at(11, 5))
        buy(s, ids["B"], "t-b", at(11, 6))
        buy(s, ids["G"], "t-g", at(11, 10, 2025))
        buy(s, ids["H"], "t-h", at(11, 15, 2025))
        paid.renewal_callback(s, "t-g2", ids["G"], PRICE, at(11, 9))
    fixed_clock.set(at(11, 10))
    with clean_db.unit_of_work() as s:
        paid.start_trial(s, ids["C"], "super")
    fixed_clock.set(at(11, 12))
    with clean_db.unit_of_work() as s:
        buy(s, ids["C"], "t-c", at(11, 12))
    fixed_clock.set(at(11, 20))
    with clean_db.unit_of_work() as s:
        paid.start_trial(s, ids["D"], "super")
    fixed_clock.set(now)
    with clean_db.unit_of_work() as s:
        while paid.expire_batch(s, now):
            pass
        spend(s, ids["A"], "o-a1", 10_000, at(11, 7))
        spend(s, ids["A"], "o-a2", 10_000, at(11, 8))
        spend(s, ids["B"], "o-b1", 20_000, at(11, 9))
        spend(s, ids["E"], "o-e1", 5_000, at(11, 9))
        spend(s, ids["H"], "o-h1", 5_000, at(11, 18))
        spend(s, ids["A"], "o-a0", 50_000, at(10, 20))  # last month: not counted
    return ids


def test_month_kpis_exact(clean_db: Database, brand: dict[str, int]) -> None:
    with clean_db.unit_of_work() as s:
        k = paid_kpis.kpis(s, month=date(2026, 11, 1))
    # A, B, C, G pay; D trials: 5 of 8 hold a card.
    assert (k.active_members, k.paid_members, k.penetration) == (8, 5, 0.625)
    assert (k.trials_started, k.trials_converted, k.trial_conversion) == (2, 1, 0.5)
    # G's and H's years ended this month; G renewed.
    assert (k.renewals_due, k.renewed, k.renewal_rate) == (2, 1, 0.5)
    assert k.churned == 1
    # Paid: 40,000 fen in 3 orders over 5 cards; free: 10,000 in 2 orders over 3 members.
    assert (k.paid_buyers_gmv_fen, k.paid_orders) == (40_000, 3)
    assert (k.free_gmv_fen, k.free_orders, k.free_members) == (10_000, 2, 3)
    assert (k.gmv_per_paid_fen, k.gmv_per_free_fen) == (8_000, 3_333)
    assert k.gmv_multiple == 2.4
    # Fees this month: three purchases and one renewal.
    assert k.fee_revenue_fen == 4 * PRICE
    assert k.revenue_per_card_fen == 4 * PRICE // 5
    # Benefit cost: no card coupons; the savings ledger of orders paid while holding a card:
    # member price at 97折 on 奶粉 (309 + 309 + 619 for A and B, 155 for H in grace) and the
    # extra points (100 + 100 + 200 + 50 points at 100 a yuan).
    assert (k.card_coupons_issued, k.coupon_cost_fen) == (0, 0)
    assert k.savings_cost_fen == (309 + 309 + 619 + 155) + (100 + 100 + 200 + 50)
    assert k.benefit_cost_fen == 1_842
    assert k.roi == round(4 * PRICE / 1_842, 2)


def test_members_who_left_count_nowhere(clean_db: Database, brand: dict[str, int]) -> None:
    """A frozen member (E, free, bought 5,000) and a closed card holder (B, 20,000) are
    neither active members nor in either side's GMV, so the multiple compares the same
    people as penetration does."""
    with clean_db.unit_of_work() as s:
        members.set_status(s, brand["E"], "frozen", reason="fraud check", principal=SYSTEM)
        members.set_status(s, brand["B"], "closed", reason="asked to leave", principal=SYSTEM)
    with clean_db.unit_of_work() as s:
        k = paid_kpis.kpis(s, month=date(2026, 11, 1))
    assert (k.active_members, k.paid_members) == (6, 4)
    assert (k.paid_buyers_gmv_fen, k.paid_orders) == (20_000, 2)  # A's two orders
    assert (k.free_gmv_fen, k.free_orders, k.free_members) == (5_000, 1, 2)  # H in grace


def test_card_coupons_are_counted_exactly(
    clean_db: Database, brand: dict[str, int], fixed_clock: clock.FixedClock
) -> None:
    """Given the card's pack (monthly_freight, two freight coupons) issued to A for the card's
    month and the same pack issued to A and E as a tier's monthly pack; when A uses one card
    coupon and one tier coupon and E uses a tier coupon; then only A's card coupons count."""
    from siyu.benefits import coupons, packs
    from siyu.benefits.coupons import TemplateDraft
    from siyu.benefits.models import Coupon
    from siyu.core.auth import SYSTEM

    with clean_db.unit_of_work() as s:
        coupons.create_template(
            s,
            TemplateDraft(code="FREIGHT", name="免运费", kind="freight", amount_off_fen=1_500,
                          validity="relative", valid_days=30),
            principal=SYSTEM,
        )  # fmt: skip
        pack = packs.create_pack(
            s,
            packs.PackDraft(code="monthly_freight", name="每月免运费", trigger="manual",
                            contents=[{"template": "FREIGHT", "quantity": 2}]),
            principal=SYSTEM,
        )[0]  # fmt: skip
        sub = paid.current(s, brand["A"])
        assert sub is not None
        packs.issue_pack(s, pack, [brand["A"]], period=f"sub:{sub.id}:0", at=at(11, 5))
        packs.issue_pack(s, pack, [brand["A"], brand["E"]], period="2026-11", at=at(11, 5))
        for name, key in (("A", "card"), ("A", "tier"), ("E", "tier")):
            draft = OrderDraft(
                channel="tmall",
                external_id=f"f-{name}-{key}",
                paid_at=at(11, 20),
                member_id=brand[name],
                lines=[LineDraft("SKU-2", "纸尿裤", 1, 5_000)],
                freight_fen=800,
            )
            [done] = orders.ingest_orders(s, [draft])
            prefix = "%:sub:%" if key == "card" else "%:2026-11:%"
            code = s.scalar(
                select(Coupon.code)
                .where(
                    Coupon.member_id == brand[name],
                    Coupon.state == "usable",
                    Coupon.issue_key.like(prefix),
                )
                .limit(1)
            )
            assert code is not None
            coupons.redeem(s, code, order_id=done.order_id)
    with clean_db.unit_of_work() as s:
        k = paid_kpis.kpis(s, month=date(2026, 11, 1))
        card = savings.coupon_lines(s, brand["A"], at=clock.now())
    assert (k.card_coupons_issued, k.card_coupons_used, k.benefit_usage) == (2, 1, 0.5)
    assert k.coupon_cost_fen == 800
    assert [(x.kind, x.amount_fen, x.detail["pack_period"]) for x in card] == [
        ("freight", 800, f"sub:{sub.id}:0")
    ]


def test_by_month_oldest_first(clean_db: Database, brand: dict[str, int]) -> None:
    with clean_db.unit_of_work() as s:
        months = paid_kpis.kpis_by_month(s, 3)
    assert [m.month for m in months] == ["2026-09", "2026-10", "2026-11"]
    # In October only G and H held a card; A had not bought yet, so A's order is free GMV.
    october = months[1]
    assert (october.paid_members, october.free_gmv_fen, october.paid_buyers_gmv_fen) == (
        2,
        50_000,
        0,
    )


def test_months_read_together_are_each_month_alone(
    clean_db: Database, brand: dict[str, int]
) -> None:
    """Given the brand, E (free) frozen, and two orders of A either side of midnight of
    1 November in Shanghai (16:00 UTC on 31 October); when a year ago, September to
    November (trials, G's renewal, H's lapse) and December (not begun) are read at once;
    then each month is what it is read alone, and each boundary order is in its local
    month: October's as free GMV (A had no card at October's end), November's as A's paid
    GMV (A holds a card now)."""
    with clean_db.unit_of_work() as s:
        members.set_status(s, brand["E"], "frozen", reason="fraud check", principal=SYSTEM)
        spend(s, brand["A"], "o-a-oct", 3_000, datetime(2026, 10, 31, 15, 59, 59, tzinfo=UTC))
        spend(s, brand["A"], "o-a-nov", 4_000, datetime(2026, 10, 31, 16, tzinfo=UTC))
    months = [date(2025, 11, 1)] + [date(2026, m, 1) for m in (9, 10, 11, 12)]

    with clean_db.unit_of_work() as s:
        together = paid_kpis.kpis_of_months(s, months, tz="Asia/Shanghai")
    alone = {}
    for month in months:
        with clean_db.unit_of_work() as s:
            alone[month] = paid_kpis.kpis(s, month=month, tz="Asia/Shanghai")

    assert together == alone
    october, november = together[date(2026, 10, 1)], together[date(2026, 11, 1)]
    assert (october.free_gmv_fen, october.free_orders, october.paid_orders) == (53_000, 2, 0)
    assert (november.paid_buyers_gmv_fen, november.paid_orders) == (44_000, 4)
    assert (november.free_gmv_fen, november.free_orders) == (5_000, 1)  # H, lapsed
    assert (november.active_members, november.paid_members) == (7, 5)
    assert (november.trials_started, november.renewals_due, november.renewed) == (2, 2, 1)
    assert november.churned == 1
    a_year_ago = together[date(2025, 11, 1)]
    assert (a_year_ago.paid_members, a_year_ago.fee_revenue_fen) == (2, 2 * PRICE)
    assert together[date(2026, 12, 1)].month == "2026-12"


def test_api(
    app_client: TestClient, make_key: Callable[..., dict[str, str]], brand: dict[str, int]
) -> None:
    got = app_client.get("/paid/kpis?month=2026-11", headers=make_key("analyst"))
    assert got.status_code == 200, got.text
    assert got.json()["paid_members"] == 5
    monthly = app_client.get("/paid/kpis/monthly?months=2", headers=make_key("operator"))
    assert [m["month"] for m in monthly.json()] == ["2026-10", "2026-11"]
    bad = app_client.get("/paid/kpis?month=November", headers=make_key("admin"))
    assert bad.status_code == 422 and "YYYY-MM" in bad.text
    assert app_client.get("/paid/kpis", headers=make_key("service")).status_code == 403


def test_cli(clean_db: Database, brand: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.cli import app

    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["paid", "kpis", "--month", "2026-11"])
    assert result.exit_code == 0, result.output
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "62.50%" in result.output, result.output


def test_the_nightly_kpis_sum_members_orders_from_the_order_book(
    clean_db: Database, brand: dict[str, int]
) -> None:
    """The insight KPIs take each month's members' orders from the order book instead of
    the live index (``kpis_of_months(members_orders=...)``): the paid figures they report
    are those the paid KPIs read alone, an order either side of a local midnight each in
    its own month."""
    from siyu.insight import kpis as insight_kpis

    with clean_db.unit_of_work() as s:
        spend(s, brand["A"], "o-a-oct", 3_000, datetime(2026, 10, 31, 15, 59, 59, tzinfo=UTC))
        spend(s, brand["A"], "o-a-nov", 4_000, datetime(2026, 10, 31, 16, tzinfo=UTC))
    october = insight_kpis.Period(date(2026, 10, 1), date(2026, 10, 31))
    november = insight_kpis.Period(
        date(2026, 11, 1), clock.local_date(clock.now(), "Asia/Shanghai")
    )
    reports = insight_kpis.kpi_reports(clean_db, [october, november], tz="Asia/Shanghai")
    with clean_db.unit_of_work() as s:
        alone = {m: paid_kpis.kpis(s, month=date(2026, m, 1), tz="Asia/Shanghai") for m in (10, 11)}
    for report, month in zip(reports, (10, 11), strict=True):
        paid = report.current.paid
        assert paid is not None and paid.months[-1] == f"2026-{month}"
        assert paid.gmv_multiple == alone[month].gmv_multiple
        assert paid.paid_members == alone[month].paid_members
    assert alone[11].gmv_multiple > 0
