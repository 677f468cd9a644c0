"""The nightly refresh is incremental: after new orders, late imports, refunds, a merge, a
new member and time passing, it leaves ``member_insight`` exactly as a full recompute from
every order does, and removes the rows of members who no longer count; given the brand of
``insight_brand.PLAN``."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pytest
from insight_brand import SmallBrand, example_document, order_draft
from sqlalchemy import func, select

from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.insight import clv_jobs, views
from siyu.insight import refresh as refresh_module
from siyu.insight.models import (
    EarlySignal,
    InsightGroup,
    InsightRun,
    LifecycleTransition,
    MemberInsight,
)
from siyu.insight.refresh import COMPUTED, KEPT, RefreshResult, refresh
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.models import Order
from siyu.orders.rules import RefundDraft, RefundLineDraft

# what the refresh computes; stage_since and computed_at say when, not what
COMPARED = [c for c in COMPUTED if c not in ("stage_since", "computed_at")]
# derived when read, on the last run's scale
DERIVED = ("r_score", "f_score", "m_score", "rfm_group")


def snapshot(brand: SmallBrand) -> dict[int, dict[str, Any]]:
    """Every ``member_insight`` row's computed columns, with the RFM scores and group a
    reader derives on the last run's scale."""
    with brand.db.unit_of_work() as s:
        scale = views.last_scale(s)
        rows = {}
        for row in s.scalars(select(MemberInsight)):
            read = views.member_read(row, scale)
            rows[row.member_id] = {
                **{c: getattr(row, c) for c in COMPARED},
                **{c: getattr(read, c) for c in DERIVED},
            }
        return rows


def transitions(brand: SmallBrand) -> list[tuple[int, str | None, str]]:
    with brand.db.unit_of_work() as s:
        return [
            (t.member_id, t.from_stage, t.to_stage)
            for t in s.scalars(select(LifecycleTransition).order_by(LifecycleTransition.id))
        ]


def copy_path(brand: SmallBrand) -> str:
    path = refresh_module._state_path(None, brand.db)
    assert path is not None
    return path


def analytics_copy(brand: SmallBrand) -> dict[int, dict[str, Any]]:
    """The refresh's analytics copy of ``member_insight`` (a DuckDB file), as the live
    rows read through the application: the same values, instants in UTC."""
    with duckdb.connect(copy_path(brand), read_only=True) as con:
        names = ["member_id", *KEPT]
        rows = con.execute(f"SELECT {', '.join(names)} FROM insight_state").fetchall()
    return {
        row[0]: {name: utc(value) for name, value in zip(KEPT, row[1:], strict=True)}
        for row in rows
    }


def utc(value: Any) -> Any:
    return clock.as_utc(value) if isinstance(value, datetime) else value


def live_rows(brand: SmallBrand) -> dict[int, dict[str, Any]]:
    with brand.db.unit_of_work() as s:
        return {
            row.member_id: {c: utc(getattr(row, c)) for c in KEPT}
            for row in s.scalars(select(MemberInsight))
        }


def summaries(brand: SmallBrand, run_id: int) -> tuple[dict[tuple[str, str], tuple], list]:
    """A run's groups, and the early signals (of the last run)."""
    with brand.db.unit_of_work() as s:
        groups = {
            (g.dimension, g.key): (g.members, g.spend_fen, g.orders)
            for g in s.scalars(select(InsightGroup).where(InsightGroup.run_id == run_id))
        }
        columns = ("cohort", "members", "first_within_7d", "second_within_30d", "early")
        columns += ("early_super", "other_super", "mature")
        signals = [
            tuple(getattr(e, c) for c in columns)
            for e in s.scalars(select(EarlySignal).order_by(EarlySignal.cohort))
        ]
    return groups, signals


def groups_of(rows: dict[int, dict[str, Any]]) -> dict[tuple[str, str], tuple]:
    """The groups as counted from ``member_insight`` rows: per stage and super/ordinary
    the 12 months' spend and orders, per RFM group (buyers) the RFM window's."""
    counted: dict[tuple[str, str], tuple] = {}

    def add(key: tuple[str, str], spend: int, orders: int) -> None:
        members, total, count = counted.get(key, (0, 0, 0))
        counted[key] = (members + 1, total + spend, count + orders)

    for row in rows.values():
        add(("stage", row["stage"]), row["spend_12m_fen"], row["orders_12m"])
        kind = "super" if row["super_user"] else "ordinary"
        add(("super", kind), row["spend_12m_fen"], row["orders_12m"])
        if row["rfm_group"] is not None:
            add(("rfm", row["rfm_group"]), row["monetary_fen"], row["frequency"])
    return counted


def incremental_then_full(brand: SmallBrand) -> RefreshResult:
    """The nightly (incremental) refresh, then a full one as of the same instant: the full
    one must find nothing to change, and every row equal to what it recomputed. Both read
    the last run's rows from the analytics copy, which holds what the live table holds."""
    nightly = refresh(brand.db)
    assert not nightly.full and nightly.previous == "copy"
    after_nightly, moves = snapshot(brand), transitions(brand)
    assert analytics_copy(brand) == live_rows(brand)
    nightly_groups, nightly_signals = summaries(brand, nightly.run_id)
    assert nightly_groups == groups_of(after_nightly)

    full = refresh(brand.db, as_of=nightly.as_of, full=True)
    assert full.full and full.previous == "copy"
    assert snapshot(brand) == after_nightly
    assert (full.written, full.transitions) == (0, 0)
    assert transitions(brand) == moves
    assert analytics_copy(brand) == live_rows(brand)
    assert summaries(brand, full.run_id) == (nightly_groups, nightly_signals)
    return nightly


def test_new_orders_refunds_a_merge_and_time_passing_give_what_a_full_refresh_gives(
    small_brand: SmallBrand, fixed_clock: clock.FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL looks again at the last ids before the watermark (see ID_OVERLAP): more
    # than this brand has, so without this every member would be recomputed there
    monkeypatch.setattr(refresh_module, "id_overlap", lambda db: 0)
    first = refresh(small_brand.db)
    assert first.full and first.written == first.members == 11
    ids = small_brand.members

    # given a few days of business: a first order, an order imported late with an old
    # paid_at, a partial and a full refund of earlier orders, a merge, a new member
    fixed_clock.advance(timedelta(days=3))
    now = clock.now()
    with small_brand.db.unit_of_work() as s:
        results = orders.ingest_orders(
            s,
            [
                order_draft(ids["prospect"], "prospect-late-0", now - timedelta(hours=5), 90),
                order_draft(ids["churned"], "churned-late-0", now - timedelta(days=200), 70),
            ],
        )
        assert all(r.status == "created" for r in results)
        orders.record_refund(
            s,
            RefundDraft(
                channel="mini_program",
                external_id="R-active-2",
                order_channel="mini_program",
                order_external_id="active-2",
                refunded_at=now - timedelta(hours=1),
                lines=[RefundLineDraft(line_no=1, quantity=1, amount_fen=10_000)],
            ),
        )
        orders.record_refund(
            s,
            RefundDraft(
                channel="mini_program",
                external_id="R-new-0",
                order_channel="mini_program",
                order_external_id="new-0",
                refunded_at=now - timedelta(hours=1),
            ),
        )
        members.merge(
            s, ids["referred-0"], ids["referred-1"], reason="same person", principal=SYSTEM
        )
        joined = members.enrol(
            s,
            EnrolDraft(
                phone="13700000001", joined_at=now - timedelta(hours=2), join_channel="store"
            ),
        ).member_id

    # when the nightly refresh runs
    nightly = incremental_then_full(small_brand)

    # then it recomputed from their orders only the members touched (both sides of the
    # merge, and the new member), and read everyone else's aggregates back
    touched = {ids[n] for n in ("prospect", "churned", "active", "new", "referred-0")}
    assert nightly.recomputed == len(touched | {ids["referred-1"], joined}) < nightly.members
    rows = snapshot(small_brand)
    assert ids["referred-0"] not in rows and joined in rows
    assert rows[ids["prospect"]]["order_count"] == 1
    assert rows[ids["new"]]["order_count"] == 0 and rows[ids["new"]]["last_order_at"] is None
    assert rows[ids["active"]]["monetary_fen"] == (200 + 200 + 400 - 100) * 100  # refunded 100
    assert rows[ids["churned"]]["order_count"] == 3

    # and as days pass with nothing bought, stages, windows and scores move the same way
    for days in (30, 40, 100, 200):
        fixed_clock.advance(timedelta(days=days))
        incremental_then_full(small_brand)
    rows = snapshot(small_brand)
    assert rows[ids["super"]]["orders_12m"] == 0 and rows[ids["super"]]["stage"] == "churned"


def _raw_order(brand: SmallBrand, member_id: int, order_id: int, paid_at: datetime) -> None:
    """An order row with a chosen id, as a transaction holding that id would leave it when
    it commits: the refresh reads only the orders table."""
    with brand.db.unit_of_work() as s:
        s.add(
            Order(
                id=order_id,
                channel="mini_program",
                external_id=f"raw-{order_id}",
                member_id=member_id,
                paid_at=paid_at,
                amount_fen=12_300,
                content_hash="raw",
                created_at=clock.now(),
            )
        )


def small_brand_buyers(brand: SmallBrand) -> int:
    return sum(1 for row in snapshot(brand).values() if row["order_count"])


def test_an_order_that_commits_below_the_watermark_after_a_run_is_counted_by_the_next(
    small_brand: SmallBrand, fixed_clock: clock.FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL an order's id is handed out before its transaction commits, so a run
    can read past an id whose order appears later. The next run counts it, recomputing
    only the members of such orders: each run keeps the ids it counted near its watermark
    in the analytics copy, instead of the next one recomputing every member with an order
    among the last ``ID_OVERLAP`` ids. (Forced here on either database.)"""
    monkeypatch.setattr(refresh_module, "id_overlap", lambda db: 1_000)
    ids = small_brand.members
    assert refresh(small_brand.db).full
    with small_brand.db.unit_of_work() as s:
        top = s.scalar(select(func.max(Order.id)))
    assert top is not None
    # a gap: the order above it counts tonight, the one in it commits after the run read
    _raw_order(small_brand, ids["active"], top + 10, clock.now() - timedelta(minutes=30))
    fixed_clock.advance(timedelta(hours=2))
    first = refresh(small_brand.db)
    assert not first.full and first.previous == "copy"

    _raw_order(small_brand, ids["prospect"], top + 3, clock.now() - timedelta(minutes=30))
    fixed_clock.advance(timedelta(hours=2))
    late = incremental_then_full(small_brand)
    assert first.late_orders == 0 and late.late_orders == 1
    assert snapshot(small_brand)[ids["prospect"]]["order_count"] == 1

    # counted once: the next run (after the full one) finds nothing late
    fixed_clock.advance(timedelta(hours=2))
    quiet = incremental_then_full(small_brand)
    assert quiet.late_orders == 0
    assert snapshot(small_brand)[ids["prospect"]]["order_count"] == 1

    # a copy without counted ids (an older version's): every member with an order among
    # the last ids is recomputed, as before
    with duckdb.connect(copy_path(small_brand)) as con:
        con.execute("DROP TABLE counted_orders")
        con.execute("DROP TABLE counted_zone")
    fixed_clock.advance(timedelta(hours=2))
    unknown = incremental_then_full(small_brand)
    assert unknown.late_orders is None and unknown.recomputed >= small_brand_buyers(small_brand)
    assert unknown.recomputed > quiet.recomputed


def test_a_nightly_run_after_nothing_happened_writes_nothing(
    small_brand: SmallBrand, fixed_clock: clock.FixedClock
) -> None:
    refresh(small_brand.db)
    fixed_clock.advance(timedelta(hours=6))
    again = refresh(small_brand.db)
    assert not again.full
    assert (again.written, again.transitions) == (0, 0)


def test_changed_settings_or_no_watermark_recompute_everything(
    small_brand: SmallBrand, fixed_clock: clock.FixedClock, apply_programme: Callable[..., None]
) -> None:
    assert refresh(small_brand.db).full  # no watermark yet
    fixed_clock.advance(timedelta(days=1))
    assert not refresh(small_brand.db).full

    doc = example_document()
    doc["rfm"] = {**doc.get("rfm", {}), "window_days": 180}
    apply_programme(doc, effective_from=small_brand.at(-1))
    fixed_clock.advance(timedelta(days=1))
    changed = refresh(small_brand.db)
    assert changed.full
    active = snapshot(small_brand)[small_brand.members["active"]]
    assert active["frequency"] == 1  # only the order 30 days ago is within 180 days

    fixed_clock.advance(timedelta(days=1))
    assert not incremental_then_full(small_brand).full
    with small_brand.db.unit_of_work() as s:
        runs = list(s.scalars(select(InsightRun).order_by(InsightRun.id)))
    assert all(r.order_watermark is not None and r.settings_key for r in runs)


def test_the_analytics_copy_is_read_only_when_it_is_the_last_finished_runs(
    small_brand: SmallBrand, fixed_clock: clock.FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy saves reading ``member_insight`` through the live database's reader; a
    copy that is missing, or that a failed run left, must never be taken for the table."""
    assert refresh(small_brand.db).previous == "live"  # no copy yet
    fixed_clock.advance(timedelta(days=1))
    assert refresh(small_brand.db).previous == "copy"

    # a run that fails after saving its copy (here: while publishing) leaves a copy that
    # no finished run vouches for
    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database went away while publishing")

    fixed_clock.advance(timedelta(days=40))
    with monkeypatch.context() as patched:
        patched.setattr(refresh_module, "_publish", fail)
        with pytest.raises(RuntimeError):
            refresh(small_brand.db)
    after_failure = refresh(small_brand.db)
    assert after_failure.previous == "live" and after_failure.written > 0
    assert analytics_copy(small_brand) == live_rows(small_brand)

    # without the file, the live table is read, with the same outcome
    fixed_clock.advance(timedelta(days=1))
    os.remove(copy_path(small_brand))
    again = refresh(small_brand.db, as_of=clock.now())
    assert again.previous == "live" and (again.written, again.transitions) == (0, 0)


@pytest.mark.parametrize("source", ["copy", "live"])
def test_rows_of_members_who_no_longer_count_go_whichever_step_wrote_them(
    small_brand: SmallBrand, fixed_clock: clock.FixedClock, source: str
) -> None:
    """The CLV step adds rows for buyers the refresh has not placed yet, which the analytics
    copy (the refresh's rows) does not hold: when such a buyer is merged into another or
    their account is closed, the next refresh removes their row all the same, as it does
    a placed buyer's, whether it reads the last run's rows from the copy or from the live
    table."""
    refresh(small_brand.db)

    # given three members who joined and bought after the last refresh, scored by the CLV job
    # (rows without a stage), and a placed buyer whose row the CLV job completed
    fixed_clock.advance(timedelta(days=1))
    now = clock.now()
    with small_brand.db.unit_of_work() as s:
        merged, closed, kept = (
            members.enrol(
                s,
                EnrolDraft(
                    phone=f"1370000000{k}", joined_at=now - timedelta(hours=5), join_channel="store"
                ),
            ).member_id
            for k in range(3)
        )
        results = orders.ingest_orders(
            s,
            [
                order_draft(m, f"late-{m}", now - timedelta(hours=4), 90)
                for m in (merged, closed, kept)
            ],
        )
        assert all(r.status == "created" for r in results)
    fixed_clock.advance(timedelta(hours=1))
    clv_jobs.run_clv(small_brand.db)
    placed = small_brand.members["silent"]
    with small_brand.db.unit_of_work() as s:
        scored = {m: s.get(MemberInsight, m) for m in (merged, closed, kept)}
        assert all(
            r is not None and r.stage is None and r.p_alive is not None for r in scored.values()
        )
        placed_row = s.get(MemberInsight, placed)
        assert placed_row is not None and placed_row.stage == "silent"
        assert placed_row.p_alive is not None

    # when one of them and the placed buyer are merged into other members, and one closes
    # their account
    with small_brand.db.unit_of_work() as s:
        for source_id, into in ((merged, "active"), (placed, "sleeping")):
            members.merge(
                s, source_id, small_brand.members[into], reason="same person", principal=SYSTEM
            )
        members.set_status(s, closed, "closed", reason="asked to leave", principal=SYSTEM)
    if source == "live":
        os.remove(copy_path(small_brand))
    fixed_clock.advance(timedelta(hours=1))
    nightly = refresh(small_brand.db)

    # then their rows are gone; the third buyer is placed and keeps its CLV
    assert nightly.previous == source and not nightly.full
    rows = live_rows(small_brand)
    assert merged not in rows and closed not in rows and placed not in rows
    assert rows[kept]["stage"] == "new"
    with small_brand.db.unit_of_work() as s:
        kept_row = s.get(MemberInsight, kept)
        assert kept_row is not None and kept_row.p_alive is not None
    assert analytics_copy(small_brand) == rows
    again = refresh(small_brand.db)
    assert again.previous == "copy" and (again.written, again.transitions) == (0, 0)
