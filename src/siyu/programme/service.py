"""Programme versions: validate, apply, and find the version in force at an instant.

Services flush and never commit; the API request or the CLI command commits."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core import audit, clock
from siyu.core.errors import Conflict, NotFound, Problem, invalid
from siyu.programme import rules
from siyu.programme.models import ProgrammeVersion
from siyu.programme.rules import Change, Programme

MAX_NOTE = 500
MAX_AUTHOR = 100


def validate(raw: Any) -> list[Problem]:
    """Every problem of a raw document; empty when it is valid."""
    return rules.check(raw)[1]


def parse(raw: Any) -> Programme:
    """The programme of a raw document, or ``InvalidInput`` listing every problem."""
    programme, problems = rules.check(raw)
    if programme is None:
        raise invalid(problems, what="programme")
    return programme


@dataclass(frozen=True)
class Applied:
    version: ProgrammeVersion
    created: bool


def latest(session: Session) -> ProgrammeVersion | None:
    """The version with the latest effective-from time, whether in force yet or not."""
    stmt = select(ProgrammeVersion).order_by(
        ProgrammeVersion.effective_from.desc(), ProgrammeVersion.id.desc()
    )
    return session.scalars(stmt.limit(1)).first()


def in_force(session: Session, at: datetime | None = None) -> ProgrammeVersion | None:
    """The version whose ``effective_from`` is the latest at or before ``at`` (default now)."""
    at = clock.as_utc(at) if at is not None else clock.now()
    stmt = (
        select(ProgrammeVersion)
        .where(ProgrammeVersion.effective_from <= at)
        .order_by(ProgrammeVersion.effective_from.desc(), ProgrammeVersion.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def require_in_force(session: Session, at: datetime | None = None) -> ProgrammeVersion:
    version = in_force(session, at)
    if version is None:
        when = "now" if at is None else f"at {clock.as_utc(at).isoformat()}"
        raise NotFound(
            f"no programme is in force {when}; apply one with `siyu programme apply FILE` "
            "or POST /programme",
            code="no_programme",
        )
    return version


def programme_at(session: Session, at: datetime) -> Programme:
    """The parsed programme in force at ``at``: what the engine applies to an event then."""
    version = require_in_force(session, at)
    return programme_of(version)


def programme_of(version: ProgrammeVersion) -> Programme:
    return _parsed(version.document_hash, rules.json_text(version.document))


@lru_cache(maxsize=64)
def _parsed(_hash: str, text: str) -> Programme:
    return Programme.model_validate_json(text)


def apply(
    session: Session,
    raw: Any,
    *,
    author: str,
    note: str = "",
    effective_from: datetime | None = None,
    backdate: bool = False,
) -> Applied:
    """Store a new version; a document identical to the one in force then is a no-op.

    ``effective_from`` defaults to now. An instant before the latest version's is refused
    unless ``backdate``: it would change what history was computed under."""
    programme = parse(raw)
    if len(note) > MAX_NOTE:
        raise invalid([Problem("note", f"at most {MAX_NOTE} characters")], what="programme")
    document = rules.canonical(programme)
    digest = rules.document_hash(document)
    when = clock.as_utc(effective_from) if effective_from is not None else clock.now()
    newest = latest(session)
    if newest is not None and when < newest.effective_from and not backdate:
        raise Conflict(
            f"effective_from {when.isoformat()} is before the latest version "
            f"(#{newest.id}, effective {newest.effective_from.isoformat()}); this would change "
            "the rules history was computed under; pass --backdate (API: ?backdate=true) "
            "to do it anyway",
            field="effective_from",
            code="programme_backdated",
        )
    current = in_force(session, when)
    if current is not None and current.document_hash == digest:
        return Applied(current, created=False)
    version = ProgrammeVersion(
        document=document,
        document_hash=digest,
        effective_from=when,
        author=author[:MAX_AUTHOR],
        note=note,
        created_at=clock.now(),
    )
    session.add(version)
    session.flush()
    audit.record(
        session,
        actor=author,
        action="programme.apply",
        target_type="programme_version",
        target_id=version.id,
        detail={
            "effective_from": when.isoformat(),
            "hash": digest,
            "note": note,
            "backdated": bool(newest is not None and when < newest.effective_from),
            "previous_id": current.id if current is not None else None,
        },
    )
    return Applied(version, created=True)


def history(session: Session, *, limit: int = 100) -> list[ProgrammeVersion]:
    """Versions, the latest effective first."""
    stmt = (
        select(ProgrammeVersion)
        .order_by(ProgrammeVersion.effective_from.desc(), ProgrammeVersion.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def get(session: Session, version_id: int) -> ProgrammeVersion:
    version = session.get(ProgrammeVersion, version_id)
    if version is None:
        raise NotFound(f"no programme version #{version_id}", field="version_id")
    return version


@dataclass(frozen=True)
class Diff:
    against: ProgrammeVersion | None
    changes: list[Change]


def diff_against_in_force(session: Session, raw: Any, *, at: datetime | None = None) -> Diff:
    """What applying ``raw`` would change compared with the version in force (default now)."""
    document = rules.canonical(parse(raw))
    current = in_force(session, at)
    return Diff(current, rules.diff(current.document if current else None, document))


class Timeline:
    """Every version's effective time, loaded once: the programme in force at many instants
    (each order of an import chunk) without a query per instant. Documents are parsed on
    first use and cached by hash."""

    def __init__(self, session: Session) -> None:
        rows = session.execute(
            select(
                ProgrammeVersion.id, ProgrammeVersion.effective_from, ProgrammeVersion.document_hash
            ).order_by(ProgrammeVersion.effective_from, ProgrammeVersion.id)
        ).all()
        self._session = session
        self._starts = [clock.as_utc(r.effective_from) for r in rows]
        self._ids = [r.id for r in rows]
        self._hashes = [r.document_hash for r in rows]
        self._parsed: dict[int, Programme] = {}

    def version_id_at(self, at: datetime) -> int | None:
        i = bisect_right(self._starts, clock.as_utc(at)) - 1
        return self._ids[i] if i >= 0 else None

    def at(self, at: datetime) -> Programme | None:
        """The programme in force at ``at``, or None before the first version."""
        i = bisect_right(self._starts, clock.as_utc(at)) - 1
        if i < 0:
            return None
        version_id = self._ids[i]
        if version_id not in self._parsed:
            version = self._session.get(ProgrammeVersion, version_id)
            assert version is not None
            self._parsed[version_id] = programme_of(version)
        return self._parsed[version_id]
