"""Fixtures for order tests, built through the services users call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders.rules import LineDraft, OrderDraft
from siyu.stores import service as stores
from siyu.stores.models import Store


def make_order(external_id: str = "T1", **overrides: Any) -> OrderDraft:
    """A valid tmall order of two lines (256.00 + 99.90) and 10.00 freight, paid yesterday."""
    fields: dict[str, Any] = {
        "channel": "tmall",
        "external_id": external_id,
        "paid_at": clock.now() - timedelta(days=1),
        "lines": [LineDraft("SKU-1", "奶粉", 2, 25_600), LineDraft("SKU-9", "纸尿裤", 1, 9_990)],
        "freight_fen": 1_000,
        "store_code": "S001",
    }
    fields.update(overrides)
    return OrderDraft(**fields)


@pytest.fixture
def store(session: Session) -> Store:
    return stores.create_store(session, code="S001", name="旗舰店")


@pytest.fixture
def member_id(session: Session, store: Store) -> int:
    return members.enrol(session, EnrolDraft(phone="13800138000", store_id=store.id)).member_id


@pytest.fixture
def order() -> Callable[..., OrderDraft]:
    """Build an order draft: ``order("T2", member_id=7)``."""
    return make_order
