"""Fixtures for growth and tier tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session
from tiers_helpers import programme

from siyu.core import events
from siyu.tiers.service import GrowthApplied, TiersChanged


@pytest.fixture
def captured() -> Iterator[dict[type, list[Any]]]:
    """Events the tiers package publishes, recorded while a test runs."""
    seen: dict[type, list[Any]] = {GrowthApplied: [], TiersChanged: []}

    def record(_session: Session, event: Any) -> None:
        seen[type(event)].append(event)

    for kind in seen:
        events.subscribe(kind)(record)
    yield seen
    for kind in seen:
        events._handlers[kind].remove(record)


@pytest.fixture
def use(apply_programme: Callable[..., None]) -> Callable[..., None]:
    """Put a variant of the example programme in force: ``use(window="calendar_year")``."""

    def apply(**tiers: Any) -> None:
        apply_programme(programme(**tiers))

    return apply
