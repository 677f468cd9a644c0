"""One error hierarchy. Each class carries its HTTP status and a stable code; the API maps
them in one place (``siyu.api.errors``) and the CLI prints the same message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (a field path) and why, in words one can act on."""

    field: str
    reason: str


class SiyuError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidInput(SiyuError):
    status = 422
    code = "invalid_input"


class NotFound(SiyuError):
    status = 404
    code = "not_found"


class Conflict(SiyuError):
    """The request contradicts what is stored (a replay with other content, a taken identity)."""

    status = 409
    code = "conflict"


class Unauthorized(SiyuError):
    status = 401
    code = "unauthorized"


class Forbidden(SiyuError):
    status = 403
    code = "forbidden"


def invalid(problems: list[Problem], *, what: str = "input") -> InvalidInput:
    """An ``InvalidInput`` naming every problem, the first as the headline."""
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return InvalidInput(
        f"{first.field}: {first.reason}{more}",
        field=first.field,
        details=[{"field": p.field, "reason": p.reason} for p in problems],
        code=f"invalid_{what}",
    )
