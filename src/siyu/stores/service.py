"""The organisation: regions, stores and staff. Small now; guides' tasks come later."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.stores.models import Region, Staff, Store

STAFF_ROLES = ("guide", "manager")


def _unique(session: Session, model: type, code: str, what: str) -> None:
    if session.scalar(select(model.id).where(model.code == code)) is not None:  # type: ignore[attr-defined]
        raise Conflict(f"a {what} with code '{code}' exists already", field="code")


def create_region(
    session: Session, *, code: str, name: str, parent_id: int | None = None
) -> Region:
    _unique(session, Region, code, "region")
    if parent_id is not None and session.get(Region, parent_id) is None:
        raise NotFound(f"no region with id {parent_id}", field="parent_id")
    region = Region(code=code, name=name, parent_id=parent_id)
    session.add(region)
    session.flush()
    return region


def create_store(
    session: Session,
    *,
    code: str,
    name: str,
    region_id: int | None = None,
    city: str | None = None,
    opened_on: date | None = None,
) -> Store:
    _unique(session, Store, code, "store")
    if region_id is not None and session.get(Region, region_id) is None:
        raise NotFound(f"no region with id {region_id}", field="region_id")
    store = Store(
        code=code,
        name=name,
        region_id=region_id,
        city=city,
        opened_on=opened_on,
        status="open",
        created_at=clock.now(),
    )
    session.add(store)
    session.flush()
    return store


def create_staff(
    session: Session,
    *,
    code: str,
    name: str,
    role: str,
    store_id: int | None,
    phone: str | None = None,
) -> Staff:
    if role not in STAFF_ROLES:
        raise InvalidInput(f"staff role is one of {', '.join(STAFF_ROLES)}", field="role")
    _unique(session, Staff, code, "staff member")
    if store_id is not None and session.get(Store, store_id) is None:
        raise NotFound(f"no store with id {store_id}", field="store_id")
    staff = Staff(
        code=code,
        name=name,
        role=role,
        store_id=store_id,
        phone=phone,
        status="active",
        created_at=clock.now(),
    )
    session.add(staff)
    try:
        session.flush()
    except IntegrityError:  # pragma: no cover - raced with another insert of the same code
        raise Conflict(f"a staff member with code '{code}' exists already", field="code") from None
    return staff


def set_staff_status(session: Session, staff_id: int, status: str) -> Staff:
    if status not in ("active", "left"):
        raise InvalidInput("staff status is 'active' or 'left'", field="status")
    staff = get_staff(session, staff_id)
    staff.status = status
    session.flush()
    return staff


def get_store(session: Session, store_id: int) -> Store:
    store = session.get(Store, store_id)
    if store is None:
        raise NotFound(f"no store with id {store_id}", field="store_id")
    return store


def get_staff(session: Session, staff_id: int) -> Staff:
    staff = session.get(Staff, staff_id)
    if staff is None:
        raise NotFound(f"no staff member with id {staff_id}", field="staff_id")
    return staff


def list_stores(session: Session, *, region_id: int | None = None) -> list[Store]:
    query = select(Store).order_by(Store.id)
    if region_id is not None:
        query = query.where(Store.region_id == region_id)
    return list(session.scalars(query))


def list_regions(session: Session) -> list[Region]:
    return list(session.scalars(select(Region).order_by(Region.id)))


def list_staff(session: Session, *, store_id: int | None = None) -> list[Staff]:
    query = select(Staff).order_by(Staff.id)
    if store_id is not None:
        query = query.where(Staff.store_id == store_id)
    return list(session.scalars(query))
