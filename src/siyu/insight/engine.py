"""The analytics engine: DuckDB, embedded, reading the live database in place.

Why DuckDB over the live database rather than SQL on it: the nightly refresh and segment
counts scan every member and every order; a columnar engine does that an order of
magnitude faster than the row store that serves the API, and reads SQLite or PostgreSQL
without an export step. The DuckDB extensions that read them ship as PyPI packages pinned
to DuckDB's version (no download at run time, so it works offline).

Queries are Ibis expressions over ``Analytics.table(name)``: the same expression runs on
DuckDB here, on PostgreSQL directly, or on Spark/ClickHouse for brands beyond one machine
(``Analytics.for_backend``). Results the API serves are written back into tables of the
live database with their computation time; nothing loads all members into Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import ibis
from ibis.backends import BaseBackend
from sqlalchemy.engine import make_url

from siyu.core.db import Database
from siyu.core.errors import SiyuError

LIVE = "live"  # the catalog name of the attached live database inside DuckDB


class AnalyticsUnavailable(SiyuError):
    code = "analytics_unavailable"
    status = 503


def _extension(name: str) -> str:
    """The path of a DuckDB extension shipped by its PyPI package for this DuckDB version."""
    import importlib

    package = importlib.import_module(f"duckdb_extension_{name}")
    root = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    found = sorted(root.glob(f"{name}.duckdb_extension"))
    if not found:
        raise AnalyticsUnavailable(
            f"the DuckDB extension {name} for DuckDB {duckdb.__version__} is not installed; "
            f"install duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__}"
        )
    return str(found[0])


def _postgres_dsn(url: str) -> str:
    parsed = make_url(url)
    parts = {
        "host": parsed.host or "localhost",
        "port": parsed.port or 5432,
        "dbname": parsed.database,
        "user": parsed.username,
        "password": parsed.password,
    }
    return " ".join(f"{key}={value}" for key, value in parts.items() if value)


def attach_live(con: duckdb.DuckDBPyConnection, url: str, *, read_only: bool = True) -> None:
    """Attach the live database as catalog ``live`` in a DuckDB connection."""
    mode = ", READ_ONLY" if read_only else ""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if not path or path == ":memory:":
            raise AnalyticsUnavailable("analytics need a database file, not an in-memory SQLite")
        con.execute(f"LOAD '{_extension('sqlite_scanner')}'")
        con.execute(f"ATTACH '{path}' AS {LIVE} (TYPE sqlite{mode})")
    elif url.startswith("postgresql"):
        con.execute(f"LOAD '{_extension('postgres_scanner')}'")
        dsn = _postgres_dsn(url).replace("'", "''")
        con.execute(f"ATTACH '{dsn}' AS {LIVE} (TYPE postgres{mode})")
    else:
        raise AnalyticsUnavailable(f"no analytics reader for the database {url.split(':')[0]}")


class Analytics:
    """One DuckDB connection with the live database attached, and its Ibis backend.

    ``table(name)`` is a live table as an Ibis expression. ``sql`` runs DuckDB SQL (for
    the few statements Ibis does not express, such as writing results back).
    """

    def __init__(self, db: Database, *, read_only: bool = True, threads: int | None = None):
        self.db = db
        self.con = duckdb.connect()
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        attach_live(
            self.con, str(db.engine.url.render_as_string(hide_password=False)), read_only=read_only
        )
        self.backend: BaseBackend = ibis.duckdb.from_connection(self.con)

    def table(self, name: str) -> ibis.Table:
        return self.backend.table(name, database=LIVE)

    def sql(self, query: str, params: list[Any] | None = None) -> duckdb.DuckDBPyConnection:
        return self.con.execute(query, params or [])

    def close(self) -> None:
        self.con.close()


@contextmanager
def analytics(db: Database, *, read_only: bool = True) -> Iterator[Analytics]:
    engine = Analytics(db, read_only=read_only)
    try:
        yield engine
    finally:
        engine.close()
