"""API shapes of programme versions, validation reports and diffs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from siyu.core.errors import Problem
from siyu.programme.models import ProgrammeVersion
from siyu.programme.rules import Change


class VersionSummary(BaseModel):
    id: int
    effective_from: datetime
    author: str
    note: str
    created_at: datetime
    document_hash: str

    @classmethod
    def of(cls, version: ProgrammeVersion) -> VersionSummary:
        return cls(
            id=version.id,
            effective_from=version.effective_from,
            author=version.author,
            note=version.note,
            created_at=version.created_at,
            document_hash=version.document_hash,
        )


class VersionRead(VersionSummary):
    document: dict[str, Any]

    @classmethod
    def of(cls, version: ProgrammeVersion) -> VersionRead:
        return cls(**VersionSummary.of(version).model_dump(), document=version.document)


class AppliedRead(BaseModel):
    status: str  # created | unchanged
    version: VersionRead


class ProblemRead(BaseModel):
    field: str
    reason: str


class ValidationReport(BaseModel):
    valid: bool
    problems: list[ProblemRead]

    @classmethod
    def of(cls, problems: list[Problem]) -> ValidationReport:
        return cls(
            valid=not problems,
            problems=[ProblemRead(field=p.field, reason=p.reason) for p in problems],
        )


class ChangeRead(BaseModel):
    path: str
    kind: str
    old: Any
    new: Any

    @classmethod
    def of(cls, change: Change) -> ChangeRead:
        return cls(path=change.path, kind=change.kind, old=change.old, new=change.new)


class DiffRead(BaseModel):
    against: VersionSummary | None
    changes: list[ChangeRead]
