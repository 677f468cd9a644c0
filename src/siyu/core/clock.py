"""The one clock. Code asks ``clock.now()``, never ``datetime.now()``, so tests and the
simulator can move time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

UTC = UTC


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until moved: for tests, replays and the simulator."""

    def __init__(self, at: datetime) -> None:
        self._at = as_utc(at)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = as_utc(at)

    def advance(self, delta: timedelta) -> None:
        self._at += delta


_clock: Clock = SystemClock()


def now() -> datetime:
    return _clock.now()


def set_clock(new: Clock) -> Clock:
    """Swap the process clock; returns the previous one so callers can restore it."""
    global _clock
    previous, _clock = _clock, new
    return previous


def as_utc(at: datetime) -> datetime:
    """Naive datetimes are taken as UTC (what SQLite hands back); aware ones are converted."""
    if at.tzinfo is UTC:  # the common case, on every row of an import: no new object
        return at
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def local_date(at: datetime, tz: str) -> date:
    """The brand-local calendar day of an instant (check-ins, birthdays, year-end)."""
    return as_utc(at).astimezone(ZoneInfo(tz)).date()
