"""KPIs over a small brand whose every figure is known, built through the services users
call: enrolment, order ingestion (member and guest orders), refunds and points spending."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.errors import InvalidInput
from siyu.insight import kpis
from siyu.insight.kpis import Period
from siyu.members import service as members
from siyu.members.models import Member
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft
from siyu.points import service as points
from siyu.points.models import PointsEntry

TZ = "Asia/Shanghai"
# name: (days before now they joined, [(days before now, yuan), ...])
BRAND: dict[str, tuple[int, list[tuple[int, int]]]] = {
    "A": (400, [(380, 100), (10, 200), (5, 300)]),  # a loyal member since last year
    "B": (20, [(15, 100)]),  # new, bought once
    "C": (10, []),  # new, never bought
    "D": (25, [(24, 50), (3, 150)]),  # new, bought twice
    "E": (200, [(100, 80)]),  # bought outside both periods
}


def _order(external_id: str, at: datetime, yuan: int, member_id: int | None) -> OrderDraft:
    return OrderDraft(
        channel="mini_program",
        external_id=external_id,
        paid_at=at,
        member_id=member_id,
        lines=[LineDraft("SKU-1", "奶粉", 1, yuan * 100)],
    )


@pytest.fixture
def brand(clean_db: Database, programme_in_force: None) -> dict[str, int]:
    now = clock.now()
    ids: dict[str, int] = {}
    with clean_db.unit_of_work() as session:
        drafts = []
        for name, (joined, bought) in BRAND.items():
            ids[name] = members.enrol(
                session,
                EnrolDraft(
                    phone=f"13800{ord(name):06d}",
                    joined_at=now - timedelta(days=joined),
                    join_channel="mini_program",
                ),
            ).member_id
            for k, (days, yuan) in enumerate(bought):
                drafts.append(_order(f"{name}-{k}", now - timedelta(days=days), yuan, ids[name]))
        drafts.append(_order("A-refunded", now - timedelta(days=8), 100, ids["A"]))
        drafts.append(_order("guest-0", now - timedelta(days=2), 400, None))
        results = orders.ingest_orders(session, drafts)
        assert all(r.status == "created" for r in results), results
        orders.record_refund(
            session,
            RefundDraft(
                channel="mini_program",
                external_id="R-A-refunded",
                order_channel="mini_program",
                order_external_id="A-refunded",
                refunded_at=now - timedelta(days=7),
            ),
        )
        points.spend(session, ids["A"], 50, fact="test:spend", reason="cash off", at=now)
    return ids


def _period() -> Period:
    today = clock.local_date(clock.now(), TZ)
    return Period(today - timedelta(days=29), today)


def test_the_period_and_its_comparisons(fixed_clock: clock.FixedClock) -> None:
    period = Period(date(2026, 10, 25), date(2026, 11, 23))
    assert period.days == 30
    assert period.previous() == Period(date(2026, 9, 25), date(2026, 10, 24))
    assert period.last_year() == Period(date(2025, 10, 25), date(2025, 11, 23))
    assert Period(date(2024, 2, 29), date(2024, 3, 1)).last_year().start == date(2023, 2, 28)
    start, end = period.bounds(TZ)  # brand-local midnights, in UTC
    assert start == datetime(2026, 10, 24, 16, tzinfo=clock.UTC)
    assert end == datetime(2026, 11, 23, 16, tzinfo=clock.UTC)


def test_bad_periods_are_refused_with_what_to_change() -> None:
    today = date(2026, 11, 23)
    with pytest.raises(InvalidInput, match="swap them"):
        kpis.period_of(date(2026, 11, 10), date(2026, 11, 1), today=today)
    with pytest.raises(InvalidInput, match="in the future"):
        kpis.period_of(date(2026, 11, 1), date(2026, 12, 1), today=today)
    with pytest.raises(InvalidInput, match="at most"):
        kpis.period_of(date(2020, 1, 1), date(2026, 11, 1), today=today)
    assert kpis.period_of(None, None, today=today) == Period(date(2026, 10, 25), today)


def test_member_and_sales_figures(clean_db: Database, brand: dict[str, int]) -> None:
    report = kpis.kpi_report(clean_db, _period(), tz=TZ)
    now = report.current
    assert (now.members, now.new_members) == (5, 3)  # B, C and D joined in the period
    # A 200 + 300 (the refunded order counts nothing), B 100, D 50 + 150; a guest 400
    assert now.member_revenue_fen == 80_000
    assert now.revenue_fen == 120_000
    assert now.member_sales_share == round(800 / 1200, 4)
    assert (now.new_members_converted, now.join_conversion) == (2, round(2 / 3, 4))
    assert (now.buyers, now.member_orders) == (3, 5)
    assert now.member_order_value_fen == 80_000 // 3
    assert now.price_per_order_fen == 16_000
    assert now.purchase_frequency == round(5 / 3, 3)
    assert (now.repeat_buyers, now.repurchase_rate) == (2, round(2 / 3, 4))  # A and D
    assert (now.first_buyers, now.second_buyers) == (2, 1)  # B and D; D came back
    assert now.second_purchase_conversion == 0.5
    assert (now.one_time_buyers, now.one_time_buyer_share) == (1, 0.5)  # B

    then = report.last_year  # only A, who joined before it and bought once in it
    assert (then.members, then.new_members, then.buyers) == (1, 0, 1)
    assert then.member_revenue_fen == then.revenue_fen == 10_000
    assert (then.first_buyers, then.second_buyers, then.one_time_buyer_share) == (1, 0, 1.0)
    before = report.previous  # the 30 days before: A and E were members, nobody bought
    assert (before.members, before.buyers, before.revenue_fen) == (2, 0, 0)

    change = report.change("member_revenue_fen")
    assert (change.value, change.against, change.delta) == (80_000, 10_000, 70_000)
    assert change.pct == 7.0
    assert report.change("buyers", "previous").pct is None  # nothing to compare with


def test_points_figures_follow_the_ledger(clean_db: Database, brand: dict[str, int]) -> None:
    period = _period()
    start, end = period.bounds(TZ)
    report = kpis.kpi_report(clean_db, period, tz=TZ)
    with clean_db.unit_of_work() as session:
        earned = session.scalar(
            select(func.sum(PointsEntry.points)).where(
                PointsEntry.kind == "earn", PointsEntry.at >= start, PointsEntry.at < end
            )
        )
        before = session.scalar(select(func.sum(PointsEntry.points)).where(PointsEntry.at < start))
        balances = session.scalar(select(func.sum(Member.points_balance)))
    now = report.current
    assert now.points_issued == earned > 0
    assert now.points_redeemed == 50
    assert now.redemption_rate == round(50 / earned, 4)
    assert now.liability_points == balances
    assert now.liability_points_start == before
    assert now.liability_fen == balances  # 100 points are one yuan: a point is one fen


def test_tiers_at_the_end_and_moves(clean_db: Database, brand: dict[str, int]) -> None:
    report = kpis.kpi_report(clean_db, _period(), tz=TZ)
    now = report.current
    assert list(now.tier_distribution)[: len(report.tier_order)] == report.tier_order
    assert sum(now.tier_distribution.values()) == now.members
    assert now.tier_upgrades == sum(m.members for m in now.tier_moves if m.direction == "up")
    assert all(m.from_code != m.to_code for m in now.tier_moves)
    assert report.last_year.tier_distribution["V1"] + report.last_year.tier_distribution["V2"] == 1


def test_paid_figures_sum_the_months(clean_db: Database, brand: dict[str, int]) -> None:
    report = kpis.kpi_report(clean_db, _period(), tz=TZ)
    paid = report.current.paid
    assert paid is not None
    assert paid.months == ["2026-10", "2026-11"]
    assert paid.paid_members == 0 and paid.renewals_due == 0


def test_cohort_retention(clean_db: Database, brand: dict[str, int]) -> None:
    table = {c.month: c for c in kpis.cohorts(clean_db, tz=TZ, months=12)}
    assert list(table)[-1] == "2026-11" and len(table) == 12
    november = table["2026-11"]  # B and C; B bought in the join month
    assert (november.members, november.buyers, november.retention[:2]) == (2, [1], [0.5, None])
    october = table["2026-10"]  # D bought in October and again in November
    assert (october.members, october.buyers, october.retention[:3]) == (1, [1, 1], [1, 1, None])
    may = table["2026-05"]  # E joined in May and bought in August
    assert may.buyers == [0, 0, 0, 1, 0, 0, 0]
    assert table["2026-01"].members == 0 and table["2026-01"].retention[0] is None


def test_two_purchases_at_one_instant_are_a_first_and_a_second(
    clean_db: Database, brand: dict[str, int]
) -> None:
    """The second purchase is the second earliest, even at the same instant as the first
    (two orders paid together at the till), and a purchase refunded in full is neither."""
    now = clock.now()
    with clean_db.unit_of_work() as session:
        f = members.enrol(
            session,
            EnrolDraft(
                phone="13800000070", joined_at=now - timedelta(days=6), join_channel="store"
            ),
        ).member_id
        g = members.enrol(
            session,
            EnrolDraft(
                phone="13800000071", joined_at=now - timedelta(days=6), join_channel="store"
            ),
        ).member_id
        at = now - timedelta(days=4)
        drafts = [
            _order("F-0", at, 60, f),
            _order("F-1", at, 70, f),
            _order("G-0", at, 60, g),  # refunded in full below: G's first is G-1
            _order("G-1", at + timedelta(days=1), 70, g),
        ]
        orders.ingest_orders(session, drafts)
        orders.record_refund(
            session,
            RefundDraft(
                channel="mini_program",
                external_id="R-G-0",
                order_channel="mini_program",
                order_external_id="G-0",
                refunded_at=at + timedelta(hours=1),
            ),
        )
    now_figures = kpis.kpi_report(clean_db, _period(), tz=TZ).current
    # B, D, F and G bought for the first time; D and F a second time, G only once
    assert (now_figures.first_buyers, now_figures.second_buyers) == (4, 2)
    assert (now_figures.buyers, now_figures.member_orders) == (5, 8)


def test_an_instant_at_a_periods_bound_counts_in_the_period_it_opens(
    clean_db: Database, brand: dict[str, int]
) -> None:
    """A period runs from its first instant, included, to the next period's first, left
    out: a member who joins and buys at the very first instant counts in the period and
    not in the one before; a guest's order a second earlier counts in the one before."""
    period = _period()
    start, _ = period.bounds(TZ)
    before = kpis.kpi_report(clean_db, period, tz=TZ)
    with clean_db.unit_of_work() as session:
        h = members.enrol(
            session, EnrolDraft(phone="13800000080", joined_at=start, join_channel="store")
        ).member_id
        orders.ingest_orders(
            session,
            [
                _order("H-0", start, 90, h),
                _order("guest-1", start - timedelta(seconds=1), 40, None),
            ],
        )
    after = kpis.kpi_report(clean_db, period, tz=TZ)

    now, then = after.current, before.current
    assert (now.members, now.new_members, now.new_members_converted) == (
        then.members + 1,
        then.new_members + 1,
        then.new_members_converted + 1,
    )
    assert (now.buyers, now.member_orders, now.first_buyers) == (
        then.buyers + 1,
        then.member_orders + 1,
        then.first_buyers + 1,
    )
    assert (now.revenue_fen, now.member_revenue_fen) == (
        then.revenue_fen + 9_000,
        then.member_revenue_fen + 9_000,
    )

    def tiered(figures: kpis.Figures) -> int:
        return sum(n for code, n in figures.tier_distribution.items() if code != "—")

    assert tiered(now) == tiered(then) + 1  # H took the first tier on joining, at `start`
    previous, was = after.previous, before.previous
    assert (previous.members, previous.new_members, previous.buyers) == (
        was.members,
        was.new_members,
        was.buyers,
    )
    assert previous.revenue_fen == was.revenue_fen + 4_000
    assert previous.tier_distribution == was.tier_distribution


def test_the_periods_orders_are_read_over_the_fewest_intervals() -> None:
    """Overlapping and adjacent periods merge; a gap between them is not read."""

    def day(n: int) -> datetime:
        return datetime(2026, 1, n, tzinfo=clock.UTC)

    spans = [(day(10), day(20)), (day(1), day(5)), (day(5), day(8)), (day(15), day(25))]
    assert kpis._cover(spans) == [(day(1), day(8)), (day(10), day(25))]


# naive instants, as DuckDB reads them (hypothesis draws naive ones between these)
EARLIEST = datetime(2024, 1, 1, tzinfo=UTC).replace(tzinfo=None)
LATEST = datetime(2027, 1, 1, tzinfo=UTC).replace(tzinfo=None)


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(
        st.datetimes(min_value=EARLIEST, max_value=LATEST),
        min_size=1,
        max_size=8,
        unique=True,
    ),
    instants=st.lists(
        st.datetimes(min_value=EARLIEST, max_value=LATEST),
        max_size=8,
    ),
)
def test_a_figure_filter_means_the_same_over_parts(
    cuts: list[datetime], instants: list[datetime]
) -> None:
    """Summing rows by part (``_part``) keeps every comparison of an instant with a period
    bound: ``x < c`` exactly when part(x) < part(c), the bounds among them included."""
    import duckdb

    cuts = sorted(c.replace(tzinfo=UTC) for c in cuts)
    position = kpis._at_part(cuts)
    con = duckdb.connect()
    for x in [*instants, *(c.replace(tzinfo=None) for c in cuts)]:
        literal = f"TIMESTAMP '{x.isoformat()}'"
        for c in cuts:
            row = con.execute(f"SELECT ({kpis._part(literal, cuts)}) < {position(c)}").fetchone()
            assert row is not None
            assert row[0] == (x.replace(tzinfo=UTC) < c)
    row = con.execute(f"SELECT {kpis._part('CAST(NULL AS TIMESTAMP)', cuts)}").fetchone()
    assert row == (None,)
