"""The analytics engine: DuckDB, embedded, reading the live database in place.

Why DuckDB over the live database rather than SQL on it: the nightly refresh and segment
counts scan every member and every order; a columnar engine does that an order of
magnitude faster than the row store that serves the API, and reads SQLite or PostgreSQL
without an export step. The DuckDB extensions that read them ship as PyPI packages pinned
to DuckDB's version (no download at run time, so it works offline).

Queries are Ibis expressions over ``Analytics.table(name)``: the same expression runs on
DuckDB here, on PostgreSQL directly, or on Spark/ClickHouse for brands beyond one machine
(the functions in ``insight.facts``, ``rfm``, ``lifecycle``, ``superusers`` take tables of
any Ibis backend; the tests run the RFM summary on PySpark). Results the API serves are
written back into tables of the live database with their computation time; nothing loads
all members into Python.

SQLite and DuckDB in one process: DuckDB bundles its own copy of the SQLite library, and
two copies in one process do not see each other's POSIX locks. A DuckDB attachment of
the live file therefore believes it is alone: read-write, it deletes the WAL on closing
(the application's next commits are lost); even read-only, it may reset the shared-memory
index while the application has it mapped (the process dies with SIGBUS). Short reads are
not safe either: once DuckDB's SQLite has opened the file in the application's process,
its closing drops the process's locks, and a later reader elsewhere finds the shared
memory in disorder ("locking protocol") or the application dies of SIGBUS (seen in the
tests when a segment count read the live file in process). So on SQLite every DuckDB read
of the live file runs in a child process (``insight.isolation``), where the application's
SQLite never opens it. PostgreSQL has no such trap: the work runs in process.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import ibis
import ibis.expr.datatypes as dt
from ibis.backends import BaseBackend
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from siyu.core.clock import as_utc
from siyu.core.db import Database
from siyu.core.errors import SiyuError
from siyu.core.settings import get_settings

LIVE = "live"  # the catalog name of the attached live database inside DuckDB
# On PostgreSQL, ids below a watermark may still commit after it was read (a sequence
# hands out ids before their transactions commit), so whatever follows a live table by
# its ids (the insight refresh, the order book, the member changes) looks again this far
# back; reading a row twice is harmless, missing one is not. SQLite has one writer at a
# time: its ids commit in order, and a watermark is exact.
ID_OVERLAP = 10_000


def id_overlap(db: Database) -> int:
    """How far below a watermark of ``db``'s ids a follower looks again (``ID_OVERLAP``)."""
    return 0 if db.dialect == "sqlite" else ID_OVERLAP


def sql_text(value: str) -> str:
    """A SQL string literal (quotes doubled): for paths and queries spelled into DuckDB
    statements that take no parameters (ATTACH, table functions)."""
    return "'" + value.replace("'", "''") + "'"


class AnalyticsUnavailable(SiyuError):
    code = "analytics_unavailable"
    status = 503


def analytics_file(db: Database, kind: str, analytics_dir: str | Path | None = None) -> str | None:
    """Where one of this database's analytics files lives: ``<kind>-<digest of the database
    URL>.duckdb`` in the analytics directory (default: the setting), so two databases never
    share one; None when the directory cannot be made (callers then read the live tables)."""
    folder = Path(analytics_dir if analytics_dir is not None else get_settings().analytics_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str((folder / f"{analytics_name(db, kind)}.duckdb").resolve())


def analytics_name(db: Database, kind: str) -> str:
    """``<kind>-<digest of the database URL>``: the name of one database's analytics file
    (``analytics_file``) or folder (the segment snapshots), never shared with another."""
    return f"{kind}-{hashlib.sha256(db.url.encode()).hexdigest()[:16]}"


def live_instant(at: datetime, *, sqlite: bool) -> str:
    """An instant as a literal of the live database's own SQL: SQLite compares the text
    instants SQLAlchemy writes, PostgreSQL a timestamptz."""
    text = as_utc(at).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return f"'{text}'" if sqlite else f"'{text}+00:00'"


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
        con.execute(f"ATTACH {sql_text(_postgres_dsn(url))} AS {LIVE} (TYPE postgres{mode})")
    else:
        raise AnalyticsUnavailable(f"no analytics reader for the database {url.split(':')[0]}")


class Publisher:
    """The writes of one ``publish`` transaction: through DuckDB (PostgreSQL), or through
    the application's SQLite with the staging file attached as ``stage``."""

    def __init__(
        self, *, duck: duckdb.DuckDBPyConnection | None = None, live: Connection | None = None
    ) -> None:
        self.duck = duck
        self.live = live

    def insert(self, target: str, columns: list[str], staged: str, *, where: str = "true") -> int:
        """Copy the rows of a staged result (those matching ``where``) into a live table;
        returns how many."""
        return self._insert_select(target, columns, staged, where)

    def upsert(
        self, target: str, columns: list[str], key: str, staged: str, *, where: str = "true"
    ) -> int:
        """Insert the staged rows (those matching ``where``), or update the rows with the
        same ``key`` in these ``columns`` only: the target's other columns (another
        step's) stay as they are."""
        assign = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != key)
        # the WHERE clause before it is also what SQLite's parser needs to tell ON CONFLICT
        # from a join's ON
        return self._insert_select(
            target, columns, staged, where, f' ON CONFLICT ("{key}") DO UPDATE SET {assign}'
        )

    def _insert_select(
        self, target: str, columns: list[str], staged: str, where: str, tail: str = ""
    ) -> int:
        names = ", ".join(f'"{c}"' for c in columns)
        if self.duck is not None and tail:
            shipped, rows = self._ship(staged, columns, where)
            self._on_server(f"INSERT INTO {target} ({names}) SELECT {names} FROM {shipped}{tail}")
            self.duck.execute(f"DROP TABLE {LIVE}.{shipped}")
            return rows
        if self.duck is not None:
            self.duck.execute(
                f"INSERT INTO {LIVE}.{target} ({names}) SELECT {names} FROM stage_{staged} "
                f"WHERE {where}{tail}"
            )
            row = self.duck.fetchone()
            return int(row[0]) if row else 0
        assert self.live is not None
        result = self.live.exec_driver_sql(
            f"INSERT INTO {target} ({names}) SELECT {names} FROM stage.{staged} WHERE {where}{tail}"
        )
        return int(result.rowcount)

    def delete_keyed(self, target: str, where: str, key: str, staged: str) -> None:
        """Delete the rows of a live table matching ``where`` whose ``key`` is in a staged
        result: the rows about to be replaced, not the whole range."""
        if self.duck is not None:
            shipped, _ = self._ship(staged, [key], where)
            self._on_server(
                f"DELETE FROM {target} WHERE {where} AND {key} IN (SELECT {key} FROM {shipped})"
            )
            self.duck.execute(f"DROP TABLE {LIVE}.{shipped}")
            return
        self.delete(
            target, f"{where} AND {key} IN (SELECT {key} FROM stage.{staged} WHERE {where})"
        )

    def _ship(self, staged: str, columns: list[str], where: str) -> tuple[str, int]:
        """PostgreSQL: the staged rows matching ``where`` copied into a table of the live
        database's own, inside this transaction, for a statement the server then runs whole
        (``_on_server``); returns its name and how many rows it holds.

        Why: an upsert or a keyed delete that DuckDB runs against an attached PostgreSQL
        table is slow (a night's 83,000 changed member rows: 1.2 s for the upsert alone,
        and the refresh's publish 4.5 s in all), where the copy (PostgreSQL's COPY) and one
        ``INSERT … SELECT … ON CONFLICT`` in the server took 0.56 s (the publish 2.0 s).
        Instants go over as ``timestamptz`` (this connection's zone is UTC), so the server
        reads them right whatever its own session's zone. The table is dropped in the same
        transaction; if anything fails, the rollback takes it with the rest."""
        assert self.duck is not None
        name = f"siyu_stage_{uuid.uuid4().hex[:16]}"
        relation = self.duck.sql(f"SELECT {', '.join(columns)} FROM stage_{staged}")
        spelled = ", ".join(
            f'CAST("{c}" AS TIMESTAMPTZ) AS "{c}"' if str(t) == "TIMESTAMP" else f'"{c}"'
            for c, t in zip(relation.columns, relation.types, strict=True)
        )
        created = self.duck.execute(
            f"CREATE TABLE {LIVE}.{name} AS SELECT {spelled} FROM stage_{staged} WHERE {where}"
        )
        row = created.fetchone()  # DuckDB answers a CREATE TABLE … AS with its row count
        return name, int(row[0]) if row else 0

    def _on_server(self, statement: str) -> None:
        """A statement PostgreSQL runs itself, in this publish's transaction."""
        assert self.duck is not None
        self.duck.execute(f"CALL postgres_execute('{LIVE}', {sql_text(statement)})")

    def delete(self, target: str, where: str) -> None:
        if self.duck is not None:
            self.duck.execute(f"DELETE FROM {LIVE}.{target} WHERE {where}")
        else:
            assert self.live is not None
            self.live.exec_driver_sql(f"DELETE FROM {target} WHERE {where}")


@contextmanager
def publish_staged(db: Database, staging_path: str) -> Iterator[Publisher]:
    """One transaction of the application's SQLite over a staging file (see ``Analytics``).
    The file must be closed by DuckDB before: two SQLite libraries never hold it at once."""
    with db.engine.connect() as live:
        raw = live.connection.driver_connection
        assert raw is not None
        raw.execute("ATTACH DATABASE ? AS stage", (staging_path,))  # outside a transaction
        try:
            with live.begin():  # BEGIN IMMEDIATE (see core.db): the one writer
                yield Publisher(live=live)
        finally:
            raw.execute("DETACH DATABASE stage")


def _sqlite_value(column: str, duck_type: str) -> str:
    """A column as the SQLite driver takes it: instants as text the way SQLAlchemy spells
    them (with microseconds, so they sort and compare with the application's rows), and
    DuckDB's wide sums (HUGEINT, DECIMAL) as plain integers or floats."""
    name = f'"{column}"'
    if duck_type.startswith("TIMESTAMP"):
        return f"strftime({name}, '%Y-%m-%d %H:%M:%S.%f') AS {name}"
    if duck_type == "HUGEINT" or (duck_type.startswith("DECIMAL") and duck_type.endswith(",0)")):
        return f"CAST({name} AS BIGINT) AS {name}"
    if duck_type.startswith("DECIMAL"):
        return f"CAST({name} AS DOUBLE) AS {name}"
    return name


# the dead rows a table of an analytics file may hold before it is written again whole, as
# a share of its live rows (``compact``)
DEAD_ROWS_SHARE = 0.25


def leave_deletes(con: duckdb.DuckDBPyConnection) -> None:
    """From now on in ``con``, DuckDB's checkpoints leave deleted rows where they are,
    marked deleted (its vacuum off), and ``compact`` clears them when they pile up.

    For a file a night rewrites a few percent of the rows of (the refresh's copy of
    ``member_insight``, the segment profile, the order book's members and first
    purchases), the night's rows are spread over every row group, and the vacuum at each
    checkpoint rewrote row groups to reclaim a part of them: 0.5-1.1 s a night for the
    profile at a million members, 0.15-0.3 s for the copy, against some 0.05 s without.
    It did not keep them down either: eight such nights left 139,000 dead rows in the
    profile with it and 224,000 without."""
    con.execute("SET max_vacuum_tasks = 0")


def compact(con: duckdb.DuckDBPyConnection, tables: dict[str, str]) -> list[str]:
    """Write again whole each of ``tables`` (``database.table``, or a table of the
    connection's own file, to the order it is kept in) that holds more dead rows than
    ``DEAD_ROWS_SHARE`` of its live ones; returns those written. A rewrite costs about
    what a night's vacuum did, once every few nights, and leaves no dead row."""
    if not tables:
        return []
    stored = {
        (database, name): int(size)
        for database, name, size in con.execute(
            "SELECT database_name, table_name, estimated_size FROM duckdb_tables() "
            "WHERE schema_name = 'main'"
        ).fetchall()
    }
    own = con.execute("SELECT current_database()").fetchone()
    done = []
    for table, order in tables.items():
        database, _, name = table.rpartition(".")
        size = stored.get((database or (own[0] if own else ""), name))
        if size is None:
            continue  # not written yet
        found = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        live = int(found[0]) if found else 0
        if size - live > DEAD_ROWS_SHARE * live:
            con.execute(
                f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {table} ORDER BY {order}"
            )
            done.append(table)
    return done


class Analytics:
    """One DuckDB connection with the live database attached, and its Ibis backend.

    ``table(name)`` is a live table as an Ibis expression. ``sql`` runs DuckDB SQL.
    Large results go back in two moves: ``stage`` each result (a DuckDB query) while no
    live transaction is open, then ``publish()`` opens one live transaction in which
    ``insert`` copies staged rows into live tables and ``delete`` removes rows, set-based
    inside the database. Small results may use ``write``/``delete`` in ``transaction()``.

    SQLite is attached read-only, always, and written through the application's own
    SQLite (``executemany`` of Arrow batches). DuckDB bundles a second copy of the SQLite
    library, and two copies in one process do not see each other's POSIX locks: a
    read-write DuckDB attachment, on closing, takes itself for the last connection,
    checkpoints and deletes the WAL under the application's open connections, and their
    later commits are lost. A read-only attachment never checkpoints. So on SQLite a staged
    result is a table in a separate staging file that DuckDB's SQLite writes and closes;
    the application's SQLite then attaches that file and copies it with ``INSERT … SELECT``
    (a few times faster than ``executemany``: no row becomes a Python object). The two
    libraries never have one file open at once. PostgreSQL has no such trap: a staged
    result is a DuckDB temporary table and DuckDB writes it through its COPY.
    """

    WRITE_BATCH = 50_000  # rows per executemany on SQLite

    def __init__(
        self,
        db: Database,
        *,
        read_only: bool = True,
        threads: int | None = None,
        staging_path: str | None = None,
    ):
        self.db = db
        self.read_only = read_only
        self.sqlite = db.dialect == "sqlite"
        self.con = duckdb.connect()
        # Instants are UTC everywhere (DESIGN: time is explicit): PostgreSQL's timestamptz
        # is read in the session zone, so the session zone is UTC, not the machine's.
        self.con.execute("SET TimeZone = 'UTC'")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        attach_live(
            self.con,
            str(db.engine.url.render_as_string(hide_password=False)),
            read_only=read_only or self.sqlite,
        )
        self.backend: BaseBackend = ibis.duckdb.from_connection(self.con)
        self._live: Connection | None = None  # the SQLite transaction of ``transaction()``
        self._staging: tempfile.TemporaryDirectory[str] | None = None
        self._staging_attached = False
        self._staging_given = staging_path

    def table(self, name: str) -> ibis.Table:
        """A live table as Ibis. Instants are naive UTC timestamps on both databases (SQLite
        stores them naive, PostgreSQL as timestamptz), so one expression fits both and
        compares with ``instant(...)``."""
        table = self.backend.table(name, database=LIVE)
        aware = {
            column: table[column].cast(dt.Timestamp(scale=dtype.scale))  # type: ignore[attr-defined]
            for column, dtype in table.schema().items()
            if dtype.is_timestamp() and dtype.timezone is not None  # type: ignore[attr-defined]
        }
        return table.mutate(**aware) if aware else table

    def live_query(self, query: str) -> str:
        """A DuckDB table function that runs ``query`` inside the live database, so its
        indexes answer it (an attached table is scanned whole): for the few rows a nightly
        run needs out of a large table. Write the query in SQL both databases read."""
        function = "sqlite_query" if self.sqlite else "postgres_query"
        return f"{function}('{LIVE}', {sql_text(query)})"

    def live_instant(self, at: datetime) -> str:
        """An instant as a literal of the live database's own SQL (see ``live_query``)."""
        return live_instant(at, sqlite=self.sqlite)

    def sql(self, query: str, params: list[Any] | None = None) -> duckdb.DuckDBPyConnection:
        return self.con.execute(query, params or [])

    def _writable(self) -> None:
        if self.read_only:
            raise AnalyticsUnavailable("this analytics connection is read-only")

    def write(self, target: str, columns: list[str], query: str | ibis.Table) -> int:
        """Insert the rows of a query (DuckDB SQL or an Ibis expression) into a live table,
        set-based: on PostgreSQL inside DuckDB, on SQLite in Arrow batches through the
        application's driver. Returns the rows written."""
        self._writable()
        source = query if isinstance(query, str) else str(self.backend.compile(query))
        names = ", ".join(f'"{c}"' for c in columns)
        if not self.sqlite:
            with self._in_transaction():
                self.con.execute(
                    f"INSERT INTO {LIVE}.{target} ({names}) SELECT {names} FROM ({source}) AS r_"
                )
                row = self.con.fetchone()
            return int(row[0]) if row else 0
        relation = self.con.sql(f"SELECT {names} FROM ({source}) AS r_")
        spelled = [
            _sqlite_value(c, str(t)) for c, t in zip(relation.columns, relation.types, strict=True)
        ]
        reader = self.con.execute(
            f"SELECT {', '.join(spelled)} FROM ({source}) AS r_"
        ).to_arrow_reader(self.WRITE_BATCH)
        insert = f"INSERT INTO {target} ({names}) VALUES ({', '.join('?' * len(columns))})"
        written = 0
        with self._in_transaction() as live:
            assert live is not None
            cursor = live.connection.driver_connection.cursor()  # type: ignore[union-attr]
            for batch in reader:
                rows = list(zip(*(column.to_pylist() for column in batch.columns), strict=True))
                cursor.executemany(insert, rows)
                written += len(rows)
        return written

    def delete(self, target: str, where: str) -> None:
        """``DELETE FROM target WHERE …`` on the live database (plain SQL both dialects read)."""
        self._writable()
        with self._in_transaction() as live:
            if live is not None:
                live.exec_driver_sql(f"DELETE FROM {target} WHERE {where}")
            else:
                self.con.execute(f"DELETE FROM {LIVE}.{target} WHERE {where}")

    def materialize(self, name: str, expr: ibis.Table) -> ibis.Table:
        """Compute an expression once into a DuckDB temporary table and return it, so the
        steps after it read columns in memory instead of recomputing (or rescanning)."""
        self.sql(f"CREATE OR REPLACE TEMP TABLE {name} AS {self.backend.compile(expr)}")
        return self.backend.table(name)

    def view(self, name: str, expr: ibis.Table) -> ibis.Table:
        """An expression as a DuckDB temporary view: for what one statement reads once,
        where ``materialize`` would write rows only to read them back."""
        self.sql(f"CREATE OR REPLACE TEMP VIEW {name} AS {self.backend.compile(expr)}")
        return self.backend.table(name)

    def scalar(self, query: str, params: list[Any] | None = None) -> Any:
        row = self.sql(query, params).fetchone()
        return row[0] if row else None

    @contextmanager
    def deletes_left(self, tables: dict[str, str]) -> Iterator[Callable[[], list[str]]]:
        """``leave_deletes`` for the block, restored after it. It yields ``compact`` of
        ``tables``, for the block to call once its deletes are done, before the file is
        detached."""
        leave_deletes(self.con)
        try:
            yield lambda: compact(self.con, tables)
        finally:
            self.con.execute("RESET max_vacuum_tasks")

    @contextmanager
    def unordered(self) -> Iterator[None]:
        """Within the block, DuckDB may write a statement's rows in any order but the one
        its ``ORDER BY`` asks for (``preserve_insertion_order`` off): for a large table
        that is read only by joins and aggregates, never in the order its rows came in.
        Kept in order, its rows are gathered back into their source's order before they
        are appended; a million placed members took 0.9 s to write so and 0.4 s without."""
        self.con.execute("SET preserve_insertion_order = false")
        try:
            yield
        finally:
            self.con.execute("RESET preserve_insertion_order")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction on the live database for the writes inside it, committed at the
        end and rolled back if the block raises."""
        self._writable()
        if self.sqlite:
            with self.db.engine.connect() as live:  # BEGIN IMMEDIATE: see core.db
                self._live = live
                try:
                    with live.begin():
                        yield
                finally:
                    self._live = None
            return
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    @contextmanager
    def _in_transaction(self) -> Iterator[Connection | None]:
        """The SQLite connection of the open transaction (or a new one for this statement),
        or None on PostgreSQL where DuckDB runs the statement."""
        if not self.sqlite:
            yield None
            return
        if self._live is not None:
            yield self._live
            return
        with self.transaction():
            yield self._live

    # --- staged writes ---------------------------------------------------------------------

    def staging_path(self) -> str:
        """The SQLite staging file: given to the constructor, or in a temporary directory
        removed on ``close``."""
        if self._staging_given is not None:
            return self._staging_given
        if self._staging is None:
            self._staging = tempfile.TemporaryDirectory(prefix="siyu-stage-")
        return str(Path(self._staging.name) / "stage.db")

    def stage(self, name: str, query: str) -> None:
        """Keep the rows of a DuckDB query as staged table ``name`` for ``publish``. Call it
        with no live transaction open."""
        self._writable()
        if not self.sqlite:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE stage_{name} AS {query}")
        else:
            if not self._staging_attached:
                self.con.execute(f"ATTACH {sql_text(self.staging_path())} AS stage (TYPE sqlite)")
                self._staging_attached = True
            relation = self.con.sql(f"SELECT * FROM ({query}) AS r_")
            spelled = ", ".join(
                _sqlite_value(c, str(t))
                for c, t in zip(relation.columns, relation.types, strict=True)
            )
            self.con.execute(f"DROP TABLE IF EXISTS stage.{name}")
            self.con.execute(f"CREATE TABLE stage.{name} AS SELECT {spelled} FROM ({query}) AS r_")

    @contextmanager
    def publish(self) -> Iterator[Publisher]:
        """One live transaction over the staged results: committed when the block ends,
        rolled back (nothing published) if it raises."""
        self._writable()
        if not self.sqlite:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield Publisher(duck=self.con)
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")
            return
        self.release_staging()
        with publish_staged(self.db, self.staging_path()) as publisher:
            yield publisher

    def release_staging(self) -> None:
        """DuckDB's SQLite lets go of the staging file (before the application opens it)."""
        if self._staging_attached:
            self.con.execute("DETACH stage")
            self._staging_attached = False

    def close(self) -> None:
        self.con.close()
        if self._staging is not None:
            self._staging.cleanup()


@contextmanager
def analytics(
    db: Database, *, read_only: bool = True, threads: int | None = None
) -> Iterator[Analytics]:
    """An engine in this process. On SQLite only for a database file this process does not
    otherwise use (see the module's docstring): the application's work goes through
    ``insight.isolation``."""
    engine = Analytics(db, read_only=read_only, threads=threads)
    try:
        yield engine
    finally:
        engine.close()


def instant(at: datetime) -> ibis.Scalar:
    """An instant as a literal that compares with live timestamps (naive UTC)."""
    return ibis.literal(as_utc(at).replace(tzinfo=None), type=dt.Timestamp(scale=6))


def epoch(at: datetime) -> int:
    """Whole seconds since 1970 of an instant, for day arithmetic that every engine shares."""
    return int(as_utc(at).timestamp())
