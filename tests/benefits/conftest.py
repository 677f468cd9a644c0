"""Fixtures for benefits tests, built through the services users call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from siyu.benefits import coupons
from siyu.benefits.coupons import TemplateDraft
from siyu.benefits.models import CouponTemplate
from siyu.core import clock
from siyu.core.auth import SYSTEM
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft


def template_draft(code: str = "FULL200-20", **overrides: Any) -> TemplateDraft:
    """20 yuan off orders of 200 yuan or more, good for 7 days after issue."""
    fields: dict[str, Any] = {
        "code": code,
        "name": "满200减20",
        "kind": "amount_off",
        "threshold_fen": 20_000,
        "amount_off_fen": 2_000,
        "validity": "relative",
        "valid_days": 7,
    }
    fields.update(overrides)
    return TemplateDraft(**fields)


@pytest.fixture(name="template_draft")
def template_draft_fixture() -> Callable[..., TemplateDraft]:
    """``template_draft(code, **overrides)``: a template draft to create through the service."""
    return template_draft


@pytest.fixture
def make_template(session: Session) -> Callable[..., CouponTemplate]:
    def make(code: str = "FULL200-20", **overrides: Any) -> CouponTemplate:
        template, _ = coupons.create_template(
            session, template_draft(code, **overrides), principal=SYSTEM
        )
        return template

    return make


@pytest.fixture
def enrol(session: Session) -> Callable[..., int]:
    counter = iter(range(10_000))

    def make(**fields: Any) -> int:
        fields.setdefault("phone", f"1380000{next(counter):04d}")
        return members.enrol(session, EnrolDraft(**fields)).member_id

    return make


@pytest.fixture
def member_id(enrol: Callable[..., int]) -> int:
    return enrol(phone="13800138000")


def order_draft(external_id: str, member_id: int | None, **overrides: Any) -> OrderDraft:
    """A tmall order paid now: 256.00 of 奶粉, 99.90 of 纸尿裤, 10.00 freight."""
    fields: dict[str, Any] = {
        "channel": "tmall",
        "external_id": external_id,
        "paid_at": clock.now(),
        "lines": [LineDraft("SKU-1", "奶粉", 2, 25_600), LineDraft("SKU-9", "纸尿裤", 1, 9_990)],
        "freight_fen": 1_000,
        "member_id": member_id,
    }
    fields.update(overrides)
    return OrderDraft(**fields)


@pytest.fixture
def place_order(session: Session) -> Callable[..., int]:
    def place(external_id: str, member_id: int | None, **overrides: Any) -> int:
        [result] = orders.ingest_orders(session, [order_draft(external_id, member_id, **overrides)])
        assert result.status == "created", result.problems
        assert result.order_id is not None
        return result.order_id

    return place


def example_with_packs(extra: dict[str, list[str]]) -> dict[str, Any]:
    """The example programme with more pack codes listed by some levels."""
    from importlib import resources

    from siyu.programme import rules

    text = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    doc, problems = rules.parse_text(text)
    assert not problems
    for level in doc["tiers"]["levels"]:
        listed = level.setdefault("benefits", {}).setdefault("benefit_packs", [])
        listed += extra.get(level["code"], [])
    return doc  # type: ignore[no-any-return]


@pytest.fixture
def list_packs(apply_programme: Callable[..., None]) -> Callable[..., None]:
    """Put the example programme in force with more packs listed: ``list_packs(V2=["x"])``."""

    def apply(**extra: list[str]) -> None:
        apply_programme(example_with_packs(extra))

    return apply
