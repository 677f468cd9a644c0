"""Growth value and tiers: the ledger, immediate upgrades, reviews, grants and progress.

Services flush, never commit. The event handlers (``tiers.handlers``) call the ``on_*``
functions in the publisher's transaction, so an order's growth and upgrade commit with the
order. Work on many members is set-based: per ingest chunk a constant number of statements
(``IN`` lists of 500, ``executemany`` inserts and updates), whatever the chunk size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    String,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session

from siyu.core import audit, clock
from siyu.core.auth import Principal
from siyu.core.bulk import execute_rows, insert_rows, insert_tuples
from siyu.core.db import ONE_OF_CHUNK, expire_stale, in_chunks, one_of
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.core.events import publish
from siyu.members import service as members
from siyu.members.models import Member
from siyu.members.rules import MemberStatus
from siyu.members.service import MembersEnrolled, MembersMerged, MembersUnmerged
from siyu.orders.models import Order, OrderLine
from siyu.orders.service import IngestedOrder, OrdersIngested, RefundRecorded
from siyu.programme import service as programmes
from siyu.programme.rules import Programme
from siyu.tiers import rules
from siyu.tiers.models import GrowthEntry, TierGrant, TierHistory, TierPeriod
from siyu.tiers.rules import Change, CountedOrder, Movement

TZ = "Asia/Shanghai"
BATCH = 5_000  # members per unit of work in the daily review
RECOMPUTE_RANGE = 50_000  # member ids per UPDATE when recomputing everyone
MAX_KEY = 150
MAX_NOTE = 500


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrowthApplied:
    """Published after the growth of an ingest chunk (always, even with no programme):
    points earn on this, with the tier held when each order was paid."""

    orders: tuple[IngestedOrder, ...]  # the OrdersIngested orders, unchanged
    tier_at_order: dict[int, str | None]  # order_id -> tier code before this order counted
    # order_id -> the programme in force when it was paid (None: none was); None when not
    # worked out (no orders)
    programme_at_order: dict[int, Programme | None] | None = None


@dataclass(frozen=True)
class TierChange:
    member_id: int
    from_code: str | None
    to_code: str
    reason: str  # join | upgrade | review | grant | grant_end | merge | adjust
    at: datetime

    @property
    def is_upgrade(self) -> bool:
        """To a higher level of the ladder (a join counts: from no level to the first)."""
        known = self.__dict__.get("_upgrade")
        if known is not None:
            return bool(known)
        if self.reason in ("join", "upgrade"):
            return True
        if self.reason in ("review", "grant_end"):
            return False
        return (len(self.to_code), self.to_code) > (
            len(self.from_code or ""),
            self.from_code or "",
        )


@dataclass(frozen=True)
class TiersChanged:
    """Tier changes of one transaction; benefits issue tier-upgrade packs on this."""

    changes: tuple[TierChange, ...]


def _tier_change(programme: Programme, member_id: int, change: Change) -> TierChange:
    out = TierChange(member_id, change.from_code, change.to_code, change.reason, change.at)
    up = rules.rank(programme, change.to_code) > rules.rank(programme, change.from_code)
    object.__setattr__(out, "_upgrade", up)  # the ladder's order, known here and not later
    return out


# --- shared steps ------------------------------------------------------------------------


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _lock_members(session: Session, member_ids: Iterable[int]) -> None:
    """Lock member rows in id order before changing their tier or balance, so two chunks
    touching the same members queue instead of losing an update. (SQLite: the transaction
    holds the write lock already.)"""
    if not _is_postgres(session):
        return
    for chunk in in_chunks(sorted(set(member_ids)), ONE_OF_CHUNK):
        session.execute(
            select(Member.id)
            .where(one_of(session, Member.id, chunk))
            .order_by(Member.id)
            .with_for_update()
        ).all()


def _states(session: Session, member_ids: Iterable[int]) -> dict[int, tuple[str | None, str]]:
    """member id -> (tier code, status)."""
    found: dict[int, tuple[str | None, str]] = {}
    # One parameter for the whole list (``one_of``): SQLAlchemy's expansion of an ``IN``
    # list of 500 ids cost more than reading the rows.
    for chunk in in_chunks(sorted(set(member_ids)), ONE_OF_CHUNK):
        rows = session.execute(
            select(Member.id, Member.tier_code, Member.status).where(
                one_of(session, Member.id, chunk)
            )
        )
        found.update((m, (code, status)) for m, code, status in rows)
    return found


def _existing_facts(session: Session, facts: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for chunk in in_chunks(sorted(set(facts)), ONE_OF_CHUNK):
        found.update(
            session.scalars(
                select(GrowthEntry.fact).where(one_of(session, GrowthEntry.fact, chunk))
            )
        )
    return found


def _movements(
    session: Session, member_ids: Iterable[int], since: datetime
) -> dict[int, list[Movement]]:
    """Ledger movements of members from ``since`` on (the ``(member_id, at)`` index)."""
    found: dict[int, list[Movement]] = defaultdict(list)
    e = GrowthEntry
    # On SQLite the instants come as their stored text, read by ``fromisoformat``: what
    # ``UTCDateTime`` reads them as, without its processors' two steps per row (an import
    # chunk reads tens of thousands). The text is read with the UTC offset appended, which
    # gives the same aware instant as a naive read and ``replace(tzinfo=UTC)`` at a seventh
    # of the cost. Elsewhere ``at`` comes back in UTC as it is.
    as_text = not _is_postgres(session)
    at_column = type_coerce(e.at, String()) if as_text else e.at
    parse, new_tuple = datetime.fromisoformat, tuple.__new__
    for chunk in in_chunks(sorted(set(member_ids)), ONE_OF_CHUNK):
        wanted = and_(one_of(session, e.member_id, chunk), e.at >= since)
        if as_text:
            # SQLite: the entries' ids from the index first, then the rows in id order.
            # Read member by member, the rows of a chunk's members are all over the
            # table, and its pages left SQLite's page cache and were read from the file
            # again and again (27,000 reads for the quick benchmark's import, 5,000 in id
            # order). Their order here does not matter: ``climb`` sorts them.
            wanted = e.id.in_(select(e.id).where(wanted))
        rows = session.execute(
            select(e.member_id, at_column, e.growth, e.spend_fen, e.orders).where(wanted)
        )
        for member_id, at, growth, spend, orders in rows:
            if as_text:
                at = parse(at + "+00:00")
            # ``tuple.__new__``: without the frame of the named tuple's own ``__new__``
            found[member_id].append(new_tuple(Movement, (at, growth, spend, orders)))
    return found


def _values(
    session: Session,
    member_ids: Iterable[int],
    start: datetime,
    end: datetime,
    *,
    include_end: bool,
) -> dict[int, Movement]:
    """Per member, the sum of their movements in [start, end] (or [start, end))."""
    e = GrowthEntry
    ends = e.at <= end if include_end else e.at < end
    found: dict[int, Movement] = {}
    for chunk in in_chunks(sorted(set(member_ids))):
        rows = session.execute(
            select(e.member_id, func.sum(e.growth), func.sum(e.spend_fen), func.sum(e.orders))
            .where(e.member_id.in_(chunk), e.at >= start, ends)
            .group_by(e.member_id)
        )
        for member_id, growth, spend, orders in rows:
            found[member_id] = Movement(end, int(growth or 0), int(spend or 0), int(orders or 0))
    return found


def _value(programme: Programme, movement: Movement | None) -> int:
    return rules.measure(programme.tiers.basis, [movement] if movement is not None else [])


def _value_of(
    session: Session, programme: Programme, member_id: int, start: datetime, end: datetime
) -> int:
    """One member's value in [start, end] on the ladder's basis."""
    found = _values(session, [member_id], start, end, include_end=True).get(member_id)
    return _value(programme, found)


def _floors(
    session: Session, member_ids: Iterable[int], at: datetime, *, excluding: Sequence[int] = ()
) -> dict[int, list[tuple[str, datetime]]]:
    """Active grants per member at ``at``: (tier code, ends_at)."""
    g = TierGrant
    found: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    for chunk in in_chunks(sorted(set(member_ids))):
        query = select(g.member_id, g.tier_code, g.ends_at).where(
            g.member_id.in_(chunk),
            g.revoked_at.is_(None),
            g.closed_at.is_(None),
            g.starts_at <= at,
            g.ends_at > at,
        )
        if excluding:
            query = query.where(g.id.not_in(list(excluding)))
        for member_id, code, ends_at in session.execute(query):
            found[member_id].append((code, clock.as_utc(ends_at)))
    return found


_ENTRY_COLUMNS = (
    "member_id",
    "kind",
    "growth",
    "spend_fen",
    "orders",
    "fact",
    "order_id",
    "at",
    "note",
    "created_at",
)


def _insert_entries(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        now = clock.now()
        for row in rows:
            row.setdefault("spend_fen", 0)
            row.setdefault("orders", 0)
            row.setdefault("order_id", None)
            row.setdefault("note", None)
            row["created_at"] = now
        insert_rows(session, GrowthEntry.__table__, rows)


def _add_growth(session: Session, deltas: dict[int, int]) -> None:
    """Add to members' cached growth, sorted by id (the lock order), one executemany."""
    rows = [{"b_id": m, "b_delta": d} for m, d in sorted(deltas.items()) if d]
    if not rows:
        return
    execute_rows(session, _ADD_GROWTH, rows)
    _expire_members(session, [r["b_id"] for r in rows])


def _expire_members(session: Session, member_ids: Iterable[int]) -> None:
    expire_stale(session, Member, member_ids)


def _record_changes(
    session: Session,
    items: Sequence[tuple[int, Change, Programme]],
    tz: str,
    *,
    note: str | None = None,
) -> list[TierChange]:
    """Write changes to tier history, members' cached tier and the review period, in a
    constant number of statements. The last change of a member decides their tier."""
    if not items:
        return []
    insert_rows(
        session,
        TierHistory.__table__,
        [
            {
                "member_id": m,
                "from_code": c.from_code,
                "to_code": c.to_code,
                "reason": c.reason,
                "at": c.at,
                "note": note,
            }
            for m, c, _ in items
        ],
    )
    last: dict[int, tuple[Change, Programme]] = {}
    for member_id, change, programme in items:
        last[member_id] = (change, programme)
    execute_rows(
        session,
        _SET_TIER,
        [{"b_id": m, "b_code": c.to_code, "b_at": c.at} for m, (c, _) in sorted(last.items())],
    )
    _expire_members(session, last)
    periods = []
    for member_id, (change, programme) in sorted(last.items()):
        start, review_on = rules.period_after(
            programme, change.at, change.from_code, change.to_code, tz
        )
        periods.append({"member_id": member_id, "period_start": start, "review_on": review_on})
    _save_periods(session, periods)
    return [_tier_change(p, m, c) for m, c, p in items]


def _save_periods(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    execute_rows(session, _periods_upsert(session.get_bind().dialect.name), rows)
    expire_stale(session, TierPeriod)


# Statements run for many members at once, built once: ``execute_rows`` keeps their
# compiled form by identity.
_ADD_GROWTH = (
    update(Member.__table__)
    .where(Member.__table__.c.id == bindparam("b_id"))
    .values(growth_balance=Member.__table__.c.growth_balance + bindparam("b_delta"))
)
_SET_TIER = (
    update(Member.__table__)
    .where(Member.__table__.c.id == bindparam("b_id"))
    .values(tier_code=bindparam("b_code"), tier_changed_at=bindparam("b_at"))
)
_PERIODS_UPSERTS: dict[str, Any] = {}


def _periods_upsert(dialect: str) -> Any:
    found = _PERIODS_UPSERTS.get(dialect)
    if found is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        table = TierPeriod.__table__
        stmt = dialect_insert(table)
        found = _PERIODS_UPSERTS[dialect] = stmt.on_conflict_do_update(
            index_elements=[table.c.member_id],
            set_={"period_start": stmt.excluded.period_start, "review_on": stmt.excluded.review_on},
        )
    return found


def _publish_changes(session: Session, changes: Sequence[TierChange]) -> None:
    if changes:
        publish(session, TiersChanged(tuple(changes)))


# --- enrolment: the first level and the signup growth ----------------------------------------


def on_members_enrolled(session: Session, event: MembersEnrolled, *, tz: str = TZ) -> None:
    """New members start on the level their signup growth reaches (the first level, in
    practice) with tier history ``join``; the document's ``signup_bonus`` is their first
    growth entry (fact ``signup:<member>``). Idempotent: a member with a tier or a signup
    entry is left alone."""
    if not event.members:
        return
    timeline = programmes.Timeline(session)
    states = _states(session, (m for m, _ in event.members))
    done = _existing_facts(session, (f"signup:{m}" for m, _ in event.members))
    entries: list[dict[str, Any]] = []
    deltas: dict[int, int] = {}
    changes: list[tuple[int, Change, Programme]] = []
    for member_id, joined_at in event.members:
        programme = timeline.at(joined_at)
        if programme is None or member_id not in states:
            continue
        at = clock.as_utc(joined_at)
        bonus = programme.growth.signup_bonus
        fact = f"signup:{member_id}"
        if bonus > 0 and fact not in done:
            entries.append(
                {"member_id": member_id, "kind": "bonus", "growth": bonus, "fact": fact, "at": at}
            )
            deltas[member_id] = bonus
        if states[member_id][0] is None:
            code = rules.join_level(programme)
            changes.append((member_id, Change(at, None, code, "join"), programme))
    _insert_entries(session, entries)
    _add_growth(session, deltas)
    _publish_changes(session, _record_changes(session, changes, tz))


# --- orders: growth, first-order bonus, immediate upgrades ------------------------------------


def on_orders_ingested(session: Session, event: OrdersIngested, *, tz: str = TZ) -> None:
    """Growth of a chunk of new orders, in the orders' transaction, then ``GrowthApplied``
    (always) and ``TiersChanged`` (when someone moved).

    Each order earns under the programme in force when it was paid; upgrades are decided
    order by order in ``paid_at`` order on the value of the window ending at that order (see
    ``rules.climb``). Statements per chunk are constant: lock members, read tiers, known
    facts, earlier first-order bonuses and the ledger of the windows; insert entries and
    history; update members and periods."""
    orders = event.orders
    tier_at_order: dict[int, str | None] = {}
    programme_of: dict[int, Programme | None] | None = None
    tier_changes: list[TierChange] = []
    if orders:
        timeline = programmes.Timeline(session)
        programme_of = {o.order_id: timeline.at(o.paid_at) for o in orders}
        tier_changes = _apply_orders(session, orders, tier_at_order, tz, timeline, programme_of)
    publish(session, GrowthApplied(orders, tier_at_order, programme_of))
    _publish_changes(session, tier_changes)


def _apply_orders(
    session: Session,
    orders: Sequence[IngestedOrder],
    tier_at_order: dict[int, str | None],
    tz: str,
    timeline: programmes.Timeline,
    programme_of: dict[int, Programme | None],
) -> list[TierChange]:
    member_ids = sorted({o.member_id for o in orders})
    _lock_members(session, member_ids)
    states = _states(session, member_ids)
    fact_of = {o.order_id: f"order:{o.order_id}" for o in orders}
    done = _existing_facts(session, fact_of.values())
    new = [o for o in orders if fact_of[o.order_id] not in done]
    if done:
        for o in orders:
            if fact_of[o.order_id] in done:  # a replay: counted before
                tier_at_order[o.order_id] = states.get(o.member_id, (None, ""))[0]
    earning = [o for o in new if programme_of[o.order_id] is not None]

    # The first-order bonus: to the member's earliest order here, if none had it yet.
    bonus_of: dict[int, int] = {}
    # Decided once per programme, not per order (a chunk has one or two programmes).
    first_order_rule = {
        id(p): rules.bonus_rule(p, "first_order") is not None
        for p in {id(p): p for p in programme_of.values() if p is not None}.values()
    }
    wants_bonus = {o.member_id for o in earning if first_order_rule[id(programme_of[o.order_id])]}
    if wants_bonus:
        had = set()
        # Whether each member has one, not every such entry: the ledger is read in time
        # order per member and stops at the first (a bonus comes with the first order).
        for chunk in in_chunks(sorted(wants_bonus), ONE_OF_CHUNK):
            had.update(
                session.scalars(
                    select(Member.id).where(
                        one_of(session, Member.id, chunk),
                        exists().where(
                            GrowthEntry.member_id == Member.id,
                            GrowthEntry.fact.like("bonus:first\\_order:%", escape="\\"),
                        ),
                    )
                )
            )
        first: dict[int, IngestedOrder] = {}
        for o in sorted(earning, key=lambda o: (o.paid_at, o.order_id)):
            if o.member_id in wants_bonus and o.member_id not in had:
                first.setdefault(o.member_id, o)
        for o in first.values():
            bonus = rules.first_order_bonus(programme_of[o.order_id], had_one=False)  # type: ignore[arg-type]
            if bonus:
                bonus_of[o.order_id] = bonus

    counted: dict[int, list[CountedOrder]] = defaultdict(list)
    # Entries as tuples in the order of ``_ENTRY_COLUMNS``: an import chunk writes thousands.
    entries: list[tuple[Any, ...]] = []
    now = clock.now()
    deltas: dict[int, int] = defaultdict(int)
    as_utc, order_growth = clock.as_utc, rules.order_growth
    for o in new:
        programme = programme_of[o.order_id]
        if programme is None:
            counted[o.member_id].append(CountedOrder(o.order_id, o.paid_at, 0, 0, None))
            continue
        amounts = [x.amount_fen for x in o.lines]
        growth = sum(order_growth(programme.growth.per_yuan, amounts))
        spend = sum(amounts)
        bonus = bonus_of.get(o.order_id, 0)
        counted[o.member_id].append(
            CountedOrder(o.order_id, o.paid_at, growth, spend, programme, bonus)
        )
        at = as_utc(o.paid_at)
        entries.append(
            (o.member_id, "earn", growth, spend, 1, fact_of[o.order_id], o.order_id, at, None, now)
        )
        if bonus:
            entries.append(
                (
                    o.member_id,
                    "bonus",
                    bonus,
                    0,
                    0,
                    f"bonus:first_order:{o.member_id}:order:{o.order_id}",
                    o.order_id,
                    at,
                    "first_order",
                    now,
                )
            )
        deltas[o.member_id] += growth + bonus

    # The ledger of the windows these orders look at, for the members who can still climb
    # (a member at the top of the ladder has no window to add up). Where the earliest
    # window starts: a window's start moves with its end, so the earliest order of each
    # programme tells, less a day for a daylight-saving shift (reading a little more of
    # the ledger changes no sum).
    earliest: dict[int, tuple[Programme, datetime]] = {}
    climbing: set[int] = set()
    at_top: dict[tuple[int, str | None], bool] = {}  # (programme, level) -> the top?
    for o in earning:
        programme = programme_of[o.order_id]
        assert programme is not None
        held = states.get(o.member_id, (None, ""))[0]
        top = at_top.get((id(programme), held))
        if top is None:
            top = at_top[(id(programme), held)] = (
                held is not None and rules.rank(programme, held) == len(programme.tiers.levels) - 1
            )
        if top:
            continue
        climbing.add(o.member_id)
        seen = earliest.get(id(programme))
        if seen is None or o.paid_at < seen[1]:
            earliest[id(programme)] = (programme, o.paid_at)
    since = min(
        (
            rules.window_start(p.tiers.review, at, tz) - timedelta(days=1)
            for p, at in earliest.values()
        ),
        default=None,
    )
    prior = _movements(session, climbing, since) if since else {}
    changes: list[tuple[int, Change, Programme]] = []
    for member_id, its_orders in counted.items():
        current = states.get(member_id, (None, ""))[0]
        climbed = rules.climb(current, prior.get(member_id, []), its_orders, tz)
        tier_at_order.update(climbed.tier_at_order)
        for change in climbed.changes:
            programme = timeline.at(change.at)
            assert programme is not None
            changes.append((member_id, change, programme))
    insert_tuples(session, GrowthEntry.__table__, _ENTRY_COLUMNS, entries)
    _add_growth(session, deltas)
    return _record_changes(session, changes, tz)


# --- refunds: reverse what the refunded lines earned -------------------------------------------


def on_refund_recorded(session: Session, event: RefundRecorded) -> None:
    """Take back the growth the refunded lines earned (fact ``refund:<id>``), with the net
    spend and, when the order is now wholly refunded, its count. No downgrade here: the
    review decides, on the window's value, so a refund never moves a tier by itself."""
    fact = f"refund:{event.refund_id}"
    if _existing_facts(session, [fact]):
        return
    earned = session.scalar(
        select(GrowthEntry.id).where(GrowthEntry.fact == f"order:{event.order_id}")
    )
    order = session.get(Order, event.order_id)
    if earned is None or order is None:
        return  # the order earned nothing (no programme when it was paid)
    programme = programmes.Timeline(session).at(order.paid_at)
    if programme is None:  # pragma: no cover - an entry exists, so a programme did
        return
    now_by_line = defaultdict(int)
    for line in event.lines:
        now_by_line[line.line_no] += line.amount_fen
    lines = session.execute(
        select(OrderLine.line_no, OrderLine.amount_fen, OrderLine.refunded_fen).where(
            OrderLine.order_id == event.order_id
        )
    ).all()
    growth, spend, orders = rules.refund_growth(
        programme.growth.per_yuan,
        [(amount, after - now_by_line.get(no, 0), after) for no, amount, after in lines],
    )
    if growth == 0 and spend == 0 and orders == 0:
        return
    _lock_members(session, [event.member_id])
    _insert_entries(
        session,
        [
            {
                "member_id": event.member_id,
                "kind": "reverse",
                "growth": -growth,
                "spend_fen": -spend,
                "orders": orders,
                "fact": fact,
                "order_id": event.order_id,
                "at": event.refunded_at,
            }
        ],
    )
    _add_growth(session, {event.member_id: -growth})


# --- merge and unmerge -------------------------------------------------------------------------


def on_members_merged(session: Session, event: MembersMerged, *, tz: str = TZ) -> None:
    """The merge moved the ledger rows; recompute both balances, drop the merged-away
    member's review period, and give the survivor the higher of the two tiers or what the
    combined value earns (history ``merge``), never less than the survivor held."""
    source, target = event.from_member_id, event.into_member_id
    recompute(session, [source, target])
    session.execute(delete(TierPeriod).where(TierPeriod.member_id == source))
    states = _states(session, [source, target])
    _settle_after_merge(session, target, [states.get(source, (None, ""))[0]], tz)


def on_members_unmerged(session: Session, event: MembersUnmerged, *, tz: str = TZ) -> None:
    """The unmerge put the rows back; recompute both balances and re-evaluate both members
    upwards only (a review decides any drop). The restored member gets a review period."""
    source, target = event.from_member_id, event.into_member_id
    recompute(session, [source, target])
    programme = programmes.in_force(session, clock.now())
    if programme is not None:
        tiers = programmes.programme_of(programme).tiers
        today = clock.local_date(clock.now(), tz)
        _save_periods(
            session,
            [
                {
                    "member_id": source,
                    "period_start": today,
                    "review_on": rules.first_review_on(tiers, today, reached=False),
                }
            ],
        )
    for member_id in (source, target):
        _settle_after_merge(session, member_id, [], tz)


def _settle_after_merge(
    session: Session, member_id: int, others: list[str | None], tz: str
) -> None:
    now = clock.now()
    version = programmes.in_force(session, now)
    if version is None:
        return
    programme = programmes.programme_of(version)
    current = _states(session, [member_id]).get(member_id, (None, ""))[0]
    start = rules.window_start(programme.tiers.review, now, tz)
    value = _value_of(session, programme, member_id, start, now)
    decided = rules.settle(programme, value, current, *others)
    if rules.rank(programme, decided) > rules.rank(programme, current):
        reason = "merge"
        changes = _record_changes(
            session, [(member_id, Change(now, current, decided, reason), programme)], tz
        )
        _publish_changes(session, changes)


# --- single-member operations ------------------------------------------------------------------


def _upgrade_one(
    session: Session, member_id: int, at: datetime, reason: str, tz: str
) -> list[TierChange]:
    """After growth for one member: move up if the window's value now reaches a level."""
    version = programmes.in_force(session, at)
    if version is None:
        return []
    programme = programmes.programme_of(version)
    session.flush()
    current = _states(session, [member_id]).get(member_id, (None, ""))[0]
    start = rules.window_start(programme.tiers.review, at, tz)
    value = _value_of(session, programme, member_id, start, at)
    target = rules.upgrade_to(programme, current, value)
    if target is None:
        return []
    if current is None:
        reason = "join"
    change = Change(at, current, target, reason)
    return _record_changes(session, [(member_id, change, programme)], tz)


def _check_key(key: str) -> str:
    key = (key or "").strip()
    if not key:
        raise InvalidInput("a key is required: the same key again changes nothing", field="key")
    if len(key) > MAX_KEY:
        raise InvalidInput(f"the key is longer than {MAX_KEY} characters", field="key")
    return key


def grant_bonus(
    session: Session,
    member_id: int,
    event: str,
    *,
    key: str,
    at: datetime | None = None,
    tz: str = TZ,
) -> int:
    """Growth for a bonus event of the document's ``growth.bonus_events`` (check-in, review,
    birthday ...), fact ``bonus:<event>:<member>:<key>``; returns the growth granted. 0 when
    the document has no such event, no programme is in force, or the member reached the
    event's ``per_member_limit``. A repeated key returns what it granted the first time."""
    key = _check_key(key)
    at = clock.as_utc(at) if at is not None else clock.now()
    fact = f"bonus:{event}:{member_id}:{key}"
    existing = session.scalar(select(GrowthEntry.growth).where(GrowthEntry.fact == fact))
    if existing is not None:
        return int(existing)
    version = programmes.in_force(session, at)
    if version is None:
        return 0
    programme = programmes.programme_of(version)
    rule = rules.bonus_rule(programme, event)
    if rule is None or rules.bonus_growth(programme, event, granted_before=0) == 0:
        return 0
    members.get(session, member_id)
    _lock_members(session, [member_id])
    used = 0
    if rule.per_member_limit is not None:  # counted only where a limit can refuse
        prefix = f"bonus:{event}:{member_id}:".replace("_", "\\_")
        used = session.scalar(
            select(func.count(GrowthEntry.id)).where(
                GrowthEntry.member_id == member_id,
                GrowthEntry.fact.like(prefix + "%", escape="\\"),
            )
        )
    growth = rules.bonus_growth(programme, event, granted_before=int(used or 0))
    if growth == 0:
        return 0
    _insert_entries(
        session,
        [
            {
                "member_id": member_id,
                "kind": "bonus",
                "growth": growth,
                "fact": fact,
                "at": at,
                "note": event,
            }
        ],
    )
    _add_growth(session, {member_id: growth})
    _publish_changes(session, _upgrade_one(session, member_id, at, "upgrade", tz))
    return int(growth)


def adjust(
    session: Session,
    member_id: int,
    growth: int,
    *,
    reason: str,
    principal: Principal,
    key: str,
    tz: str = TZ,
) -> GrowthEntry:
    """A manual growth adjustment (fact ``adjust:<key>``), audited. It may lift the member
    to a level it now reaches (history ``adjust``); a negative one never lowers the tier
    (the review decides). The same key again returns the first entry."""
    key = _check_key(key)
    if not reason or not reason.strip():
        raise InvalidInput("say why the growth value is adjusted", field="reason")
    if len(reason) > MAX_NOTE:
        raise InvalidInput(f"the reason is longer than {MAX_NOTE} characters", field="reason")
    if growth == 0:
        raise InvalidInput(
            "an adjustment of 0 changes nothing; give a signed amount", field="growth"
        )
    fact = f"adjust:{key}"
    existing = session.scalar(select(GrowthEntry).where(GrowthEntry.fact == fact))
    if existing is not None:
        if existing.member_id != member_id or existing.growth != growth:
            raise Conflict(
                f"adjustment key '{key}' was used for another adjustment ({existing.growth:+d} "
                f"to member {existing.member_id}); use a new key for a new adjustment",
                field="key",
                code="adjustment_conflict",
            )
        return existing
    members.get(session, member_id, principal=principal)
    _lock_members(session, [member_id])
    now = clock.now()
    entry = GrowthEntry(
        member_id=member_id,
        kind="adjust",
        growth=growth,
        spend_fen=0,
        orders=0,
        fact=fact,
        at=now,
        note=reason.strip(),
        created_at=now,
    )
    session.add(entry)
    session.flush()
    _add_growth(session, {member_id: growth})
    audit.record(
        session,
        actor=principal.actor,
        action="growth.adjust",
        target_type="member",
        target_id=member_id,
        detail={"growth": growth, "reason": reason.strip(), "key": key, "entry_id": entry.id},
    )
    if growth > 0:
        _publish_changes(session, _upgrade_one(session, member_id, now, "adjust", tz))
    return entry


def grant_tier(
    session: Session,
    member_id: int,
    code: str,
    *,
    ends_at: datetime,
    reason: str,
    principal: Principal,
    tz: str = TZ,
) -> TierGrant:
    """Grant a tier by hand until ``ends_at``: a floor that reviews respect. Above the
    member's tier it applies at once (history ``grant``); at its end the member returns to
    the tier held before, or what their value earns by then (``grant_end``). Audited."""
    if not reason or not reason.strip():
        raise InvalidInput("say why the tier is granted", field="reason")
    now = clock.now()
    ends_at = clock.as_utc(ends_at)
    if ends_at <= now:
        raise InvalidInput(
            f"ends_at {ends_at.isoformat()} is not in the future; a grant needs an end date "
            "after today",
            field="ends_at",
        )
    programme = programmes.programme_of(programmes.require_in_force(session, now))
    if rules.rank(programme, code) < 0:
        raise InvalidInput(
            f"unknown tier '{code}'; the ladder has: "
            + ", ".join(lv.code for lv in programme.tiers.levels),
            field="code",
        )
    member = members.get(session, member_id, principal=principal)
    if member.status == MemberStatus.merged:
        raise Conflict(
            f"member {member_id} was merged into {member.merged_into_id}; grant to that member",
            field="member_id",
        )
    _lock_members(session, [member_id])
    current = _states(session, [member_id])[member_id][0]
    grant = TierGrant(
        member_id=member_id,
        tier_code=code,
        held_code=current,
        starts_at=now,
        ends_at=ends_at,
        reason=reason.strip()[:MAX_NOTE],
        actor=principal.actor,
        created_at=now,
    )
    session.add(grant)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="tier.grant",
        target_type="member",
        target_id=member_id,
        detail={
            "grant_id": grant.id,
            "code": code,
            "ends_at": ends_at.isoformat(),
            "reason": grant.reason,
            "held": current,
        },
    )
    if rules.granted_level(programme, current, code) is not None:
        change = Change(now, current, code, "grant")
        changes = _record_changes(session, [(member_id, change, programme)], tz, note=grant.reason)
        _publish_changes(session, changes)
    return grant


def revoke_grant(
    session: Session, grant_id: int, *, reason: str, principal: Principal, tz: str = TZ
) -> TierGrant:
    """End a grant now; the member settles as at a grant's end. Audited."""
    if not reason or not reason.strip():
        raise InvalidInput("say why the grant is revoked", field="reason")
    grant = session.get(TierGrant, grant_id)
    if grant is None:
        raise NotFound(f"no tier grant with id {grant_id}", field="grant_id")
    members.get(session, grant.member_id, principal=principal)
    if grant.closed_at is not None:
        return grant
    now = clock.now()
    grant.revoked_at = now
    audit.record(
        session,
        actor=principal.actor,
        action="tier.revoke_grant",
        target_type="member",
        target_id=grant.member_id,
        detail={"grant_id": grant.id, "code": grant.tier_code, "reason": reason.strip()},
    )
    _publish_changes(session, _end_grants(session, [grant], now, tz))
    return grant


def _end_grants(
    session: Session, grants: Sequence[TierGrant], at: datetime, tz: str
) -> list[TierChange]:
    """Close grants and settle their members: back to the higher of the tier held before
    the grant (as a review would judge it on the value at ``at``), what the value earns on
    thresholds, and any other active grant; never up, and never below a tier the member
    earned above the grant meanwhile."""
    if not grants:
        return []
    ids = [g.id for g in grants]
    for grant in grants:
        grant.closed_at = at
    session.flush()
    version = programmes.in_force(session, at)
    if version is None:
        return []
    programme = programmes.programme_of(version)
    member_ids = sorted({g.member_id for g in grants})
    _lock_members(session, member_ids)
    states = _states(session, member_ids)
    start = rules.window_start(programme.tiers.review, at, tz)
    values = _values(session, member_ids, start, at, include_end=True)
    floors = _floors(session, member_ids, at, excluding=ids)
    by_member: dict[int, list[TierGrant]] = defaultdict(list)
    for grant in grants:
        by_member[grant.member_id].append(grant)
    changes: list[tuple[int, Change, Programme]] = []
    for member_id in member_ids:
        current, status = states.get(member_id, (None, MemberStatus.merged.value))
        if status == MemberStatus.merged or current is None:
            continue
        floor, _ = rules.floor(programme, floors.get(member_id, []))
        value = _value(programme, values.get(member_id))
        ending = [(g.tier_code, g.held_code) for g in by_member[member_id]]
        decided = rules.grant_end_level(programme, current, value, ending, floor)
        if decided is not None:
            changes.append((member_id, Change(at, current, decided, "grant_end"), programme))
    return _record_changes(session, changes, tz)


def end_grants_due(session: Session, day: date, *, tz: str = TZ, limit: int = BATCH) -> int:
    """Close up to ``limit`` grants that ended by the start of brand-local ``day``."""
    at = rules.day_start(day, tz)
    grants = list(
        session.scalars(
            select(TierGrant)
            .where(TierGrant.closed_at.is_(None), TierGrant.ends_at <= at)
            .order_by(TierGrant.id)
            .limit(limit)
        )
    )
    _publish_changes(session, _end_grants(session, grants, at, tz))
    return len(grants)


# --- review (保级) -------------------------------------------------------------------------------


@dataclass
class ReviewBatch:
    reviewed: int = 0
    kept: int = 0
    downgraded: int = 0
    last_member_id: int | None = None


def review_due(
    session: Session, day: date, *, tz: str = TZ, after_id: int = 0, limit: int = BATCH
) -> ReviewBatch:
    """Review up to ``limit`` members whose period ended by brand-local ``day`` (members
    after ``after_id``): kept, or lowered per the document, never below an active grant.
    Each gets their next review day after ``day``, so a second run finds nobody."""
    out = ReviewBatch()
    at = rules.day_start(day, tz)
    version = programmes.in_force(session, at)
    if version is None:
        return out
    programme = programmes.programme_of(version)
    review = programme.tiers.review
    rows = session.execute(
        select(TierPeriod.member_id, TierPeriod.review_on, Member.tier_code, Member.status)
        .join(Member, Member.id == TierPeriod.member_id)
        .where(TierPeriod.review_on <= day, TierPeriod.member_id > after_id)
        .order_by(TierPeriod.member_id)
        .limit(limit)
    ).all()
    if not rows:
        return out
    out.last_member_id = rows[-1].member_id
    ids = [r.member_id for r in rows]
    _lock_members(session, ids)
    gone = [r.member_id for r in rows if r.status == MemberStatus.merged or r.tier_code is None]
    if gone:
        for chunk in in_chunks(gone):
            session.execute(delete(TierPeriod).where(TierPeriod.member_id.in_(chunk)))
    live = [r for r in rows if r.member_id not in set(gone)]
    # A late run reviews the latest period that has ended, not each missed one.
    by_day: dict[date, list[Any]] = defaultdict(list)
    for row in live:
        by_day[rules.latest_review_on(review, row.review_on, day)].append(row)
    changes: list[tuple[int, Change, Programme]] = []
    kept_periods: list[dict[str, Any]] = []
    for review_on, group in sorted(by_day.items()):
        start, end = rules.review_window(review, review_on, tz)
        group_ids = [r.member_id for r in group]
        values = _values(session, group_ids, start, end, include_end=False)
        floors = _floors(session, group_ids, end)
        for row in group:
            floor, _ = rules.floor(programme, floors.get(row.member_id, []))
            value = _value(programme, values.get(row.member_id))
            decided = rules.review_decision(programme, row.tier_code, value, floor=floor)
            out.reviewed += 1
            if decided == row.tier_code:
                out.kept += 1
                nxt = rules.review_after(review, rules.next_review_on(review, review_on), day)
                kept_periods.append(
                    {"member_id": row.member_id, "period_start": review_on, "review_on": nxt}
                )
            else:
                lower = rules.rank(programme, decided) < rules.rank(programme, row.tier_code)
                out.downgraded += int(lower)
                changes.append(
                    (row.member_id, Change(end, row.tier_code, decided, "review"), programme)
                )
    _save_periods(session, kept_periods)
    tier_changes = _record_changes(session, changes, tz)
    # A change's next review counts from its day; after a late run it may be due already.
    _push_past(session, [c.member_id for c in tier_changes], day, review)
    _publish_changes(session, tier_changes)
    return out


def _push_past(session: Session, member_ids: list[int], day: date, review: Any) -> None:
    if not member_ids:
        return
    rows = session.execute(
        select(TierPeriod.member_id, TierPeriod.period_start, TierPeriod.review_on).where(
            TierPeriod.member_id.in_(member_ids), TierPeriod.review_on <= day
        )
    ).all()
    fixed = []
    for member_id, start, review_on in rows:
        fixed.append(
            {
                "member_id": member_id,
                "period_start": start,
                "review_on": rules.review_after(review, review_on, day),
            }
        )
    _save_periods(session, fixed)


# --- reading -----------------------------------------------------------------------------------


def progress(
    session: Session,
    member_id: int,
    *,
    at: datetime | None = None,
    principal: Principal | None = None,
    tz: str = TZ,
) -> rules.Progress:
    """Where the member stands: the value of the window ending now, what reaches the next
    level by the end of the period, what keeps the current one at the next review."""
    member = members.get(session, member_id, principal=principal)
    at = clock.as_utc(at) if at is not None else clock.now()
    programme = programmes.programme_at(session, at)
    review = programme.tiers.review
    start = rules.window_start(review, at, tz)
    value = _value_of(session, programme, member_id, start, at)
    period = session.get(TierPeriod, member_id)
    if period is not None:
        review_on = period.review_on
    else:
        review_on = rules.first_review_on(programme.tiers, clock.local_date(at, tz), reached=False)
    kept_start, _ = rules.review_window(review, review_on, tz)
    kept = _value_of(session, programme, member_id, kept_start, at)
    floor, until = rules.floor(programme, _floors(session, [member_id], at).get(member_id, []))
    return rules.progress(
        programme,
        member.tier_code,
        value=value,
        kept_value=kept,
        review_on=review_on,
        floor_code=floor,
        floor_until=until,
    )


def level(session: Session, code: str | None, *, at: datetime | None = None) -> Any:
    """The ladder level of a code in the programme in force (None if unknown)."""
    version = programmes.in_force(session, at)
    if version is None or code is None:
        return None
    programme = programmes.programme_of(version)
    i = rules.rank(programme, code)
    return programme.tiers.levels[i] if i >= 0 else None


def history(
    session: Session, member_id: int, *, principal: Principal | None = None, limit: int = 100
) -> list[TierHistory]:
    """Tier changes, newest first."""
    members.get(session, member_id, principal=principal)
    return list(
        session.scalars(
            select(TierHistory)
            .where(TierHistory.member_id == member_id)
            .order_by(TierHistory.at.desc(), TierHistory.id.desc())
            .limit(max(1, min(limit, 500)))
        )
    )


def entries(
    session: Session,
    member_id: int,
    *,
    principal: Principal | None = None,
    before: tuple[datetime, int] | None = None,
    limit: int = 50,
) -> list[GrowthEntry]:
    """Growth entries newest first, keyset-paged on (at, id) over ``(member_id, at)``."""
    members.get(session, member_id, principal=principal)
    query = select(GrowthEntry).where(GrowthEntry.member_id == member_id)
    if before is not None:
        at, entry_id = before
        query = query.where(
            or_(GrowthEntry.at < at, and_(GrowthEntry.at == at, GrowthEntry.id < entry_id))
        )
    limit = max(1, min(limit, 500))
    return list(
        session.scalars(query.order_by(GrowthEntry.at.desc(), GrowthEntry.id.desc()).limit(limit))
    )


def grants_of(session: Session, member_id: int) -> list[TierGrant]:
    return list(
        session.scalars(
            select(TierGrant).where(TierGrant.member_id == member_id).order_by(TierGrant.id.desc())
        )
    )


# --- cached balances ---------------------------------------------------------------------------


def _expected_growth() -> Any:
    return (
        select(func.coalesce(func.sum(GrowthEntry.growth), 0))
        .where(GrowthEntry.member_id == Member.id)
        .scalar_subquery()
    )


def recompute(session: Session, member_ids: Sequence[int] | None = None) -> int:
    """Set cached growth balances to the sum of their entries (everyone when ``None``), in
    ranges of member ids; returns how many were wrong."""
    session.flush()
    expected = _expected_growth()
    total = 0

    def fix(where: Any) -> int:
        result = session.execute(
            update(Member)
            .where(where, Member.growth_balance != expected)
            .values(growth_balance=expected)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    if member_ids is not None:
        for chunk in in_chunks(sorted(set(member_ids))):
            total += fix(Member.id.in_(chunk))
        _expire_members(session, member_ids)
    else:
        low, high = session.execute(select(func.min(Member.id), func.max(Member.id))).one()
        if low is not None:
            for start in range(low, high + 1, RECOMPUTE_RANGE):
                total += fix(Member.id.between(start, start + RECOMPUTE_RANGE - 1))
        expire_stale(session, Member)
    return total


@dataclass(frozen=True)
class GrowthDrift:
    member_id: int
    cached: int
    expected: int


def check(session: Session, limit: int | None = 1_000) -> list[GrowthDrift]:
    """Members whose cached growth differs from the sum of their entries. Changes nothing;
    ``recompute`` repairs."""
    session.flush()
    sums = (
        select(GrowthEntry.member_id, func.sum(GrowthEntry.growth).label("total"))
        .group_by(GrowthEntry.member_id)
        .subquery("sums")
    )
    expected = func.coalesce(sums.c.total, 0)
    query = (
        select(Member.id, Member.growth_balance, expected)
        .select_from(Member)
        .outerjoin(sums, sums.c.member_id == Member.id)
        .where(Member.growth_balance != expected)
        .order_by(Member.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [GrowthDrift(m, int(c), int(e)) for m, c, e in session.execute(query)]


__all__ = [
    "GrowthApplied",
    "GrowthDrift",
    "ReviewBatch",
    "TierChange",
    "TiersChanged",
    "adjust",
    "check",
    "end_grants_due",
    "entries",
    "grant_bonus",
    "grant_tier",
    "history",
    "progress",
    "recompute",
    "review_due",
    "revoke_grant",
]
