"""The one engine and session factory, and the unit of work.

Services never commit: they ``flush()``. The edge (an API request, a CLI command, a job)
opens a unit of work, calls services, and commits once, so one business fact is one
transaction.

SQLite runs in WAL mode with a busy timeout, and every transaction starts with
``BEGIN IMMEDIATE``: SQLite has no row locks, so taking the write lock up front is what
makes read-then-write sequences (spend a balance, take stock) safe between connections.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Engine, Integer, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from siyu.core.clock import as_utc
from siyu.core.settings import Settings, get_settings

# Predictable constraint names, so migrations can name what they drop.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# 64-bit keys on PostgreSQL (20M members, 200M orders a year); SQLite only auto-increments a
# column declared exactly INTEGER PRIMARY KEY, which is 64-bit there anyway.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Instants stored in UTC on both databases and always handed back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    if is_sqlite(url):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30, "check_same_thread": False, "isolation_level": None},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """An engine and its session factory; one per process (see ``get_database``)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """One transaction: committed if the block finishes, rolled back if it raises."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


_databases: dict[str, Database] = {}


def get_database(settings: Settings | None = None) -> Database:
    settings = settings or get_settings()
    db = _databases.get(settings.database_url)
    if db is None:
        db = _databases[settings.database_url] = Database(
            settings.database_url, echo=settings.echo_sql
        )
    return db


def upsert_insert(session: Session, table: Any) -> Any:
    """``INSERT`` with ``ON CONFLICT`` for the session's dialect (SQLite and PostgreSQL share
    the syntax but not the SQLAlchemy construct)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


# Parameters per IN (...) list: well under SQLite's and PostgreSQL's limits.
IN_CHUNK = 500


def in_chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    """Slices of ``items`` small enough for one ``IN (...)`` list each."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


ONE_OF_CHUNK = 20_000


def one_of(session: Session, column: Any, values: Sequence[Any]) -> Any:
    """``column IN (values)`` with the whole list as one parameter: a JSON array read by
    ``json_each`` on SQLite, an array compared with ``= ANY`` on PostgreSQL. Both probe the
    column's index once per value, like an ``IN`` list, without one bound parameter per
    value: an import chunk checks thousands of keys, and SQLAlchemy's expansion of an
    ``IN`` list of 500 cost more than the lookups. Give at most ``ONE_OF_CHUNK`` values.
    Text and whole numbers only (what JSON and the array carry alike)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    import json

    from sqlalchemy import String, bindparam, func, select

    each = func.json_each(bindparam(None, json.dumps(list(values)), type_=String)).table_valued(
        "value"
    )
    return column.in_(select(each.c.value))


def expire_stale(session: Session, model: type, ids: Iterable[Any] | None = None) -> None:
    """Bulk statements bypass the identity map: objects of ``model`` loaded earlier (those
    with these ids, or all) are stale afterwards and must be read again."""
    wanted = set(ids) if ids is not None else None
    for obj in list(session.identity_map.values()):
        if isinstance(obj, model) and (wanted is None or obj.id in wanted):
            session.expire(obj)
