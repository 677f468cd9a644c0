"""API shapes for orders and refunds. Amounts are yuan at the edge ("12.50", a string or a
JSON number) and fen inside; times are ISO 8601 with an offset."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, SkipValidation

from siyu.core.auth import Principal
from siyu.core.errors import InvalidInput, Problem
from siyu.core.money import fen_to_yuan, yuan_to_fen
from siyu.members.rules import IdentityChannel, mask_phone
from siyu.orders.models import Order, OrderLine
from siyu.orders.rules import LineDraft, OrderChannel, OrderDraft, RefundDraft, RefundLineDraft
from siyu.orders.service import IngestResult, OrderView, RefundOutcome

MAX_BATCH = 10_000


def _whole_fen(value: Decimal) -> Decimal:
    try:
        yuan_to_fen(value)
    except InvalidInput as exc:
        raise ValueError(exc.message.split(": ", 1)[-1]) from None
    return value


Yuan = Annotated[
    Decimal,
    AfterValidator(_whole_fen),
    Field(description='yuan with at most two decimals, e.g. "12.50"', examples=["12.50"]),
]


def _yuan(fen: int) -> str:
    return str(fen_to_yuan(fen))


class LineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(max_length=64)
    category: str = Field(max_length=64, examples=["奶粉"])
    quantity: int
    amount: Yuan = Field(description="what the buyer paid for the line, in yuan")


class BuyerIdentity(BaseModel):
    channel: IdentityChannel
    external_id: str = Field(min_length=1, max_length=128, examples=["13800138000"])


class OrderCreate(BaseModel):
    """An order as a channel reports it. Name the buyer by ``member_id`` or by identities
    (phone, unionid, platform account); an unknown buyer makes a guest order or a new member,
    as the server's ``unknown_buyer`` setting says."""

    model_config = ConfigDict(extra="forbid")

    channel: OrderChannel
    external_id: str = Field(max_length=128, description="the channel's order number")
    paid_at: AwareDatetime = Field(examples=["2026-11-11T20:00:00+08:00"])
    lines: list[LineCreate] = Field(max_length=500)
    member_id: int | None = None
    buyer_identities: list[BuyerIdentity] = Field(default_factory=list, max_length=10)
    store_id: int | None = None
    store_code: str | None = Field(default=None, max_length=50)
    guide_id: int | None = None
    freight: Yuan = Decimal(0)
    discount: Yuan = Decimal(0)
    amount: Yuan | None = Field(default=None, description="when given, must equal lines + freight")

    def to_draft(self) -> OrderDraft:
        return OrderDraft(
            channel=self.channel.value,
            external_id=self.external_id,
            paid_at=self.paid_at,
            lines=[
                LineDraft(x.sku, x.category, x.quantity, yuan_to_fen(x.amount)) for x in self.lines
            ],
            member_id=self.member_id,
            buyer_identities=[(b.channel.value, b.external_id) for b in self.buyer_identities],
            store_id=self.store_id,
            store_code=self.store_code,
            guide_id=self.guide_id,
            freight_fen=yuan_to_fen(self.freight),
            discount_fen=yuan_to_fen(self.discount),
            amount_fen=None if self.amount is None else yuan_to_fen(self.amount),
        )


class OrderBatch(BaseModel):
    # Items are validated one by one in the route, so a malformed order is one rejected
    # item instead of a 422 for the whole batch; the schema still documents their shape.
    orders: list[Annotated[OrderCreate, SkipValidation]] = Field(
        description=f"up to {MAX_BATCH:,} orders; larger files go through `siyu import orders`"
    )


class OrderLineRead(BaseModel):
    line_no: int
    sku: str
    category: str
    quantity: int
    amount: str
    refunded_quantity: int
    refunded: str

    @classmethod
    def of(cls, line: OrderLine) -> OrderLineRead:
        return cls(
            line_no=line.line_no,
            sku=line.sku,
            category=line.category,
            quantity=line.quantity,
            amount=_yuan(line.amount_fen),
            refunded_quantity=line.refunded_quantity,
            refunded=_yuan(line.refunded_fen),
        )


class OrderRead(BaseModel):
    id: int
    channel: str
    external_id: str
    member_id: int | None
    store_id: int | None
    guide_id: int | None
    paid_at: datetime
    amount: str
    freight: str
    discount: str
    refunded: str
    status: str
    buyer_channel: str | None
    buyer_external_id: str | None = Field(description="phones masked for roles without access")
    created_at: datetime
    lines: list[OrderLineRead]

    @classmethod
    def of(cls, view: OrderView, principal: Principal) -> OrderRead:
        o: Order = view.order
        buyer = o.buyer_external_id
        if o.buyer_channel == IdentityChannel.phone and not principal.sees_phones:
            buyer = mask_phone(buyer)
        return cls(
            id=o.id,
            channel=o.channel,
            external_id=o.external_id,
            member_id=o.member_id,
            store_id=o.store_id,
            guide_id=o.guide_id,
            paid_at=o.paid_at,
            amount=_yuan(o.amount_fen),
            freight=_yuan(o.freight_fen),
            discount=_yuan(o.discount_fen),
            refunded=_yuan(o.refunded_fen),
            status=o.status,
            buyer_channel=o.buyer_channel,
            buyer_external_id=buyer,
            created_at=o.created_at,
            lines=[OrderLineRead.of(x) for x in view.lines],
        )


class OrderAccepted(BaseModel):
    status: Literal["created", "duplicate"] = Field(
        description="duplicate: this order was stored before with the same content; nothing changed"
    )
    order: OrderRead


class ProblemRead(BaseModel):
    field: str
    reason: str


class BatchItemResult(BaseModel):
    index: int
    status: Literal["created", "duplicate", "rejected"]
    order_id: int | None = None
    member_id: int | None = None
    problems: list[ProblemRead] = Field(default_factory=list)
    conflict: dict[str, Any] | None = Field(
        default=None, description="for an order stored with other content: both versions"
    )

    @classmethod
    def of(cls, result: IngestResult) -> BatchItemResult:
        return cls(
            index=result.index,
            status=result.status,
            order_id=result.order_id,
            member_id=result.member_id,
            problems=[ProblemRead(field=p.field, reason=p.reason) for p in result.problems],
            conflict=result.conflict,
        )


class BatchResult(BaseModel):
    counts: dict[str, int] = Field(examples=[{"created": 9998, "duplicate": 1, "rejected": 1}])
    results: list[BatchItemResult]


class OrderPage(BaseModel):
    items: list[OrderRead]
    next_cursor: str | None = Field(description="pass as cursor for the next (older) page")


class RefundLineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_no: int = Field(ge=1, description="the order line, numbered from 1 as sent")
    quantity: int = Field(ge=0)
    amount: Yuan


class RefundCreate(BaseModel):
    """A refund of a whole order (no lines: everything that remains, freight included) or of
    some lines. Idempotent on (channel, external_id)."""

    model_config = ConfigDict(extra="forbid")

    channel: OrderChannel
    external_id: str = Field(max_length=128, description="the channel's refund number")
    order_channel: OrderChannel
    order_external_id: str = Field(max_length=128)
    refunded_at: AwareDatetime
    lines: list[RefundLineCreate] = Field(default_factory=list, max_length=500)
    amount: Yuan | None = Field(default=None, description="when given, must equal the refund")
    reason: str | None = Field(default=None, max_length=200)

    def to_draft(self) -> RefundDraft:
        return RefundDraft(
            channel=self.channel.value,
            external_id=self.external_id,
            order_channel=self.order_channel.value,
            order_external_id=self.order_external_id,
            refunded_at=self.refunded_at,
            lines=[
                RefundLineDraft(x.line_no, x.quantity, yuan_to_fen(x.amount)) for x in self.lines
            ],
            amount_fen=None if self.amount is None else yuan_to_fen(self.amount),
            reason=self.reason,
        )


class RefundLineRead(BaseModel):
    line_no: int
    quantity: int
    amount: str


class RefundRead(BaseModel):
    id: int
    channel: str
    external_id: str
    order_id: int
    member_id: int | None
    refunded_at: datetime
    amount: str
    reason: str | None
    lines: list[RefundLineRead]
    order_status: str
    order_refunded: str
    created: bool = Field(description="false when this call replayed a stored refund")

    @classmethod
    def of(cls, outcome: RefundOutcome) -> RefundRead:
        r = outcome.refund
        return cls(
            id=r.id,
            channel=r.channel,
            external_id=r.external_id,
            order_id=r.order_id,
            member_id=r.member_id,
            refunded_at=r.refunded_at,
            amount=_yuan(r.amount_fen),
            reason=r.reason,
            lines=[
                RefundLineRead(line_no=n, quantity=q, amount=_yuan(a)) for n, q, a in outcome.lines
            ],
            order_status=outcome.order.status,
            order_refunded=_yuan(outcome.order.refunded_fen),
            created=outcome.created,
        )


def problems_of(exc: Any, *, prefix: str = "") -> list[Problem]:
    """A pydantic ``ValidationError`` as problems with field paths like ``lines[0].amount``."""
    problems = []
    for error in exc.errors():
        path = prefix
        for part in error.get("loc", ()):
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        problems.append(Problem(path or "body", error.get("msg", "invalid")))
    return problems
