"""Run DuckDB work over the live database where it is safe, and publish what it staged.

DuckDB bundles its own copy of the SQLite library, and two copies in one process do not
see each other's POSIX locks (``engine`` explains what goes wrong). So on SQLite any
DuckDB reading of the live file that is more than a short query runs in a spawned child
process, where the application's SQLite never opens the file; on PostgreSQL there is no
such trap and the work runs in this process. Callers write the work once, as a function
of an ``Analytics`` engine, and do not care which:

    with isolated(db, writes=True) as place:
        plan = place.run(compute, job)  # compute(engine, job): reads, stages, returns
        with place.publish() as live:  # one live transaction over what was staged
            live.insert("target", COLUMNS, "staged_name")

The work runs in another process on SQLite, so it and its arguments and result must
pickle (a module-level function, plain data), and it must not read the clock or open the
application's database: pass it the instants it needs, and do the SQLAlchemy reads in
the caller. Staged tables are named as for ``Analytics.stage``; a publish on SQLite
attaches the staging file the child wrote and closed (``engine.publish_staged``).
"""

from __future__ import annotations

import multiprocessing
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from siyu.core.db import Database
from siyu.insight.engine import Analytics, AnalyticsUnavailable, Publisher, publish_staged

R = TypeVar("R")

Work = Callable[..., R]  # work(engine, *args) -> result


class Isolated:
    """Where DuckDB work runs for one database: see the module's docstring."""

    def __init__(
        self, db: Database, *, writes: bool, threads: int | None, folder: str | None
    ) -> None:
        self.db = db
        self.writes = writes
        self.threads = threads
        self.in_child = db.dialect == "sqlite"
        self.staging = str(Path(folder) / "stage.db") if folder is not None else None
        # PostgreSQL: one engine for the whole block, so staged temporary tables outlive
        # ``run`` until ``publish``
        self.engine: Analytics | None = (
            None if self.in_child else Analytics(db, read_only=not writes, threads=threads)
        )

    def run(self, work: Work[R], *args: Any) -> R:
        """``work(engine, *args)``: in a spawned child on SQLite, here on PostgreSQL."""
        if self.engine is not None:
            return work(self.engine, *args)
        # an executor rather than a Pool: a child that dies (a crash, a failed start) is
        # an error here, where a Pool would start another child for ever
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(
                _run_in_child, self.db.url, self.writes, self.threads, self.staging, work, args
            ).result()

    def publish(self) -> AbstractContextManager[Publisher]:
        """One live transaction over what ``run`` staged: committed when the block ends,
        rolled back if it raises."""
        if not self.writes:
            raise AnalyticsUnavailable(
                "this place is read-only; open it with isolated(db, writes=True) to publish"
            )
        if self.engine is not None:
            return self.engine.publish()
        assert self.staging is not None
        return publish_staged(self.db, self.staging)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


@contextmanager
def isolated(
    db: Database, *, writes: bool = False, threads: int | None = None
) -> Iterator[Isolated]:
    """A place to run DuckDB work over ``db`` (and, with ``writes``, to publish what it
    staged); its staging file, on SQLite, is removed when the block ends."""
    if db.dialect != "sqlite" or not writes:
        place = Isolated(db, writes=writes, threads=threads, folder=None)
        try:
            yield place
        finally:
            place.close()
        return
    with tempfile.TemporaryDirectory(prefix="siyu-isolated-") as folder:
        place = Isolated(db, writes=writes, threads=threads, folder=folder)
        try:
            yield place
        finally:
            place.close()


def run_isolated(db: Database, work: Work[R], *args: Any, threads: int | None = None) -> R:
    """Read-only DuckDB work over ``db`` where it is safe: ``work(engine, *args)``."""
    with isolated(db, threads=threads) as place:
        return place.run(work, *args)


def _run_in_child(
    url: str,
    writes: bool,
    threads: int | None,
    staging: str | None,
    work: Work[R],
    args: tuple[Any, ...],
) -> R:
    """The work in a process of its own: only DuckDB opens the live file here. What it
    staged is in the staging file, closed (detached) before the parent opens it."""
    db = Database(url)
    engine = Analytics(db, read_only=not writes, threads=threads, staging_path=staging)
    try:
        result = work(engine, *args)
        engine.release_staging()
        return result
    finally:
        engine.close()
        db.dispose()
