"""The refresh over a small brand: stages, RFM, super users, transitions, events, the
matrix, early signals; given the brand of ``insight_brand.PLAN``."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import pytest
from insight_brand import SmallBrand, example_document, order_draft
from sqlalchemy import select, update

from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.errors import Conflict, InvalidInput
from siyu.core.outbox import OutboxMessage
from siyu.insight import refresh as refresh_module
from siyu.insight import schemas, views
from siyu.insight.models import (
    InsightRun,
    LifecycleMatrix,
    LifecycleTransition,
    MemberInsight,
)
from siyu.insight.refresh import TOPIC, refresh
from siyu.members import service as members
from siyu.members.models import Member
from siyu.orders import service as orders


def insight_rows(brand: SmallBrand) -> dict[str, MemberInsight]:
    with brand.db.unit_of_work() as s:
        rows = {r.member_id: r for r in s.scalars(select(MemberInsight))}
    return {name: rows[mid] for name, mid in brand.members.items() if mid in rows}


def insight_reads(brand: SmallBrand) -> dict[str, schemas.MemberInsightRead]:
    """Each member's insight as the API reads it: scores and group on the last scale."""
    rows = insight_rows(brand)
    with brand.db.unit_of_work() as s:
        scale = views.last_scale(s)
    return {name: views.member_read(row, scale) for name, row in rows.items()}


def stages(brand: SmallBrand) -> dict[str, str | None]:
    return {name: row.stage for name, row in insight_rows(brand).items()}


def events(brand: SmallBrand) -> list[OutboxMessage]:
    with brand.db.unit_of_work() as s:
        return list(
            s.scalars(
                select(OutboxMessage).where(OutboxMessage.topic == TOPIC).order_by(OutboxMessage.id)
            )
        )


def test_each_member_gets_the_stage_their_purchases_give(small_brand: SmallBrand) -> None:
    result = refresh(small_brand.db)

    assert stages(small_brand) == {
        "prospect": "prospect",
        "new": "new",
        "active": "active",
        "silent": "silent",
        "sleeping": "sleeping",
        "churned": "churned",
        "super": "active",
        "refunded": "prospect",  # a fully refunded order is not a purchase
        "referrer": "active",
        "referred-0": "prospect",
        "referred-1": "prospect",
    }
    assert (result.members, result.buyers) == (11, 7)
    assert result.marks.basis == "days"


def test_rfm_scores_and_groups_for_buyers_only(small_brand: SmallBrand) -> None:
    refresh(small_brand.db)
    rows = insight_rows(small_brand)

    heavy = rows["super"]
    recency = views.recency_days(heavy.last_order_at, small_brand.now)
    assert (recency, heavy.frequency, heavy.monetary_fen) == (30, 12, 12 * 150_000)
    assert (heavy.order_count, heavy.orders_12m, heavy.orders_by_join_7d) == (14, 12, 1)
    assert heavy.spend_12m_fen == 12 * 150_000 and heavy.orders_by_join_30d == 2
    # the scores and group are read off the run's scale, not stored
    read = insight_reads(small_brand)
    assert read["super"].f_score == 5 and read["super"].m_score == 5
    assert read["super"].rfm_group == "important_value"
    assert read["churned"].rfm_group == "general_retain"
    assert rows["churned"].frequency == 0  # bought only before the 365-day window
    for name in ("prospect", "refunded", "referred-0"):
        assert read[name].rfm_group is None and read[name].r_score is None
    with small_brand.db.unit_of_work() as s:
        groups = views.rfm(s)
    assert sum(g.members for g in groups.groups) == 7
    assert len(groups.groups) == 8
    assert abs(sum(g.spend_share for g in groups.groups) - 1) < 0.01
    value = next(g for g in groups.groups if g.key == "important_value")
    assert value.name == "重要价值" and value.spend_fen >= 12 * 150_000


def test_super_users_by_the_document_and_their_value_multiple(small_brand: SmallBrand) -> None:
    refresh(small_brand.db)
    rows = insight_rows(small_brand)

    # the example: paid member, or 10,000 yuan a year, or 3 orders a month, or a referral
    assert {n for n, r in rows.items() if r.super_user} == {"super", "referrer"}
    with small_brand.db.unit_of_work() as s:
        summary = views.super_users(s)
    assert (summary.super_users, summary.members) == (2, 11)
    assert summary.share == round(2 / 11, 4)
    assert summary.super_spend_fen == 12 * 150_000 + 2 * 10_000
    assert summary.value_multiple is not None and summary.value_multiple > 5
    assert summary.definition is not None and summary.definition["paid_member"] is True


def test_super_users_with_all_conditions_and_top_tiers(
    small_brand: SmallBrand, apply_programme: Callable[..., None]
) -> None:
    doc = example_document()
    doc["super_users"] = {"match": "all", "paid_member": True, "min_spend_12m": 15000}
    apply_programme(doc, effective_from=small_brand.at(1))
    refresh(small_brand.db)
    assert {n for n, r in insight_rows(small_brand).items() if r.super_user} == {"super"}

    doc["super_users"] = {"min_tier": doc["tiers"]["levels"][1]["code"]}
    apply_programme(doc, effective_from=small_brand.at(0))
    refresh(small_brand.db)
    with small_brand.db.unit_of_work() as s:
        tiers = {m.id: m.tier_code for m in s.scalars(select(Member))}
    lowest = doc["tiers"]["levels"][0]["code"]
    flagged = {n for n, r in insight_rows(small_brand).items() if r.super_user}
    assert flagged == {
        n for n, mid in small_brand.members.items() if tiers[mid] not in (None, lowest)
    }
    assert "super" in flagged


def test_super_users_by_a_multiple_of_the_average_members_spend(
    small_brand: SmallBrand, apply_programme: Callable[..., None]
) -> None:
    doc = example_document()
    doc["super_users"] = {"min_spend_multiple": 3}
    apply_programme(doc, effective_from=small_brand.at(1))
    refresh(small_brand.db)
    rows = insight_rows(small_brand)
    # the average is over every member placed, those who never bought at nought
    average = sum(r.spend_12m_fen for r in rows.values()) / len(rows)
    expected = {
        n for n, r in rows.items() if r.spend_12m_fen > 0 and r.spend_12m_fen >= 3 * average
    }
    buyers = {n for n, r in rows.items() if r.spend_12m_fen > 0}
    assert {n for n, r in rows.items() if r.super_user} == expected
    assert expected and expected != buyers  # the multiple sets a mark some buyers miss


def test_transitions_events_and_stage_since_over_time(
    small_brand: SmallBrand, fixed_clock: clock.FixedClock
) -> None:
    first = refresh(small_brand.db)
    assert first.transitions == 11 and first.events == 0  # the first refresh only places
    assert events(small_brand) == []
    with small_brand.db.unit_of_work() as s:
        s.execute(
            update(MemberInsight)
            .where(MemberInsight.member_id == small_brand.members["active"])
            .values(p_alive=0.75)
        )

    fixed_clock.advance(timedelta(days=100))
    second = refresh(small_brand.db)

    now = stages(small_brand)
    assert now["new"] == "silent" and now["active"] == "silent" and now["super"] == "silent"
    assert now["silent"] == "sleeping" and now["sleeping"] == "sleeping"
    moved = {"new", "active", "super", "referrer", "silent"}
    assert second.transitions == second.events == len(moved)
    sent = events(small_brand)
    names = {mid: n for n, mid in small_brand.members.items()}
    assert {names[e.payload["member_id"]] for e in sent} == moved
    new_member = next(e for e in sent if e.payload["member_id"] == small_brand.members["new"])
    assert (new_member.payload["from"], new_member.payload["to"]) == ("new", "silent")
    assert new_member.key == f"stage:{small_brand.members['new']}:{second.run_id}"

    rows = insight_rows(small_brand)
    assert rows["sleeping"].stage_since == first.as_of  # unchanged: since the first refresh
    assert rows["new"].stage_since == second.as_of
    assert rows["active"].p_alive == 0.75  # the CLV step's columns are carried over
    with small_brand.db.unit_of_work() as s:
        history = list(
            s.scalars(
                select(LifecycleTransition)
                .where(LifecycleTransition.member_id == small_brand.members["new"])
                .order_by(LifecycleTransition.at)
            )
        )
    assert [(t.from_stage, t.to_stage) for t in history] == [(None, "new"), ("new", "silent")]


@pytest.mark.parametrize("source", ["copy", "transitions"])
def test_the_matrix_month_over_month(
    small_brand: SmallBrand, fixed_clock: clock.FixedClock, source: str
) -> None:
    """From the stages kept in the refresh's analytics copy, or (no copy) from the
    recorded transitions: the same cells."""
    refresh(small_brand.db)  # 2026-11-23
    fixed_clock.advance(timedelta(days=3))
    copy = refresh_module._state_path(None, small_brand.db)
    assert copy is not None
    if source == "transitions":
        os.remove(copy)
    assert refresh(small_brand.db).previous == ("copy" if source == "copy" else "live")
    fixed_clock.advance(timedelta(days=97))  # 2027-03-03
    if source == "transitions":
        os.remove(copy)
    refresh(small_brand.db)

    with small_brand.db.unit_of_work() as s:
        cells = {
            (c.month, c.from_stage, c.to_stage): c.members
            for c in s.scalars(select(LifecycleMatrix))
        }
        read = views.matrix(s, months=6)
    assert cells[("2026-11", "none", "prospect")] == 4
    assert cells[("2026-11", "none", "active")] == 3
    assert cells[("2027-01", "active", "active")] == 3  # nothing changed in between
    assert cells[("2027-03", "active", "silent")] == 3
    assert cells[("2027-03", "new", "silent")] == 1
    assert cells[("2027-03", "prospect", "prospect")] == 4
    assert [m.month for m in read.months] == ["2026-11", "2026-12", "2027-01", "2027-02", "2027-03"]
    assert all(sum(c.members for c in m.cells) == 11 for m in read.months)


@pytest.mark.parametrize("source", ["copy", "transitions"])
def test_the_matrix_of_members_merged_and_unmerged(
    small_brand: SmallBrand, fixed_clock: clock.FixedClock, source: str
) -> None:
    """A member who stops counting (merged) and counts again (unmerged) is placed again, from
    no stage: the months they did not count at the end of do not show them, and the month
    they came back they come from "none", even if a stage was recorded for them earlier
    that month. The same cells from the analytics copy and from the transitions."""
    ids = small_brand.members
    copy = refresh_module._state_path(None, small_brand.db)
    assert copy is not None

    def nightly() -> None:
        if source == "transitions" and os.path.exists(copy):
            os.remove(copy)
        assert refresh(small_brand.db).previous == ("copy" if source == "copy" else "live")

    refresh(small_brand.db)  # 2026-11-23
    # given the prospect buys on December 1st (prospect -> new, recorded that day)
    fixed_clock.advance(timedelta(days=8))
    with small_brand.db.unit_of_work() as s:
        made = orders.ingest_orders(
            s, [order_draft(ids["prospect"], "prospect-0", clock.now() - timedelta(hours=1), 90)]
        )
        assert made[0].status == "created"
    nightly()
    # is merged into another member the next day, with a member who stays merged until
    # February; a refresh runs while they are merged
    fixed_clock.advance(timedelta(days=1))
    with small_brand.db.unit_of_work() as s:
        back_soon = members.merge(
            s, ids["prospect"], ids["active"], reason="same person", principal=SYSTEM
        ).id
        back_later = members.merge(
            s, ids["referred-0"], ids["referred-1"], reason="same person", principal=SYSTEM
        ).id
    nightly()
    # and is unmerged the day after (placed again: new)
    fixed_clock.advance(timedelta(days=1))
    with small_brand.db.unit_of_work() as s:
        members.unmerge(s, back_soon, principal=SYSTEM)
    nightly()
    fixed_clock.advance(timedelta(days=35))  # 2027-01-07
    nightly()
    fixed_clock.advance(timedelta(days=34))  # 2027-02-10
    with small_brand.db.unit_of_work() as s:
        members.unmerge(s, back_later, principal=SYSTEM)
    nightly()

    with small_brand.db.unit_of_work() as s:
        cells = {
            (c.month, c.from_stage, c.to_stage): c.members
            for c in s.scalars(select(LifecycleMatrix))
        }
        read = views.matrix(s, months=6)
    # December: the prospect came back (from none), not prospect -> new; the other merged
    # member is not there
    assert cells[("2026-12", "none", "new")] == 1
    assert ("2026-12", "prospect", "new") not in cells
    assert cells[("2026-12", "prospect", "prospect")] == 2
    # January: the member still merged is nowhere; February: placed again
    assert cells[("2027-01", "prospect", "prospect")] == 2
    assert cells[("2027-02", "none", "prospect")] == 1
    assert ("2027-02", "none", "new") not in cells
    totals = {m.month: sum(c.members for c in m.cells) for m in read.months}
    assert totals == {"2026-11": 11, "2026-12": 10, "2027-01": 10, "2027-02": 11}


def test_early_signals_per_join_cohort(small_brand: SmallBrand) -> None:
    refresh(small_brand.db)
    with small_brand.db.unit_of_work() as s:
        signals = views.early_signals(s)
    by_cohort = {c.cohort: c for c in signals.cohorts}
    heavy = by_cohort["2025-09"]  # the super user joined 420 days ago, bought on days 2 and 10
    assert (heavy.members, heavy.first_within_7d, heavy.second_within_30d, heavy.early) == (
        1,
        1,
        1,
        1,
    )
    assert heavy.mature and heavy.early_super_rate == 1.0
    assert not by_cohort["2026-11"].mature
    # mature cohorts: the one early buyer is a super user, none of the other four are
    assert signals.lift_points == 100.0


def test_percentile_marks_are_derived_and_recorded(
    small_brand: SmallBrand, apply_programme: Callable[..., None]
) -> None:
    doc = example_document()
    doc["lifecycle"].update(basis="percentiles", min_repeat_buyers=3)
    apply_programme(doc, effective_from=small_brand.at(1))
    result = refresh(small_brand.db)

    assert result.marks.basis == "percentiles"
    assert result.marks.silent_after_days < result.marks.sleeping_after_days
    assert result.marks.churned_after_days == 2 * result.marks.sleeping_after_days
    with small_brand.db.unit_of_work() as s:
        read = views.lifecycle(s)
    assert read.marks is not None and read.marks.basis == "percentiles"
    assert sum(g.members for g in read.stages) == 11


def test_merged_members_leave_and_runs_are_recorded(small_brand: SmallBrand) -> None:
    refresh(small_brand.db)
    with small_brand.db.unit_of_work() as s:
        members.merge(
            s,
            small_brand.members["referred-0"],
            small_brand.members["referred-1"],
            reason="same person",
            principal=SYSTEM,
        )
    refresh(small_brand.db)
    assert "referred-0" not in insight_rows(small_brand)
    with small_brand.db.unit_of_work() as s:
        found = views.runs(s)
    assert [r.status for r in found] == ["done", "done"]
    assert isinstance(found[0].detail, dict) and found[0].detail["members"] == 10


def test_a_refresh_never_goes_back_in_time_nor_runs_twice(small_brand: SmallBrand) -> None:
    refresh(small_brand.db)
    with pytest.raises(InvalidInput, match="before the last refresh"):
        refresh(small_brand.db, as_of=small_brand.at(1))
    with pytest.raises(InvalidInput, match="future"):
        refresh(small_brand.db, as_of=small_brand.now + timedelta(days=1))

    with small_brand.db.unit_of_work() as s:
        s.add(
            InsightRun(
                step="refresh", as_of=small_brand.now, started_at=small_brand.now, status="running"
            )
        )
    with pytest.raises(Conflict, match="running since"):
        refresh(small_brand.db)
    with small_brand.db.unit_of_work() as s:
        s.execute(
            update(InsightRun)
            .where(InsightRun.status == "running")
            .values(started_at=small_brand.at(1))
        )
    refresh(small_brand.db)  # a run left running for a day is taken as dead
    with small_brand.db.unit_of_work() as s:
        assert [r.status for r in views.runs(s)] == ["done", "failed", "done"]


def test_no_refresh_yet_is_a_clear_not_found(small_brand: SmallBrand) -> None:
    from siyu.core.errors import NotFound

    with small_brand.db.unit_of_work() as s, pytest.raises(NotFound, match="siyu insight refresh"):
        views.lifecycle(s)
