"""Points operations: earn, spend, reverse, expire, check in. Services flush, never commit.

Everything that changes a member's points goes through two helpers: ``_add_lots`` (points
coming in, set-based for any number of members: one lookup of known facts, one lock of the
members' rows, one ``INSERT`` of lots, one of entries, one ``UPDATE`` of cached balances)
and ``_take`` (points going out of given lots). Both lock the members' rows first, in id
order (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises
writers), so two spends of one balance queue up and two chunks never deadlock.

Every fact is idempotent: a lot's ``fact`` is unique and entries are unique on
``(fact, seq)``; a repeat finds the first result and changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from siyu.core import audit, clock
from siyu.core.auth import Principal
from siyu.core.bulk import execute_rows, insert_rows, insert_tuples, next_ids
from siyu.core.db import ONE_OF_CHUNK, expire_stale, in_chunks, one_of
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.core.settings import get_settings
from siyu.members.models import Member
from siyu.orders.models import OrderLine
from siyu.points import rules
from siyu.points.models import CheckInDay, PointsEntry, PointsLot, PointsReservation
from siyu.programme.rules import Programme
from siyu.programme.service import Timeline, in_force, programme_of

EVENTS = ("signup", "birthday", "profile_completion", "review")
MAX_NOTE = 500


def _tz() -> str:
    return get_settings().timezone


def _programme(session: Session, at: datetime) -> Programme | None:
    version = in_force(session, at)
    return None if version is None else programme_of(version)


# --- accounts: the member rows, locked -----------------------------------------------------


@dataclass
class _Account:
    balance: int
    frozen: int
    debt: int
    changed: bool = False


def _lock(session: Session, member_ids: Iterable[int]) -> dict[int, _Account]:
    """Lock the members' rows in id order (no deadlock between two chunks) and read their
    cached balances. Unknown members are an error."""
    ids = sorted(set(member_ids))
    accounts: dict[int, _Account] = {}
    for chunk in in_chunks(ids, ONE_OF_CHUNK):
        query = (
            select(Member.id, Member.points_balance, Member.points_frozen, Member.points_debt)
            .where(one_of(session, Member.id, chunk))
            .order_by(Member.id)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        for member_id, balance, frozen, debt in session.execute(query):
            accounts[member_id] = _Account(balance or 0, frozen or 0, debt or 0)
    missing = [m for m in ids if m not in accounts]
    if missing:
        raise NotFound(f"no member with id {missing[0]}", field="member_id")
    return accounts


def _save(session: Session, accounts: dict[int, _Account]) -> None:
    rows = [
        {"b_id": member_id, "b_balance": a.balance, "b_frozen": a.frozen, "b_debt": a.debt}
        for member_id, a in sorted(accounts.items())
        if a.changed
    ]
    if rows:
        # One executemany of the driver, not the ORM's bulk update by primary key nor
        # Core's: the same UPDATE per member, without their per-row bookkeeping (an
        # import chunk saves thousands).
        execute_rows(session, _SET_BALANCES, rows)
        expire_stale(session, Member, (r["b_id"] for r in rows))


_SET_BALANCES = (
    update(Member.__table__)
    .where(Member.__table__.c.id == bindparam("b_id"))
    .values(
        points_balance=bindparam("b_balance"),
        points_frozen=bindparam("b_frozen"),
        points_debt=bindparam("b_debt"),
    )
)


def _entry(
    member_id: int,
    kind: str,
    points: int,
    account: _Account,
    *,
    fact: str,
    seq: int,
    at: datetime,
    lot_id: int | None = None,
    debt: int = 0,
    note: str | None = None,
) -> dict[str, Any]:
    """An entry's row, applied to the account (its balance after)."""
    return dict(
        zip(
            _ENTRY_COLUMNS,
            _entry_values(
                member_id,
                kind,
                points,
                account,
                fact=fact,
                seq=seq,
                at=at,
                lot_id=lot_id,
                debt=debt,
                note=note,
            ),
            strict=True,
        )
    )


def _entry_values(
    member_id: int,
    kind: str,
    points: int,
    account: _Account,
    *,
    fact: str,
    seq: int,
    at: datetime,
    lot_id: int | None = None,
    debt: int = 0,
    note: str | None = None,
) -> tuple[Any, ...]:
    """``_entry`` as a tuple in the order of ``_ENTRY_COLUMNS`` (for ``insert_tuples``)."""
    account.balance += points
    account.debt += debt
    account.changed = True
    return (
        member_id,
        kind,
        points,
        debt,
        account.balance,
        lot_id,
        fact,
        seq,
        at,
        note[:MAX_NOTE] if note else None,
    )


_ENTRY_COLUMNS = (
    "member_id",
    "kind",
    "points",
    "debt",
    "balance_after",
    "lot_id",
    "fact",
    "seq",
    "at",
    "note",
)


# --- points coming in ----------------------------------------------------------------------


@dataclass(slots=True)
class LotDraft:
    member_id: int
    points: int
    fact: str
    source: str
    earned_at: datetime
    available_at: datetime
    expires_at: datetime | None
    order_id: int | None = None
    # What each line earned: objects of line_no, amount_fen and points (dictionaries, or
    # the ``LineEarning`` named tuples earning gives, stored alike)
    lines: Sequence[Any] | None = None
    note: str | None = None
    kind: str = "earn"


def _existing_lots(session: Session, facts: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in in_chunks(sorted(set(facts)), ONE_OF_CHUNK):
        found.update(
            session.execute(
                select(PointsLot.fact, PointsLot.id).where(one_of(session, PointsLot.fact, chunk))
            ).all()
        )
    return found


def _add_lots(session: Session, drafts: Sequence[LotDraft]) -> dict[str, int]:
    """Store new lots and their entries; facts already stored are left alone. Points coming
    in settle a negative balance and a debt first. Returns fact -> lot id of every lot
    (new or known) of the drafts with points."""
    return _store_lots(session, drafts)[0]


def _store_lots(
    session: Session, drafts: Sequence[LotDraft]
) -> tuple[dict[str, int], frozenset[str]]:
    """``_add_lots``, also saying which facts it stored now (the others were known)."""
    drafts = [d for d in drafts if d.points > 0]
    if not drafts:
        return {}, frozenset()
    known = _existing_lots(session, [d.fact for d in drafts])
    new: dict[str, LotDraft] = {}
    for d in drafts:
        if d.fact not in known:
            new.setdefault(d.fact, d)
    if not new:
        return known, frozenset()
    now = clock.now()
    accounts = _lock(session, (d.member_id for d in new.values()))
    # Ids reserved up front: the entries need them, and no RETURNING is needed to map
    # them back (see ``siyu.core.bulk``). Rows are tuples in the order of ``_LOT_COLUMNS``
    # and ``_ENTRY_COLUMNS``: an import chunk writes thousands of each.
    ids = next_ids(session, PointsLot.__table__, len(new))
    lot_rows = []
    settlements = []
    as_utc, settle = clock.as_utc, rules.settle
    for d, lot_id in zip(new.values(), ids, strict=True):
        account = accounts[d.member_id]
        s = settle(d.points, balance=account.balance, debt=account.debt)
        # Frozen: a return window that has not ended yet (lots without one never are).
        available_at = as_utc(d.available_at)
        frozen = available_at > now and available_at > as_utc(d.earned_at)
        remaining = d.points - s.kept
        if frozen:
            account.frozen += remaining
        settlements.append(s)
        lot_rows.append(
            (
                lot_id,
                d.member_id,
                d.source,
                d.points,
                remaining,
                d.earned_at,
                d.available_at,
                frozen,
                d.expires_at,
                d.fact,
                d.order_id,
                d.lines,
            )
        )
    insert_tuples(session, PointsLot.__table__, _LOT_COLUMNS, lot_rows)
    entries = []
    for d, s, lot_id in zip(new.values(), settlements, ids, strict=True):
        account = accounts[d.member_id]
        at = max(clock.as_utc(d.earned_at), now) if d.kind != "earn" else d.earned_at
        entries.append(
            _entry_values(
                d.member_id, d.kind, d.points, account, fact=d.fact, seq=0, at=at, lot_id=lot_id,
                note=d.note,
            )
        )  # fmt: skip
        if s.debt:
            entries.append(
                _entry_values(
                    d.member_id,
                    "settle",
                    -s.debt,
                    account,
                    fact=d.fact,
                    seq=1,
                    at=at,
                    lot_id=lot_id,
                    debt=-s.debt,
                    note=f"{s.debt} points settle a debt",
                )
            )
        known[d.fact] = lot_id
    insert_tuples(session, PointsEntry.__table__, _ENTRY_COLUMNS, entries)
    _save(session, accounts)
    return known, frozenset(new)


_LOT_COLUMNS = (
    "id",
    "member_id",
    "source",
    "points",
    "remaining",
    "earned_at",
    "available_at",
    "frozen",
    "expires_at",
    "fact",
    "order_id",
    "lines",
)


def _lot_draft(
    programme: Programme | None,
    member_id: int,
    points: int,
    *,
    fact: str,
    source: str,
    at: datetime,
    tz: str,
    frozen_days: int = 0,
    note: str | None = None,
    kind: str = "earn",
) -> LotDraft:
    expires = None if programme is None else rules.expires_at(programme.points.expiry, at, tz)
    return LotDraft(
        member_id,
        points,
        fact,
        source,
        at,
        at + timedelta(days=frozen_days),
        expires,
        note=note,
        kind=kind,
    )


def grant(
    session: Session,
    member_id: int,
    points: int,
    *,
    fact: str,
    reason: str,
    at: datetime | None = None,
) -> PointsLot | None:
    """A lot of ``points`` earned now (expiry per the programme in force; not frozen).
    Idempotent on ``fact``: a repeat returns the first lot and changes nothing."""
    if points < 0:
        raise InvalidInput(
            "points to grant cannot be negative; use spend or adjust", field="points"
        )
    if points == 0:
        return None
    at = clock.as_utc(at) if at is not None else clock.now()
    programme = _programme(session, at)
    draft = _lot_draft(
        programme, member_id, points, fact=fact, source="grant", at=at, tz=_tz(), note=reason
    )
    lot_id = _add_lots(session, [draft])[fact]
    lot = session.get(PointsLot, lot_id)
    assert lot is not None
    if lot.member_id != member_id and not _merged_into(session, member_id, lot.member_id):
        raise Conflict(
            f"the fact '{fact}' already granted points to member {lot.member_id}; "
            "use a fact of its own for each grant",
            field="fact",
            code="fact_taken",
        )
    return lot


@dataclass(frozen=True)
class Grant:
    member_id: int
    points: int
    fact: str
    reason: str


def grant_many(session: Session, grants: Sequence[Grant], *, at: datetime | None = None) -> int:
    """``grant`` for many members at once (benefit packs to a whole chunk of members), in a
    constant number of statements. Idempotent per fact; returns the points newly granted."""
    if any(g.points < 0 for g in grants):
        raise InvalidInput("points to grant cannot be negative", field="points")
    at = clock.as_utc(at) if at is not None else clock.now()
    programme = _programme(session, at)
    tz = _tz()
    drafts = [
        _lot_draft(
            programme, g.member_id, g.points, fact=g.fact, source="grant", at=at, tz=tz,
            note=g.reason,
        )
        for g in grants
        if g.points > 0
    ]  # fmt: skip
    _, added = _store_lots(session, drafts)
    return sum(d.points for d in drafts if d.fact in added)


def _merged_into(session: Session, member_id: int, survivor: int) -> bool:
    member = session.get(Member, member_id)
    return member is not None and member.merged_into_id == survivor


# --- points going out ----------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    fact: str
    member_id: int
    points: int
    balance_after: int
    lots: tuple[tuple[int, int], ...] = ()
    at: datetime | None = None


def _spendable(member_id: int, at: datetime) -> Any:
    return and_(
        PointsLot.member_id == member_id,
        PointsLot.remaining > 0,
        or_(PointsLot.expires_at.is_(None), PointsLot.expires_at > at),
        or_(PointsLot.frozen.is_(False), PointsLot.available_at <= at),
    )


def _lot_states(session: Session, condition: Any) -> list[rules.LotState]:
    rows = session.execute(
        select(PointsLot.id, PointsLot.remaining, PointsLot.expires_at).where(condition)
    )
    return [rules.LotState(i, r, clock.as_utc(e) if e else None) for i, r, e in rows]


def _held(session: Session, member_id: int, at: datetime, *, except_key: str | None = None) -> int:
    query = select(func.coalesce(func.sum(PointsReservation.points), 0)).where(
        PointsReservation.member_id == member_id,
        PointsReservation.status == "held",
        PointsReservation.expires_at > at,
    )
    if except_key is not None:
        query = query.where(PointsReservation.key != except_key)
    return int(session.scalar(query) or 0)


def available(session: Session, member_id: int, *, at: datetime | None = None) -> int:
    """Points the member can spend now: lots not frozen and not expired, less holds."""
    at = clock.as_utc(at) if at is not None else clock.now()
    lots = session.scalar(
        select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(_spendable(member_id, at))
    )
    return int(lots or 0) - _held(session, member_id, at)


def _take(
    session: Session,
    member_id: int,
    account: _Account,
    taken: Sequence[tuple[int, int]],
    *,
    kind: str,
    fact: str,
    at: datetime,
    seq: int = 0,
    note: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Take points out of lots: lower each lot's remaining, and the cached frozen points
    where the lot was still counted frozen. Returns the entries and the next seq."""
    if not taken:
        return [], seq
    ids = [lot_id for lot_id, _ in taken]
    lots = {
        i: (remaining, frozen)
        for i, remaining, frozen in session.execute(
            select(PointsLot.id, PointsLot.remaining, PointsLot.frozen).where(PointsLot.id.in_(ids))
        )
    }
    updates = []
    entries = []
    for lot_id, n in taken:
        remaining, frozen = lots[lot_id]
        updates.append({"id": lot_id, "remaining": remaining - n})
        if frozen:
            account.frozen -= n
        entries.append(
            _entry(
                member_id, kind, -n, account, fact=fact, seq=seq, at=at, lot_id=lot_id, note=note
            )
        )
        seq += 1
    session.execute(update(PointsLot), updates)
    _expire_lots(session, ids)
    return entries, seq


def _expire_lots(session: Session, ids: Iterable[int]) -> None:
    expire_stale(session, PointsLot, ids)


def _set_lots(session: Session, ids: Sequence[int], **values: Any) -> None:
    """The same change to many lots: one ``UPDATE .. WHERE id IN (..)`` per 500 lots, not a
    statement per lot (the nightly jobs touch hundreds of thousands)."""
    table = PointsLot.__table__
    for chunk in in_chunks(sorted(ids)):
        session.execute(update(table).where(table.c.id.in_(chunk)).values(**values))


def _stored_spend(session: Session, fact: str) -> Spend | None:
    rows = list(
        session.scalars(
            select(PointsEntry).where(PointsEntry.fact == fact).order_by(PointsEntry.seq)
        )
    )
    if not rows:
        return None
    if any(r.kind not in ("spend", "adjust") for r in rows):
        raise Conflict(
            f"the fact '{fact}' names something other than a spend ({rows[0].kind}); "
            "use a fact of its own for each spend",
            field="fact",
            code="fact_taken",
        )
    return Spend(
        fact=fact,
        member_id=rows[-1].member_id,
        points=-sum(r.points for r in rows),
        balance_after=rows[-1].balance_after,
        lots=tuple((r.lot_id, -r.points) for r in rows if r.lot_id is not None),
        at=rows[0].at,
    )


def _insufficient(member_id: int, wanted: int, have: int) -> Conflict:
    return Conflict(
        f"member {member_id} has {max(have, 0)} points available to spend; {wanted} were "
        "asked (frozen, expired and reserved points cannot be spent)",
        field="points",
        code="insufficient_points",
        details={"available": max(have, 0), "requested": wanted},
    )


def spend(
    session: Session,
    member_id: int,
    points: int,
    *,
    fact: str,
    reason: str,
    at: datetime | None = None,
) -> Spend:
    """Spend ``points`` from the oldest-expiring available lots. Locks the member first;
    idempotent on ``fact`` (a repeat returns the first spend)."""
    return _spend(session, member_id, points, fact=fact, reason=reason, at=at)


def _spend(
    session: Session,
    member_id: int,
    points: int,
    *,
    fact: str,
    reason: str,
    at: datetime | None = None,
    kind: str = "spend",
    except_key: str | None = None,
) -> Spend:
    if points <= 0:
        raise InvalidInput(f"points to spend must be more than 0, not {points}", field="points")
    at = clock.as_utc(at) if at is not None else clock.now()
    account = _lock(session, [member_id])[member_id]
    replay = _stored_spend(session, fact)  # after the lock: a concurrent copy has committed
    if replay is not None:
        return replay
    lots = _lot_states(session, _spendable(member_id, at))
    have = sum(x.remaining for x in lots) - _held(session, member_id, at, except_key=except_key)
    if points > have:
        raise _insufficient(member_id, points, have)
    taken = rules.allocate(lots, points)
    entries, _ = _take(session, member_id, account, taken, kind=kind, fact=fact, at=at, note=reason)
    insert_rows(session, PointsEntry.__table__, entries)
    _save(session, {member_id: account})
    return Spend(fact, member_id, points, account.balance, tuple(taken), at)


def cancel_spend(session: Session, spend_fact: str, *, fact: str) -> int:
    """Give a spend's points back to the lots they came from; points of lots that expired
    meanwhile come back as a new lot with the programme's expiry. Returns the points given
    back; idempotent on ``fact``."""
    spent = list(
        session.scalars(
            select(PointsEntry)
            .where(PointsEntry.fact == spend_fact, PointsEntry.kind == "spend")
            .order_by(PointsEntry.seq)
        )
    )
    if not spent:
        raise NotFound(f"no spend with the fact '{spend_fact}'", field="spend_fact")
    member_id = spent[0].member_id
    account = _lock(session, [member_id])[member_id]
    done = session.scalars(select(PointsEntry).where(PointsEntry.fact == fact)).all()
    if done:
        return sum(e.points for e in done if e.kind == "cancel")
    now = clock.now()
    tz = _tz()
    lot_ids = [e.lot_id for e in spent if e.lot_id is not None]
    lots = {x.id: x for x in session.scalars(select(PointsLot).where(PointsLot.id.in_(lot_ids)))}
    back: list[tuple[PointsLot, int]] = []
    lapsed = 0
    for e in spent:
        lot = lots[e.lot_id] if e.lot_id is not None else None
        if lot is not None and (lot.expires_at is None or clock.as_utc(lot.expires_at) > now):
            back.append((lot, -e.points))
        else:
            lapsed += -e.points
    total = sum(n for _, n in back) + lapsed
    s = rules.settle(total, balance=account.balance, debt=account.debt)
    keep = s.kept  # what settles a shortfall stays out of the lots
    entries = []
    seq = 0
    for lot, n in back:
        kept = min(keep, n)
        keep -= kept
        lot.remaining += n - kept
        if lot.frozen:
            account.frozen += n - kept
        entries.append(
            _entry(
                member_id,
                "cancel",
                n,
                account,
                fact=fact,
                seq=seq,
                at=now,
                lot_id=lot.id,
                note=f"spend {spend_fact} cancelled",
            )
        )
        seq += 1
    if lapsed:
        programme = _programme(session, now)
        kept = min(keep, lapsed)
        keep -= kept
        lot = PointsLot(
            member_id=member_id,
            source="cancel",
            points=lapsed,
            remaining=lapsed - kept,
            earned_at=now,
            available_at=now,
            frozen=False,
            expires_at=None
            if programme is None
            else rules.expires_at(programme.points.expiry, now, tz),
            fact=fact,
        )
        session.add(lot)
        session.flush()
        entries.append(
            _entry(
                member_id,
                "cancel",
                lapsed,
                account,
                fact=fact,
                seq=seq,
                at=now,
                lot_id=lot.id,
                note=f"spend {spend_fact} cancelled; its lots had expired",
            )
        )
        seq += 1
    if s.debt:
        entries.append(
            _entry(
                member_id,
                "settle",
                -s.debt,
                account,
                fact=fact,
                seq=seq,
                at=now,
                debt=-s.debt,
                note=f"{s.debt} points settle a debt",
            )
        )
    insert_rows(session, PointsEntry.__table__, entries)
    _save(session, {member_id: account})
    session.flush()
    return total


# --- orders and refunds --------------------------------------------------------------------


def earn_orders(
    session: Session,
    orders: Sequence[Any],
    tier_at_order: dict[int, str | None],
    *,
    tz: str | None = None,
    programme_at_order: Mapping[int, Programme | None] | None = None,
) -> int:
    """Points of a chunk of new orders (``IngestedOrder``): one lot and one entry per order
    that earns, frozen through the return window, set-based. Returns the points earned.

    ``programme_at_order`` (order id -> the programme in force when it was paid) is what the
    tiers package worked out for the same orders; without it, it is looked up here."""
    tz = tz or _tz()
    zone = ZoneInfo(tz)
    if programme_at_order is None:
        timeline = Timeline(session)
        programme_at_order = {o.order_id: timeline.at(o.paid_at) for o in orders}
    drafts = []
    # When a lot expires depends on the programme and the brand-local day it was earned:
    # computed once per day of the chunk, not per order; its return window once per
    # programme.
    expiry: dict[tuple[int, date], datetime | None] = {}
    frozen_for: dict[int, timedelta] = {}
    as_utc, earn_lines = clock.as_utc, rules.earn_lines
    for order in orders:
        programme = programme_at_order[order.order_id]
        if programme is None:
            continue
        paid_at = as_utc(order.paid_at)
        earned = earn_lines(
            programme,
            order.lines,  # IngestedLine: what earning reads, as it is
            paid_at=paid_at,
            tier=tier_at_order.get(order.order_id),
            tz=tz,
        )
        points = 0
        for x in earned:
            points += x.points
        if points <= 0:
            continue
        day_key = (id(programme), paid_at.astimezone(zone).date())
        if day_key not in expiry:
            # In UTC, as it is stored: one conversion per day, not one per lot.
            expires = rules.expires_at(programme.points.expiry, paid_at, tz)
            expiry[day_key] = None if expires is None else as_utc(expires)
        frozen = frozen_for.get(id(programme))
        if frozen is None:
            frozen = frozen_for[id(programme)] = timedelta(days=programme.points.frozen_days)
        drafts.append(
            LotDraft(
                order.member_id,
                points,
                f"order:{order.order_id}",
                "order",
                paid_at,
                paid_at + frozen,
                expiry[day_key],
                order_id=order.order_id,
                # ``LineEarning``s, stored as the objects of their fields (``siyu.core.bulk``)
                lines=earned,
            )
        )
    _add_lots(session, drafts)
    return sum(d.points for d in drafts)


def reverse_refund(
    session: Session,
    *,
    refund_id: int,
    order_id: int,
    refunded_at: datetime,
    lines: Sequence[tuple[int, int]],
) -> int:
    """Take back what the refunded lines earned (fact ``refund:<id>``): from the order's lot
    first, then the member's other lots, then per the programme's ``negative_balance``.
    ``lines`` are ``(line_no, amount refunded by this refund)``. Returns the points taken."""
    fact = f"refund:{refund_id}"
    lot = session.scalar(select(PointsLot).where(PointsLot.fact == f"order:{order_id}"))
    if lot is None or not lot.lines:
        return 0
    member_id = lot.member_id
    account = _lock(session, [member_id])[member_id]
    if session.scalar(select(PointsEntry.id).where(PointsEntry.fact == fact).limit(1)):
        return 0
    session.refresh(lot)
    refunded_now = dict(
        session.execute(
            select(OrderLine.line_no, OrderLine.refunded_fen).where(OrderLine.order_id == order_id)
        ).all()
    )
    snapshot = {x["line_no"]: x for x in lot.lines}
    points = 0
    for line_no, amount in lines:
        earned = snapshot.get(line_no)
        if earned is None:
            continue
        now_fen = refunded_now.get(line_no, amount)
        points += rules.reversal(earned["points"], earned["amount_fen"], now_fen - amount, now_fen)
    if points <= 0:
        return 0
    at = clock.now()
    note = f"refund {refund_id} of order {order_id}"
    taken, missing = rules.take_back(
        rules.LotState(lot.id, lot.remaining, lot.expires_at),
        points,
        lambda: _lot_states(
            session,
            and_(PointsLot.member_id == member_id, PointsLot.remaining > 0, PointsLot.id != lot.id),
        ),
    )
    entries, seq = _take(
        session, member_id, account, taken, kind="reverse", fact=fact, at=at, note=note
    )
    if missing > 0:
        programme = _programme(session, clock.as_utc(refunded_at))
        policy = programme.points.negative_balance if programme is not None else "debt"
        short = rules.shortfall(missing, policy)
        if short.negative or short.debt:
            what = "the balance goes below zero" if short.negative else "recorded as a debt"
            entries.append(
                _entry(
                    member_id,
                    "reverse",
                    -short.negative,
                    account,
                    fact=fact,
                    seq=seq,
                    at=at,
                    debt=short.debt,
                    note=f"{note}: {missing} points already spent; {what}",
                )
            )
    insert_rows(session, PointsEntry.__table__, entries)
    _save(session, {member_id: account})
    return points


def signup_points(session: Session, members: Sequence[tuple[int, datetime]]) -> int:
    """Signup points of newly enrolled members (``MembersEnrolled``), set-based."""
    tz = _tz()
    timeline = Timeline(session)
    drafts = []
    for member_id, joined_at in members:
        at = clock.as_utc(joined_at)
        programme = timeline.at(at)
        rule = programme.points.events.signup if programme is not None else None
        if rule is None or rule.points <= 0:
            continue
        drafts.append(
            _lot_draft(
                programme,
                member_id,
                rule.points,
                fact=f"signup:{member_id}",
                source="signup",
                at=at,
                tz=tz,
            )
        )
    _add_lots(session, drafts)
    return sum(d.points for d in drafts)


# --- events and check-ins ------------------------------------------------------------------


@dataclass(frozen=True)
class EventAward:
    event: str
    member_id: int
    points: int
    lot_id: int | None
    fact: str
    reason: str | None = None  # why nothing was awarded


def _growth_bonus(session: Session, member_id: int, event: str, *, key: str, at: datetime) -> None:
    """The growth side of a bonus event, where the tiers package offers it."""
    try:
        from siyu.tiers import service as tiers
    except ImportError:  # pragma: no cover - tiers not installed
        return
    grant_bonus = getattr(tiers, "grant_bonus", None)
    if grant_bonus is not None:
        grant_bonus(session, member_id, event, key=key, at=at)


def award_event(
    session: Session,
    member_id: int,
    event: str,
    *,
    key: str,
    at: datetime | None = None,
    tz: str | None = None,
) -> EventAward:
    """Fixed points for signup, birthday, profile completion or a review, within the
    programme's per-day and per-member limits; idempotent on ``key``. Also the growth
    bonus of the same event (tiers)."""
    if event not in EVENTS:
        raise InvalidInput(
            f"unknown points event '{event}'; use one of: {', '.join(EVENTS)}", field="event"
        )
    if not key.strip():
        raise InvalidInput(
            "an event needs a key (what it is about, e.g. the review id)", field="key"
        )
    tz = tz or _tz()
    at = clock.as_utc(at) if at is not None else clock.now()
    fact = f"{event}:{member_id}:{key}"
    _lock(session, [member_id])
    known = session.scalar(select(PointsLot).where(PointsLot.fact == fact))
    if known is not None:
        return EventAward(event, member_id, known.points, known.id, fact)
    if event != "signup":
        _growth_bonus(session, member_id, event, key=key, at=at)
    programme = _programme(session, at)
    rule = getattr(programme.points.events, event) if programme is not None else None
    if rule is None or rule.points <= 0:
        return EventAward(event, member_id, 0, None, fact, "the programme gives no points for it")
    day = clock.local_date(at, tz)
    counts = session.execute(
        select(
            func.count(),
            func.coalesce(
                func.sum(
                    case(
                        (
                            and_(
                                PointsLot.earned_at >= rules.day_start(day, tz),
                                PointsLot.earned_at < rules.day_end(day, tz),
                            ),
                            1,
                        ),
                        else_=0,
                    )
                ),
                0,
            ),
        ).where(PointsLot.member_id == member_id, PointsLot.source == event)
    ).one()
    if not rules.event_allowed(rule, today=int(counts[1]), ever=int(counts[0])):
        return EventAward(event, member_id, 0, None, fact, "over the event's limit")
    draft = _lot_draft(programme, member_id, rule.points, fact=fact, source=event, at=at, tz=tz)
    lot_id = _add_lots(session, [draft])[fact]
    return EventAward(event, member_id, rule.points, lot_id, fact)


@dataclass(frozen=True)
class CheckInResult:
    member_id: int
    day: date
    streak: int
    points: int
    bonus: int
    created: bool


def check_in(
    session: Session, member_id: int, *, at: datetime | None = None, tz: str = "Asia/Shanghai"
) -> CheckInResult:
    """Today's check-in (签到): one per brand-local day; the streak continues from
    yesterday's. A second call the same day returns the first result. Also the growth
    bonus ``check_in`` (tiers)."""
    at = clock.as_utc(at) if at is not None else clock.now()
    day = clock.local_date(at, tz)
    _lock(session, [member_id])
    rows = {
        row.day: row
        for row in session.scalars(
            select(CheckInDay).where(
                CheckInDay.member_id == member_id,
                CheckInDay.day.in_([day, day - timedelta(days=1)]),
            )
        )
    }
    today = rows.get(day)
    if today is not None:
        return _check_in_result(session, today, created=False)
    yesterday = rows.get(day - timedelta(days=1))
    programme = _programme(session, at)
    rule = programme.points.events.check_in if programme is not None else None
    if rule is None:
        award = rules.CheckInAward((yesterday.streak if yesterday else 0) + 1, 0, 0)
    else:
        earned_before = 0
        if rule.per_member_limit is not None:
            earned_before = int(
                session.scalar(
                    select(func.count()).where(
                        CheckInDay.member_id == member_id, CheckInDay.points > 0
                    )
                )
                or 0
            )
        award = rules.check_in_award(
            rule,
            previous_streak=yesterday.streak if yesterday else None,
            count_so_far=earned_before,
        )
    row = CheckInDay(member_id=member_id, day=day, streak=award.streak, points=award.points, at=at)
    session.add(row)
    session.flush()
    key = f"checkin:{member_id}:{day.isoformat()}"
    if award.points > 0:
        note = f"check-in, day {award.streak} in a row" + (
            f" (+{award.bonus} streak bonus)" if award.bonus else ""
        )
        _add_lots(
            session,
            [
                _lot_draft(
                    programme,
                    member_id,
                    award.points,
                    fact=key,
                    source="check_in",
                    at=at,
                    tz=tz,
                    note=note,
                )
            ],
        )
    _growth_bonus(session, member_id, "check_in", key=key, at=at)
    return CheckInResult(member_id, day, award.streak, award.points, award.bonus, True)


def _check_in_result(session: Session, row: CheckInDay, *, created: bool) -> CheckInResult:
    bonus = 0
    programme = _programme(session, clock.as_utc(row.at))
    rule = programme.points.events.check_in if programme is not None else None
    if rule is not None and row.points > 0:
        bonus = row.points - rule.points
    return CheckInResult(row.member_id, row.day, row.streak, row.points, max(bonus, 0), created)


@dataclass(frozen=True)
class CheckInState:
    """What a member sees: whether they checked in today and the streak they are on."""

    member_id: int
    day: date
    checked_in_today: bool
    streak: int
    points_today: int
    recent: list[CheckInDay]


def check_in_state(
    session: Session, member_id: int, *, at: datetime | None = None, tz: str = "Asia/Shanghai"
) -> CheckInState:
    at = clock.as_utc(at) if at is not None else clock.now()
    day = clock.local_date(at, tz)
    recent = list(
        session.scalars(
            select(CheckInDay)
            .where(CheckInDay.member_id == member_id, CheckInDay.day <= day)
            .order_by(CheckInDay.day.desc())
            .limit(31)
        )
    )
    today = recent[0] if recent and recent[0].day == day else None
    if today is not None:
        streak = today.streak
    elif recent and recent[0].day == day - timedelta(days=1):
        streak = recent[0].streak  # still alive: checking in today continues it
    else:
        streak = 0
    return CheckInState(
        member_id, day, today is not None, streak, today.points if today else 0, recent
    )


# --- reservations at checkout, cash off ------------------------------------------------------


def _reservation(session: Session, key: str) -> PointsReservation:
    row = session.scalar(select(PointsReservation).where(PointsReservation.key == key))
    if row is None:
        raise NotFound(f"no points reservation with the key '{key}'", field="key")
    return row


def reserve(
    session: Session,
    member_id: int,
    points: int,
    *,
    key: str,
    ttl: timedelta = timedelta(minutes=15),
    at: datetime | None = None,
) -> PointsReservation:
    """Hold points at checkout until confirmed, released, or the hold ends. Idempotent on
    ``key`` (the same key with other content is a conflict)."""
    if points <= 0:
        raise InvalidInput(f"points to reserve must be more than 0, not {points}", field="points")
    if not key.strip():
        raise InvalidInput("a reservation needs a key (e.g. the checkout id)", field="key")
    at = clock.as_utc(at) if at is not None else clock.now()
    _lock(session, [member_id])
    known = session.scalar(select(PointsReservation).where(PointsReservation.key == key))
    if known is not None:
        if known.member_id != member_id or known.points != points:
            raise Conflict(
                f"the reservation '{key}' holds {known.points} points of member "
                f"{known.member_id} already; use a new key for another reservation",
                field="key",
                code="reservation_conflict",
            )
        return known
    have = available(session, member_id, at=at)
    if points > have:
        raise _insufficient(member_id, points, have)
    row = PointsReservation(
        key=key,
        member_id=member_id,
        points=points,
        status="held",
        created_at=at,
        expires_at=at + ttl,
    )
    session.add(row)
    session.flush()
    return row


def confirm(session: Session, key: str) -> Spend:
    """Spend what a reservation holds (fact ``reservation:<key>``); a repeat returns the
    same spend."""
    row = _reservation(session, key)
    _lock(session, [row.member_id])
    session.refresh(row)
    fact = f"reservation:{key}"
    if row.status == "confirmed":
        spent = _stored_spend(session, fact)
        assert spent is not None
        return spent
    now = clock.now()
    if row.status == "held" and clock.as_utc(row.expires_at) <= now:
        row.status, row.closed_at = "expired", now
        session.flush()
    if row.status != "held":
        raise Conflict(
            f"the reservation '{key}' was {row.status}; reserve the points again",
            field="key",
            code=f"reservation_{row.status}",
        )
    spent = _spend(
        session,
        row.member_id,
        row.points,
        fact=fact,
        reason=f"reservation {key}",
        except_key=key,
    )
    row.status, row.closed_at = "confirmed", now
    session.flush()
    return spent


def release(session: Session, key: str) -> PointsReservation:
    """Let go of held points (a repeat changes nothing; a confirmed one cannot be released:
    cancel its spend instead)."""
    row = _reservation(session, key)
    _lock(session, [row.member_id])
    session.refresh(row)
    if row.status == "confirmed":
        raise Conflict(
            f"the reservation '{key}' was confirmed; cancel the spend 'reservation:{key}' "
            "to give the points back",
            field="key",
            code="reservation_confirmed",
        )
    if row.status == "held":
        row.status, row.closed_at = "released", clock.now()
        session.flush()
    return row


def cash_off_quote(
    session: Session, member_id: int, order_amount_fen: int, *, at: datetime | None = None
) -> rules.Quote:
    """How many points can go as cash off an order of ``order_amount_fen`` now."""
    if order_amount_fen < 0:
        raise InvalidInput("the order amount cannot be negative", field="order_amount_fen")
    at = clock.as_utc(at) if at is not None else clock.now()
    programme = _programme(session, at)
    if programme is None or programme.points.cash_off is None:
        raise Conflict(
            "the programme in force has no points.cash_off rules; add them to use points as cash",
            code="no_cash_off",
        )
    _member(session, member_id)
    return rules.cash_off(
        programme.points.cash_off,
        order_amount_fen=order_amount_fen,
        available=available(session, member_id, at=at),
    )


def reserve_cash_off(
    session: Session,
    member_id: int,
    points: int,
    order_amount_fen: int,
    *,
    key: str,
    ttl: timedelta = timedelta(minutes=15),
) -> PointsReservation:
    """Hold points as cash off an order, within the cap and in whole steps."""
    _lock(session, [member_id])
    known = session.scalar(select(PointsReservation).where(PointsReservation.key == key))
    if known is not None:
        return reserve(session, member_id, points, key=key, ttl=ttl)
    quote = cash_off_quote(session, member_id, order_amount_fen)
    if points % quote.step:
        raise InvalidInput(
            f"points go as cash in steps of {quote.step}; {points} is not one", field="points"
        )
    if points > quote.points:
        raise Conflict(
            f"at most {quote.points} points can go off this order (cap "
            f"{quote.max_cash_fen} fen, {quote.available} available); {points} were asked",
            field="points",
            code="over_cash_off_cap",
            details={"max_points": quote.points},
        )
    return reserve(session, member_id, points, key=key, ttl=ttl)


# --- manual adjustments ----------------------------------------------------------------------


@dataclass(frozen=True)
class Adjustment:
    member_id: int
    points: int
    fact: str
    balance_after: int
    created: bool


def adjust(
    session: Session,
    member_id: int,
    points: int,
    *,
    reason: str,
    principal: Principal,
    key: str,
) -> Adjustment:
    """A manual change with a reason, in the audit log. Adding makes a lot (the programme's
    expiry); taking away spends available lots, never below the available balance."""
    if not reason.strip():
        raise InvalidInput("say why the points are adjusted", field="reason")
    if points == 0:
        raise InvalidInput("an adjustment of 0 points changes nothing", field="points")
    if not key.strip():
        raise InvalidInput("an adjustment needs a key", field="key")
    fact = f"adjust:{key}"
    _lock(session, [member_id])
    done = session.scalars(select(PointsEntry).where(PointsEntry.fact == fact)).all()
    if done:
        return Adjustment(
            done[0].member_id,
            sum(e.points for e in done if e.kind == "adjust"),
            fact,
            done[-1].balance_after,
            False,
        )
    now = clock.now()
    if points > 0:
        draft = _lot_draft(
            _programme(session, now),
            member_id,
            points,
            fact=fact,
            source="adjust",
            at=now,
            tz=_tz(),
            note=reason,
            kind="adjust",
        )
        _add_lots(session, [draft])
    else:
        _spend(session, member_id, -points, fact=fact, reason=reason, kind="adjust")
    balance = session.scalar(select(Member.points_balance).where(Member.id == member_id))
    audit.record(
        session,
        actor=principal.actor,
        action="points.adjust",
        target_type="member",
        target_id=member_id,
        detail={"points": points, "reason": reason, "key": key},
    )
    return Adjustment(member_id, points, fact, int(balance or 0), True)


# --- reading -----------------------------------------------------------------------------------


def _member(session: Session, member_id: int) -> Member:
    member = session.get(Member, member_id)
    if member is None:
        raise NotFound(f"no member with id {member_id}", field="member_id")
    return member


@dataclass(frozen=True)
class Expiring:
    """What expires when: the next date and its points, then every later date."""

    next_date: date | None
    next_points: int
    dates: list[tuple[date, int]]


def expiring(
    session: Session,
    member_id: int,
    *,
    at: datetime | None = None,
    tz: str | None = None,
    limit: int = 24,
) -> Expiring:
    tz = tz or _tz()
    at = clock.as_utc(at) if at is not None else clock.now()
    rows = session.execute(
        select(PointsLot.expires_at, func.sum(PointsLot.remaining))
        .where(
            PointsLot.member_id == member_id,
            PointsLot.remaining > 0,
            PointsLot.expires_at > at,
        )
        .group_by(PointsLot.expires_at)
        .order_by(PointsLot.expires_at)
        .limit(limit)
    ).all()
    by_day: dict[date, int] = defaultdict(int)
    for expires, points in rows:
        day = rules.expires_on(clock.as_utc(expires), tz)
        assert day is not None
        by_day[day] += int(points)
    dates = sorted(by_day.items())
    first = dates[0] if dates else (None, 0)
    return Expiring(first[0], first[1], dates)


@dataclass(frozen=True)
class Summary:
    member_id: int
    balance: int
    available: int
    frozen: int
    held: int
    debt: int
    expiring: Expiring
    cash_value_fen: int | None


def summary(session: Session, member_id: int, *, at: datetime | None = None) -> Summary:
    """The member's points at a glance (the cached balances and what is spendable now)."""
    at = clock.as_utc(at) if at is not None else clock.now()
    member = _member(session, member_id)
    spendable = available(session, member_id, at=at)
    held = _held(session, member_id, at)
    programme = _programme(session, at)
    cash = None
    if programme is not None and programme.points.cash_off is not None:
        cash = rules.cash_value_fen(programme.points.cash_off, spendable)
    frozen = int(
        session.scalar(
            select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
                PointsLot.member_id == member_id,
                PointsLot.remaining > 0,
                PointsLot.frozen.is_(True),
                PointsLot.available_at > at,
            )
        )
        or 0
    )
    return Summary(
        member_id,
        member.points_balance,
        spendable,
        frozen,
        held,
        member.points_debt,
        expiring(session, member_id, at=at),
        cash,
    )


def entries(
    session: Session,
    member_id: int,
    *,
    before: tuple[datetime, int] | None = None,
    limit: int = 50,
) -> list[PointsEntry]:
    """History, newest first; ``before`` is the (at, id) of the last entry of the previous
    page (keyset paging on the (member_id, at) index)."""
    query = select(PointsEntry).where(PointsEntry.member_id == member_id)
    if before is not None:
        at, entry_id = before
        query = query.where(
            or_(PointsEntry.at < at, and_(PointsEntry.at == at, PointsEntry.id < entry_id))
        )
    return list(
        session.scalars(query.order_by(PointsEntry.at.desc(), PointsEntry.id.desc()).limit(limit))
    )


def lots(
    session: Session, member_id: int, *, include_empty: bool = False, limit: int = 200
) -> list[PointsLot]:
    """The member's lots in the order they would be spent."""
    query = select(PointsLot).where(PointsLot.member_id == member_id)
    if not include_empty:
        query = query.where(PointsLot.remaining > 0)
    found = list(session.scalars(query.order_by(PointsLot.expires_at, PointsLot.id).limit(limit)))
    return sorted(found, key=lambda x: (x.expires_at is None, x.expires_at or x.earned_at, x.id))


# --- recompute and check ---------------------------------------------------------------------

RECOMPUTE_RANGE = 50_000  # member ids per UPDATE when recomputing everyone


def _sums(where: Any) -> tuple[Any, Any, Any]:
    balance = (
        select(func.coalesce(func.sum(PointsEntry.points), 0))
        .where(PointsEntry.member_id == Member.id)
        .scalar_subquery()
    )
    debt = (
        select(func.coalesce(func.sum(PointsEntry.debt), 0))
        .where(PointsEntry.member_id == Member.id)
        .scalar_subquery()
    )
    frozen = (
        select(func.coalesce(func.sum(PointsLot.remaining), 0))
        .where(PointsLot.member_id == Member.id, PointsLot.frozen.is_(True))
        .scalar_subquery()
    )
    return balance, debt, frozen


def recompute(session: Session, member_ids: Sequence[int] | None = None) -> int:
    """Set the cached balances from the ledger (all members when ``None``), by ranges of
    ids. Returns how many members were updated."""
    session.flush()
    balance, debt, frozen = _sums(None)

    def run(where: Any) -> int:
        result = session.execute(
            update(Member)
            .where(where)
            .values(points_balance=balance, points_debt=debt, points_frozen=frozen)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    total = 0
    if member_ids is not None:
        for chunk in in_chunks(sorted(set(member_ids))):
            total += run(Member.id.in_(chunk))
    else:
        low, high = session.execute(select(func.min(Member.id), func.max(Member.id))).one()
        if low is not None:
            for start in range(low, high + 1, RECOMPUTE_RANGE):
                total += run(Member.id.between(start, start + RECOMPUTE_RANGE - 1))
    expire_stale(session, Member)
    return total


@dataclass(frozen=True)
class Drift:
    """A member whose cached points differ from the ledger: (cached, from the ledger)."""

    member_id: int
    balance: tuple[int, int]
    debt: tuple[int, int]
    frozen: tuple[int, int]


def check(session: Session, limit: int | None = 1_000) -> list[Drift]:
    """Members whose cached balance, debt or frozen points differ from the ledger. Changes
    nothing; ``recompute`` repairs."""
    session.flush()
    sums = (
        select(
            PointsEntry.member_id.label("member_id"),
            func.sum(PointsEntry.points).label("balance"),
            func.sum(PointsEntry.debt).label("debt"),
        )
        .group_by(PointsEntry.member_id)
        .subquery("sums")
    )
    frozen = (
        select(
            PointsLot.member_id.label("member_id"), func.sum(PointsLot.remaining).label("frozen")
        )
        .where(PointsLot.frozen.is_(True))
        .group_by(PointsLot.member_id)
        .subquery("frozen")
    )
    want_balance = func.coalesce(sums.c.balance, 0)
    want_debt = func.coalesce(sums.c.debt, 0)
    want_frozen = func.coalesce(frozen.c.frozen, 0)
    query = (
        select(
            Member.id,
            Member.points_balance,
            want_balance,
            Member.points_debt,
            want_debt,
            Member.points_frozen,
            want_frozen,
        )
        .select_from(Member)
        .outerjoin(sums, sums.c.member_id == Member.id)
        .outerjoin(frozen, frozen.c.member_id == Member.id)
        .where(
            or_(
                Member.points_balance != want_balance,
                Member.points_debt != want_debt,
                Member.points_frozen != want_frozen,
            )
        )
        .order_by(Member.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        Drift(m, (int(b), int(wb)), (int(d), int(wd)), (int(f), int(wf)))
        for m, b, wb, d, wd, f, wf in session.execute(query)
    ]


# --- daily work (jobs.py runs these per batch, one unit of work each) -------------------------

BATCH = 5_000


def release_frozen_batch(
    session: Session, cutoff: datetime, *, batch: int = BATCH, after_id: int = 0
) -> tuple[int, int, int]:
    """Release up to ``batch`` frozen lots (ids above ``after_id``) whose return window
    ended by ``cutoff``: they leave the cached frozen points, and a ``release`` entry
    (0 points) says so. Returns (lots, points, the last lot id looked at).

    The caller passes the last id back: without it, each batch would read again, in id
    order, every lot the batches before it released."""
    found = session.execute(
        select(PointsLot.id, PointsLot.member_id)
        .where(
            PointsLot.frozen.is_(True), PointsLot.available_at <= cutoff, PointsLot.id > after_id
        )
        .order_by(PointsLot.id)
        .limit(batch)
    ).all()
    if not found:
        return 0, 0, after_id
    accounts = _lock(session, {m for _, m in found})
    rows = session.execute(
        select(PointsLot.id, PointsLot.member_id, PointsLot.remaining)
        .where(PointsLot.id.in_([i for i, _ in found]), PointsLot.frozen.is_(True))
        .order_by(PointsLot.id)
    ).all()
    now = clock.now()
    entries = []
    points = 0
    for lot_id, member_id, remaining in rows:
        account = accounts[member_id]
        account.frozen -= remaining
        points += remaining
        entries.append(
            _entry(
                member_id,
                "release",
                0,
                account,
                fact=f"release:{lot_id}",
                seq=0,
                at=now,
                lot_id=lot_id,
                note=f"{remaining} points can be spent now",
            )
        )
    if rows:
        _set_lots(session, [i for i, _, _ in rows], frozen=False)
        insert_rows(session, PointsEntry.__table__, entries)
        _expire_lots(session, [i for i, _, _ in rows])
    _save(session, accounts)
    return len(rows), points, found[-1][0]


def expire_batch(
    session: Session, cutoff: datetime, *, batch: int = BATCH, after_id: int = 0
) -> tuple[int, int, int]:
    """Expire up to ``batch`` lots (ids above ``after_id``) due by ``cutoff`` (entries
    ``expire:<lot id>``). Returns (lots, points, the last lot id looked at), to pass back
    as ``after_id``: each batch then starts where the previous one stopped instead of
    reading again, in id order, every lot already expired (which made a night with 358,333
    lots due quadratic: 26.7 s at 100,000 members)."""
    found = session.execute(
        select(PointsLot.id, PointsLot.member_id)
        .where(PointsLot.expires_at <= cutoff, PointsLot.remaining > 0, PointsLot.id > after_id)
        .order_by(PointsLot.id)
        .limit(batch)
    ).all()
    if not found:
        return 0, 0, after_id
    accounts = _lock(session, {m for _, m in found})
    # Read again under the lock: a spend may have taken from these lots meanwhile.
    rows = session.execute(
        select(PointsLot.id, PointsLot.member_id, PointsLot.remaining, PointsLot.frozen)
        .where(PointsLot.id.in_([i for i, _ in found]), PointsLot.remaining > 0)
        .order_by(PointsLot.id)
    ).all()
    now = clock.now()
    entries = []
    points = 0
    for lot_id, member_id, remaining, frozen in rows:
        account = accounts[member_id]
        if frozen:
            account.frozen -= remaining
        points += remaining
        entries.append(
            _entry(
                member_id,
                "expire",
                -remaining,
                account,
                fact=f"expire:{lot_id}",
                seq=0,
                at=now,
                lot_id=lot_id,
            )
        )
    if rows:
        _set_lots(session, [i for i, *_ in rows], remaining=0)
        insert_rows(session, PointsEntry.__table__, entries)
        _expire_lots(session, [i for i, *_ in rows])
    _save(session, accounts)
    return len(rows), points, found[-1][0]


def birthday_batch(
    session: Session, day: date, *, after_id: int = 0, batch: int = BATCH, tz: str | None = None
) -> tuple[int, int, int]:
    """Birthday points for up to ``batch`` members (ids above ``after_id``) born on ``day``'s
    month and day (29 February birthdays on 28 February in common years); facts
    ``birthday:<member>:<year>``. Returns (members looked at, lots granted, last id)."""
    tz = tz or _tz()
    days = [(day.month, day.day)]
    if (day.month, day.day) == (2, 28) and not _leap(day.year):
        days.append((2, 29))
    born = or_(
        *(
            and_(
                func.extract("month", Member.birthday) == m,
                func.extract("day", Member.birthday) == d,
            )
            for m, d in days
        )
    )
    ids = list(
        session.scalars(
            select(Member.id)
            .where(Member.id > after_id, Member.status == "active", born)
            .order_by(Member.id)
            .limit(batch)
        )
    )
    if not ids:
        return 0, 0, after_id
    at = max(rules.day_start(day, tz), min(clock.now(), rules.day_end(day, tz)))
    at = clock.as_utc(at)
    programme = _programme(session, at)
    rule = programme.points.events.birthday if programme is not None else None
    if rule is None or rule.points <= 0:
        return len(ids), 0, ids[-1]
    ever: dict[int, int] = {}
    if rule.per_member_limit is not None:
        for chunk in in_chunks(ids):
            ever.update(
                session.execute(
                    select(PointsLot.member_id, func.count())
                    .where(PointsLot.member_id.in_(chunk), PointsLot.source == "birthday")
                    .group_by(PointsLot.member_id)
                ).all()
            )
    drafts = [
        _lot_draft(
            programme,
            m,
            rule.points,
            fact=f"birthday:{m}:{day.year}",
            source="birthday",
            at=at,
            tz=tz,
            note="birthday points",
        )
        for m in ids
        if rules.event_allowed(rule, today=0, ever=ever.get(m, 0))
    ]
    known = _existing_lots(session, [d.fact for d in drafts])
    _add_lots(session, drafts)
    return len(ids), len([d for d in drafts if d.fact not in known]), ids[-1]


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def expire_holds_batch(session: Session, now: datetime, *, batch: int = BATCH) -> int:
    """Mark up to ``batch`` holds whose time ran out as expired. Returns how many."""
    ids = list(
        session.scalars(
            select(PointsReservation.id)
            .where(PointsReservation.status == "held", PointsReservation.expires_at <= now)
            .order_by(PointsReservation.id)
            .limit(batch)
        )
    )
    if ids:
        session.execute(
            update(PointsReservation)
            .where(PointsReservation.id.in_(ids), PointsReservation.status == "held")
            .values(status="expired", closed_at=now)
            .execution_options(synchronize_session=False)
        )
    return len(ids)


# --- merges ----------------------------------------------------------------------------------


def after_merge(session: Session, *member_ids: int) -> None:
    """Lots and entries moved with the generic merge; the cached balances follow them."""
    recompute(session, list(member_ids))


__all__ = [
    "Adjustment",
    "CheckInResult",
    "CheckInState",
    "Drift",
    "EventAward",
    "Expiring",
    "LotDraft",
    "Spend",
    "Summary",
    "adjust",
    "available",
    "cancel_spend",
    "cash_off_quote",
    "check",
    "check_in",
    "check_in_state",
    "confirm",
    "earn_orders",
    "entries",
    "expiring",
    "grant",
    "lots",
    "recompute",
    "release",
    "reserve",
    "reserve_cash_off",
    "reverse_refund",
    "spend",
    "summary",
]
