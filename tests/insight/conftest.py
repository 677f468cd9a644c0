"""Fixtures for insight tests: a small brand built through the services users call.

``small_brand`` is a brand whose members sit in known places (``insight_brand.PLAN``): one
per lifecycle stage, a paid heavy buyer who bought early (the super user), a member whose
only order was refunded, and a referrer.

``in_process_brand`` is that brand for tests that open the analytics engine in the test's
own process (``engine.analytics``). On SQLite that is never safe for a database the process
also uses (DuckDB's own SQLite drops the process's locks when it closes, and a later reader
finds the shared memory in disorder: see ``siyu.insight.engine``), and the test database is
shared by the whole session; so on SQLite those tests get a copy of the database in a file
of their own. On PostgreSQL they get the database itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from insight_brand import SmallBrand, build_small_brand

from siyu.core import clock
from siyu.core.db import Database


@pytest.fixture
def small_brand(clean_db: Database, programme_in_force: None) -> SmallBrand:
    with clean_db.unit_of_work() as session:
        ids = build_small_brand(session)
    return SmallBrand(clean_db, ids, clock.now())


@pytest.fixture
def in_process_brand(small_brand: SmallBrand, tmp_path: Path) -> Iterator[SmallBrand]:
    db = small_brand.db
    if db.dialect != "sqlite":
        yield small_brand
        return
    copy = tmp_path / "in-process.db"
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("VACUUM INTO ?", (str(copy),))  # a consistent copy, WAL included
    own = Database(f"sqlite:///{copy}")
    try:
        yield SmallBrand(own, small_brand.members, small_brand.now)
    finally:
        own.dispose()
