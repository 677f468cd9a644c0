"""Test fixtures: a real database (SQLite file, or PostgreSQL when SIYU_DATABASE_URL says so),
built by running the migrations once per session and emptied between tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from siyu.api.app import create_app
from siyu.bootstrap import load_handlers
from siyu.core import clock
from siyu.core.auth import Role, create_key
from siyu.core.db import Database
from siyu.core.migrate import upgrade
from siyu.core.settings import Settings, get_settings
from siyu.schema import metadata

load_handlers()

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=clock.UTC)  # 12:00 in Shanghai


def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("SIYU_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'siyu-test.db'}"


@pytest.fixture(scope="session", autouse=True)
def analytics_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Analytics files that jobs write (the segments profile snapshot) go to a temporary
    directory, not the working directory."""
    previous = os.environ.get("SIYU_ANALYTICS_DIR")
    os.environ["SIYU_ANALYTICS_DIR"] = str(tmp_path_factory.mktemp("analytics"))
    get_settings.cache_clear()
    yield
    if previous is None:
        os.environ.pop("SIYU_ANALYTICS_DIR", None)
    else:
        os.environ["SIYU_ANALYTICS_DIR"] = previous
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = Database(database_url(tmp_path_factory))
    if database.dialect == "postgresql":
        with database.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def own_database(db: Database, tmp_path: Path) -> Iterator[Database]:
    """An empty database of its own on the same server, not migrated: for a test that
    migrates from an earlier revision (the shared one stays at head). Dropped after."""
    if db.dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'own.db'}"
    else:
        name = f"siyu_migration_{uuid.uuid4().hex[:8]}"
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql(f"CREATE DATABASE {name}")
        url = db.url.rsplit("/", 1)[0] + f"/{name}"
    database = Database(url)
    try:
        yield database
    finally:
        database.dispose()
        if db.dialect != "sqlite":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql(f"DROP DATABASE {name}")


def _empty(database: Database) -> None:
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))
            conn.execute(text("DELETE FROM sqlite_sequence")) if _has_sequence(conn) else None


def _has_sequence(conn: object) -> bool:
    return bool(
        conn.execute(  # type: ignore[attr-defined]
            text("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'")
        ).first()
    )


@pytest.fixture
def fixed_clock() -> Iterator[clock.FixedClock]:
    fixed = clock.FixedClock(NOW)
    previous = clock.set_clock(fixed)
    yield fixed
    clock.set_clock(previous)


@pytest.fixture
def empty_database() -> Callable[[Database], None]:
    """Empty every table again, for tests that load the same data twice."""
    return _empty


@pytest.fixture
def clean_db(db: Database, fixed_clock: clock.FixedClock) -> Database:
    _empty(db)
    return db


@pytest.fixture
def session(clean_db: Database) -> Iterator[Session]:
    """A session in one transaction, committed at the end like a request."""
    with clean_db.unit_of_work() as s:
        yield s


@pytest.fixture
def settings(clean_db: Database) -> Settings:
    return Settings(database_url=clean_db.url, auto_migrate=False)


@pytest.fixture
def app_client(clean_db: Database, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, db=clean_db)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def make_key(clean_db: Database):  # type: ignore[no-untyped-def]
    """Create an API key with a role (and scope) and return headers that use it."""

    def make(role: Role | str = Role.admin, **scope: int) -> dict[str, str]:
        with clean_db.unit_of_work() as s:
            _, secret = create_key(s, role=role, name=f"test-{role}", **scope)
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture
def admin(make_key) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return make_key(Role.admin)  # type: ignore[no-any-return]


def example_programme() -> dict[str, Any]:
    """A fresh copy of the demo brand's programme document (``programme/example.yaml``)."""
    from importlib import resources

    from siyu.programme import rules

    text_ = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    raw, problems = rules.parse_text(text_)
    assert not problems, problems
    return raw  # type: ignore[no-any-return]


PROGRAMME_FROM = datetime(2024, 1, 1, tzinfo=clock.UTC)


@pytest.fixture
def apply_programme(clean_db: Database) -> Callable[..., None]:
    """Put a programme document in force (the example by default) from 2024-01-01, so
    loyalty effects apply to everything a test does afterwards:
    ``apply_programme()`` or ``apply_programme(doc, effective_from=...)``."""
    from siyu.programme import service as programme

    def apply(
        doc: dict[str, Any] | None = None, *, effective_from: datetime = PROGRAMME_FROM
    ) -> None:
        with clean_db.unit_of_work() as s:
            programme.apply(
                s,
                doc if doc is not None else example_programme(),
                author="test",
                effective_from=effective_from,
                backdate=True,
            )

    return apply


@pytest.fixture
def programme_in_force(apply_programme: Callable[..., None]) -> None:
    """The example programme, in force since 2024-01-01."""
    apply_programme()
