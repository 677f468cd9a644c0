"""Fixtures for insight tests: a small brand built through the services users call.

``small_brand`` is a brand whose members sit in known places (``insight_brand.PLAN``): one
per lifecycle stage, a paid heavy buyer who bought early (the super user), a member whose
only order was refunded, and a referrer. ``brand_analytics`` is ``(db, analytics)`` over it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from insight_brand import SmallBrand, build_small_brand

from siyu.core import clock
from siyu.core.db import Database
from siyu.insight.engine import Analytics


@pytest.fixture
def small_brand(clean_db: Database, programme_in_force: None) -> SmallBrand:
    with clean_db.unit_of_work() as session:
        ids = build_small_brand(session)
    return SmallBrand(clean_db, ids, clock.now())


@pytest.fixture
def brand_analytics(small_brand: SmallBrand) -> Iterator[tuple[Database, Analytics]]:
    engine = Analytics(small_brand.db)
    yield small_brand.db, engine
    engine.close()
