"""Pure rules for orders and refunds: shapes, validation, content hashes, refund plans and
metric deltas. No database, no clock: callers pass ``now``."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from siyu.core.clock import as_utc
from siyu.core.errors import InvalidInput, Problem
from siyu.core.money import MAX_FEN, fen_to_yuan
from siyu.members.rules import normalize_identity


class OrderChannel(StrEnum):
    store = "store"
    mini_program = "mini_program"
    tmall = "tmall"
    jd = "jd"
    douyin = "douyin"


# Channel spellings ``OrderChannel`` accepts, for a membership test instead of an enum lookup.
_ORDER_CHANNELS = frozenset(c.value for c in OrderChannel)

# Clocks of tills and platforms drift; an order "paid" a little in the future is accepted.
FUTURE_TOLERANCE = timedelta(minutes=10)
MAX_LINES = 500
MAX_QUANTITY = 10_000
MAX_TEXT = 64  # sku and category columns
MAX_ID = 2**63 - 1  # ids are BIGINT on PostgreSQL


class OrderStatus(StrEnum):
    paid = "paid"
    partially_refunded = "partially_refunded"
    refunded = "refunded"


@dataclass
class LineDraft:
    sku: str
    category: str
    quantity: int
    amount_fen: int


@dataclass
class OrderDraft:
    """An order as a channel reports it, before it is matched to a member and stored.

    The buyer is named by ``member_id`` (when the caller knows it) or by identities
    (channel, external id), e.g. ``("phone", "13800138000")`` or ``("tmall", "t_889")``.
    """

    channel: str
    external_id: str
    paid_at: datetime
    lines: list[LineDraft]
    member_id: int | None = None
    buyer_identities: list[tuple[str, str]] = field(default_factory=list)
    store_id: int | None = None
    store_code: str | None = None
    guide_id: int | None = None
    freight_fen: int = 0
    discount_fen: int = 0
    amount_fen: int | None = None  # when given, must equal lines + freight

    @property
    def total_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines) + self.freight_fen


@dataclass
class RefundLineDraft:
    line_no: int
    quantity: int
    amount_fen: int


@dataclass
class RefundDraft:
    """A refund of a whole order (no lines) or of some lines."""

    channel: str
    external_id: str
    order_channel: str
    order_external_id: str
    refunded_at: datetime
    lines: list[RefundLineDraft] = field(default_factory=list)
    amount_fen: int | None = None
    reason: str | None = None


def _instant(at: datetime) -> str:
    """One spelling per instant, so '20:00+08:00' and '12:00Z' hash alike (a till and a
    platform may report the same order in different offsets).

    ``isoformat`` of the instant in UTC, spelled by ``%`` (an import hashes every order;
    this takes two thirds of the time): microseconds only when there are some, the offset
    only for an aware instant."""
    u = as_utc(at) if at.tzinfo is not None else at
    fields = (u.year, u.month, u.day, u.hour, u.minute, u.second)
    text = _SECONDS % fields if not u.microsecond else _MICROSECONDS % (*fields, u.microsecond)
    return text if at.tzinfo is None else text + "+00:00"


_SECONDS = "%04d-%02d-%02dT%02d:%02d:%02d"
_MICROSECONDS = _SECONDS + ".%06d"


def order_content_hash(draft: OrderDraft) -> str:
    """What makes two reports of one order 'the same order': a replay with this hash changes
    nothing; the same (channel, external id) with another hash is a conflict.

    The service hashes a normalised copy (identities normalised, store code resolved to its
    id), so spelling differences are not conflicts."""
    identities = draft.buyer_identities
    if len(identities) == 1:  # the usual case, without a sort and a generator
        buyers = f"{identities[0][0]}:{identities[0][1]}"
    else:
        buyers = ",".join(f"{c}:{e}" for c, e in sorted(identities))
    parts = [
        draft.channel,
        draft.external_id,
        _instant(draft.paid_at),
        str(draft.member_id or ""),
        buyers,
        str(draft.store_id or draft.store_code or ""),
        str(draft.freight_fen),
        str(draft.discount_fen),
    ]
    parts += [f"{x.sku}|{x.category}|{x.quantity}|{x.amount_fen}" for x in draft.lines]
    # A copy of an empty 16-byte BLAKE2b rather than a new one: the same digest, without
    # parsing the constructor's arguments for every order of an import.
    digest = _EMPTY_HASH.copy()
    digest.update("\n".join(parts).encode())
    return digest.hexdigest()


_EMPTY_HASH = hashlib.blake2b(digest_size=16)


def refund_content_hash(draft: RefundDraft) -> str:
    parts = [
        draft.channel,
        draft.external_id,
        draft.order_channel,
        draft.order_external_id,
        _instant(draft.refunded_at),
        str(draft.amount_fen or ""),
    ]
    parts += [f"{x.line_no}|{x.quantity}|{x.amount_fen}" for x in draft.lines]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


# ``now`` + ``FUTURE_TOLERANCE`` for the last ``now`` seen: an import checks a chunk of orders
# against one ``now``, so the sum is made once per chunk rather than per order.
_latest: tuple[datetime, datetime] | None = None


def _latest_paid_at(now: datetime) -> datetime:
    global _latest
    known = _latest
    if known is not None and known[0] is now:
        return known[1]
    latest = now + FUTURE_TOLERANCE
    _latest = (now, latest)
    return latest


def validate_order(draft: OrderDraft, now: datetime) -> list[Problem]:
    """Every problem with an order, not just the first, so a file's author fixes all at once."""
    problems: list[Problem] = []
    if not isinstance(draft.channel, str) or draft.channel not in _ORDER_CHANNELS:
        problems.append(
            Problem(
                "channel",
                f"unknown channel '{draft.channel}'; use one of: "
                + ", ".join(c.value for c in OrderChannel),
            )
        )
    if not draft.external_id or not draft.external_id.strip():
        problems.append(Problem("external_id", "missing: the channel's order number"))
    elif len(draft.external_id) > 128:
        problems.append(Problem("external_id", "longer than 128 characters"))
    if draft.paid_at.tzinfo is None:
        problems.append(Problem("paid_at", "needs a timezone, e.g. 2026-11-11T20:00:00+08:00"))
    elif draft.paid_at > _latest_paid_at(now):
        problems.append(
            Problem("paid_at", f"{draft.paid_at.isoformat()} is in the future; check the clock")
        )
    if not draft.lines:
        problems.append(Problem("lines", "an order needs at least one line"))
    if len(draft.lines) > MAX_LINES:
        problems.append(Problem("lines", f"more than {MAX_LINES} lines in one order"))
    for i, line in enumerate(draft.lines):
        sku, category, quantity, amount_fen = (
            line.sku,
            line.category,
            line.quantity,
            line.amount_fen,
        )
        if (
            sku
            and category
            and len(sku) <= MAX_TEXT
            and len(category) <= MAX_TEXT
            and sku.strip()
            and category.strip()
            and 0 < quantity <= MAX_QUANTITY
            and 0 <= amount_fen <= MAX_FEN
        ):
            continue  # a good line, the usual case: no need to spell out where it is
        where = f"lines[{i}]"
        for name, text in (("sku", sku), ("category", category)):
            if not text or not text.strip():
                problems.append(Problem(f"{where}.{name}", "missing"))
            elif len(text) > MAX_TEXT:
                problems.append(Problem(f"{where}.{name}", f"longer than {MAX_TEXT} characters"))
        if not 0 < quantity <= MAX_QUANTITY:
            problems.append(
                Problem(f"{where}.quantity", f"{quantity} is not between 1 and {MAX_QUANTITY}")
            )
        if amount_fen < 0:
            problems.append(Problem(f"{where}.amount", "negative; refunds are sent as refunds"))
        elif amount_fen > MAX_FEN:
            problems.append(Problem(f"{where}.amount", "absurdly large; check the unit (yuan)"))
    for name, ref in (
        ("member_id", draft.member_id),
        ("store_id", draft.store_id),
        ("guide_id", draft.guide_id),
    ):
        if ref is not None and not 0 < ref <= MAX_ID:
            problems.append(Problem(name, f"{ref} is not a valid id"))
    if draft.store_code is not None and not 0 < len(draft.store_code.strip()) <= 50:
        problems.append(Problem("store_code", "empty or longer than 50 characters"))
    freight_fen, discount_fen = draft.freight_fen, draft.discount_fen
    if not (0 <= freight_fen <= MAX_FEN and 0 <= discount_fen <= MAX_FEN):
        for name, value in (("freight", freight_fen), ("discount", discount_fen)):
            if value < 0:
                problems.append(Problem(name, "negative"))
            elif value > MAX_FEN:
                problems.append(Problem(name, "absurdly large; check the unit (yuan)"))
    if problems:
        return problems
    total_fen = sum(line.amount_fen for line in draft.lines) + freight_fen  # draft.total_fen
    if total_fen > MAX_FEN:
        problems.append(Problem("amount", "absurdly large; check the unit (yuan)"))
    elif draft.amount_fen is not None and draft.amount_fen != total_fen:
        problems.append(
            Problem(
                "amount",
                f"{draft.amount_fen / 100:.2f} does not equal the lines plus freight "
                f"({total_fen / 100:.2f})",
            )
        )
    return problems


def normalize_buyer(
    identities: Sequence[tuple[str, str]],
) -> tuple[list[tuple[str, str]], list[Problem]]:
    """Buyer identities in the members' canonical spelling ('+86 138…' -> '138…'), in the
    caller's order (the first one names a guest), without repeats."""
    clean: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for i, (channel, external_id) in enumerate(identities):
        try:
            clean.append(normalize_identity(channel, external_id))
        except InvalidInput as exc:
            problems.append(Problem(f"buyer_identities[{i}]", exc.message))
    return list(dict.fromkeys(clean)), problems


def validate_refund(draft: RefundDraft, now: datetime) -> list[Problem]:
    """Problems visible without the order; the refund plan checks amounts against the order."""
    problems: list[Problem] = []
    for name, channel in (("channel", draft.channel), ("order_channel", draft.order_channel)):
        try:
            OrderChannel(channel)
        except ValueError:
            problems.append(
                Problem(
                    name,
                    f"unknown channel '{channel}'; use one of: "
                    + ", ".join(c.value for c in OrderChannel),
                )
            )
    for name, value in (
        ("external_id", draft.external_id),
        ("order_external_id", draft.order_external_id),
    ):
        if not value or not value.strip():
            problems.append(Problem(name, "missing"))
        elif len(value) > 128:
            problems.append(Problem(name, "longer than 128 characters"))
    if draft.refunded_at.tzinfo is None:
        problems.append(Problem("refunded_at", "needs a timezone, e.g. 2026-11-12T10:00:00+08:00"))
    elif draft.refunded_at > now + FUTURE_TOLERANCE:
        problems.append(Problem("refunded_at", f"{draft.refunded_at.isoformat()} is in the future"))
    if draft.reason is not None and len(draft.reason) > 200:
        problems.append(Problem("reason", "longer than 200 characters"))
    if draft.amount_fen is not None and not 0 < draft.amount_fen <= MAX_FEN:
        problems.append(Problem("amount", "must be more than 0 and a plausible amount"))
    seen: set[int] = set()
    for i, line in enumerate(draft.lines):
        where = f"lines[{i}]"
        if line.line_no in seen:
            problems.append(Problem(f"{where}.line_no", f"line {line.line_no} appears twice"))
        seen.add(line.line_no)
        if line.quantity < 0:
            problems.append(Problem(f"{where}.quantity", "negative"))
        if line.amount_fen < 0:
            problems.append(Problem(f"{where}.amount", "negative"))
        elif line.amount_fen > MAX_FEN:
            problems.append(Problem(f"{where}.amount", "absurdly large; check the unit (yuan)"))
        if line.quantity == 0 and line.amount_fen == 0:
            problems.append(Problem(where, "refunds neither a quantity nor an amount"))
    return problems


@dataclass(frozen=True)
class LineState:
    """An order line as stored: what was bought and what has been refunded of it already."""

    line_no: int
    quantity: int
    amount_fen: int
    refunded_quantity: int = 0
    refunded_fen: int = 0

    @property
    def remaining_quantity(self) -> int:
        return self.quantity - self.refunded_quantity

    @property
    def remaining_fen(self) -> int:
        return self.amount_fen - self.refunded_fen


@dataclass(frozen=True)
class RefundPlan:
    """What one refund takes back: per line (line_no, quantity, fen) and freight."""

    lines: tuple[tuple[int, int, int], ...]
    freight_fen: int

    @property
    def total_fen(self) -> int:
        return sum(fen for _, _, fen in self.lines) + self.freight_fen


def _yuan(fen: int) -> str:
    return str(fen_to_yuan(fen))


def plan_refund(
    draft: RefundDraft,
    *,
    order_amount_fen: int,
    order_refunded_fen: int,
    lines: Sequence[LineState],
) -> tuple[RefundPlan | None, list[Problem]]:
    """Decide what a refund takes back, or say why it cannot.

    A refund without lines returns everything that remains (lines and freight). A refund of
    lines takes a quantity and an amount from each named line; freight only goes back with a
    whole-order refund. Nothing may exceed what remains, so ``refunded <= amount`` holds on
    every line and on the order (the database checks it too)."""
    remaining_total = order_amount_fen - order_refunded_fen
    if order_amount_fen == 0:
        return None, [Problem("order_external_id", "the order cost nothing; nothing to refund")]
    if remaining_total <= 0:
        return None, [Problem("order_external_id", "the order is already fully refunded")]
    if not draft.lines:
        line_parts = tuple(
            (x.line_no, x.remaining_quantity, x.remaining_fen)
            for x in lines
            if x.remaining_quantity > 0 or x.remaining_fen > 0
        )
        freight = remaining_total - sum(fen for _, _, fen in line_parts)
        plan = RefundPlan(line_parts, freight)
        if draft.amount_fen is not None and draft.amount_fen != plan.total_fen:
            return None, [
                Problem(
                    "amount",
                    f"{_yuan(draft.amount_fen)} is not what remains on the order "
                    f"({_yuan(plan.total_fen)}); a refund without lines returns everything "
                    "that remains, to refund part of it name the lines",
                )
            ]
        return plan, []
    by_no = {x.line_no: x for x in lines}
    problems: list[Problem] = []
    parts: list[tuple[int, int, int]] = []
    for i, line in enumerate(draft.lines):
        where = f"lines[{i}]"
        state = by_no.get(line.line_no)
        if state is None:
            problems.append(
                Problem(
                    f"{where}.line_no",
                    f"the order has no line {line.line_no} (lines are numbered 1 to {len(lines)})",
                )
            )
            continue
        if line.quantity > state.remaining_quantity:
            problems.append(
                Problem(
                    f"{where}.quantity",
                    f"{line.quantity} is more than remains refundable on line {line.line_no} "
                    f"({state.remaining_quantity} of {state.quantity})",
                )
            )
        if line.amount_fen > state.remaining_fen:
            problems.append(
                Problem(
                    f"{where}.amount",
                    f"{_yuan(line.amount_fen)} is more than remains refundable on line "
                    f"{line.line_no} ({_yuan(state.remaining_fen)} of {_yuan(state.amount_fen)})",
                )
            )
        parts.append((line.line_no, line.quantity, line.amount_fen))
    if problems:
        return None, problems
    plan = RefundPlan(tuple(parts), 0)
    if plan.total_fen > remaining_total:
        return None, [
            Problem(
                "amount",
                f"{_yuan(plan.total_fen)} is more than remains refundable on the order "
                f"({_yuan(remaining_total)})",
            )
        ]
    if plan.total_fen <= 0:
        return None, [Problem("lines", "the refund takes back no money; name an amount")]
    if draft.amount_fen is not None and draft.amount_fen != plan.total_fen:
        return None, [
            Problem(
                "amount",
                f"{_yuan(draft.amount_fen)} does not equal the refunded lines "
                f"({_yuan(plan.total_fen)})",
            )
        ]
    return plan, []


def status_after_refund(amount_fen: int, refunded_fen: int) -> OrderStatus:
    if refunded_fen <= 0:
        return OrderStatus.paid
    if refunded_fen >= amount_fen:
        return OrderStatus.refunded
    return OrderStatus.partially_refunded


@dataclass
class MetricsDelta:
    """What a batch of new orders adds to one member's metrics."""

    order_count: int = 0
    spend_fen: int = 0
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None


def aggregate_orders(orders: Iterable[tuple[int, datetime, int]]) -> dict[int, MetricsDelta]:
    """(member_id, paid_at, amount_fen) -> one delta per member, so a chunk of 5,000 orders
    becomes one upsert row per member instead of 5,000 updates."""
    deltas: dict[int, MetricsDelta] = {}
    for member_id, paid_at, amount_fen in orders:
        delta = deltas.setdefault(member_id, MetricsDelta())
        delta.order_count += 1
        delta.spend_fen += amount_fen
        if delta.first_order_at is None or paid_at < delta.first_order_at:
            delta.first_order_at = paid_at
        if delta.last_order_at is None or paid_at > delta.last_order_at:
            delta.last_order_at = paid_at
    return deltas


def order_summary(
    *,
    paid_at: datetime,
    amount_fen: int,
    freight_fen: int,
    discount_fen: int,
    member_id: int | None,
    buyer: tuple[str, str] | None,
    store_id: int | None,
    lines: Sequence[tuple[str, str, int, int]],
    order_id: int | None = None,
) -> dict[str, Any]:
    """A version of an order as a person compares it: both sides of an order conflict."""
    summary: dict[str, Any] = {}
    if order_id is not None:
        summary["order_id"] = order_id
    summary |= {
        "paid_at": _instant(paid_at),
        "amount": _yuan(amount_fen),
        "freight": _yuan(freight_fen),
        "discount": _yuan(discount_fen),
        "member_id": member_id,
        "buyer": f"{buyer[0]}:{buyer[1]}" if buyer else None,
        "store_id": store_id,
        "lines": [
            {"sku": sku, "category": category, "quantity": quantity, "amount": _yuan(fen)}
            for sku, category, quantity, fen in lines
        ],
    }
    return summary


def draft_summary(draft: OrderDraft) -> dict[str, Any]:
    return order_summary(
        paid_at=draft.paid_at,
        amount_fen=draft.total_fen,
        freight_fen=draft.freight_fen,
        discount_fen=draft.discount_fen,
        member_id=draft.member_id,
        buyer=draft.buyer_identities[0] if draft.buyer_identities else None,
        store_id=draft.store_id,
        lines=[(x.sku, x.category, x.quantity, x.amount_fen) for x in draft.lines],
    )


def refund_summary(draft: RefundDraft, *, refund_id: int | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = {} if refund_id is None else {"refund_id": refund_id}
    summary |= {
        "order": f"{draft.order_channel}:{draft.order_external_id}",
        "refunded_at": _instant(draft.refunded_at),
        "amount": None if draft.amount_fen is None else _yuan(draft.amount_fen),
        "lines": [
            {"line_no": x.line_no, "quantity": x.quantity, "amount": _yuan(x.amount_fen)}
            for x in draft.lines
        ],
    }
    return summary


def local_instant(text: str, tz: str) -> datetime:
    """ISO 8601 from a file; a time without offset is the brand's local time (a till's
    export rarely says its timezone). Raises ValueError with a message one can act on."""
    value = text.strip()
    if not value:
        raise ValueError("missing")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"'{value}' is not an ISO 8601 time; write e.g. 2026-11-11T20:00:00+08:00"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=ZoneInfo(tz))


def encode_cursor(paid_at: datetime, order_id: int) -> str:
    """An opaque keyset cursor (paid_at, id): pages stay stable while new orders arrive."""
    raw = f"{as_utc(paid_at).isoformat()}|{order_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, order_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        return as_utc(datetime.fromisoformat(at)), int(order_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(
            "this cursor is not one this API handed out; start from the first page",
            field="cursor",
        ) from None
