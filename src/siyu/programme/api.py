"""Programme routes: read the version in force and the history; validate, diff and apply a
document sent as JSON or, with ``Content-Type: application/yaml``, as YAML."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from siyu.api.deps import AnyRole, SessionDep, require
from siyu.core.auth import Principal, Role
from siyu.core.errors import InvalidInput, invalid
from siyu.programme import rules, service
from siyu.programme.schemas import (
    AppliedRead,
    ChangeRead,
    DiffRead,
    ValidationReport,
    VersionRead,
    VersionSummary,
)

router = APIRouter(tags=["programme"])

Editor = Annotated[Principal, Depends(require(Role.operator))]
Checker = Annotated[Principal, Depends(require(Role.operator, Role.analyst))]

MAX_DOCUMENT_BYTES = 1_000_000
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")

DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the programme document (see src/siyu/programme/example.yaml)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


async def raw_document(request: Request) -> Any:
    """The request body as a raw document: YAML when the content type says so, else JSON."""
    body = await request.body()
    if len(body) > MAX_DOCUMENT_BYTES:
        raise InvalidInput(
            f"the document is {len(body):,} bytes; at most {MAX_DOCUMENT_BYTES:,}", field="body"
        )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = "yaml" if content_type in YAML_TYPES else "json"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the document must be UTF-8 text", field="body") from None
    raw, problems = rules.parse_text(text, fmt=fmt)
    if problems:
        raise invalid(problems, what="programme")
    return raw


Document = Annotated[Any, Depends(raw_document)]
At = Annotated[
    datetime | None,
    Query(description="an instant (ISO 8601); default now. The version in force then."),
]


@router.get("/programme", response_model=VersionRead)
def read_programme(session: SessionDep, _: AnyRole, at: At = None) -> VersionRead:
    """The programme version in force now, or at ``at``."""
    return VersionRead.of(service.require_in_force(session, at))


@router.get("/programme/history", response_model=list[VersionSummary])
def programme_history(
    session: SessionDep, _: AnyRole, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[VersionSummary]:
    """Every version, the latest effective first (without documents)."""
    return [VersionSummary.of(v) for v in service.history(session, limit=limit)]


@router.get("/programme/versions/{version_id}", response_model=VersionRead)
def read_version(version_id: int, session: SessionDep, _: AnyRole) -> VersionRead:
    return VersionRead.of(service.get(session, version_id))


@router.post("/programme:validate", response_model=ValidationReport, openapi_extra=DOCUMENT_BODY)
def validate_programme(document: Document, _: Checker) -> ValidationReport:
    """Check a document without storing it: every problem, with its path in the document."""
    return ValidationReport.of(service.validate(document))


@router.post(
    "/programme:diff",
    response_model=DiffRead,
    openapi_extra=DOCUMENT_BODY,
    responses={422: {"description": "the document is invalid; every problem in error.details"}},
)
def diff_programme(document: Document, session: SessionDep, _: Checker, at: At = None) -> DiffRead:
    """What applying a document would change against the version in force (now, or ``at``)."""
    result = service.diff_against_in_force(session, document, at=at)
    return DiffRead(
        against=VersionSummary.of(result.against) if result.against is not None else None,
        changes=[ChangeRead.of(c) for c in result.changes],
    )


@router.post(
    "/programme",
    response_model=AppliedRead,
    status_code=201,
    openapi_extra=DOCUMENT_BODY,
    responses={
        200: {"description": "the document is the one already in force; nothing stored"},
        409: {"description": "effective_from is before the latest version (send backdate)"},
        422: {"description": "the document is invalid; every problem in error.details"},
    },
)
def apply_programme(
    document: Document,
    response: Response,
    session: SessionDep,
    who: Editor,
    effective_from: Annotated[
        datetime | None, Query(description="when it takes effect (ISO 8601); default now")
    ] = None,
    note: Annotated[str, Query(max_length=service.MAX_NOTE)] = "",
    backdate: Annotated[
        bool, Query(description="allow an effective_from before the latest version's")
    ] = False,
) -> AppliedRead:
    """Store the document as a new programme version (operators and admins; audited)."""
    applied = service.apply(
        session,
        document,
        author=who.actor,
        note=note,
        effective_from=effective_from,
        backdate=backdate,
    )
    if not applied.created:
        response.status_code = 200
    return AppliedRead(
        status="created" if applied.created else "unchanged",
        version=VersionRead.of(applied.version),
    )
