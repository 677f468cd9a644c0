"""Orders: one set-based ingestion path (single POST, batch, file import, demo, benchmark),
refunds, and the per-member metrics both maintain. Services flush, never commit.

Ingestion works per chunk with a constant number of statements, whatever the chunk size:
validate in Python, resolve stores, guides, members and existing orders with ``IN`` lists,
enrol unknown buyers in bulk, insert orders and lines with ``executemany``, and add to
``member_metrics`` with one ``INSERT .. ON CONFLICT DO UPDATE``. Nothing is done per row
against the database unless a chunk hits a constraint (see ``_ingest_chunk_safely``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.core import clock, outbox
from siyu.core.auth import Principal, Role
from siyu.core.bulk import execute_rows, insert_tuples, next_ids
from siyu.core.db import ONE_OF_CHUNK, expire_stale, in_chunks, one_of
from siyu.core.errors import Conflict, InvalidInput, NotFound, Problem, invalid
from siyu.core.events import publish
from siyu.members import service as members
from siyu.members.models import Member
from siyu.members.rules import JoinChannel, MemberStatus
from siyu.orders import rules
from siyu.orders.models import MemberMetrics, Order, OrderLine, Refund, RefundLine
from siyu.orders.rules import OrderDraft, RefundDraft
from siyu.stores.models import Staff, Store

UnknownBuyer = Literal["guest", "enrol"]
IngestStatus = Literal["created", "duplicate", "rejected"]

CHUNK = 1_000  # orders per set of statements; callers streaming files commit per chunk
MAX_MERGE_HOPS = 20


@dataclass(slots=True)
class IngestResult:
    """What happened to one order of a batch; ``index`` is its position in the input.
    (Slots: one is made for every order of an import.)"""

    index: int
    status: IngestStatus
    order_id: int | None = None
    member_id: int | None = None
    problems: list[Problem] = field(default_factory=list)
    conflict: dict[str, Any] | None = None


class IngestedLine(NamedTuple):
    line_no: int
    sku: str
    category: str
    quantity: int
    amount_fen: int


class IngestedOrder(NamedTuple):
    """A member's order as stored, for the loyalty effects applied in its transaction.

    Named tuples, not frozen dataclasses: one is made per order and line of every import,
    and a frozen dataclass sets each field through ``object.__setattr__``."""

    order_id: int
    member_id: int
    channel: str
    store_id: int | None
    paid_at: datetime
    amount_fen: int
    freight_fen: int
    lines: tuple[IngestedLine, ...]


@dataclass(frozen=True)
class OrdersIngested:
    """Orders created by one ingest chunk (members' orders only; replays are not in it).
    Subscribers apply loyalty effects set-based, in the same transaction as the orders."""

    orders: tuple[IngestedOrder, ...]


@dataclass(frozen=True)
class RefundedLine:
    line_no: int
    quantity: int
    amount_fen: int


@dataclass(frozen=True)
class RefundRecorded:
    """A new refund of a member's order (never published for a replay)."""

    refund_id: int
    order_id: int
    member_id: int
    refunded_at: datetime
    amount_fen: int
    lines: tuple[RefundedLine, ...]


def _copy(draft: OrderDraft, **changes: Any) -> OrderDraft:
    """``dataclasses.replace`` for drafts (plain dataclasses without ``__post_init__``),
    without calling ``__init__`` again: it runs for every order of a file."""
    copy = object.__new__(type(draft))
    copy.__dict__.update(draft.__dict__)
    copy.__dict__.update(changes)
    return copy


# --- ingestion ---------------------------------------------------------------------------


def ingest_orders(
    session: Session,
    drafts: Sequence[OrderDraft],
    *,
    unknown_buyer: UnknownBuyer = "guest",
    chunk_size: int = CHUNK,
    savepoint: bool = True,
) -> list[IngestResult]:
    """Store orders, idempotently on (channel, external_id): one result per draft, in order.

    Bad orders are rejected with every problem; the others land. A replay with the same
    content is a ``duplicate`` naming the stored order; the same key with other content is
    rejected with ``conflict`` holding both versions.

    ``savepoint=False`` is for a caller whose transaction holds these orders and nothing
    else (a file import's chunk): no savepoint around each chunk, and a constraint that
    fires raises ``IntegrityError``; the caller rolls the transaction back and sends the
    same drafts again with the default, which redoes them order by order where needed.
    On SQLite, pages changed inside a savepoint are first copied to a temporary journal
    file (tens of thousands of page writes for an import's chunk), which a rollback of the
    whole transaction does not need.
    """
    if unknown_buyer not in ("guest", "enrol"):
        raise InvalidInput("unknown_buyer is 'guest' or 'enrol'", field="unknown_buyer")
    results: list[IngestResult] = []
    for start in range(0, len(drafts), max(1, chunk_size)):
        chunk = drafts[start : start + max(1, chunk_size)]
        if savepoint:
            results += _ingest_chunk_safely(session, chunk, start, unknown_buyer)
        else:
            results += _ingest_chunk(session, chunk, start, unknown_buyer)
    return results


def _ingest_chunk_safely(
    session: Session, drafts: Sequence[OrderDraft], offset: int, policy: UnknownBuyer
) -> list[IngestResult]:
    """The set-based path inside a savepoint. Validation should keep constraints from ever
    firing, but a concurrent writer (the same order arriving on two connections) or a gap in
    validation can; then the chunk is redone row by row, each in its own savepoint, so good
    rows still land and only the offending one is rejected, with the database's reason."""
    savepoint = session.begin_nested()
    try:
        results = _ingest_chunk(session, drafts, offset, policy)
        savepoint.commit()
        return results
    except IntegrityError:
        savepoint.rollback()
    except BaseException:
        savepoint.rollback()
        raise
    return [
        _ingest_one_safely(session, draft, offset + i, policy) for i, draft in enumerate(drafts)
    ]


def _ingest_one_safely(
    session: Session, draft: OrderDraft, index: int, policy: UnknownBuyer
) -> IngestResult:
    error: IntegrityError | None = None
    # Twice: when another connection inserted the same order meanwhile, the second attempt
    # sees it and answers duplicate or conflict instead of a constraint name.
    for _attempt in range(2):
        savepoint = session.begin_nested()
        try:
            [result] = _ingest_chunk(session, [draft], index, policy)
            savepoint.commit()
            return result
        except IntegrityError as exc:
            savepoint.rollback()
            error = exc
        except BaseException:
            savepoint.rollback()
            raise
    reason = str(error.orig).splitlines()[0] if error is not None else "constraint violated"
    return IngestResult(
        index,
        "rejected",
        problems=[Problem("order", f"the database refused this order: {reason}")],
    )


def _ingest_chunk(
    session: Session, drafts: Sequence[OrderDraft], offset: int, policy: UnknownBuyer
) -> list[IngestResult]:
    now = clock.now()
    problems: list[list[Problem]] = []
    prepared: list[OrderDraft] = []
    # A buyer's identities are normalised once per chunk (a member's orders repeat them),
    # and a draft whose identities are already canonical is used as it is: drafts are
    # never changed in place, only replaced by copies.
    normalized: dict[Any, tuple[list[tuple[str, str]], list[Problem]]] = {}
    for draft in drafts:
        found = rules.validate_order(draft, now)
        given = draft.buyer_identities
        try:
            key = tuple(given)
            known = normalized.get(key)
        except TypeError:  # identities given as lists: normalised without the memo
            key, known = None, rules.normalize_buyer(given)
        if known is None:
            known = normalized[key] = rules.normalize_buyer(given)  # type: ignore[index]
        identities, identity_problems = known
        problems.append(found + identity_problems)
        if identities == given:
            prepared.append(draft)
        else:
            prepared.append(_copy(draft, buyer_identities=list(identities)))

    _resolve_stores(session, prepared, problems)
    _check_guides(session, prepared, problems)
    # References are checked even on orders already found wrong: every problem at once.
    canonical = _follow_merges(session, {d.member_id for d in prepared if d.member_id})
    for draft, found in zip(prepared, problems, strict=True):
        if draft.member_id is not None and draft.member_id not in canonical:
            if _names(found, "member_id"):
                continue
            found.append(Problem("member_id", f"no member with id {draft.member_id}"))

    results: list[IngestResult | None] = [None] * len(drafts)
    for i, found in enumerate(problems):
        if found:
            results[i] = IngestResult(offset + i, "rejected", problems=found)
    valid = [i for i in range(len(drafts)) if results[i] is None]
    hashes = {i: rules.order_content_hash(prepared[i]) for i in valid}

    # Replays and conflicts, against the database and within this batch.
    existing = _existing_orders(
        session, {(prepared[i].channel, prepared[i].external_id) for i in valid}
    )
    first_in_batch: dict[tuple[str, str], int] = {}
    to_create: list[int] = []
    same_as: dict[int, int] = {}  # duplicate index -> index of the version created here
    conflicts_stored: dict[int, int] = {}  # index -> stored order id
    conflicts_batch: dict[int, int] = {}  # index -> index of the first version in this batch
    for i in valid:
        key = (prepared[i].channel, prepared[i].external_id)
        stored = existing.get(key)
        if stored is not None:
            order_id, content_hash, member_id = stored
            if content_hash == hashes[i]:
                results[i] = IngestResult(offset + i, "duplicate", order_id, member_id)
            else:
                conflicts_stored[i] = order_id
        elif key in first_in_batch:
            j = first_in_batch[key]
            if hashes[j] == hashes[i]:
                same_as[i] = j
            else:
                conflicts_batch[i] = j
        else:
            first_in_batch[key] = i
            to_create.append(i)

    member_of = _resolve_buyers(session, prepared, to_create, policy)
    order_ids = _insert_orders(session, prepared, to_create, member_of, hashes, now)
    created_id = dict(zip(to_create, order_ids, strict=True))

    for i in to_create:
        results[i] = IngestResult(offset + i, "created", created_id[i], member_of[i])
    for i, j in same_as.items():
        results[i] = IngestResult(offset + i, "duplicate", created_id[j], member_of[j])
    if conflicts_stored:
        summaries = _stored_summaries(session, sorted(set(conflicts_stored.values())))
        for i, order_id in conflicts_stored.items():
            results[i] = _conflict(offset + i, prepared[i], summaries[order_id])
    for i, j in conflicts_batch.items():
        stored_summary = (
            {"order_id": created_id[j]}
            | rules.draft_summary(prepared[j])
            | {"member_id": member_of[j]}
        )
        results[i] = _conflict(offset + i, prepared[i], stored_summary)
    session.flush()
    return [r for r in results if r is not None]


def _conflict(index: int, draft: OrderDraft, stored: dict[str, Any]) -> IngestResult:
    key = f"{draft.channel} order {draft.external_id}"
    return IngestResult(
        index,
        "rejected",
        problems=[
            Problem(
                "external_id",
                f"{key} is stored already with other content; a changed order is sent as a "
                "refund, a different order needs its own external_id",
            )
        ],
        conflict={
            "code": "order_conflict",
            "channel": draft.channel,
            "external_id": draft.external_id,
            "stored": stored,
            "new": rules.draft_summary(draft),
        },
    )


def _names(found: list[Problem], *fields: str) -> bool:
    return bool(found) and any(p.field in fields for p in found)


def _resolve_stores(
    session: Session, drafts: list[OrderDraft], problems: list[list[Problem]]
) -> None:
    """Store codes to ids in bulk; ``drafts`` carry the id afterwards (the hash uses it)."""
    codes = sorted({d.store_code.strip() for d in drafts if d.store_code})
    ids = sorted({d.store_id for d in drafts if d.store_id is not None})
    by_code: dict[str, int] = {}
    for chunk in in_chunks(codes):
        rows = session.execute(select(Store.code, Store.id).where(Store.code.in_(chunk)))
        by_code.update((code, store_id) for code, store_id in rows)

    known_ids: set[int] = set(by_code.values())
    for chunk in in_chunks([i for i in ids if i not in known_ids and 0 < i <= rules.MAX_ID]):
        known_ids.update(session.scalars(select(Store.id).where(Store.id.in_(chunk))))
    for i, draft in enumerate(drafts):
        if problems[i] and _names(problems[i], "store_code", "store_id"):
            continue
        if draft.store_code:
            code = draft.store_code.strip()
            store_id = by_code.get(code)
            if store_id is None:
                problems[i].append(Problem("store_code", f"no store with code '{code}'"))
            elif draft.store_id is not None and draft.store_id != store_id:
                problems[i].append(
                    Problem(
                        "store_code",
                        f"store '{code}' has id {store_id}, but store_id says {draft.store_id}",
                    )
                )
            else:
                drafts[i] = _copy(draft, store_id=store_id, store_code=None)
        elif draft.store_id is not None and draft.store_id not in known_ids:
            problems[i].append(Problem("store_id", f"no store with id {draft.store_id}"))


def _check_guides(
    session: Session, drafts: list[OrderDraft], problems: list[list[Problem]]
) -> None:
    ids = sorted({d.guide_id for d in drafts if d.guide_id and 0 < d.guide_id <= rules.MAX_ID})
    known: set[int] = set()
    for chunk in in_chunks(ids):
        known.update(session.scalars(select(Staff.id).where(Staff.id.in_(chunk))))
    for draft, found in zip(drafts, problems, strict=True):
        if draft.guide_id is not None and draft.guide_id not in known:
            if _names(found, "guide_id"):
                continue
            found.append(Problem("guide_id", f"no staff member with id {draft.guide_id}"))


def _follow_merges(session: Session, member_ids: Iterable[int]) -> dict[int, int]:
    """member id -> the member that holds its orders now (itself, or where it was merged
    into, following chains). Unknown ids are absent."""
    resolved: dict[int, int] = {}
    states: dict[int, tuple[str, int | None]] = {}
    pending = {m for m in member_ids if 0 < m <= rules.MAX_ID}
    for _hop in range(MAX_MERGE_HOPS):
        todo = sorted(pending - states.keys())
        if not todo:
            break
        for chunk in in_chunks(todo, ONE_OF_CHUNK):
            rows = session.execute(
                select(Member.id, Member.status, Member.merged_into_id).where(
                    one_of(session, Member.id, chunk)
                )
            )
            for member_id, status, into in rows:
                states[member_id] = (status, into)
        pending = {
            into
            for status, into in states.values()
            if status == MemberStatus.merged and into is not None
        }
    for member_id in member_ids:
        current: int | None = member_id
        for _hop in range(MAX_MERGE_HOPS):
            state = states.get(current) if current is not None else None
            if state is None:
                current = None
                break
            status, into = state
            if status != MemberStatus.merged or into is None:
                break
            current = into
        if current is not None:
            resolved[member_id] = current
    return resolved


def _existing_orders(
    session: Session, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, str, int | None]]:
    by_channel: dict[str, list[str]] = {}
    for channel, external_id in keys:
        by_channel.setdefault(channel, []).append(external_id)
    found: dict[tuple[str, str], tuple[int, str, int | None]] = {}
    for channel, external_ids in by_channel.items():
        for chunk in in_chunks(sorted(external_ids), ONE_OF_CHUNK):
            rows = session.execute(
                select(Order.external_id, Order.id, Order.content_hash, Order.member_id).where(
                    Order.channel == channel, one_of(session, Order.external_id, chunk)
                )
            )
            for external_id, order_id, content_hash, member_id in rows:
                found[(channel, external_id)] = (order_id, content_hash, member_id)
    return found


def _resolve_buyers(
    session: Session, drafts: list[OrderDraft], indexes: list[int], policy: UnknownBuyer
) -> dict[int, int | None]:
    """Index -> member id (None: guest). A given member id wins; otherwise the first of the
    buyer's identities that names a member (identities are listed by the caller's
    preference, and an order is no place to merge two members); otherwise a guest, or a new
    member when the policy says enrol."""
    lookup = members.lookup_identities(
        session,
        (x for i in indexes if drafts[i].member_id is None for x in drafts[i].buyer_identities),
    )
    member_of: dict[int, int | None] = {}
    unknown: list[int] = []
    for i in indexes:
        draft = drafts[i]
        if draft.member_id is not None:
            member_of[i] = draft.member_id
            continue
        found = None
        for identity in draft.buyer_identities:
            found = lookup.get(identity)  # member ids, never None
            if found is not None:
                break
        member_of[i] = found
        if found is None and draft.buyer_identities and policy == "enrol":
            unknown.append(i)
    if unknown:
        member_of.update(_enrol_buyers(session, drafts, unknown))
    canonical = _follow_merges(session, {m for m in member_of.values() if m is not None})
    return {i: None if m is None else canonical.get(m, m) for i, m in member_of.items()}


def _enrol_buyers(session: Session, drafts: list[OrderDraft], indexes: list[int]) -> dict[int, int]:
    """Enrol unknown buyers with one ``enrol_many``. An order whose identities would join
    two people enrolled by earlier orders of the same chunk (A: phone P; B: tmall T;
    C: P and T) would make ``enrol_many`` refuse the whole batch, so such orders wait for
    the first pass and then take the member of their first identity, like known buyers."""
    owner: dict[tuple[str, str], int] = {}
    first_pass: list[int] = []
    deferred: list[int] = []
    for i in indexes:
        groups = {owner[x] for x in drafts[i].buyer_identities if x in owner}
        if len(groups) > 1:
            deferred.append(i)
            continue
        group = groups.pop() if groups else i
        for x in drafts[i].buyer_identities:
            owner.setdefault(x, group)
        first_pass.append(i)
    enrolled = members.enrol_many(
        session,
        [
            members.EnrolDraft(
                identities=list(drafts[i].buyer_identities),
                join_channel=JoinChannel.order.value,
                joined_at=drafts[i].paid_at,
                store_id=drafts[i].store_id,
                guide_id=drafts[i].guide_id,
            )
            for i in first_pass
        ],
    )
    member_of = {i: r.member_id for i, r in zip(first_pass, enrolled, strict=True)}
    if deferred:
        lookup = members.lookup_identities(
            session, (x for i in deferred for x in drafts[i].buyer_identities)
        )
        for i in deferred:
            member_of[i] = next(lookup[x] for x in drafts[i].buyer_identities if x in lookup)
    return member_of


def _insert_orders(
    session: Session,
    drafts: list[OrderDraft],
    indexes: list[int],
    member_of: dict[int, int | None],
    hashes: dict[int, str],
    now: datetime,
) -> list[int]:
    if not indexes:
        return []
    # Ids reserved up front and written with the rows: no RETURNING to map back (on SQLite
    # SQLAlchemy keeps the rows' order only one statement per row), and one plain
    # executemany through ``insert_tuples``, which does not pay SQLAlchemy's per-row
    # parameter handling. Not the ORM: its bulk path splits a batch wherever the set of
    # NULL columns changes (guest vs member). One pass over the orders makes the rows of
    # both tables and the event's orders.
    order_ids = next_ids(session, Order.__table__, len(indexes))
    paid = rules.OrderStatus.paid.value
    rows: list[tuple[Any, ...]] = []
    line_rows: list[tuple[Any, ...]] = []
    ingested: list[IngestedOrder] = []
    metrics_of: list[tuple[int, datetime, int]] = []
    as_utc, new_tuple = clock.as_utc, tuple.__new__
    for i, order_id in zip(indexes, order_ids, strict=True):
        d = drafts[i]
        member_id = member_of[i]
        # Named tuples made by ``tuple.__new__``: the class's own ``__new__`` is a Python
        # function, a frame more per line and order of an import.
        lines = tuple(
            [
                new_tuple(IngestedLine, (n, x.sku, x.category, x.quantity, x.amount_fen))
                for n, x in enumerate(d.lines, start=1)
            ]
        )
        total = d.freight_fen
        for line in lines:
            total += line.amount_fen
            line_rows.append((order_id, *line))
        buyer = d.buyer_identities[0] if d.buyer_identities else (None, None)
        rows.append(
            (
                order_id,
                d.channel,
                d.external_id,
                member_id,
                d.store_id,
                d.guide_id,
                d.paid_at,
                total,
                d.freight_fen,
                d.discount_fen,
                paid,
                buyer[0],
                buyer[1],
                hashes[i],
                now,
            )
        )
        if member_id is not None:
            metrics_of.append((member_id, d.paid_at, total))
            ingested.append(
                new_tuple(
                    IngestedOrder,
                    (
                        order_id,
                        member_id,
                        d.channel,
                        d.store_id,
                        as_utc(d.paid_at),
                        total,
                        d.freight_fen,
                        lines,
                    ),
                )
            )
    insert_tuples(session, Order.__table__, _ORDER_COLUMNS, rows)
    insert_tuples(session, OrderLine.__table__, _LINE_COLUMNS, line_rows)

    deltas = rules.aggregate_orders(metrics_of)
    _add_to_metrics(
        session,
        [
            {
                "member_id": member_id,
                "first_order_at": delta.first_order_at,
                "last_order_at": delta.last_order_at,
                "order_count": delta.order_count,
                "spend_fen": delta.spend_fen,
                "refund_fen": 0,
                "refund_count": 0,
            }
            for member_id, delta in sorted(deltas.items())
        ],
    )
    publish(session, OrdersIngested(tuple(ingested)))
    # One message per chunk, not per order: a consumer (points, journeys) reads the orders
    # by id anyway, and 200 million orders a year would otherwise mean 200 million outbox
    # rows written and delivered one by one, doubling the insert cost of an import.
    outbox.emit(
        session,
        "orders.ingested",
        {"order_ids": order_ids, "member_ids": sorted(deltas)},
    )
    return order_ids


# The columns of a new order and of its lines, in the order ``_insert_orders`` gives them
# (refunded amounts start at their default, 0).
_ORDER_COLUMNS = (
    "id",
    "channel",
    "external_id",
    "member_id",
    "store_id",
    "guide_id",
    "paid_at",
    "amount_fen",
    "freight_fen",
    "discount_fen",
    "status",
    "buyer_channel",
    "buyer_external_id",
    "content_hash",
    "created_at",
)
_LINE_COLUMNS = ("order_id", "line_no", "sku", "category", "quantity", "amount_fen")


def _add_to_metrics(session: Session, rows: list[dict[str, Any]]) -> None:
    """Add deltas to ``member_metrics`` in one upsert. Rows come sorted by member id, so two
    chunks touching the same members lock them in the same order and cannot deadlock."""
    if not rows:
        return
    execute_rows(session, _metrics_upsert(session.get_bind().dialect.name), rows)
    expire_stale(session, MemberMetrics)


_METRICS_UPSERTS: dict[str, Any] = {}


def _metrics_upsert(dialect: str) -> Any:
    """The upsert that adds a chunk's deltas to ``member_metrics``, built once per dialect
    (``execute_rows`` keeps its compiled form by the statement's identity)."""
    found = _METRICS_UPSERTS.get(dialect)
    if found is not None:
        return found
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    table = MemberMetrics.__table__
    stmt = dialect_insert(table)
    new = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.member_id],
        set_={
            "order_count": table.c.order_count + new.order_count,
            "spend_fen": table.c.spend_fen + new.spend_fen,
            "refund_fen": table.c.refund_fen + new.refund_fen,
            "refund_count": table.c.refund_count + new.refund_count,
            "first_order_at": case(
                (new.first_order_at.is_(None), table.c.first_order_at),
                (table.c.first_order_at.is_(None), new.first_order_at),
                (new.first_order_at < table.c.first_order_at, new.first_order_at),
                else_=table.c.first_order_at,
            ),
            "last_order_at": case(
                (new.last_order_at.is_(None), table.c.last_order_at),
                (table.c.last_order_at.is_(None), new.last_order_at),
                (new.last_order_at > table.c.last_order_at, new.last_order_at),
                else_=table.c.last_order_at,
            ),
        },
    )
    _METRICS_UPSERTS[dialect] = stmt
    return stmt


def _stored_summaries(session: Session, order_ids: list[int]) -> dict[int, dict[str, Any]]:
    orders = {o.id: o for o in session.scalars(select(Order).where(Order.id.in_(order_ids)))}
    lines = _lines_of(session, order_ids)
    return {
        order_id: rules.order_summary(
            order_id=order_id,
            paid_at=o.paid_at,
            amount_fen=o.amount_fen,
            freight_fen=o.freight_fen,
            discount_fen=o.discount_fen,
            member_id=o.member_id,
            buyer=(o.buyer_channel, o.buyer_external_id)
            if o.buyer_channel and o.buyer_external_id
            else None,
            store_id=o.store_id,
            lines=[(x.sku, x.category, x.quantity, x.amount_fen) for x in lines.get(order_id, [])],
        )
        for order_id, o in orders.items()
    }


# --- reading -----------------------------------------------------------------------------


@dataclass
class OrderView:
    order: Order
    lines: list[OrderLine]


def _lines_of(session: Session, order_ids: Sequence[int]) -> dict[int, list[OrderLine]]:
    lines: dict[int, list[OrderLine]] = {}
    for chunk in in_chunks(list(order_ids)):
        query = (
            select(OrderLine)
            .where(OrderLine.order_id.in_(chunk))
            .order_by(OrderLine.order_id, OrderLine.line_no)
        )
        for line in session.scalars(query):
            lines.setdefault(line.order_id, []).append(line)
    return lines


def get_order(session: Session, order_id: int, *, principal: Principal | None = None) -> OrderView:
    """An order with its lines. Guides and store managers see orders of their members only."""
    order = session.get(Order, order_id) if 0 < order_id <= rules.MAX_ID else None
    if order is None:
        raise NotFound(f"no order with id {order_id}", field="order_id")
    if principal is not None and principal.role in (Role.guide, Role.store_manager):
        if order.member_id is None:
            raise NotFound(f"no order with id {order_id} among your members' orders")
        try:
            members.get(session, order.member_id, principal=principal)
        except NotFound:
            raise NotFound(f"no order with id {order_id} among your members' orders") from None
    return OrderView(order, _lines_of(session, [order_id]).get(order_id, []))


def orders_of_member(
    session: Session,
    member_id: int,
    *,
    principal: Principal | None = None,
    before: tuple[datetime, int] | None = None,
    limit: int = 50,
) -> list[OrderView]:
    """Newest first, keyset-paged on (paid_at, id) over ``ix_orders_member_paid``: pass the
    last order's (paid_at, id) as ``before`` for the next page."""
    members.get(session, member_id, principal=principal)
    query = select(Order).where(Order.member_id == member_id)
    if before is not None:
        paid_at, order_id = before
        query = query.where(
            or_(Order.paid_at < paid_at, and_(Order.paid_at == paid_at, Order.id < order_id))
        )
    limit = max(1, min(limit, 500))
    orders = list(
        session.scalars(query.order_by(Order.paid_at.desc(), Order.id.desc()).limit(limit))
    )
    lines = _lines_of(session, [o.id for o in orders])
    return [OrderView(o, lines.get(o.id, [])) for o in orders]


# --- refunds -----------------------------------------------------------------------------


@dataclass
class RefundOutcome:
    refund: Refund
    lines: list[tuple[int, int, int]]  # (line_no, quantity, amount_fen)
    order: Order
    created: bool


def create_refund(session: Session, draft: RefundDraft) -> Refund:
    """Refund an order (or some of its lines); idempotent on (channel, external_id)."""
    return record_refund(session, draft).refund


def record_refund(session: Session, draft: RefundDraft) -> RefundOutcome:
    """``create_refund`` that also says whether this call created the refund or replayed it.

    Order, lines and member metrics change in the caller's transaction. On PostgreSQL the
    order row is locked first, so two refunds of one order queue up and neither can take
    back more than remains; on SQLite the transaction already holds the write lock."""
    problems = rules.validate_refund(draft, clock.now())
    if problems:
        raise invalid(problems, what="refund")
    content_hash = rules.refund_content_hash(draft)
    replay = _existing_refund(session, draft, content_hash)
    if replay is not None:
        return replay
    order = _lock_order(session, draft.order_channel, draft.order_external_id)
    # Again under the lock: a concurrent copy of this refund may have committed meanwhile.
    replay = _existing_refund(session, draft, content_hash)
    if replay is not None:
        return replay
    if clock.as_utc(draft.refunded_at) < order.paid_at:
        raise InvalidInput(
            f"refunded_at {draft.refunded_at.isoformat()} is before the order was paid "
            f"({order.paid_at.isoformat()})",
            field="refunded_at",
        )
    lines = list(
        session.scalars(
            select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.line_no)
        )
    )
    plan, problems = rules.plan_refund(
        draft,
        order_amount_fen=order.amount_fen,
        order_refunded_fen=order.refunded_fen,
        lines=[
            rules.LineState(
                x.line_no, x.quantity, x.amount_fen, x.refunded_quantity, x.refunded_fen
            )
            for x in lines
        ],
    )
    if plan is None:
        raise invalid(problems, what="refund")
    now = clock.now()
    refund = Refund(
        order_id=order.id,
        channel=draft.channel,
        external_id=draft.external_id,
        member_id=order.member_id,
        refunded_at=draft.refunded_at,
        amount_fen=plan.total_fen,
        reason=draft.reason,
        content_hash=content_hash,
        created_at=now,
    )
    session.add(refund)
    session.flush()
    by_no = {x.line_no: x for x in lines}
    refund_lines = []
    for line_no, quantity, fen in plan.lines:
        line = by_no[line_no]
        line.refunded_quantity += quantity
        line.refunded_fen += fen
        refund_lines.append(
            {
                "refund_id": refund.id,
                "order_line_id": line.id,
                "quantity": quantity,
                "amount_fen": fen,
            }
        )
    if refund_lines:
        session.execute(insert(RefundLine), refund_lines)
    order.refunded_fen += plan.total_fen
    order.status = rules.status_after_refund(order.amount_fen, order.refunded_fen).value
    if order.member_id is not None:
        _add_to_metrics(
            session,
            [
                {
                    "member_id": order.member_id,
                    "first_order_at": None,
                    "last_order_at": None,
                    "order_count": 0,
                    "spend_fen": 0,
                    "refund_fen": plan.total_fen,
                    "refund_count": 1,
                }
            ],
        )
    if order.member_id is not None:
        publish(
            session,
            RefundRecorded(
                refund.id,
                order.id,
                order.member_id,
                clock.as_utc(draft.refunded_at),
                plan.total_fen,
                tuple(RefundedLine(n, q, f) for n, q, f in plan.lines),
            ),
        )
    outbox.emit(
        session,
        "refund.created",
        {
            "refund_id": refund.id,
            "order_id": order.id,
            "member_id": order.member_id,
            "amount_fen": plan.total_fen,
        },
        key=f"order:{order.id}",
    )
    session.flush()
    return RefundOutcome(refund, list(plan.lines), order, created=True)


def _existing_refund(
    session: Session, draft: RefundDraft, content_hash: str
) -> RefundOutcome | None:
    refund = session.scalar(
        select(Refund).where(
            Refund.channel == draft.channel, Refund.external_id == draft.external_id
        )
    )
    if refund is None:
        return None
    if refund.content_hash != content_hash:
        stored = _stored_refund_draft(session, refund)
        raise Conflict(
            f"{draft.channel} refund {draft.external_id} is stored already with other content; "
            "a further refund needs its own external_id",
            field="external_id",
            code="refund_conflict",
            details={
                "stored": rules.refund_summary(stored, refund_id=refund.id),
                "new": rules.refund_summary(draft),
            },
        )
    order = session.get(Order, refund.order_id)
    assert order is not None
    lines = session.execute(
        select(OrderLine.line_no, RefundLine.quantity, RefundLine.amount_fen)
        .join(OrderLine, OrderLine.id == RefundLine.order_line_id)
        .where(RefundLine.refund_id == refund.id)
        .order_by(OrderLine.line_no)
    )
    return RefundOutcome(refund, [(n, q, a) for n, q, a in lines], order, created=False)


def _stored_refund_draft(session: Session, refund: Refund) -> RefundDraft:
    order = session.get(Order, refund.order_id)
    assert order is not None
    lines = session.execute(
        select(OrderLine.line_no, RefundLine.quantity, RefundLine.amount_fen)
        .join(OrderLine, OrderLine.id == RefundLine.order_line_id)
        .where(RefundLine.refund_id == refund.id)
        .order_by(OrderLine.line_no)
    )
    return RefundDraft(
        channel=refund.channel,
        external_id=refund.external_id,
        order_channel=order.channel,
        order_external_id=order.external_id,
        refunded_at=refund.refunded_at,
        lines=[rules.RefundLineDraft(n, q, a) for n, q, a in lines],
        amount_fen=refund.amount_fen,
        reason=refund.reason,
    )


def _lock_order(session: Session, channel: str, external_id: str) -> Order:
    query = select(Order).where(Order.channel == channel, Order.external_id == external_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    order = session.scalar(query.execution_options(populate_existing=True))
    if order is None:
        raise NotFound(
            f"no {channel} order {external_id}; send the order before its refunds",
            field="order_external_id",
        )
    return order


# --- member metrics ----------------------------------------------------------------------

METRIC_FIELDS = (
    "first_order_at",
    "last_order_at",
    "order_count",
    "spend_fen",
    "refund_fen",
    "refund_count",
)
RECOMPUTE_RANGE = 50_000  # member ids per INSERT .. SELECT when recomputing everyone


def _expected_metrics(where: ColumnElement[bool] | None = None) -> Select[Any]:
    """Metrics as the orders say they are: one row per member with orders. Refunds count
    for the member who owns the order now (a refund follows its order through merges)."""
    conditions = [Order.member_id.is_not(None)] + ([where] if where is not None else [])
    placed = (
        select(
            Order.member_id.label("member_id"),
            func.min(Order.paid_at).label("first_order_at"),
            func.max(Order.paid_at).label("last_order_at"),
            func.count(Order.id).label("order_count"),
            func.sum(Order.amount_fen).label("spend_fen"),
        )
        .where(*conditions)
        .group_by(Order.member_id)
        .subquery("placed")
    )
    refunded = (
        select(
            Order.member_id.label("member_id"),
            func.sum(Refund.amount_fen).label("refund_fen"),
            func.count(Refund.id).label("refund_count"),
        )
        .join(Refund, Refund.order_id == Order.id)
        .where(*conditions)
        .group_by(Order.member_id)
        .subquery("refunded")
    )
    return select(
        placed.c.member_id,
        placed.c.first_order_at,
        placed.c.last_order_at,
        placed.c.order_count,
        placed.c.spend_fen,
        func.coalesce(refunded.c.refund_fen, 0).label("refund_fen"),
        func.coalesce(refunded.c.refund_count, 0).label("refund_count"),
    ).select_from(placed.outerjoin(refunded, refunded.c.member_id == placed.c.member_id))


def _insert_select(table: Any, columns: list[str], query: Select[Any]) -> Any:
    # rowcount of an INSERT .. SELECT is only kept when asked for (SQLAlchemy 2.1).
    return insert(table).from_select(columns, query).execution_options(preserve_rowcount=True)


def recompute_metrics(session: Session, member_ids: Sequence[int] | None = None) -> int:
    """Rebuild ``member_metrics`` from orders and refunds (all members when ``None``): delete,
    then ``INSERT .. SELECT .. GROUP BY``, by ranges of member ids so no statement handles
    more than a slice of 200 million orders. Returns how many members have metrics."""
    session.flush()
    table = MemberMetrics.__table__
    columns = ["member_id", *METRIC_FIELDS]
    total = 0
    if member_ids is not None:
        for chunk in in_chunks(sorted(set(member_ids))):
            session.execute(delete(table).where(table.c.member_id.in_(chunk)))
            result = session.execute(
                _insert_select(table, columns, _expected_metrics(Order.member_id.in_(chunk)))
            )
            total += int(result.rowcount or 0)  # type: ignore[attr-defined]
    else:
        session.execute(delete(table))
        low, high = session.execute(
            select(func.min(Order.member_id), func.max(Order.member_id))
        ).one()
        if low is not None:
            for start in range(low, high + 1, RECOMPUTE_RANGE):
                where = Order.member_id.between(start, start + RECOMPUTE_RANGE - 1)
                result = session.execute(_insert_select(table, columns, _expected_metrics(where)))
                total += int(result.rowcount or 0)  # type: ignore[attr-defined]
    expire_stale(session, MemberMetrics)
    return total


@dataclass(frozen=True)
class MetricsDrift:
    """One member whose cached metrics differ from what the orders say."""

    member_id: int
    fields: tuple[str, ...]
    cached: dict[str, Any] | None
    expected: dict[str, Any] | None


def check_metrics(session: Session, *, limit: int | None = 1_000) -> list[MetricsDrift]:
    """Compare cached metrics with a recomputation, in SQL, and report the members that
    differ (a missing row counts as zeros). Changes nothing: ``recompute_metrics`` repairs."""
    session.flush()
    expected = _expected_metrics().subquery("expected")
    cached = MemberMetrics.__table__
    differs = or_(
        cached.c.member_id.is_(None),
        *(cached.c[name].is_distinct_from(expected.c[name]) for name in METRIC_FIELDS),
    )
    drifts: list[MetricsDrift] = []
    query = (
        select(
            expected,
            *(cached.c[name].label(f"cached_{name}") for name in ("member_id", *METRIC_FIELDS)),
        )
        .select_from(expected.outerjoin(cached, cached.c.member_id == expected.c.member_id))
        .where(differs)
        .order_by(expected.c.member_id)
    )
    if limit is not None:
        query = query.limit(limit)
    for row in session.execute(query).mappings():
        want = {name: row[name] for name in METRIC_FIELDS}
        have = (
            None
            if row["cached_member_id"] is None
            else {name: row[f"cached_{name}"] for name in METRIC_FIELDS}
        )
        fields = tuple(name for name in METRIC_FIELDS if have is None or have[name] != want[name])
        drifts.append(MetricsDrift(row["member_id"], fields, have, want))
    # Cached rows of members without any order must be all zeros.
    orphans = (
        select(cached)
        .where(
            ~select(Order.id).where(Order.member_id == cached.c.member_id).exists(),
            or_(
                cached.c.order_count != 0,
                cached.c.spend_fen != 0,
                cached.c.refund_fen != 0,
                cached.c.refund_count != 0,
                cached.c.first_order_at.is_not(None),
                cached.c.last_order_at.is_not(None),
            ),
        )
        .order_by(cached.c.member_id)
    )
    if limit is not None:
        orphans = orphans.limit(max(0, limit - len(drifts)))
    for row in session.execute(orphans).mappings():
        have = {name: row[name] for name in METRIC_FIELDS}
        fields = tuple(name for name in METRIC_FIELDS if have[name] not in (0, None))
        drifts.append(MetricsDrift(row["member_id"], fields, have, None))
    return drifts


# Tables a bulk load of orders grows, and that its lookups read.
BULK_TABLES = ("orders", "order_lines", "members", "member_identities", "member_metrics")


def analyze_if_stale(session: Session) -> list[str]:
    """``ANALYZE`` the tables a bulk load grows when most of their rows are newer than their
    statistics (PostgreSQL only; returns the tables analysed).

    Why: a first import into a fresh database runs its lookups against tables the planner
    believes empty; it then scans all orders of a channel instead of using the unique index,
    and every chunk gets slower (a 100,000-row file took 80 s instead of 10 s). Autovacuum
    fixes this only after its nap, and is often off on loading servers. Cheap to call after
    every committed chunk: it reads ``pg_stat_user_tables`` and analyses rarely (each time a
    table has doubled)."""
    if session.get_bind().dialect.name != "postgresql":
        return []
    stale = list(
        session.execute(
            text(
                "SELECT relname FROM pg_stat_user_tables WHERE relname IN :names "
                "AND n_mod_since_analyze > 1000 AND n_mod_since_analyze * 2 > n_live_tup"
            ).bindparams(bindparam("names", expanding=True)),
            {"names": list(BULK_TABLES)},
        ).scalars()
    )
    for name in stale:
        session.execute(text(f'ANALYZE "{name}"'))
    return stale


def realign_refund_members(session: Session, member_ids: Sequence[int]) -> None:
    """Give refunds the member of their order. A merge moves both, but an unmerge puts back
    only what the merge moved: a refund made in between would stay with the survivor while
    its order goes home."""
    ids = sorted(set(member_ids))
    orders_of = select(Order.id).where(Order.member_id.in_(ids))
    owner = select(Order.member_id).where(Order.id == Refund.order_id).scalar_subquery()
    session.execute(
        Refund.__table__.update()
        .where(or_(Refund.member_id.in_(ids), Refund.order_id.in_(orders_of)))
        .where(Refund.member_id.is_distinct_from(owner))
        .values(member_id=owner)
    )
    expire_stale(session, Refund)


__all__ = [
    "IngestResult",
    "MetricsDrift",
    "OrderView",
    "RefundOutcome",
    "analyze_if_stale",
    "check_metrics",
    "create_refund",
    "get_order",
    "ingest_orders",
    "orders_of_member",
    "realign_refund_members",
    "recompute_metrics",
    "record_refund",
]
