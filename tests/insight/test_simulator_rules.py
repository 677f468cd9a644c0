"""One member's replay in plain data, without a database: points spent beyond what a
draft gives, refunds after a clearing, re-priced bonus events, packs by trigger, and the
ledger identity that holds whatever the facts."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from simulator_brand import example_programme

from siyu.core import clock
from siyu.insight.simulator import (
    GrantFact,
    GrowthFact,
    MemberHistory,
    OrderFact,
    Pack,
    RefundFact,
    ReviewRuns,
    Tally,
    grant_level,
    replay_member,
    review_runs,
)
from siyu.points.rules import Line
from siyu.programme.rules import Programme, check

TZ = "Asia/Shanghai"
JOINED = datetime(2025, 3, 1, 2, 0, tzinfo=clock.UTC)
END = datetime(2026, 11, 23, 4, 0, tzinfo=clock.UTC)


def programme(**change: Any) -> Programme:
    doc = example_programme()
    for path, value in change.items():
        *parents, leaf = path.split("__")
        node = doc
        for key in parents:
            node = node[key]
        node[leaf] = value
    parsed, problems = check(doc)
    assert parsed is not None, problems
    return parsed


def order(order_id: int, at: datetime, *amounts: int, category: str = "奶粉") -> OrderFact:
    lines = tuple(Line(i, f"SKU-{i}", category, a) for i, a in enumerate(amounts, 1))
    return OrderFact(order_id, at, lines)


def member(**facts: Any) -> MemberHistory:
    return MemberHistory(1, JOINED, facts.pop("birthday", None), True, **facts)


def run(p: Programme, h: MemberHistory, **options: Any) -> Tally:
    tally = Tally()
    replay_member(p, h, tally, start=options.pop("start", None), end=END, tz=TZ, **options)
    return tally


def local(day: str) -> datetime:
    """Midnight of a brand-local day."""
    return datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(TZ)).astimezone(clock.UTC)


def granted(code: str, starts: str, ends: str, revoked: str | None = None) -> GrantFact:
    return GrantFact(1, code, local(starts), local(ends), local(revoked) if revoked else None)


# 700 growth on 2 March 2025 (600 + the first-order 100, with signup 100: V2); reviews every
# 90 days; a grant of V5 from 1 April 2025.
SHORT = {"tiers__review": {"window": "days_since_change", "days": 90}}
ORDERS = [order(1, JOINED + timedelta(days=1), 60_000)]
VIP = {"vip_service": Pack("vip_service", "tier_upgrade", (("vip_gift", 1),), 0)}


def test_a_grant_lifts_at_once_floors_every_review_and_gives_the_upgrade_pack() -> None:
    plain = run(programme(**SHORT), member(orders=ORDERS), catalogue=VIP)
    assert plain.tiers == {"V1": 1} and dict(plain.downgrades) == {"V2": 1}
    running = member(orders=ORDERS, grants=[granted("V5", "2025-04-01", "2027-01-01")])
    t = run(programme(**SHORT), running, catalogue=VIP)
    # Reviewed every 90 days on nothing, and kept on V5 by the grant.
    assert t.tiers == {"V5": 1} and not t.downgrades
    assert dict(t.packs) == {("vip_service", "V5"): 1}
    assert dict(t.upgrades) == {"V2": 1}  # a grant is no upgrade by value


def test_at_its_end_or_revocation_the_member_falls_to_what_they_qualify_for() -> None:
    ended = member(orders=ORDERS, grants=[granted("V5", "2025-04-01", "2025-10-01")])
    t = run(programme(**SHORT), ended)
    # The V2 held before the grant, judged on an empty window: V1; no review lowered it.
    assert t.tiers == {"V1": 1} and not t.downgrades
    revoked = member(
        orders=[*ORDERS, order(2, local("2025-06-01"), 40_000)],
        grants=[granted("V5", "2025-04-01", "2026-04-01", revoked="2025-07-01")],
    )
    t = run(programme(**SHORT), revoked)
    # Revoked on 1 July with 400 growth in the window: V2 kept (retention 300), then
    # the review 90 days later finds nothing and drops it.
    assert t.tiers == {"V1": 1} and dict(t.downgrades) == {"V2": 1}


def test_a_grant_of_a_level_the_draft_lacks_stands_for_the_highest_level_below_it() -> None:
    example = programme()
    renamed = example_programme()
    for level in renamed["tiers"]["levels"]:
        level["code"] = level["code"].replace("V", "G")
    renamed["tiers"]["levels"][3]["threshold"] = 6_000  # G4 above V4's 5,000
    draft, problems = check(renamed)
    assert draft is not None, problems
    assert grant_level(draft, example, "V4") == "G3"  # by threshold: 2,000 <= 5,000 < 6,000
    assert grant_level(draft, example, "V6") == "G6"
    assert grant_level(example, example, "V4") == "V4"
    assert grant_level(draft, example, "X9") is None
    spend = example_programme()
    spend["tiers"]["basis"] = "spend"
    for level in spend["tiers"]["levels"]:
        level["code"] = level["code"].replace("V", "S")
    by_spend, problems = check(spend)
    assert by_spend is not None, problems
    assert grant_level(by_spend, example, "V4") == "S4"  # other basis: by position
    # Replayed under the draft with the programme in force as the reference.
    h = member(orders=ORDERS, grants=[granted("V4", "2025-04-01", "2027-01-01")])
    t = run(draft, h, reference=example)
    assert t.tiers == {"G3": 1} and t.grants_skipped == 0
    unknown = member(orders=ORDERS, grants=[granted("X9", "2025-04-01", "2027-01-01")])
    assert run(draft, unknown, reference=example).grants_skipped == 1


def test_spending_more_than_the_draft_gives_is_capped_and_reported() -> None:
    # 1,000 yuan earn 1,000 points (x1 on V1) under the example, 100 under a tenth of it;
    # the member spent 800 a month later.
    paid = JOINED + timedelta(days=1)
    h = member(orders=[order(1, paid, 100_000)], spends=[(paid + timedelta(days=30), 800)])
    example = run(programme(), h)
    lean = run(programme(points__earn__per_yuan="0.1"), h)
    assert example.points_orders == 1_000 and example.points_spent == 800
    assert example.spend_shortfall == 0
    # 100 from the order + 100 signup points could be spent; 600 could not.
    assert lean.points_orders == 100 and lean.points_spent == 200
    assert lean.spend_shortfall == 600 and lean.points_outstanding == 0


def test_a_refund_after_the_clearing_leaves_a_debt_that_later_points_settle() -> None:
    paid = datetime(2025, 12, 20, 2, tzinfo=clock.UTC)
    h = member(
        orders=[
            order(1, paid, 50_000),
            order(2, datetime(2026, 2, 1, 2, tzinfo=clock.UTC), 30_000),
        ],
        refunds=[RefundFact(9, 1, datetime(2026, 1, 5, 2, tzinfo=clock.UTC), ((1, 50_000),))],
    )
    t = run(programme(points__events__signup=None), h)
    # The 500 points of order 1 were cleared on 31 December; the refund takes 500 back
    # from nothing: a debt, settled by the 300 (x1.1 on V2 = 330) of order 2.
    assert t.points_expired == 500 and t.points_reversed == 500
    assert t.points_debt == 500 - 330 and t.points_outstanding == 0


def test_under_allow_negative_a_shortfall_is_a_balance_below_zero_not_a_debt() -> None:
    paid = datetime(2025, 12, 20, 2, tzinfo=clock.UTC)
    h = member(
        orders=[
            order(1, paid, 50_000),
            order(2, datetime(2026, 2, 1, 2, tzinfo=clock.UTC), 30_000),
        ],
        refunds=[RefundFact(9, 1, datetime(2026, 1, 5, 2, tzinfo=clock.UTC), ((1, 50_000),))],
    )
    t = run(programme(points__events__signup=None, points__negative_balance="allow_negative"), h)
    # As in the debt case, but the 500 taken from nothing lower the balance, and the 330
    # of order 2 fill the hole: the balance ends at -170, with no debt.
    assert t.points_reversed == 500 and t.points_debt == 0
    assert t.points_outstanding == 330 - 500


def test_bonus_events_are_repriced_with_their_limit_and_adjustments_carried() -> None:
    at = JOINED + timedelta(days=2)
    h = member(
        growth=[
            GrowthFact(at, "profile_completion"),
            GrowthFact(at + timedelta(days=1), "profile_completion"),
            GrowthFact(at + timedelta(days=2), "review"),
            GrowthFact(at + timedelta(days=3), None, growth=400),
        ]
    )
    t = run(programme(), h)
    # signup 100 + profile 50 (once) + review 5 + adjustment 400 = 555: V2 (500).
    assert t.growth_issued == 555
    assert dict(t.upgrades) == {"V2": 1} and t.tiers == {"V2": 1}
    without = run(programme(growth__bonus_events=[]), h)
    assert without.growth_issued == 500 and without.tiers == {"V2": 1}


def test_packs_follow_their_triggers_and_the_levels_that_list_them() -> None:
    catalogue = {
        "welcome": Pack("welcome", "join", (("welcome_20", 1),), 0),
        "birthday_gift": Pack("birthday_gift", "birthday", (("birthday_50", 1),), 0),
        "monthly_freight": Pack("monthly_freight", "monthly", (("freight_free", 2),), 0),
        "vip_service": Pack("vip_service", "tier_upgrade", (("vip_gift", 1),), 500),
    }
    # Reaches V3 (2,000 growth) on 2026-03-10 local and V5 (10,000) on 2026-06-10.
    h = member(
        birthday=date(1992, 2, 29),
        orders=[
            order(1, datetime(2026, 3, 10, 2, tzinfo=clock.UTC), 200_000),
            order(2, datetime(2026, 6, 10, 2, tzinfo=clock.UTC), 800_000),
        ],
    )
    t = run(programme(), h, catalogue=catalogue)
    packs = dict(t.packs)
    assert packs[("welcome", "V1")] == 1
    # Monthly freight (V3 and up), on the 1st: April, May and June on V3, July to
    # November on V5.
    assert packs[("monthly_freight", "V3")] == 3
    assert packs[("monthly_freight", "V5")] == 5
    assert packs[("vip_service", "V5")] == 1
    # Born on 29 February: 28 February in 2025 (V1, no pack) and 2026 (V1, no pack).
    assert not [k for k in packs if k[0] == "birthday_gift"]
    late = member(
        birthday=date(1992, 2, 29),
        orders=[order(1, datetime(2025, 12, 1, 2, tzinfo=clock.UTC), 60_000)],
    )
    t = run(programme(), late, catalogue=catalogue)
    assert dict(t.packs).get(("birthday_gift", "V2")) == 1  # 28 February 2026, on V2
    # Flows before the start are not counted; the state at the end is.
    july = datetime(2026, 6, 30, 16, tzinfo=clock.UTC)  # 1 July, 00:00 in Shanghai
    t = run(programme(), h, catalogue=catalogue, start=july)
    assert ("welcome", "V1") not in t.packs and t.packs[("monthly_freight", "V5")] == 5
    assert ("monthly_freight", "V3") not in t.packs
    assert t.tiers == {"V5": 1} and not t.upgrades


facts = st.lists(
    st.tuples(
        st.sampled_from(["order", "refund", "spend"]),
        st.integers(min_value=0, max_value=700),  # day after joining
        st.integers(min_value=1_00, max_value=5_000_00),  # amount in fen / points
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(facts=facts, policy=st.sampled_from(["never", "year_end", "rolling_months"]))
def test_points_add_up_whatever_the_facts(facts: list[tuple[str, int, int]], policy: str) -> None:
    """Outstanding = issued - spent - expired - reversed + debt, and no lot goes negative."""
    orders, refunds, spends = [], [], []
    for i, (kind, day, amount) in enumerate(facts):
        at = JOINED + timedelta(days=day, hours=1)
        if kind == "order":
            orders.append(order(i, at, amount, amount // 3 + 1))
        elif kind == "refund" and orders:
            target = orders[i % len(orders)]
            refunds.append(RefundFact(i, target.order_id, max(at, target.paid_at), ((1, amount),)))
        elif kind == "spend":
            spends.append((at, amount // 100))
    expiry = {"policy": policy} | ({"months": 6} if policy == "rolling_months" else {})
    if policy == "year_end":
        expiry |= {"month": 12, "day": 31}
    t = run(programme(points__expiry=expiry), member(orders=orders, refunds=refunds, spends=spends))
    issued = t.points_orders + t.points_signup + t.points_carried
    assert t.points_outstanding >= 0 and t.points_debt >= 0
    assert t.points_outstanding == (
        issued - t.points_spent - t.points_expired - t.points_reversed + t.points_debt
    )
    assert sum(t.tiers.values()) == 1


# V2 on 2 March 2025 (800 growth), the order refunded on 5 March (200 left, below V2's
# 300), 500 growth on 10 June; reviews every 90 days: due on 31 May and 29 August.
REFUNDED = member(
    orders=[*ORDERS, order(2, local("2025-06-10") + timedelta(hours=3), 50_000)],
    refunds=[RefundFact(9, 1, local("2025-03-05") + timedelta(hours=3), ((1, 60_000),))],
)


def days(first: str, n: int) -> tuple[date, ...]:
    return tuple(date.fromisoformat(first) + timedelta(days=i) for i in range(n))


def test_a_run_after_missed_days_reviews_once_on_the_latest_period_that_ended() -> None:
    daily = run(programme(**SHORT), REFUNDED)
    # Reviewed on 31 May on 100: down to V1; the June order lifts her again (x1 points).
    assert dict(daily.downgrades) == {"V2": 2} and dict(daily.upgrades) == {"V2": 2}
    assert daily.points_orders == 600 + 500
    assert run(programme(**SHORT), REFUNDED, runs=ReviewRuns()) == daily
    # The job did not run from 2 March to 14 September: on 10 June she still held V2 (x1.1
    # points, nothing to climb to); the run on 15 September reviews once, the period that
    # ended on 29 August (500 in it: kept), not the one that ended on 31 May.
    runs = ReviewRuns(days("2025-03-01", 1) + days("2025-09-15", 500))
    late = run(programme(**SHORT), REFUNDED, runs=runs)
    assert dict(late.upgrades) == {"V2": 1} and dict(late.downgrades) == {"V2": 1}
    assert late.points_orders == 600 + 550
    # The next review is 90 days after 29 August; had the job not run again, she would
    # still hold V2 at the end.
    stopped = run(
        programme(**SHORT), REFUNDED, runs=ReviewRuns(days("2025-03-01", 1) + days("2025-09-15", 1))
    )
    assert stopped.tiers == {"V2": 1} and not stopped.downgrades


def test_a_grant_ends_on_the_first_run_after_its_end() -> None:
    h = member(orders=ORDERS, grants=[granted("V5", "2025-04-01", "2025-10-01")])
    # No run from 1 October to the end: the grant is still a floor then.
    runs = ReviewRuns(days("2025-03-01", 214))  # up to 30 September
    assert run(programme(**SHORT), h, runs=runs).tiers == {"V5": 1}
    assert run(programme(**SHORT), h).tiers == {"V1": 1}


def test_the_runs_that_count_and_when_the_job_next_works() -> None:
    started = datetime(2025, 6, 1, tzinfo=clock.UTC)
    runs = review_runs(
        [
            (date(2025, 5, 1), started),
            (date(2025, 5, 20), started + timedelta(days=1)),
            (date(2025, 5, 10), started + timedelta(days=2)),  # after 20 May's: found nothing
            (date(2025, 5, 30), started + timedelta(days=3)),
        ]
    )
    assert runs.days == (date(2025, 5, 1), date(2025, 5, 20), date(2025, 5, 30))
    # Every day before the ledger's first; the recorded days from it on; none after.
    assert runs.next_run(local("2025-04-10") + timedelta(hours=1), TZ) == local("2025-04-11")
    assert runs.next_run(local("2025-05-01"), TZ) == local("2025-05-01")
    assert runs.next_run(local("2025-05-02"), TZ) == local("2025-05-20")
    assert runs.next_run(local("2025-05-31"), TZ) is None
    assert ReviewRuns().next_run(local("2030-01-01"), TZ) == local("2030-01-01")


def test_a_grant_made_as_a_review_day_begins_is_a_floor_in_that_review() -> None:
    # V3 on 2 March 2025 (2,100 growth), reviewed every 90 days: kept on 31 May on that
    # order, nothing in the window of 29 August; a grant of V3, her own level, from the
    # instant 29 August begins keeps her there.
    v3 = [order(1, JOINED + timedelta(days=1), 190_000)]
    at_the_instant = member(orders=v3, grants=[granted("V3", "2025-08-29", "2027-01-01")])
    t = run(programme(**SHORT), at_the_instant)
    assert t.tiers == {"V3": 1} and not t.downgrades
    a_moment_before = GrantFact(
        1, "V3", local("2025-08-29") - timedelta(seconds=1), local("2027-01-01")
    )
    assert run(programme(**SHORT), member(orders=v3, grants=[a_moment_before])) == t
    # Another grant ending at that instant: the job ends it first, with the new grant as
    # the floor (no fall to V2), then reviews her under the new grant.
    both = member(
        orders=v3,
        grants=[
            granted("V3", "2025-04-01", "2025-08-29"),
            GrantFact(2, "V3", local("2025-08-29"), local("2027-01-01")),
        ],
    )
    assert run(programme(**SHORT), both) == t
