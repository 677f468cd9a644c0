"""Fixtures for points tests, built through the services users call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from siyu.members import service as members
from siyu.members.models import Member
from siyu.members.service import EnrolDraft
from siyu.stores import service as stores
from siyu.stores.models import Store


def example() -> dict[str, Any]:
    """A fresh copy of the demo brand's programme document."""
    from importlib import resources

    from siyu.programme import rules

    raw, problems = rules.parse_text(
        resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    )
    assert not problems
    return raw  # type: ignore[no-any-return]


@pytest.fixture
def doc() -> dict[str, Any]:
    """The example programme without signup points, so balances start at zero; tests
    change it before passing it to ``apply_programme``."""
    raw = example()
    raw["points"]["events"].pop("signup", None)
    return raw


@pytest.fixture
def programme(apply_programme: Callable[..., None], doc: dict[str, Any]) -> None:
    apply_programme(doc)


@pytest.fixture
def store(session: Session) -> Store:
    return stores.create_store(session, code="S001", name="旗舰店")


@pytest.fixture
def enrol(session: Session, store: Store) -> Callable[..., int]:
    """Enrol a member: ``enrol("13800138001", birthday=date(...))``; returns the id."""

    def make(phone: str = "13800138000", **fields: Any) -> int:
        draft = EnrolDraft(phone=phone, store_id=store.id, **fields)
        return members.enrol(session, draft).member_id

    return make


@pytest.fixture
def cached(session: Session) -> Callable[[int], tuple[int, int, int]]:
    """The member's cached (balance, frozen, debt)."""

    def read(member_id: int) -> tuple[int, int, int]:
        session.flush()
        member = session.get(Member, member_id)
        assert member is not None
        session.refresh(member)
        return member.points_balance, member.points_frozen, member.points_debt

    return read
