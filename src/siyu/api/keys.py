"""API keys over HTTP (admins only); ``siyu keys create`` does the same from the shell."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from siyu.api.deps import SessionDep, require
from siyu.core import audit
from siyu.core.auth import Principal, Role, create_key

router = APIRouter(tags=["keys"])


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    staff_id: int | None = None
    store_id: int | None = None


class KeyCreated(BaseModel):
    id: int
    name: str
    role: Role
    key: str = Field(description="shown once; store it now")


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create(
    body: KeyCreate, session: SessionDep, who: Annotated[Principal, Depends(require())]
) -> KeyCreated:
    key, secret = create_key(
        session, role=body.role, name=body.name, staff_id=body.staff_id, store_id=body.store_id
    )
    audit.record(
        session,
        actor=who.actor,
        action="key.create",
        target_type="api_key",
        target_id=key.id,
        detail={"role": body.role.value, "name": body.name},
    )
    return KeyCreated(id=key.id, name=key.name, role=body.role, key=secret)
