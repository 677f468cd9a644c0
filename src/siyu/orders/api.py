"""Order and refund routes: thin, over the same ``ingest_orders`` the batch and file import
use, so an order is stored the same way whichever door it comes through."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError

from siyu.api.deps import AnyRole, SessionDep, require
from siyu.core.auth import Principal, Role
from siyu.core.errors import Conflict, SiyuError, invalid
from siyu.orders import rules, service
from siyu.orders.rules import OrderDraft
from siyu.orders.schemas import (
    MAX_BATCH,
    BatchItemResult,
    BatchResult,
    OrderAccepted,
    OrderBatch,
    OrderCreate,
    OrderPage,
    OrderRead,
    RefundCreate,
    RefundRead,
    problems_of,
)

router = APIRouter(tags=["orders"])

Writer = Annotated[Principal, Depends(require(Role.operator, Role.service))]
# Every role reads orders; guides and store managers only those of their members.
Reader = AnyRole


class BatchTooLarge(SiyuError):
    status = 413
    code = "batch_too_large"


def _policy(request: Request) -> service.UnknownBuyer:
    return request.app.state.settings.unknown_buyer  # type: ignore[no-any-return]


@router.post(
    "/orders",
    response_model=OrderAccepted,
    status_code=201,
    responses={
        200: {"description": "a replay of a stored order with the same content"},
        409: {"description": "an order with this channel and external_id has other content"},
        422: {"description": "every problem of the order, in error.details"},
    },
)
def create_order(
    body: OrderCreate, request: Request, response: Response, session: SessionDep, who: Writer
) -> OrderAccepted:
    """Record one paid order. Sending it again changes nothing (200 with the stored order)."""
    [result] = service.ingest_orders(session, [body.to_draft()], unknown_buyer=_policy(request))
    if result.conflict is not None:
        conflict = result.conflict
        raise Conflict(
            result.problems[0].reason,
            field="external_id",
            code="order_conflict",
            details={"stored": conflict["stored"], "new": conflict["new"]},
        )
    if result.status == "rejected":
        raise invalid(result.problems, what="order")
    assert result.order_id is not None
    if result.status == "duplicate":
        response.status_code = 200
    view = service.get_order(session, result.order_id)
    return OrderAccepted(status=result.status, order=OrderRead.of(view, who))


@router.post("/orders:batch", response_model=BatchResult)
def create_orders(
    body: OrderBatch, request: Request, session: SessionDep, _: Writer
) -> BatchResult:
    """Record up to 10,000 orders at once: each is created, a duplicate, or rejected with its
    problems; good orders land even when others are rejected."""
    if len(body.orders) > MAX_BATCH:
        raise BatchTooLarge(
            f"{len(body.orders):,} orders in one batch; send at most {MAX_BATCH:,} per call, "
            "or import a file with `siyu import orders FILE`",
            field="orders",
        )
    results: list[service.IngestResult | None] = [None] * len(body.orders)
    drafts: list[OrderDraft] = []
    positions: list[int] = []
    for i, item in enumerate(body.orders):
        try:
            order = OrderCreate.model_validate(item)
        except ValidationError as exc:
            results[i] = service.IngestResult(i, "rejected", problems=problems_of(exc))
            continue
        drafts.append(order.to_draft())
        positions.append(i)
    ingested = service.ingest_orders(session, drafts, unknown_buyer=_policy(request))
    for position, result in zip(positions, ingested, strict=True):
        result.index = position
        results[position] = result
    counts = {"created": 0, "duplicate": 0, "rejected": 0}
    items = []
    for result in results:
        assert result is not None
        counts[result.status] += 1
        items.append(BatchItemResult.of(result))
    return BatchResult(counts=counts, results=items)


@router.get("/orders/{order_id}", response_model=OrderRead)
def read_order(order_id: int, session: SessionDep, who: Reader) -> OrderRead:
    return OrderRead.of(service.get_order(session, order_id, principal=who), who)


@router.get("/members/{member_id}/orders", response_model=OrderPage)
def member_orders(
    member_id: int,
    session: SessionDep,
    who: Reader,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OrderPage:
    """A member's orders, newest first."""
    before = rules.decode_cursor(cursor) if cursor else None
    views = service.orders_of_member(session, member_id, principal=who, before=before, limit=limit)
    last = views[-1].order if len(views) == limit else None
    return OrderPage(
        items=[OrderRead.of(v, who) for v in views],
        next_cursor=rules.encode_cursor(last.paid_at, last.id) if last is not None else None,
    )


@router.post(
    "/refunds",
    response_model=RefundRead,
    status_code=201,
    responses={
        200: {"description": "a replay of a stored refund with the same content"},
        409: {"description": "a refund with this channel and external_id has other content"},
    },
)
def create_refund(
    body: RefundCreate, response: Response, session: SessionDep, _: Writer
) -> RefundRead:
    """Refund a whole order (no lines) or some lines of it."""
    outcome = service.record_refund(session, body.to_draft())
    if not outcome.created:
        response.status_code = 200
    return RefundRead.of(outcome)
