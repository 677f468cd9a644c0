"""The what-if simulator (方案模拟): the brand's history replayed under a draft programme.

Before an operator publishes a new programme document, they want to know what it would
have done: how many members would sit on each level, who would have moved up or down,
how many points would have been issued, how many would expire and what the outstanding
points are worth, what the tier benefit packs would cost and who would qualify for each
paid plan. ``simulate`` answers that side by side with the programme in force.

How it stays honest
-------------------
- **The live engine's rules.** Every decision is taken by the pure functions the live
  engine calls: ``tiers.rules`` (growth of a line, ``refund_growth``, ``join_level``,
  ``climb`` for immediate upgrades, ``upgrade_to`` after a bonus or an adjustment,
  ``first_order_bonus`` and ``bonus_growth`` with its per-member limit, ``review_decision``
  for 保级 under a grant's ``floor``, ``granted_level`` and ``grant_end_level`` for
  grants, ``period_after`` for the review day a change opens, windows), ``points.rules``
  (``earn_lines`` with tier, item and campaign multipliers, ``expires_at``, ``allocate``
  oldest first, ``reversal``, ``take_back``, ``shortfall`` and ``settle``),
  ``benefits.rules`` (``gets_pack``, ``gets_upgrade_pack``, ``upgrade_period``) and
  ``paid.rules`` (``eligibility_refusal``). The replay only orders the facts in time, as
  the handlers and the daily jobs do.
- **Like for like.** The baseline is the programme in force at ``end``, replayed over the
  same history by the same code path; so the difference between the two columns is the
  document, not the code. (Where the brand changed its programme during the history, the
  baseline therefore differs from what the live ledger holds: it answers "what does the
  current document do", the question the draft is compared with.)
- **Read only.** History is read through a read-only connection (SQLite opened with
  ``mode=ro``, PostgreSQL in a ``READ ONLY`` repeatable-read transaction); nothing is
  written, and one snapshot is read from the first chunk to the last.
- **Small state.** Members are streamed in chunks ordered by id, each chunk's orders by
  ``(member, paid_at)`` through the ``(member_id, paid_at)`` index; only one member's
  lots and the movements of their review window are held at a time.

What is replayed, and what is carried
-------------------------------------
Facts are history; the document decides what they earn. Recomputed under each document:
the signup growth and points, growth, spend and order counts of orders and refunds, the
first-order bonus, growth bonus events (re-priced from the document's ``bonus_events``,
with their per-member limit), immediate upgrades, reviews on each member's review day,
points of orders, their reversal on refunds, the expiry of every lot. Carried as
recorded: points from other sources (check-ins, events, packs, grants, adjustments) and
manual growth adjustments, as amounts (their expiry follows the document); points spent,
replayed at the time they were spent, oldest-expiring lot first, and capped at what the
member would have held (the shortfall is reported).

Manual tier grants (授予) are replayed as the live engine applies them: made at their
``starts_at`` (the level at once when above the one replayed), a floor for every review
while they last (a grant made at the very instant a review day begins included: it is in
place before the job works that day), and ended by the daily job at the start of its first
day at or after ``ends_at`` (or at their revocation, when revoked before), where the member
returns to the level held before the grant as a review would judge it, or what their
value earns, or another grant's floor. A grant is of a level of the programme in force;
under a draft whose ladder lacks that code it stands for the highest draft level not
above it (``grant_level``: by threshold on the same basis, by position otherwise), and a
code neither ladder has is not replayed (noted, counted for the brand like the figures).

The review job's days
---------------------
Reviews and grant ends happen when the tier review job runs, read from its ledger
(``job_runs``; ``ReviewRuns``). On a day it did not run nothing is reviewed: the member
keeps the level (orders climb from it, points multiply by it) until the next run, which
ends the grants due by its day and then reviews each member due once, on the latest
period that has ended, dated on that period's review day, with the grants still open at
that day as floors, and sets the next review after the run's day, as
``tiers.service.review_due`` does. A brand whose job ran every day is reviewed on each
member's review day. Before the ledger's first day the job is taken to have run daily.

Period
------
The whole history up to ``end`` is replayed (tiers depend on it); flows (growth and
points issued, movements, packs) count what happened in ``[start, end)``, and the state
figures (tiers, outstanding points, eligibility) are those at ``end``.

Sampling
--------
``sample=0.1`` replays the members whose id hashes into the first tenth of 10,000
buckets (the same members every run, in SQL, so no id list is loaded); every count is
scaled by 1 / sample and the result is flagged as an estimate. A count in a note (the tier
grants not replayed) is scaled the same way, with the sample's own count beside it.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, and_, case, create_engine, event, func, literal, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from siyu.benefits import rules as benefit_rules
from siyu.benefits.models import BenefitPack, Coupon, CouponTemplate
from siyu.core import clock
from siyu.core.db import IN_CHUNK, Database
from siyu.core.errors import InvalidInput, Problem, invalid
from siyu.core.text import Text
from siyu.jobs.models import JobRun
from siyu.members.models import Member
from siyu.members.rules import MemberStatus
from siyu.orders.models import Order, OrderLine, Refund, RefundLine
from siyu.paid import rules as paid_rules
from siyu.points import rules as points_rules
from siyu.points.models import PointsEntry, PointsLot
from siyu.programme import service as programmes
from siyu.programme.rules import CashOff, Programme
from siyu.tiers import rules as tier_rules
from siyu.tiers.models import GrowthEntry, TierGrant
from siyu.tiers.rules import Change, CountedOrder, Movement

CHUNK = 2_000  # members per read
BUCKETS = 10_000  # sample granularity: 0.01%
HASH = 2_654_435_761  # Knuth's multiplicative hash; id * HASH stays within 64 bits
EXPIRY_HORIZON_MONTHS = 12  # "expected expiry": what expires within this after ``end``
MIN_COUPONS_FOR_RATE = 20  # coupons of a template before its own usage rate is trusted
NO_TIER = "none"
GRANT = 0  # grants first among the facts of one instant (see ``_Replay.run``)
REVIEW_JOB = "tiers.review"

Progress = Callable[[int, int], None]  # (members done, members in all)


# --- the facts of one member, as read --------------------------------------------------------


@dataclass(frozen=True)
class OrderFact:
    order_id: int
    paid_at: datetime
    lines: tuple[points_rules.Line, ...]


@dataclass(frozen=True)
class RefundFact:
    refund_id: int
    order_id: int
    at: datetime
    lines: tuple[tuple[int, int], ...]  # (line_no, amount refunded by this refund)


@dataclass(frozen=True)
class GrowthFact:
    """A growth bonus event (re-priced from the document) or a manual adjustment
    (``event`` None: carried as recorded)."""

    at: datetime
    event: str | None
    growth: int = 0
    spend_fen: int = 0
    orders: int = 0


@dataclass(frozen=True)
class GrantFact:
    """A manual tier grant (授予): a floor from ``starts_at`` until ``ends_at``, or until
    ``revoked_at`` when it was revoked before the end (as of the replay's end)."""

    grant_id: int
    code: str
    starts_at: datetime
    ends_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class ReviewRuns:
    """The brand-local days the daily tier review job (``tiers.review``) did its work for,
    as its ledger (``job_runs``, finished runs) records them.

    The job works on the day it runs for, at that day's start: it ends the grants due by
    then and reviews the members whose review day has come, each once, on the latest
    period that has ended (``tiers.service.review_due``). A day it did not run for is done
    by the next run. Before the first recorded day the job is taken to have run every day
    (a ledger that is empty, or history from before the ledger began); from that day on
    only the recorded days count, and after the last one the job has not run yet."""

    days: tuple[date, ...] = ()  # ascending

    def next_run(self, at: datetime, tz: str) -> datetime | None:
        """When the job next does its work at or after ``at`` (the start of the brand-local
        day of that run); None when no recorded run is left."""
        day = clock.local_date(at, tz)
        if tier_rules.day_start(day, tz) < at:
            day += timedelta(days=1)
        if not self.days or day < self.days[0]:
            return tier_rules.day_start(day, tz)
        i = bisect_left(self.days, day)
        return tier_rules.day_start(self.days[i], tz) if i < len(self.days) else None


def review_runs(runs: Iterable[tuple[date, datetime]]) -> ReviewRuns:
    """The days of finished review runs ``(run day, started at)`` that did work: a run for a
    day earlier than one already run finds nothing due (every member due by then was
    moved past the later day), so only runs later than every run before them count."""
    days: list[date] = []
    for day, _ in sorted(runs, key=lambda r: (clock.as_utc(r[1]), r[0])):
        if not days or day > days[-1]:
            days.append(day)
    return ReviewRuns(tuple(days))


@dataclass(frozen=True)
class MemberHistory:
    member_id: int
    joined_at: datetime
    birthday: date | None
    active: bool
    orders: list[OrderFact] = field(default_factory=list)
    refunds: list[RefundFact] = field(default_factory=list)
    growth: list[GrowthFact] = field(default_factory=list)
    lots: list[tuple[datetime, int]] = field(default_factory=list)  # carried points
    spends: list[tuple[datetime, int]] = field(default_factory=list)
    grants: list[GrantFact] = field(default_factory=list)


# --- what one column adds up -------------------------------------------------------------------


@dataclass
class Tally:
    """The figures of one programme over the replayed members (raw, before scaling)."""

    members: int = 0
    tiers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    upgrades: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by level reached
    downgrades: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by level left
    growth_issued: int = 0
    points_orders: int = 0
    points_signup: int = 0
    points_carried: int = 0
    points_reversed: int = 0
    points_spent: int = 0
    spend_shortfall: int = 0
    points_expired: int = 0
    points_expiring: int = 0
    points_outstanding: int = 0
    points_debt: int = 0
    packs: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    paid_eligible: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    grants_skipped: int = 0  # grants of a level neither ladder has (not replayed)


@dataclass
class _Lot:
    id: int
    remaining: int
    expires_at: datetime | None


@dataclass
class _Grant:
    """A grant being replayed: its level on this programme's ladder, the level held when
    it was made (where its end returns to), and when it is closed: revoked, or ended by
    the daily job (None: not by the last recorded run)."""

    id: int
    code: str
    held_code: str | None
    starts_at: datetime
    ends_at: datetime
    closes_at: datetime | None


@dataclass
class _OrderLot:
    lot: _Lot | None
    earned: dict[int, points_rules.LineEarning]


class _Replay:
    """One member under one programme: the handlers' and jobs' steps in time order."""

    def __init__(
        self,
        programme: Programme,
        history: MemberHistory,
        start: datetime | None,
        end: datetime,
        reference: Programme | None = None,
        runs: ReviewRuns | None = None,
    ):
        self.p = programme
        self.reference = reference or programme  # the ladder grants were made on
        self.runs = runs or ReviewRuns()  # the days the review job did its work
        self.grants: list[_Grant] = []  # started, not yet ended
        self.h = history
        self.start = start
        self.end = end
        self.held: str | None = None
        self.review_on: date | None = None
        self._run_for: tuple[date, datetime | None] | None = None  # (review_on, its run)
        self.movements: list[Movement] = []
        self.growth_total = 0
        self.holdings: list[tuple[datetime, str]] = []
        self.changes: list[Change] = []
        self.lots: list[_Lot] = []
        self.order_lots: dict[int, _OrderLot] = {}
        self.line_amounts: dict[int, dict[int, int]] = {}
        self.refunded: dict[tuple[int, int], int] = defaultdict(int)
        self.bonus_counts: dict[str, int] = defaultdict(int)
        self.hole = 0  # points below a zero balance (``allow_negative``)
        self.debt = 0  # points owed (``debt``)
        self.join_tier: str | None = None
        self.next_expiry: datetime | None = None  # the earliest expiry of a lot with points

    def counts(self, at: datetime) -> bool:
        return (self.start is None or at >= self.start) and at <= self.end

    # tiers ------------------------------------------------------------------------------

    def _change(
        self, change: Change, tz: str, t: Tally, *, applied_at: datetime | None = None
    ) -> None:
        """A tier change dated ``change.at``, held from ``applied_at`` (default: then): a
        late review is dated on the review day but lowers the member when the job runs."""
        self.held = change.to_code
        # In processing order: an order paid before joining is counted after the join, as
        # the live engine enrols first and ingests later.
        since = applied_at or change.at
        since = max(since, self.holdings[-1][0]) if self.holdings else since
        self.holdings.append((since, change.to_code))
        self.changes.append(change)
        _, self.review_on = tier_rules.period_after(
            self.p, change.at, change.from_code, change.to_code, tz
        )
        if self.counts(change.at):
            if change.reason in ("upgrade", "adjust"):
                t.upgrades[change.to_code] += 1
            elif change.reason == "review" and change.from_code is not None:
                t.downgrades[change.from_code] += 1

    def _due_run(self, tz: str) -> datetime | None:
        """When the review job reviews the member: its first run on or after their review
        day (that day itself when the job runs daily)."""
        if self.review_on is None:
            return None
        if self._run_for is None or self._run_for[0] != self.review_on:
            due = self.runs.next_run(tier_rules.day_start(self.review_on, tz), tz)
            self._run_for = (self.review_on, due)
        return self._run_for[1]

    def _reviews(self, until: datetime, tz: str, t: Tally, *, before: bool = False) -> None:
        """The review job's work due by ``until`` (strictly before it with ``before``), in
        time order, as ``tiers.jobs.review`` does it on each day it runs: the grants that
        ended first, then the member's review (保级) if their review day has come.

        A run after missed days reviews once, on the latest period that has ended by the
        run's day (its window, and the grants active at its end that the run has not
        closed), and moves the next review past that day (``tiers.service.review_due``)."""
        review = self.p.tiers.review

        def reached(at: datetime) -> bool:
            return at < until if before else at <= until

        while self.held is not None:
            closing = min((g.closes_at for g in self.grants if g.closes_at), default=None)
            due = self._due_run(tz)
            if closing is not None and reached(closing) and (due is None or closing <= due):
                self._end_grants([g for g in self.grants if g.closes_at == closing], closing, tz, t)
                continue
            if due is None or not reached(due):
                return
            assert self.review_on is not None
            day = clock.local_date(due, tz)
            on = tier_rules.latest_review_on(review, self.review_on, day)
            start, end = tier_rules.review_window(review, on, tz)
            value = tier_rules.measure(
                self.p.tiers.basis, (m for m in self.movements if start <= m.at < end)
            )
            floor, _ = tier_rules.floor(self.p, self._floors(end))
            decided = tier_rules.review_decision(self.p, self.held, value, floor=floor)
            if decided == self.held:
                self.review_on = tier_rules.review_after(
                    review, tier_rules.next_review_on(review, on), day
                )
            else:
                self._change(Change(end, self.held, decided, "review"), tz, t, applied_at=due)
                assert self.review_on is not None
                self.review_on = tier_rules.review_after(review, self.review_on, day)

    def _upgrade_at(self, at: datetime, reason: str, tz: str, t: Tally) -> None:
        """An upgrade after a movement that is not an order (a bonus, an adjustment): the
        decision of ``tiers.service._upgrade_one``, on the window ending at ``at``."""
        target = tier_rules.upgrade_to(self.p, self.held, self._value_at(at, tz))
        if target is not None:
            self._change(Change(at, self.held, target, reason), tz, t)

    def _value_at(self, at: datetime, tz: str) -> int:
        """The value of the window that ends at ``at`` (inclusive), as the services read it."""
        start = tier_rules.window_start(self.p.tiers.review, at, tz)
        return tier_rules.measure(
            self.p.tiers.basis, (m for m in self.movements if start <= m.at <= at)
        )

    # grants ------------------------------------------------------------------------------

    def _floors(self, at: datetime) -> list[tuple[str, datetime]]:
        """The grants active at ``at`` (started by then, not closed, ``ends_at`` after it),
        as ``tiers.service._floors`` reads them."""
        return [(g.code, g.ends_at) for g in self.grants if g.starts_at <= at < g.ends_at]

    def grant(self, g: GrantFact, tz: str, t: Tally) -> None:
        """A grant made: a floor from now on, and the level at once when it is above the
        one held (``tiers.service.grant_tier``)."""
        code = grant_level(self.p, self.reference, g.code)
        if code is None:
            t.grants_skipped += 1
            return
        closes_at = self.runs.next_run(g.ends_at, tz)  # ``end_grants_due`` on that day
        if g.revoked_at is not None and (closes_at is None or g.revoked_at < closes_at):
            closes_at = g.revoked_at  # revoked before the daily job ended it
        self.grants.append(_Grant(g.grant_id, code, self.held, g.starts_at, g.ends_at, closes_at))
        to = tier_rules.granted_level(self.p, self.held, code)
        if to is not None:
            self._change(Change(g.starts_at, self.held, to, "grant"), tz, t)

    def _end_grants(self, ending: list[_Grant], at: datetime, tz: str, t: Tally) -> None:
        """Grants ended (by the daily job, or revoked): the member settles as
        ``tiers.service._end_grants`` settles them."""
        self.grants = [g for g in self.grants if g not in ending]
        floor, _ = tier_rules.floor(self.p, self._floors(at))
        decided = tier_rules.grant_end_level(
            self.p,
            self.held,
            self._value_at(at, tz),
            [(g.code, g.held_code) for g in ending],
            floor,
        )
        if decided is not None:
            self._change(Change(at, self.held, decided, "grant_end"), tz, t)

    def _prune(self, at: datetime, tz: str) -> None:
        """Forget movements no window can reach any more (a review looks back at most two
        calendar years, or N days)."""
        if len(self.movements) < 64:
            return
        review = self.p.tiers.review
        days = (review.days or 0) + 2 if review.window == "days_since_change" else 800
        horizon = at - timedelta(days=days)
        if self.review_on is not None:  # a review the job has not done yet looks further back
            pending, _ = tier_rules.review_window(review, self.review_on, tz)
            horizon = min(horizon, pending)
        self.movements = [m for m in self.movements if m.at >= horizon]

    # points -----------------------------------------------------------------------------

    def _expire(self, until: datetime, t: Tally) -> None:
        if self.next_expiry is None or self.next_expiry > until:
            return
        self.next_expiry = None
        for lot in self.lots:
            if lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= until:
                if self.counts(lot.expires_at):
                    t.points_expired += lot.remaining
                lot.remaining = 0
            elif lot.remaining > 0 and lot.expires_at is not None:
                self.next_expiry = min(self.next_expiry or lot.expires_at, lot.expires_at)

    def _add_lot(self, points: int, at: datetime, tz: str) -> _Lot:
        s = points_rules.settle(points, balance=-self.hole, debt=self.debt)
        self.hole -= s.hole
        self.debt -= s.debt
        lot = _Lot(
            len(self.lots) + 1,
            points - s.kept,
            points_rules.expires_at(self.p.points.expiry, at, tz),
        )
        self.lots.append(lot)
        if lot.expires_at is not None and lot.remaining > 0:
            self.next_expiry = min(self.next_expiry or lot.expires_at, lot.expires_at)
        return lot

    def _live(self) -> list[points_rules.LotState]:
        return [
            points_rules.LotState(x.id, x.remaining, x.expires_at)
            for x in self.lots
            if x.remaining > 0
        ]

    def _take(self, taken: Sequence[tuple[int, int]]) -> int:
        by_id = {x.id: x for x in self.lots}
        for lot_id, n in taken:
            by_id[lot_id].remaining -= n
        return sum(n for _, n in taken)

    # the facts ----------------------------------------------------------------------------

    def join(self, tz: str, t: Tally) -> None:
        at = self.h.joined_at
        bonus = self.p.growth.signup_bonus
        if bonus > 0:
            self.movements.append(Movement(at, bonus))
            self.growth_total += bonus
            if self.counts(at):
                t.growth_issued += bonus
        code = tier_rules.join_level(self.p)
        self._change(Change(at, None, code, "join"), tz, t)
        self.join_tier = code
        rule = self.p.points.events.signup
        if rule is not None and rule.points > 0:
            self._add_lot(rule.points, at, tz)
            if self.counts(at):
                t.points_signup += rule.points

    def order(self, o: OrderFact, tz: str, t: Tally) -> None:
        p = self.p
        amounts = [x.amount_fen for x in o.lines]
        growth = sum(tier_rules.order_growth(p.growth.per_yuan, amounts))
        spend = sum(amounts)
        bonus = tier_rules.first_order_bonus(p, had_one=self.bonus_counts["first_order"] > 0)
        if bonus:
            self.bonus_counts["first_order"] += 1
        climbed = tier_rules.climb(
            self.held,
            self.movements,
            [CountedOrder(o.order_id, o.paid_at, growth, spend, p, bonus)],
            tz,
        )
        self.movements.append(Movement(o.paid_at, growth + bonus, spend, 1))
        self.growth_total += growth + bonus
        for change in climbed.changes:
            self._change(change, tz, t)
        earned = points_rules.earn_lines(
            p, list(o.lines), paid_at=o.paid_at, tier=climbed.tier_at_order.get(o.order_id), tz=tz
        )
        points = sum(x.points for x in earned)
        lot = self._add_lot(points, o.paid_at, tz) if points > 0 else None
        self.order_lots[o.order_id] = _OrderLot(lot, {x.line_no: x for x in earned})
        self.line_amounts[o.order_id] = {x.line_no: x.amount_fen for x in o.lines}
        if self.counts(o.paid_at):
            t.growth_issued += growth + bonus
            t.points_orders += points

    def refund(self, r: RefundFact, tz: str, t: Tally) -> None:
        amounts = self.line_amounts.get(r.order_id)
        if amounts is None:
            return  # an order outside the replay (paid after ``end``)
        this = defaultdict(int)
        for line_no, amount in r.lines:
            this[line_no] += amount
        points = 0
        lot = self.order_lots[r.order_id]
        lines = []
        for line_no, amount in amounts.items():
            before = self.refunded[(r.order_id, line_no)]
            after = min(before + this.get(line_no, 0), amount)
            self.refunded[(r.order_id, line_no)] = after
            lines.append((amount, before, after))
            earned = lot.earned.get(line_no)
            if earned is not None:
                points += points_rules.reversal(earned.points, earned.amount_fen, before, after)
        growth, spend, orders = tier_rules.refund_growth(self.p.growth.per_yuan, lines)
        if growth or spend or orders:
            self.movements.append(Movement(r.at, -growth, -spend, orders))
            self.growth_total -= growth
            if self.counts(r.at):
                t.growth_issued -= growth
        if points <= 0:
            return
        own = lot.lot
        taken, missing = points_rules.take_back(
            points_rules.LotState(own.id, own.remaining, own.expires_at) if own else None,
            points,
            self._live,
        )
        self._take(taken)
        short = points_rules.shortfall(missing, self.p.points.negative_balance)
        self.hole += short.negative
        self.debt += short.debt
        if self.counts(r.at):
            t.points_reversed += points

    def growth_fact(self, g: GrowthFact, tz: str, t: Tally) -> None:
        if g.event is None:
            growth, spend, orders, reason = g.growth, g.spend_fen, g.orders, "adjust"
        else:
            growth = tier_rules.bonus_growth(
                self.p, g.event, granted_before=self.bonus_counts[g.event]
            )
            if growth == 0:
                return
            self.bonus_counts[g.event] += 1
            spend, orders, reason = 0, 0, "upgrade"
        self.movements.append(Movement(g.at, growth, spend, orders))
        self.growth_total += growth
        if self.counts(g.at):
            t.growth_issued += growth
        self._upgrade_at(g.at, reason, tz, t)

    def carried_lot(self, at: datetime, points: int, tz: str, t: Tally) -> None:
        if points > 0:
            self._add_lot(points, at, tz)
            if self.counts(at):
                t.points_carried += points

    def spend(self, at: datetime, points: int, t: Tally) -> None:
        taken = self._take(points_rules.allocate(self._live(), points))
        if self.counts(at):
            t.points_spent += taken
            t.spend_shortfall += points - taken

    # the whole member ------------------------------------------------------------------------

    def run(self, tz: str, t: Tally) -> None:
        h = self.h
        steps: list[tuple[datetime, int, int, Callable[[], None]]] = []
        self.join(tz, t)  # first, whatever the times: members are enrolled before orders
        for i, (at, points) in enumerate(h.lots):
            steps.append(
                (at, 1, i, lambda at=at, points=points: self.carried_lot(at, points, tz, t))
            )
        for i, g in enumerate(h.growth):
            steps.append((g.at, 2, i, lambda g=g: self.growth_fact(g, tz, t)))
        for o in h.orders:
            steps.append((o.paid_at, 3, o.order_id, lambda o=o: self.order(o, tz, t)))
        for r in h.refunds:
            steps.append((r.at, 4, r.refund_id, lambda r=r: self.refund(r, tz, t)))
        for i, (at, points) in enumerate(h.spends):
            steps.append((at, 5, i, lambda at=at, points=points: self.spend(at, points, t)))
        for g in h.grants:
            steps.append((g.starts_at, GRANT, g.grant_id, lambda g=g: self.grant(g, tz, t)))
        steps.sort(key=lambda s: (s[0], s[1], s[2]))
        for at, kind, _, step in steps:
            if at > self.end:
                break  # facts after the end are not replayed
            self._expire(at, t)
            # A grant made at the instant the job's day begins is in place when the job
            # works that day: a floor to the grants ending then and to that day's review.
            self._reviews(at, tz, t, before=kind == GRANT)
            step()
            self._prune(at, tz)
        self._expire(self.end, t)
        self._reviews(self.end, tz, t)
        self._close(tz, t)

    def _close(self, tz: str, t: Tally) -> None:
        t.members += 1
        t.tiers[self.held or NO_TIER] += 1
        horizon = _add_months(self.end, EXPIRY_HORIZON_MONTHS)
        for lot in self.lots:
            t.points_outstanding += lot.remaining
            if lot.expires_at is not None and lot.expires_at <= horizon:
                t.points_expiring += lot.remaining
        t.points_outstanding -= self.hole  # the balance, as the ledger sums it
        t.points_debt += self.debt
        ladder = [level.code for level in self.p.tiers.levels]
        for plan in self.p.paid.plans if self.p.paid is not None else []:
            refusal = paid_rules.eligibility_refusal(
                plan, tier_code=self.held, growth=self.growth_total, ladder=ladder
            )
            if refusal is None:
                t.paid_eligible[plan.code] += 1

    # benefit packs -----------------------------------------------------------------------------

    def tier_at(self, at: datetime) -> str | None:
        held = None
        for since, code in self.holdings:
            if since > at:
                break
            held = code
        return held

    def packs(self, catalogue: dict[str, Pack], tz: str, t: Tally) -> None:
        """Packs the document's levels list, issued as the join, upgrade, monthly and
        birthday triggers would have issued them in the period (active members only)."""
        if not self.h.active:
            return
        ladder = [(lv.code, list(lv.benefits.benefit_packs)) for lv in self.p.tiers.levels]
        first = ladder[0][0]
        begin = max(self.start, self.h.joined_at) if self.start else self.h.joined_at
        for pack in catalogue.values():
            listing = benefit_rules.levels_listing(ladder, pack.code)
            trigger = benefit_rules.PackTrigger(pack.trigger)
            if trigger is benefit_rules.PackTrigger.join:
                tier = self.join_tier
                if self.counts(self.h.joined_at) and benefit_rules.gets_pack(
                    trigger, listing, tier, first
                ):
                    t.packs[(pack.code, tier or first)] += 1
            elif trigger is benefit_rules.PackTrigger.tier_upgrade:
                seen = set()
                for c in self.changes:
                    up = tier_rules.rank(self.p, c.to_code) > tier_rules.rank(self.p, c.from_code)
                    key = benefit_rules.upgrade_period(c.to_code, c.at, tz)
                    if (
                        benefit_rules.gets_upgrade_pack(c.reason, up=up)
                        and c.to_code in listing
                        and key not in seen
                    ):
                        seen.add(key)
                        if self.counts(c.at):
                            t.packs[(pack.code, c.to_code)] += 1
            elif trigger is benefit_rules.PackTrigger.monthly and listing:
                for tier in self._months_on(listing, begin, tz):
                    t.packs[(pack.code, tier)] += 1
            elif trigger is benefit_rules.PackTrigger.birthday and self.h.birthday:
                for day in _birthdays(self.h.birthday, clock.local_date(begin, tz), self.end, tz):
                    at = tier_rules.day_start(day, tz)
                    tier = self.tier_at(at)
                    if at >= begin and benefit_rules.gets_pack(trigger, listing, tier, first):
                        t.packs[(pack.code, tier or first)] += 1

    def _months_on(self, listing: Sequence[str], begin: datetime, tz: str) -> Iterator[str]:
        """The level held at the start of each brand-local month of the period, when it
        lists the pack: the monthly job gives the packs on the 1st of the month."""
        if not any(code in listing for _, code in self.holdings):
            return
        month = clock.local_date(begin, tz).replace(day=1)
        while (at := tier_rules.day_start(month, tz)) <= self.end:
            tier = self.tier_at(at)
            if at >= begin and tier in listing:
                yield tier
            month = tier_rules.add_months(month, 1)


def replay_member(
    programme: Programme,
    history: MemberHistory,
    tally: Tally,
    *,
    start: datetime | None,
    end: datetime,
    tz: str,
    catalogue: dict[str, Pack] | None = None,
    reference: Programme | None = None,
    runs: ReviewRuns | None = None,
) -> None:
    """Replay one member's facts under ``programme`` and add the outcome to ``tally``:
    plain data in, plain data out (no database), so it can be tested on its own.
    ``reference`` is the ladder grants were made on (the programme in force; default
    ``programme`` itself), for grants of a level ``programme`` does not have. ``runs``: the
    days the review job ran (default: every day)."""
    replay = _Replay(programme, history, start, end, reference, runs)
    replay.run(tz, tally)
    replay.packs(catalogue or {}, tz, tally)


def grant_level(programme: Programme, reference: Programme, code: str) -> str | None:
    """The level of ``programme`` a grant of ``code`` stands for.

    The code itself when the ladder has it. Otherwise (a draft that renamed or dropped the
    level) the highest level not above the granted one on the ladder the grant was made on
    (``reference``, the programme in force): by threshold when both ladders are measured on
    the same basis (the highest level whose threshold is at most the granted level's), by
    position when they are not (capped at the top). None when neither ladder has the code:
    the grant is not replayed."""
    if tier_rules.rank(programme, code) >= 0:
        return code
    i = tier_rules.rank(reference, code)
    if i < 0:
        return None
    granted = reference.tiers.levels[i]
    levels = programme.tiers.levels
    if reference.tiers.basis == programme.tiers.basis:
        value = tier_rules.mark(reference.tiers, granted.threshold)
        return tier_rules.qualifying_level(programme, value).code
    return levels[min(i, len(levels) - 1)].code


def _add_months(at: datetime, months: int) -> datetime:
    moved = tier_rules.add_months(at.date(), months)
    return at.replace(year=moved.year, month=moved.month, day=moved.day)


def _birthdays(birthday: date, first: date, end: datetime, tz: str) -> Iterator[date]:
    last = clock.local_date(end - timedelta(microseconds=1), tz)
    for year in range(first.year, last.year + 1):
        try:
            day = date(year, birthday.month, birthday.day)
        except ValueError:  # 29 February in a common year: kept on 28 February
            day = date(year, 2, 28)
        if first <= day <= last and benefit_rules.birthday_matches(birthday, day):
            yield day


# --- the catalogue: packs and what their coupons are worth -----------------------------------


@dataclass(frozen=True)
class Pack:
    """An automatic benefit pack as the catalogue holds it: coupons (template, quantity)
    and points."""

    code: str
    trigger: str
    contents: tuple[tuple[str, int], ...]
    points: int


@dataclass(frozen=True)
class CouponValue:
    """A template's face value and the share of its coupons that get used, from history."""

    template: str
    kind: str
    face_fen: int
    usage_rate: Decimal
    rate_from: str  # template | brand | assumed | given


def _catalogue(
    session: Session, usage_rate: Decimal | None, end: datetime
) -> tuple[dict[str, Pack], dict[str, CouponValue]]:
    packs = {
        p.code: Pack(
            p.code,
            p.trigger,
            tuple((str(c["template"]), int(c.get("quantity", 1))) for c in p.contents or []),
            p.points,
        )
        for p in session.scalars(select(BenefitPack).where(BenefitPack.status == "active"))
        if p.trigger != benefit_rules.PackTrigger.manual.value
    }
    # Only settled coupons say whether coupons get used: used, or past their validity.
    used_state = Coupon.state == benefit_rules.CouponState.used.value
    settled = or_(used_state, Coupon.valid_until <= end)
    usage = {
        template_id: (int(n_settled or 0), int(n_used or 0))
        for template_id, n_settled, n_used in session.execute(
            select(
                Coupon.template_id,
                func.sum(case((settled, 1), else_=0)),
                func.sum(case((used_state, 1), else_=0)),
            )
            .where(Coupon.issued_at <= end)
            .group_by(Coupon.template_id)
        )
    }
    all_settled = sum(n for n, _ in usage.values())
    all_used = sum(u for _, u in usage.values())
    values = {}
    for template in session.scalars(select(CouponTemplate)):
        n_settled, n_used = usage.get(template.id, (0, 0))
        if usage_rate is not None:
            rate, source = usage_rate, "given"
        elif n_settled >= MIN_COUPONS_FOR_RATE:
            rate, source = Decimal(n_used) / n_settled, "template"
        elif all_settled >= MIN_COUPONS_FOR_RATE:
            rate, source = Decimal(all_used) / all_settled, "brand"
        else:
            rate, source = Decimal(1), "assumed"
        values[template.code] = CouponValue(
            template.code,
            template.kind,
            _face_fen(template),
            rate.quantize(Decimal("0.0001")),
            source,
        )
    return packs, values


def _face_fen(template: CouponTemplate) -> int:
    """What one coupon is worth at most: the amount off, the percent's cap, the freight
    cap. A gift, or a percentage without a cap, has no face value in money (priced 0)."""
    if template.kind in ("amount_off", "freight"):
        return int(template.amount_off_fen or 0)
    if template.kind == "percent_off":
        return int(template.cap_fen or 0)
    return 0


# --- reading history -----------------------------------------------------------------------------


@contextmanager
def read_only(db: Database) -> Iterator[Connection]:
    """A connection that cannot write, holding one snapshot until it closes."""
    if db.dialect == "sqlite":
        path = make_url(db.url).database
        if not path or path == ":memory:":
            raise InvalidInput("the simulator needs a database file, not an in-memory SQLite")
        uri = f"file:{quote(path)}?mode=ro"
        engine = create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(
                uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30
            ),
        )

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")  # deferred: a read snapshot, no write lock

        try:
            with engine.connect() as conn, conn.begin() as tx:
                yield conn
                tx.rollback()
        finally:
            engine.dispose()
        return
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin() as tx:
            yield conn
            tx.rollback()


def _review_runs(conn: Connection, end: datetime, tz: str) -> ReviewRuns:
    """The days the review job had finished its work for by ``end``, from its ledger."""
    rows = conn.execute(
        select(JobRun.run_date, JobRun.started_at).where(
            JobRun.name == REVIEW_JOB,
            JobRun.status == "done",
            JobRun.run_date <= clock.local_date(end, tz),
            JobRun.started_at <= end,
        )
    )
    return review_runs((r.run_date, clock.as_utc(r.started_at)) for r in rows)


def _sampled(sample: float | None) -> Any:
    if sample is None:
        return literal(True)
    return (Member.id * HASH) % BUCKETS < round(sample * BUCKETS)


def in_sample(member_id: int, sample: float | None) -> bool:
    """Whether a member is in a sample (the SQL predicate, in Python, for tests and tools)."""
    return sample is None or (member_id * HASH) % BUCKETS < round(sample * BUCKETS)


def _histories(
    conn: Connection, ids: Sequence[Any], end: datetime, *, sampled: bool = False
) -> list[MemberHistory]:
    """The facts of a chunk of members (rows of id, joined_at, birthday, status), read with
    one query per kind over the member id range (a sample: over its ids), each through a
    ``member_id`` index."""
    low, high = ids[0].id, ids[-1].id

    def of_chunk(column: Any) -> Any:
        # A full run reads the id range (no list to send); a sample reads its members only.
        return column.in_([r.id for r in ids]) if sampled else column.between(low, high)

    by_id = {
        r.id: MemberHistory(
            r.id, clock.as_utc(r.joined_at), r.birthday, r.status == MemberStatus.active.value
        )
        for r in ids
    }
    rows = conn.execute(
        select(
            Order.id,
            Order.member_id,
            Order.paid_at,
            OrderLine.line_no,
            OrderLine.sku,
            OrderLine.category,
            OrderLine.amount_fen,
        )
        .join(OrderLine, OrderLine.order_id == Order.id)
        .where(of_chunk(Order.member_id), Order.paid_at <= end)
        .order_by(Order.member_id, Order.paid_at, Order.id, OrderLine.line_no)
    )
    current: tuple[int, int] | None = None
    lines: list[points_rules.Line] = []
    paid_at: datetime | None = None

    def close() -> None:
        if current is not None and current[0] in by_id and paid_at is not None:
            by_id[current[0]].orders.append(OrderFact(current[1], paid_at, tuple(lines)))

    for r in rows:
        if current != (r.member_id, r.id):
            close()
            current, lines, paid_at = (r.member_id, r.id), [], clock.as_utc(r.paid_at)
        lines.append(points_rules.Line(r.line_no, r.sku, r.category, r.amount_fen))
    close()
    refunds: dict[int, tuple[int, int, datetime, list[tuple[int, int]]]] = {}
    for r in conn.execute(
        select(
            Refund.id,
            Refund.order_id,
            Refund.refunded_at,
            Order.member_id,
            OrderLine.line_no,
            RefundLine.amount_fen,
        )
        .join(Order, Order.id == Refund.order_id)
        .join(RefundLine, RefundLine.refund_id == Refund.id)
        .join(OrderLine, OrderLine.id == RefundLine.order_line_id)
        .where(of_chunk(Order.member_id), Refund.refunded_at <= end)
    ):
        item = refunds.setdefault(r.id, (r.member_id, r.order_id, clock.as_utc(r.refunded_at), []))
        item[3].append((r.line_no, r.amount_fen))
    for refund_id, (member_id, order_id, at, its) in sorted(refunds.items()):
        if member_id in by_id:
            by_id[member_id].refunds.append(RefundFact(refund_id, order_id, at, tuple(its)))
    g = GrowthEntry
    for r in conn.execute(
        select(g.member_id, g.kind, g.growth, g.spend_fen, g.orders, g.note, g.at).where(
            of_chunk(g.member_id),
            g.at <= end,
            or_(
                g.kind == "adjust",
                and_(g.kind == "bonus", g.note.is_not(None), g.note != "first_order"),
            ),
        )
    ):
        if r.member_id in by_id:
            event_ = None if r.kind == "adjust" else r.note
            by_id[r.member_id].growth.append(
                GrowthFact(clock.as_utc(r.at), event_, r.growth, r.spend_fen, r.orders)
            )
    lot = PointsLot
    for r in conn.execute(
        select(lot.member_id, lot.earned_at, lot.points).where(
            of_chunk(lot.member_id),
            lot.earned_at <= end,
            lot.source.not_in(("order", "signup")),
        )
    ):
        if r.member_id in by_id:
            by_id[r.member_id].lots.append((clock.as_utc(r.earned_at), r.points))
    e = PointsEntry
    for r in conn.execute(
        select(e.member_id, e.at, func.sum(e.points).label("points"))
        .where(
            of_chunk(e.member_id),
            e.at <= end,
            or_(e.kind == "spend", and_(e.kind == "adjust", e.points < 0)),
        )
        .group_by(e.member_id, e.fact, e.at)
    ):
        if r.member_id in by_id and r.points < 0:
            by_id[r.member_id].spends.append((clock.as_utc(r.at), -int(r.points)))
    tg = TierGrant
    for r in conn.execute(
        select(tg.id, tg.member_id, tg.tier_code, tg.starts_at, tg.ends_at, tg.revoked_at)
        .where(of_chunk(tg.member_id), tg.starts_at <= end)
        .order_by(tg.member_id, tg.starts_at, tg.id)
    ):
        if r.member_id in by_id:
            revoked = clock.as_utc(r.revoked_at) if r.revoked_at is not None else None
            by_id[r.member_id].grants.append(
                GrantFact(
                    r.id,
                    r.tier_code,
                    clock.as_utc(r.starts_at),
                    clock.as_utc(r.ends_at),
                    revoked if revoked is not None and revoked <= end else None,
                )
            )
    return list(by_id.values())


# --- the result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackCost:
    pack: str
    trigger: str
    tier: str
    packs: int
    cost_fen: int


@dataclass(frozen=True)
class Figures:
    """One column of the comparison (scaled when the run was a sample)."""

    programme: str
    members: int
    tiers: dict[str, int]
    upgrades: dict[str, int]
    downgrades: dict[str, int]
    growth_issued: int
    points_issued: int
    points_orders: int
    points_signup: int
    points_carried: int
    points_reversed: int
    points_spent: int
    spend_shortfall: int
    points_expired: int
    points_expiring_12m: int
    points_outstanding: int
    points_debt: int
    liability_fen: int
    expiring_12m_fen: int
    points_per_yuan: int
    benefit_packs: list[PackCost]
    benefit_cost_fen: int
    paid_eligible: dict[str, int]


@dataclass(frozen=True)
class Row:
    """One line of the side-by-side table."""

    section: str
    metric: str
    baseline: int | None
    draft: int | None
    unit: str  # members | points | fen | growth | packs

    @property
    def delta(self) -> int | None:
        if self.baseline is None or self.draft is None:
            return None
        return self.draft - self.baseline


POINT_ROWS = (
    "points_issued",
    "points_orders",
    "points_signup",
    "points_carried",
    "points_reversed",
    "points_spent",
    "spend_shortfall",
    "points_expired",
    "points_expiring_12m",
    "points_outstanding",
    "points_debt",
    "liability_fen",
    "expiring_12m_fen",
)

# The figures' names: (field, Chinese, English, unit). One catalogue for every edge that
# shows a simulation (the console's side-by-side table, ``siyu insight simulate``), so a
# figure reads the same in each, as ``kpis.HEADLINE`` does for the KPIs; a name is data,
# not a catalogue msgid, because the CLI prints both languages at once. Chinese is what
# operators read; the English, in sentence case beside the console's own labels, is the
# English page and the CLI's gloss ("of which" lines stay lower case: they are parts of the
# line above). Grouped as the console shows them; the unit says how a number is shown
# (``fen`` as yuan).
POINT_NAMES: tuple[tuple[str, str, str, str], ...] = (
    ("growth_issued", "发放成长值", "Growth value issued", "growth"),
    ("points_issued", "发放积分", "Points issued", "points"),
    ("points_orders", "其中：订单积分", "of which for orders", "points"),
    ("points_signup", "其中：入会积分", "of which for joining", "points"),
    (
        "points_carried",
        "其中：其他来源（按记录）",
        "of which other sources (as recorded)",
        "points",
    ),
    ("points_reversed", "退款扣回积分", "Points taken back by refunds", "points"),
    ("points_spent", "已用积分", "Points spent", "points"),
    # Either column: the spends are history, the points they draw on are the document's.
    ("spend_shortfall", "超出所发积分的消耗", "Spent beyond the points given", "points"),
)
LIABILITY_NAMES: tuple[tuple[str, str, str, str], ...] = (
    ("points_expired", "期间过期积分", "Points expired in the period", "points"),
    ("points_expiring_12m", "12 个月内将过期积分", "Points expiring within 12 months", "points"),
    (
        "expiring_12m_fen",
        "12 个月内将过期积分价值（元）",
        "Value expiring within 12 months (yuan)",
        "fen",
    ),
    ("points_outstanding", "期末未用积分", "Points outstanding at the end", "points"),
    ("points_debt", "积分欠款", "Points owed (debt)", "points"),
    ("liability_fen", "积分负债（元）", "Points liability (yuan)", "fen"),
)
BENEFIT_NAMES: tuple[tuple[str, str, str, str], ...] = (
    ("benefit_cost_fen", "权益总成本（元）", "Total benefit cost (yuan)", "fen"),
)
FIGURE_NAMES = POINT_NAMES + LIABILITY_NAMES + BENEFIT_NAMES
_NAMES = {field: Text(zh, en) for field, zh, en, _ in FIGURE_NAMES}
# Rows that carry a level, plan or pack code in their metric (``Simulation.rows``): the
# code stays as written, only the words around it are translated. ``{}`` is the code.
_PREFIXES = (
    ("to ", "升级至 {}", "Upgraded to {}"),
    ("from ", "降级自 {}", "Downgraded from {}"),
    ("eligible for ", "符合 {} 开通条件", "Eligible for {}"),
)
_SUFFIXES = (
    (" packs", "{} 礼包数", "{} packs"),
    (" cost", "{} 成本（元）", "{} cost (yuan)"),
)


def name_of(metric: str) -> Text | None:
    """The name of a row's metric (``Row.metric``), a named figure or a label around a code,
    in both languages; None for a bare level code (the tier rows), which names itself.

    A row the catalogue cannot name is also None: the tests hold every row the simulator
    reports to a name, so a new figure cannot reach a table unnamed."""
    if metric in _NAMES:
        return _NAMES[metric]
    for prefix, zh, en in _PREFIXES:
        if metric.startswith(prefix):
            code = metric[len(prefix) :]
            return Text(zh.format(code), en.format(code))
    for suffix, zh, en in _SUFFIXES:
        if metric.endswith(suffix):
            code = metric[: -len(suffix)]
            return Text(zh.format(code), en.format(code))
    return None


@dataclass(frozen=True)
class Simulation:
    start: datetime | None
    end: datetime
    sample: float | None
    estimate: bool
    members: int
    orders: int
    baseline_version_id: int
    baseline: Figures
    draft: Figures
    levels: list[str]
    coupon_values: list[CouponValue]
    # What the figures assume or leave out, in Chinese and English: the console shows the
    # page's language, the API answers both, the CLI prints both.
    notes: list[Text]

    def rows(self) -> list[Row]:
        b, d = self.baseline, self.draft
        out = [Row("tiers", c, b.tiers.get(c), d.tiers.get(c), "members") for c in self.levels]
        for code in self.levels:
            up = (b.upgrades.get(code, 0), d.upgrades.get(code, 0))
            out.append(Row("upgrades", f"to {code}", *up, "members"))
        for code in self.levels:
            down = (b.downgrades.get(code, 0), d.downgrades.get(code, 0))
            out.append(Row("downgrades", f"from {code}", *down, "members"))
        out.append(Row("growth", "growth_issued", b.growth_issued, d.growth_issued, "growth"))
        for name in POINT_ROWS:
            unit = "fen" if name.endswith("_fen") else "points"
            out.append(Row("points", name, getattr(b, name), getattr(d, name), unit))
        costs = {(c.pack, c.tier): (c, None) for c in b.benefit_packs}
        for c in d.benefit_packs:
            costs[(c.pack, c.tier)] = (costs.get((c.pack, c.tier), (None, None))[0], c)
        for (pack, tier), (bc, dc) in sorted(costs.items()):
            packs = (bc.packs if bc else 0, dc.packs if dc else 0)
            cost = (bc.cost_fen if bc else 0, dc.cost_fen if dc else 0)
            out.append(Row("benefits", f"{pack} @ {tier} packs", *packs, "packs"))
            out.append(Row("benefits", f"{pack} @ {tier} cost", *cost, "fen"))
        out.append(
            Row("benefits", "benefit_cost_fen", b.benefit_cost_fen, d.benefit_cost_fen, "fen")
        )
        for plan in sorted(set(b.paid_eligible) | set(d.paid_eligible)):
            eligible = (b.paid_eligible.get(plan), d.paid_eligible.get(plan))
            out.append(Row("paid", f"eligible for {plan}", *eligible, "members"))
        return out

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows"] = [asdict(r) | {"delta": r.delta} for r in self.rows()]
        return out


def _figures(
    programme: Programme,
    t: Tally,
    scale: Decimal,
    catalogue: dict[str, Pack],
    values: dict[str, CouponValue],
) -> Figures:
    def s(n: int) -> int:
        return int((Decimal(n) * scale).to_integral_value())

    cash = programme.points.cash_off or CashOff()
    ladder = [lv.code for lv in programme.tiers.levels]
    costs = []
    for (code, tier), n in sorted(t.packs.items()):
        pack = catalogue[code]
        each = sum(
            Decimal(q * values[tpl].face_fen) * values[tpl].usage_rate
            for tpl, q in pack.contents
            if tpl in values
        ) + Decimal(points_rules.cash_value_fen(cash, pack.points))
        costs.append(PackCost(code, pack.trigger, tier, s(n), s(int(each * n))))
    tiers = {code: s(t.tiers.get(code, 0)) for code in ladder}
    if t.tiers.get(NO_TIER):
        tiers[NO_TIER] = s(t.tiers[NO_TIER])
    issued = t.points_orders + t.points_signup + t.points_carried
    return Figures(
        programme=programme.name,
        members=s(t.members),
        tiers=tiers,
        upgrades={k: s(v) for k, v in t.upgrades.items()},
        downgrades={k: s(v) for k, v in t.downgrades.items()},
        growth_issued=s(t.growth_issued),
        points_issued=s(issued),
        points_orders=s(t.points_orders),
        points_signup=s(t.points_signup),
        points_carried=s(t.points_carried),
        points_reversed=s(t.points_reversed),
        points_spent=s(t.points_spent),
        spend_shortfall=s(t.spend_shortfall),
        points_expired=s(t.points_expired),
        points_expiring_12m=s(t.points_expiring),
        points_outstanding=s(t.points_outstanding),
        points_debt=s(t.points_debt),
        liability_fen=s(points_rules.cash_value_fen(cash, t.points_outstanding)),
        expiring_12m_fen=s(points_rules.cash_value_fen(cash, t.points_expiring)),
        points_per_yuan=cash.points_per_yuan,
        benefit_packs=costs,
        benefit_cost_fen=sum(c.cost_fen for c in costs),
        paid_eligible={
            p.code: s(t.paid_eligible.get(p.code, 0))
            for p in (programme.paid.plans if programme.paid else [])
        },
    )


def _check_options(sample: float | None, start: datetime | None, end: datetime) -> None:
    problems = []
    if sample is not None and not (0 < sample <= 1):
        reason = f"must be above 0 and at most 1 (0.1 is 10%), not {sample}"
        problems.append(Problem("sample", reason))
    elif sample is not None and round(sample * BUCKETS) < 1:
        problems.append(Problem("sample", f"at least {1 / BUCKETS} (one bucket of {BUCKETS:,})"))
    if start is not None and start >= end:
        problems.append(Problem("from", f"must be before to ({end.isoformat()})"))
    if problems:
        raise invalid(problems, what="simulation")


def simulate(
    db: Database,
    draft: Programme,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    sample: float | None = None,
    usage_rate: Decimal | None = None,
    tz: str | None = None,
    progress: Progress | None = None,
    chunk: int = CHUNK,
) -> Simulation:
    """Replay history under ``draft`` and under the programme in force at ``end`` (default
    now), side by side. Reads only; see the module docstring for what is replayed."""
    from siyu.core.settings import get_settings

    tz = tz or get_settings().timezone
    end = clock.as_utc(end) if end is not None else clock.now()
    start = clock.as_utc(start) if start is not None else None
    _check_options(sample, start, end)
    if usage_rate is not None and not (0 <= usage_rate <= 1):
        raise invalid([Problem("usage_rate", "a share between 0 and 1")], what="simulation")
    with read_only(db) as conn:
        session = Session(bind=conn)
        version = programmes.require_in_force(session, end)
        baseline = programmes.programme_of(version)
        catalogue, values = _catalogue(session, usage_rate, end)
        runs = _review_runs(conn, end, tz)
        members_q = select(Member.id, Member.joined_at, Member.birthday, Member.status).where(
            Member.status != MemberStatus.merged.value, Member.joined_at <= end, _sampled(sample)
        )
        total = int(conn.scalar(select(func.count()).select_from(members_q.subquery())) or 0)
        if sample is not None:
            chunk = min(chunk, IN_CHUNK)  # one IN list per query
        tallies = (Tally(), Tally())
        done = orders = 0
        after = 0
        if progress:
            progress(0, total)
        while True:
            page = members_q.where(Member.id > after).order_by(Member.id).limit(chunk)
            ids = conn.execute(page).all()
            if not ids:
                break
            after = ids[-1].id
            for history in _histories(conn, ids, end, sampled=sample is not None):
                orders += len(history.orders)
                for programme, tally in zip((baseline, draft), tallies, strict=True):
                    replay_member(
                        programme,
                        history,
                        tally,
                        start=start,
                        end=end,
                        tz=tz,
                        catalogue=catalogue,
                        reference=baseline,
                        runs=runs,
                    )
            done += len(ids)
            if progress:
                progress(done, total)
        session.close()
    scale = Decimal(1) / Decimal(str(sample)) if sample is not None else Decimal(1)
    levels = [lv.code for lv in baseline.tiers.levels]
    levels += [lv.code for lv in draft.tiers.levels if lv.code not in levels]
    if any(t.tiers.get(NO_TIER) for t in tallies):
        levels.append(NO_TIER)
    notes = _notes(baseline, draft, catalogue, values, sample)
    skipped = _skipped_grants_note(tallies[0].grants_skipped, tallies[1].grants_skipped, scale)
    if skipped:
        notes.append(skipped)
    return Simulation(
        start=start,
        end=end,
        sample=sample,
        estimate=sample is not None and sample < 1,
        members=int((Decimal(done) * scale).to_integral_value()),
        orders=int((Decimal(orders) * scale).to_integral_value()),
        baseline_version_id=version.id,
        baseline=_figures(baseline, tallies[0], scale, catalogue, values),
        draft=_figures(draft, tallies[1], scale, catalogue, values),
        levels=levels,
        coupon_values=sorted(values.values(), key=lambda v: v.template),
        notes=notes,
    )


def _skipped_grants_note(in_force: int, draft: int, scale: Decimal) -> Text | None:
    """The tier grants a column could not replay, counted for the brand like every other
    figure (scaled from a sample, with the sample's own count beside it).

    The column in force skips the grants of a level its ladder lacks (made under an
    earlier document); the draft skips those of them whose level its ladder lacks too
    (``grant_level``), so the draft's grants are among the in-force column's."""
    if not in_force:
        return None

    def brand(n: int) -> tuple[str, str]:
        scaled = int((Decimal(n) * scale).to_integral_value())
        return (f"约 {scaled}", f"about {scaled}") if scale != 1 else (str(n), str(n))

    (all_zh, all_en), (kept_zh, kept_en) = brand(in_force), brand(in_force - draft)
    if draft == in_force:
        zh = f"{all_zh} 条等级授予的等级在现行方案和草稿的等级中都没有，未回放"
        en = f"{all_en} tier grants of a level neither ladder has are not replayed"
    else:
        zh = (
            f"{all_zh} 条等级授予的等级在现行方案的等级中没有，现行方案一栏未回放；"
            f"其中草稿等级里有的（{kept_zh} 条）已在草稿一栏回放"
        )
        en = (
            f"{all_en} tier grants of a level the ladder in force lacks are not "
            f"replayed in the column in force; {kept_en} of them are of a "
            "level the draft has and are replayed in the draft"
        )
    if scale != 1:
        zh += f"（样本中 {in_force} 条）"
        en += f" ({in_force} in the sample)"
    return Text(zh, en)


# The kinds of coupon as the console names them (``benefits.rules.CouponKind``).
COUPON_KIND_ZH = {
    benefit_rules.CouponKind.amount_off.value: "满减券",
    benefit_rules.CouponKind.percent_off.value: "折扣券",
    benefit_rules.CouponKind.freight.value: "运费券",
    benefit_rules.CouponKind.gift.value: "赠品券",
}


def _notes(
    baseline: Programme,
    draft: Programme,
    catalogue: dict[str, Pack],
    values: dict[str, CouponValue],
    sample: float | None,
) -> list[Text]:
    """What the figures assume or leave out, each once, in the order found."""
    notes = []
    if sample is not None and sample < 1:
        notes.append(
            Text(
                f"估算：抽样回放了 {sample:.2%} 的会员，各项数字放大 {1 / sample:g} 倍",
                f"estimate: {sample:.2%} of members replayed, figures scaled by {1 / sample:g}",
            )
        )
    columns = ((baseline, "现行方案", "in force"), (draft, "草稿", "draft"))
    for programme, which_zh, which_en in columns:
        for level in programme.tiers.levels:
            for code in level.benefits.benefit_packs:
                if code not in catalogue:
                    notes.append(
                        Text(
                            f"{which_zh}：等级 {level.code} 列出的权益包“{code}”不是启用中的"
                            "自动发放权益包，未计入成本",
                            f"{which_en}: level {level.code} lists the pack '{code}', which is "
                            "not an active automatic pack; it is not priced",
                        )
                    )
    for pack in catalogue.values():
        for template, _ in pack.contents:
            value = values.get(template)
            if value is None:
                notes.append(
                    Text(
                        f"权益包 {pack.code}：优惠券模板“{template}”不存在（按 0 计价）",
                        f"pack {pack.code}: unknown coupon template '{template}' (priced 0)",
                    )
                )
            elif value.face_fen == 0:
                kind = COUPON_KIND_ZH.get(value.kind, value.kind)
                notes.append(
                    Text(
                        f"权益包 {pack.code}：优惠券“{template}”（{kind}）"
                        "没有金额面值（按 0 计价）",
                        f"pack {pack.code}: coupon '{template}' ({value.kind}) has no face value "
                        "in money (priced 0)",
                    )
                )
    if any(v.rate_from == "assumed" for v in values.values()):
        notes.append(
            Text(
                f"已结算的优惠券（已使用或已过有效期）不足 {MIN_COUPONS_FOR_RATE} 张："
                "使用率按 100% 假定；可传入使用率自行设定",
                f"fewer than {MIN_COUPONS_FOR_RATE} settled coupons (used or past validity): "
                "usage rate assumed 100%; pass a usage rate to set one",
            )
        )
    return sorted(set(notes), key=notes.index)
