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
the caller.

The child is kept warm. Starting one is not free: a spawned
interpreter imports Ibis, DuckDB, SQLAlchemy and the insight modules again, 1.5–2.5 s of
CPU on a small machine, where the nightly refresh of a million members computes in ten.
So the children (``WORKERS``, started on first use; a second only while two pieces of
work run at once) stay while the process uses them and are stopped after ``IDLE_SECONDS``
without work: the scheduler's nightly jobs (refresh, KPIs, CLV) and a busy console share
them, and an idle server holds no child. A child keeps nothing between pieces of work:
each opens its own DuckDB connection and its own ``Database`` from the URL and closes
both. A child that dies is an error for the work it was running, never a silent retry;
the next piece of work starts a fresh child. (Fork would start faster, but the
application's process has threads, and a forked child inherits their locks held.)

Staged tables are named as for ``Analytics.stage``; a publish on SQLite attaches the
staging file the child wrote and closed (``engine.publish_staged``).
"""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from siyu.core.db import Database
from siyu.insight.engine import Analytics, AnalyticsUnavailable, Publisher, publish_staged

R = TypeVar("R")

Work = Callable[..., R]  # work(engine, *args) -> result

WORKERS = 2  # children at most: a refresh and a console read at once each get one
IDLE_SECONDS = 600.0  # children without work this long are stopped


class _Workers:
    """The warm children of this process (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._running = 0
        self._idle: threading.Timer | None = None

    def run(self, function: Callable[..., R], *args: Any) -> R:
        with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            if self._pool is None:
                # an executor rather than a Pool: a child that dies (a crash, a failed
                # start) is an error here, where a Pool would start another for ever
                self._pool = ProcessPoolExecutor(
                    max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn")
                )
            pool = self._pool
            self._running += 1
        try:
            return pool.submit(function, *args).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0 and self._pool is pool:
                    self._idle = threading.Timer(IDLE_SECONDS, self._stop_if_idle, (pool,))
                    self._idle.daemon = True
                    self._idle.start()

    def _stop_if_idle(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._running or self._pool is not pool:
                return
            self._pool = None
        pool.shutdown(wait=True)

    def pids(self) -> list[int]:
        """The running children's process ids (what a benchmark adds to its CPU time)."""
        with self._lock:
            processes = getattr(self._pool, "_processes", None) or {}
            return [int(pid) for pid in processes]

    def stop(self) -> None:
        """Stop the children now (tests, and a process about to fork or exit)."""
        with self._lock:
            pool, self._pool = self._pool, None
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
        if pool is not None:
            pool.shutdown(wait=True)


workers = _Workers()


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
        return workers.run(
            _run_in_child, self.db.url, self.writes, self.threads, self.staging, work, args
        )

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
