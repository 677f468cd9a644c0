"""The what-if simulator on a real database: the programme in force, replayed, reproduces
what the live engine did; a draft moves the figures the way it should; nothing changes."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from simulator_brand import FIRST_DAY, build, example_programme, local
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError

from siyu.benefits.models import BenefitPack
from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.text import Text
from siyu.insight.simulator import in_sample, read_only, simulate
from siyu.jobs.models import JobRun
from siyu.members.models import Member
from siyu.points.models import PointsEntry, PointsLot
from siyu.programme import service as programmes
from siyu.schema import metadata
from siyu.tiers import service as tiers
from siyu.tiers.models import GrowthEntry, TierHistory

Apply = Callable[..., None]


def document(**review: Any) -> dict[str, Any]:
    """The example programme with a member day inside the history (campaign multipliers),
    and reviews every 120 days so that levels are kept and lost within the history."""
    doc = example_programme()
    doc["tiers"]["review"] = review or {"window": "days_since_change", "days": 120}
    doc["points"]["campaigns"].append(
        {
            "code": "member_day_2026_03",
            "name": "三月会员日",
            "multiplier": 2,
            "starts_at": "2026-03-08T00:00:00+08:00",
            "ends_at": "2026-03-10T00:00:00+08:00",
        }
    )
    return doc


@pytest.fixture
def brand(clean_db: Database, fixed_clock: clock.FixedClock, apply_programme: Apply) -> Database:
    apply_programme(document())
    build(clean_db, fixed_clock, people=14)
    return clean_db


def live_figures(db: Database) -> dict[str, Any]:
    """What the live engine recorded, read from its ledgers and tier history."""
    with db.unit_of_work() as s:
        tiers = Counter(
            dict(s.execute(select(Member.tier_code, func.count()).group_by(Member.tier_code)).all())
        )
        moves = s.execute(
            select(
                TierHistory.reason, TierHistory.from_code, TierHistory.to_code, func.count()
            ).group_by(TierHistory.reason, TierHistory.from_code, TierHistory.to_code)
        ).all()
        lots = dict(
            s.execute(
                select(PointsLot.source, func.sum(PointsLot.points)).group_by(PointsLot.source)
            ).all()
        )
        sums = s.execute(
            select(
                PointsEntry.kind, func.sum(PointsEntry.points), func.sum(PointsEntry.debt)
            ).group_by(PointsEntry.kind)
        ).all()
        entries = {kind: int(points) for kind, points, _ in sums}
        debts = {kind: int(debt) for kind, _, debt in sums}
        growth = s.scalar(select(func.sum(GrowthEntry.growth)))
    upgrades: Counter[str] = Counter()
    downgrades: Counter[str] = Counter()
    for reason, from_code, to_code, n in moves:
        if reason == "upgrade":
            upgrades[to_code] += n
        elif reason == "review":
            downgrades[from_code] += n
    return {
        "tiers": {k: v for k, v in tiers.items()},
        "upgrades": dict(upgrades),
        "downgrades": dict(downgrades),
        "points_orders": int(lots.get("order", 0)),
        "points_signup": int(lots.get("signup", 0)),
        # A reversal beyond the lots is owed (a debt) rather than taken.
        "points_reversed": -entries.get("reverse", 0) + debts.get("reverse", 0),
        "points_debt": sum(debts.values()),
        "points_expired": -int(entries.get("expire", 0)),
        "points_outstanding": int(sum(entries.values())),
        "growth": int(growth or 0),
    }


# Grants an operator makes during the history (the n-th member by id, level, days, the day
# it is revoked): one ends by itself on a local midnight, one in the afternoon, one is
# revoked early, one is still running at the end; some lift the member, some only floor.
GRANTS = {
    date(2025, 12, 1): (0, "V5", 105, None),
    date(2026, 2, 10): (1, "V4", 300, date(2026, 5, 20)),
    date(2026, 4, 1): (2, "V2", 200.6, None),
    date(2026, 9, 1): (3, "V6", 180, None),
}


def make_grants(db: Database) -> Callable[[date, dict[str, int]], None]:
    granted: dict[date, int] = {}

    def on_day(day: date, ids: dict[str, int]) -> None:
        with db.unit_of_work() as s:
            for made, grant_id in granted.items():
                revoke_on = GRANTS[made][3]
                if revoke_on == day:
                    tiers.revoke_grant(s, grant_id, reason="left the store", principal=SYSTEM)
            if day in GRANTS:
                n, code, days, _ = GRANTS[day]
                member_id = sorted(ids.values())[n]
                grant = tiers.grant_tier(
                    s,
                    member_id,
                    code,
                    ends_at=local(day, 0) + timedelta(days=days),
                    reason="store event",
                    principal=SYSTEM,
                )
                granted[day] = grant.id

    return on_day


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


@pytest.mark.parametrize(
    "review",
    [{"window": "days_since_change", "days": 120}, {"window": "rolling_12_months"}],
    ids=["120_days", "rolling_12_months"],
)
def test_the_programme_in_force_replayed_reproduces_the_live_engine(
    clean_db: Database, fixed_clock: clock.FixedClock, apply_programme: Apply, review: Any
) -> None:
    apply_programme(document(**review))
    build(clean_db, fixed_clock, on_day=make_grants(clean_db))
    brand = clean_db
    live = live_figures(brand)
    with brand.unit_of_work() as s:
        by_grant = Counter(
            s.scalars(
                select(TierHistory.reason).where(TierHistory.reason.in_(("grant", "grant_end")))
            )
        )
    # Grants lifted members; with short periods one ends below the level it held.
    assert by_grant["grant"] >= 2
    assert by_grant["grant_end"] >= (1 if review.get("days") else 0)
    # The brand is worth simulating: members on several levels, upgrades and reviews that
    # took levels away, refunds and a year-end clearing.
    assert len(live["tiers"]) >= 3
    assert sum(live["downgrades"].values()) >= (2 if review.get("days") else 0)
    assert live["points_reversed"] > 0 and live["points_expired"] > 0

    result = simulate(brand, programmes.parse(document(**review)), end=fixed_clock.now())

    base = result.baseline
    assert nonzero(base.tiers) == live["tiers"]
    assert nonzero(base.upgrades) == live["upgrades"]
    assert nonzero(base.downgrades) == live["downgrades"]
    assert base.growth_issued == live["growth"]
    assert base.points_orders == live["points_orders"]
    assert base.points_signup == live["points_signup"]
    assert base.points_reversed == live["points_reversed"]
    assert base.points_expired == live["points_expired"]
    assert base.points_outstanding == live["points_outstanding"]
    assert base.points_debt == live["points_debt"]
    assert base.liability_fen == live["points_outstanding"]  # 100 points = 1 yuan
    assert result.members == sum(live["tiers"].values())
    # The same document as the draft: the same figures, every delta zero.
    assert result.draft == result.baseline
    assert all(row.delta in (0, None) for row in result.rows())
    assert result.estimate is False and result.baseline_version_id > 0


# The server was down from October 2025 to mid-February 2026 (longer than a 120-day
# period), and otherwise the review job ran on Mondays only.
OUTAGE = (date(2025, 10, 1), date(2026, 2, 15))


def mondays_after_an_outage(day: date) -> bool:
    return day == FIRST_DAY or (day.weekday() == 0 and not OUTAGE[0] <= day < OUTAGE[1])


@pytest.mark.parametrize("days", [120, 30])
def test_the_replay_catches_up_missed_review_days_as_the_live_job_does(
    clean_db: Database, fixed_clock: clock.FixedClock, apply_programme: Apply, days: int
) -> None:
    review = {"window": "days_since_change", "days": days}
    apply_programme(document(**review))
    build(clean_db, fixed_clock, on_day=make_grants(clean_db), review_days=mondays_after_an_outage)
    live = live_figures(clean_db)
    with clean_db.unit_of_work() as s:
        ran = set(s.scalars(select(JobRun.run_date).where(JobRun.name == "tiers.review")))
        reviewed_on = [
            clock.local_date(clock.as_utc(at), "Asia/Shanghai")
            for at in s.scalars(select(TierHistory.at).where(TierHistory.reason == "review"))
        ]
        grant_ends = list(
            s.scalars(select(TierHistory.at).where(TierHistory.reason == "grant_end"))
        )
    # The job skipped days; grants ended, and members were lowered on review days it did
    # not run on (a late run dates the drop on the review day), some from a period the
    # outage skipped.
    assert len(ran) < 120 and all(mondays_after_an_outage(d) for d in ran)
    late = [d for d in reviewed_on if d not in ran]
    assert grant_ends and late and any(OUTAGE[0] <= d < OUTAGE[1] for d in late)

    result = simulate(clean_db, programmes.parse(document(**review)), end=fixed_clock.now())

    base = result.baseline
    assert nonzero(base.tiers) == live["tiers"]
    assert nonzero(base.upgrades) == live["upgrades"]
    assert nonzero(base.downgrades) == live["downgrades"]
    assert base.points_orders == live["points_orders"]  # multiplied by the level then held
    assert base.points_outstanding == live["points_outstanding"]
    assert result.draft == result.baseline


def _snapshot(db: Database) -> dict[str, str]:
    """A hash of every row of every table."""
    out = {}
    with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return out


def test_a_draft_moves_the_figures_and_changes_nothing_stored(
    brand: Database, fixed_clock: clock.FixedClock
) -> None:
    before = _snapshot(brand)
    draft = document()
    for level in draft["tiers"]["levels"][1:]:
        level["threshold"] *= 3
        level["retention"] *= 3
    draft["points"]["earn"]["per_yuan"] = "0.5"
    draft["points"]["expiry"] = {"policy": "never"}
    draft["growth"]["signup_bonus"] = 0

    result = simulate(brand, programmes.parse(draft))

    assert _snapshot(brand) == before
    base, new = result.baseline, result.draft
    top = ["V4", "V5", "V6"]
    assert sum(new.tiers[c] for c in top) < sum(base.tiers[c] for c in top)
    assert new.tiers["V1"] > base.tiers["V1"]
    assert sum(new.upgrades.values()) < sum(base.upgrades.values())
    assert new.points_orders < base.points_orders
    assert new.growth_issued == base.growth_issued - 100 * result.members
    assert new.points_expired == 0 and new.points_expiring_12m == 0
    assert new.points_outstanding > 0 and new.liability_fen == new.points_outstanding
    rows = {(r.section, r.metric): r for r in result.rows()}
    orders_row = rows[("points", "points_orders")]
    assert orders_row.delta == new.points_orders - base.points_orders < 0


def test_a_sample_replays_the_hashed_members_scales_and_reports_progress(
    brand: Database, fixed_clock: clock.FixedClock
) -> None:
    with brand.unit_of_work() as s:
        ids = list(s.scalars(select(Member.id)))
    picked = [i for i in ids if in_sample(i, 0.5)]
    assert 0 < len(picked) < len(ids)
    seen: list[tuple[int, int]] = []

    result = simulate(
        brand,
        programmes.parse(document()),
        sample=0.5,
        chunk=3,
        progress=lambda d, n: seen.append((d, n)),
    )

    assert result.estimate is True and result.sample == 0.5
    assert result.members == len(picked) * 2
    assert sum(result.baseline.tiers.values()) == len(picked) * 2
    # The notes are in Chinese and English, numbers alike in both.
    assert result.notes[0] == Text(
        "估算：抽样回放了 50.00% 的会员，各项数字放大 2 倍",
        "estimate: 50.00% of members replayed, figures scaled by 2",
    )
    # Progress counts replayed members, chunk by chunk, up to all of them.
    assert seen[0] == (0, len(picked)) and seen[-1] == (len(picked), len(picked))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 2


def test_grants_no_ladder_replays_are_noted_once_and_scaled_like_the_figures(
    clean_db: Database, fixed_clock: clock.FixedClock, apply_programme: Apply
) -> None:
    # A V7 the brand had, granted to every member; then a document without it.
    with_v7 = document()
    top = dict(with_v7["tiers"]["levels"][-1])
    with_v7["tiers"]["levels"].append(top | {"code": "V7", "name": "至尊妈妈", "threshold": 40_000})
    apply_programme(with_v7)
    build(clean_db, fixed_clock, people=14)
    end = fixed_clock.now()
    fixed_clock.set(end - timedelta(days=10))
    with clean_db.unit_of_work() as s:
        ids = list(s.scalars(select(Member.id)))
        for member_id in ids:
            tiers.grant_tier(
                s,
                member_id,
                "V7",
                ends_at=end + timedelta(days=30),
                reason="store event",
                principal=SYSTEM,
            )
    apply_programme(document(), effective_from=end - timedelta(days=5))
    fixed_clock.set(end)
    picked = [i for i in ids if in_sample(i, 0.5)]
    assert 0 < len(picked) < len(ids)

    full = simulate(clean_db, programmes.parse(document()))
    sampled = simulate(clean_db, programmes.parse(document()), sample=0.5)
    restored = simulate(clean_db, programmes.parse(with_v7))

    # Each grant once (not once per column), counted for the brand like every figure, in
    # Chinese and English.
    assert (
        Text(
            f"{len(ids)} 条等级授予的等级在现行方案和草稿的等级中都没有，未回放",
            f"{len(ids)} tier grants of a level neither ladder has are not replayed",
        )
        in full.notes
    )
    assert (
        Text(
            f"约 {len(picked) * 2} 条等级授予的等级在现行方案和草稿的等级中都没有，未回放"
            f"（样本中 {len(picked)} 条）",
            f"about {len(picked) * 2} tier grants of a level neither ladder has are not "
            f"replayed ({len(picked)} in the sample)",
        )
        in sampled.notes
    )
    assert sampled.members == len(picked) * 2
    # A draft that has the level replays them: every member on V7 in the draft column.
    assert (
        Text(
            f"{len(ids)} 条等级授予的等级在现行方案的等级中没有，现行方案一栏未回放；"
            f"其中草稿等级里有的（{len(ids)} 条）已在草稿一栏回放",
            f"{len(ids)} tier grants of a level the ladder in force lacks are not replayed in "
            f"the column in force; {len(ids)} of them are of a level the draft has and are "
            "replayed in the draft",
        )
        in restored.notes
    )
    assert restored.draft.tiers["V7"] == len(ids) and "V7" not in restored.baseline.tiers


def test_flows_count_from_the_start_of_the_period_and_eligibility_follows_the_gate(
    brand: Database, fixed_clock: clock.FixedClock
) -> None:
    whole = simulate(brand, programmes.parse(document()))
    start = fixed_clock.now() - timedelta(days=180)
    gated = document()
    gated["paid"]["plans"][0]["eligibility"] = {"min_tier": "V3"}

    recent = simulate(brand, programmes.parse(gated), start=start)

    # State at the end is the same; what was issued in the last 180 days is a part.
    assert recent.baseline.tiers == whole.baseline.tiers
    assert recent.baseline.points_outstanding == whole.baseline.points_outstanding
    assert 0 < recent.baseline.points_orders < whole.baseline.points_orders
    assert recent.start == start
    # Paid eligibility: everyone under the open plan, V3 and above under the gated one.
    assert recent.baseline.paid_eligible == {"super": recent.members}
    at_least_v3 = sum(recent.draft.tiers.get(c, 0) for c in ("V3", "V4", "V5", "V6"))
    assert recent.draft.paid_eligible == {"super": at_least_v3} and at_least_v3 > 0


def test_benefit_cost_prices_the_packs_the_ladder_lists(
    clean_db: Database, fixed_clock: clock.FixedClock, apply_programme: Apply
) -> None:
    from siyu.demo.benefits import create_benefits

    apply_programme(document())
    with clean_db.unit_of_work() as s:
        create_benefits(s)
    build(clean_db, fixed_clock, seed=11, people=12)
    draft = document()
    for level in draft["tiers"]["levels"]:
        level["benefits"]["benefit_packs"] = []  # the draft lists no packs on any level

    result = simulate(clean_db, programmes.parse(draft), usage_rate=Decimal("0.5"))

    base = result.baseline
    welcome = [c for c in base.benefit_packs if c.pack == "welcome"]
    # The join pack goes to every new member (no level lists it): 20 yuan off, half used.
    assert sum(c.packs for c in welcome) == result.members
    assert sum(c.cost_fen for c in welcome) == result.members * 2_000 // 2
    birthday = [c for c in base.benefit_packs if c.pack == "birthday_gift"]
    assert birthday and all(c.tier != "V1" for c in birthday)
    assert base.benefit_cost_fen == sum(c.cost_fen for c in base.benefit_packs)
    # The draft keeps only the join pack.
    assert {c.pack for c in result.draft.benefit_packs} == {"welcome"}
    assert result.draft.benefit_cost_fen < base.benefit_cost_fen
    values = {v.template: v for v in result.coupon_values}
    assert values["welcome_20"].face_fen == 2_000 and values["welcome_20"].rate_from == "given"
    # A gift has no money value: priced 0, and a note says so in Chinese and English. The
    # usage rate was given, so none is assumed.
    assert result.notes == [
        Text(
            "权益包 vip_service：优惠券“vip_gift”（赠品券）没有金额面值（按 0 计价）",
            "pack vip_service: coupon 'vip_gift' (gift) has no face value in money (priced 0)",
        )
    ]
    with clean_db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(BenefitPack)) == 4


def test_the_connection_is_read_only(clean_db: Database, programme_in_force: None) -> None:
    with read_only(clean_db) as conn, pytest.raises(DBAPIError):
        conn.execute(insert(BenefitPack.__table__).values(code="x"))
    with clean_db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(BenefitPack)) == 0
        assert s.execute(text("SELECT 1")).scalar() == 1  # the database is still writable


def test_bad_options_and_no_programme_are_clear_errors(
    clean_db: Database, fixed_clock: clock.FixedClock
) -> None:
    draft = programmes.parse(document())
    with pytest.raises(NotFound, match="no programme is in force"):
        simulate(clean_db, draft)
    for options, field in (
        ({"sample": 0.0}, "sample"),
        ({"sample": 1.5}, "sample"),
        ({"start": fixed_clock.now(), "end": fixed_clock.now() - timedelta(days=1)}, "from"),
        ({"usage_rate": Decimal("1.2")}, "usage_rate"),
    ):
        with pytest.raises(InvalidInput) as caught:
            simulate(clean_db, draft, **options)
        assert caught.value.details[0]["field"] == field
