from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from siyu.api.deps import AnyRole, SessionDep, require
from siyu.core import audit
from siyu.core.auth import Principal, Role
from siyu.stores import service
from siyu.stores.schemas import (
    RegionCreate,
    RegionRead,
    StaffCreate,
    StaffRead,
    StaffStatus,
    StoreCreate,
    StoreRead,
)

router = APIRouter(tags=["stores"])
Operator = Annotated[Principal, Depends(require(Role.operator))]


@router.post("/regions", status_code=201, response_model=RegionRead)
def create_region(body: RegionCreate, session: SessionDep, who: Operator) -> object:
    region = service.create_region(session, **body.model_dump())
    audit.record(
        session,
        actor=who.actor,
        action="region.create",
        target_type="region",
        target_id=region.id,
        detail=body.model_dump(mode="json"),
    )
    return region


@router.get("/regions", response_model=list[RegionRead])
def list_regions(session: SessionDep, _: AnyRole) -> object:
    return service.list_regions(session)


@router.post("/stores", status_code=201, response_model=StoreRead)
def create_store(body: StoreCreate, session: SessionDep, who: Operator) -> object:
    store = service.create_store(session, **body.model_dump())
    audit.record(
        session,
        actor=who.actor,
        action="store.create",
        target_type="store",
        target_id=store.id,
        detail=body.model_dump(mode="json"),
    )
    return store


@router.get("/stores", response_model=list[StoreRead])
def list_stores(session: SessionDep, _: AnyRole, region_id: int | None = None) -> object:
    return service.list_stores(session, region_id=region_id)


@router.get("/stores/{store_id}", response_model=StoreRead)
def get_store(store_id: int, session: SessionDep, _: AnyRole) -> object:
    return service.get_store(session, store_id)


@router.post("/staff", status_code=201, response_model=StaffRead)
def create_staff(body: StaffCreate, session: SessionDep, who: Operator) -> object:
    staff = service.create_staff(session, **body.model_dump())
    audit.record(
        session,
        actor=who.actor,
        action="staff.create",
        target_type="staff",
        target_id=staff.id,
        detail=body.model_dump(mode="json"),
    )
    return staff


@router.get("/staff", response_model=list[StaffRead])
def list_staff(session: SessionDep, _: AnyRole, store_id: int | None = None) -> object:
    return service.list_staff(session, store_id=store_id)


@router.put("/staff/{staff_id}/status", response_model=StaffRead)
def set_staff_status(
    staff_id: int, body: StaffStatus, session: SessionDep, who: Operator
) -> object:
    staff = service.set_staff_status(session, staff_id, body.status)
    audit.record(
        session,
        actor=who.actor,
        action="staff.status",
        target_type="staff",
        target_id=staff_id,
        detail={"status": body.status},
    )
    return staff
