"""API keys and roles. A key is shown once at creation; only its SHA-256 is stored."""

from __future__ import annotations

import getpass
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from siyu.core import clock
from siyu.core.db import Base, BigId, UTCDateTime
from siyu.core.errors import InvalidInput, Unauthorized


class Role(StrEnum):
    admin = "admin"
    operator = "operator"
    analyst = "analyst"
    store_manager = "store_manager"
    guide = "guide"
    service = "service"


# Roles that may read a member's full phone number; the others see 138****5678.
ROLES_SEEING_PHONES = frozenset({Role.admin, Role.operator, Role.service})

KEY_PREFIX = "sk_"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_hint: Mapped[str] = mapped_column(String(12))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Principal:
    """Who is calling: the role, and for guides and store managers the scope they act in."""

    key_id: int
    name: str
    role: Role
    staff_id: int | None = None
    store_id: int | None = None

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}:{self.name}"

    @property
    def sees_phones(self) -> bool:
        return self.role in ROLES_SEEING_PHONES


SYSTEM = Principal(key_id=0, name="system", role=Role.admin)


def terminal_principal() -> Principal:
    """The person at the terminal running ``siyu …``, as the audit log names them: the
    commands act as an admin, in the operating system user's name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no user name in a container
        user = "unknown"
    return Principal(key_id=0, name=f"cli:{user}", role=Role.admin)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    session: Session,
    *,
    role: Role | str,
    name: str,
    staff_id: int | None = None,
    store_id: int | None = None,
) -> tuple[ApiKey, str]:
    """Returns the stored key and the secret, which is not kept anywhere."""
    try:
        role = Role(role)
    except ValueError:
        raise InvalidInput(
            f"unknown role '{role}'; use one of: {', '.join(r.value for r in Role)}", field="role"
        ) from None
    if role is Role.guide and staff_id is None:
        raise InvalidInput("a guide's key needs the guide's staff id", field="staff_id")
    if role is Role.store_manager and store_id is None:
        raise InvalidInput("a store manager's key needs the store id", field="store_id")
    secret = KEY_PREFIX + secrets.token_urlsafe(24)
    key = ApiKey(
        name=name,
        role=role.value,
        key_hash=hash_key(secret),
        key_hint=secret[:7],
        staff_id=staff_id,
        store_id=store_id,
        created_at=clock.now(),
    )
    session.add(key)
    session.flush()
    return key, secret


def authenticate(session: Session, secret: str | None) -> Principal:
    if not secret:
        raise Unauthorized(
            "no API key: send 'Authorization: Bearer <key>' (create one with 'siyu keys create')"
        )
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
    if key is None or key.revoked_at is not None:
        raise Unauthorized("this API key is unknown or revoked")
    return Principal(
        key_id=key.id,
        name=key.name,
        role=Role(key.role),
        staff_id=key.staff_id,
        store_id=key.store_id,
    )
