"""``POST /programme/simulate``: a draft programme replayed over the brand's history, side by
side with the programme in force (see ``insight.simulator``).

The body is the draft document, as JSON or (``Content-Type: application/yaml``) as YAML,
read and validated exactly as ``POST /programme:validate`` reads it: an invalid draft is a
422 listing every problem with its path. The route reads through its own read-only
connection, not the request's unit of work, so a long replay holds no write lock.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from siyu.api.deps import get_db, require
from siyu.core.auth import Principal, Role
from siyu.core.db import Database
from siyu.core.text import Text
from siyu.insight.simulator import CouponValue, Figures, simulate
from siyu.programme import service as programmes
from siyu.programme.api import DOCUMENT_BODY, Document

router = APIRouter(tags=["insight"])

Checker = Annotated[Principal, Depends(require(Role.operator, Role.analyst))]


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RowRead(_Read):
    section: str
    metric: str
    baseline: int | None
    draft: int | None
    delta: int | None
    unit: str


class SimulationRead(_Read):
    start: datetime | None
    end: datetime
    sample: float | None
    estimate: bool
    members: int
    orders: int
    baseline_version_id: int
    levels: list[str]
    # The simulator's own dataclasses: one definition of a column's figures, validated
    # and serialised by pydantic as they are.
    baseline: Figures
    draft: Figures
    rows: list[RowRead]
    coupon_values: list[CouponValue]
    # ``{"zh": …, "en": …}`` each, as the health diagnosis answers its texts.
    notes: list[Text]


@router.post(
    "/programme/simulate",
    response_model=SimulationRead,
    openapi_extra=DOCUMENT_BODY,
    responses={
        404: {"description": "no programme is in force at `to` to compare with"},
        422: {"description": "the draft (every problem in error.details) or an option is invalid"},
    },
)
def simulate_programme(
    document: Document,
    db: Annotated[Database, Depends(get_db)],
    _: Checker,
    sample: Annotated[
        float | None,
        Query(gt=0, le=1, description="replay this share of members (by id hash); scaled"),
    ] = None,
    start: Annotated[
        datetime | None,
        Query(alias="from", description="count flows from this instant (ISO 8601)"),
    ] = None,
    end: Annotated[
        datetime | None,
        Query(alias="to", description="replay up to this instant (ISO 8601); default now"),
    ] = None,
    usage_rate: Annotated[
        Decimal | None,
        Query(ge=0, le=1, description="share of pack coupons used; default from history"),
    ] = None,
) -> Any:
    """Replay the history under the draft and under the programme in force, side by side:
    tiers and movements, growth and points issued, expiry and liability, benefit pack
    cost, paid-plan eligibility. Nothing is written. For a large brand, pass ``sample``."""
    draft = programmes.parse(document)
    result = simulate(db, draft, start=start, end=end, sample=sample, usage_rate=usage_rate)
    return SimulationRead.model_validate(result.as_dict())
