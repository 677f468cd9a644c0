"""The in-process scheduler for embedded use (``siyu serve``, ``siyu demo``): once a minute it
runs every job not yet done for the brand-local day, after ``SIYU_JOBS_AT`` (02:00 by
default). Scaled out, run ``siyu jobs run-all`` from cron instead; ``job_runs`` makes the two
safe together."""

from __future__ import annotations

import logging
import threading
from datetime import time

from siyu.core import clock
from siyu.core.db import Database
from siyu.core.errors import Conflict
from siyu.jobs import service

log = logging.getLogger("siyu.jobs")


class Scheduler:
    def __init__(self, db: Database, *, tz: str, at: time, interval_seconds: float = 60) -> None:
        self.db, self.tz, self.at, self.interval = db, tz, at, interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self) -> bool:
        local = clock.as_utc(clock.now()).astimezone(_zone(self.tz))
        return local.time() >= self.at

    def tick(self) -> list[service.Outcome]:
        """One pass: today's jobs, if it is time. Returns what ran (for tests and logs)."""
        if not self.due():
            return []
        outcomes = []
        for job in service.registered():
            try:
                outcome = service.run(self.db, job.name, tz=self.tz)
            except Conflict as exc:  # another worker has it
                log.info("%s", exc)
                continue
            except Exception:
                log.exception("job %s failed; it is retried on the next pass", job.name)
                break
            if outcome.status == "done":
                log.info("job %s for %s: %s", job.name, outcome.run_date, outcome.result)
            outcomes.append(outcome)
        return outcomes

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="siyu-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)


def _zone(tz: str):  # type: ignore[no-untyped-def]
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)
