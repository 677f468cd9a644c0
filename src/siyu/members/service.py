"""Member operations. Services flush, never commit: the caller's unit of work commits."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.core import audit, clock, outbox
from siyu.core.auth import Principal, Role
from siyu.core.db import ONE_OF_CHUNK, Base, in_chunks, one_of, upsert_insert
from siyu.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from siyu.core.events import publish
from siyu.members import rules
from siyu.members.models import (
    Member,
    MemberChange,
    MemberChangesState,
    MemberIdentity,
    MemberMerge,
    MemberTag,
    QrScene,
)
from siyu.members.rules import IdentityChannel, JoinChannel, MemberStatus
from siyu.stores.models import Staff, Store


@dataclass
class EnrolDraft:
    """What a channel tells us about a person who joins (or shows up in an order)."""

    identities: list[tuple[str, str]] = field(default_factory=list)
    phone: str | None = None
    name: str | None = None
    gender: str | None = None
    birthday: date | None = None
    child_birthday: date | None = None
    email: str | None = None
    join_channel: str = JoinChannel.store.value
    store_id: int | None = None
    guide_id: int | None = None
    referrer_id: int | None = None
    scene_code: str | None = None
    joined_at: datetime | None = None
    consent_sms: bool = False
    consent_wechat: bool = False
    consent_email: bool = False
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EnrolResult:
    member_id: int
    created: bool
    linked_identities: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class MembersEnrolled:
    """New members, in bulk: ``(member_id, joined_at)`` for each member this call created.
    Published in the enrolment's transaction (signup growth, points and the join pack)."""

    members: tuple[tuple[int, datetime], ...]


@dataclass(frozen=True)
class MembersMerged:
    merge_id: int
    from_member_id: int
    into_member_id: int


@dataclass(frozen=True)
class MembersUnmerged:
    merge_id: int
    from_member_id: int
    into_member_id: int


def lookup_identities(
    session: Session, identities: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """(channel, external_id) -> member id, for those that exist; set-based, any size."""
    by_channel: dict[str, set[str]] = {}
    for channel, external_id in identities:
        by_channel.setdefault(channel, set()).add(external_id)
    found: dict[tuple[str, str], int] = {}
    for channel, ids in by_channel.items():
        for chunk in in_chunks(sorted(ids), ONE_OF_CHUNK):
            rows = session.execute(
                select(MemberIdentity.external_id, MemberIdentity.member_id).where(
                    MemberIdentity.channel == channel,
                    one_of(session, MemberIdentity.external_id, chunk),
                )
            )
            for external_id, member_id in rows:
                found[(channel, external_id)] = member_id
    return found


def _prepare(draft: EnrolDraft) -> list[tuple[str, str]]:
    """Normalise a draft in place and return its identities (phone included)."""
    if draft.phone:
        draft.phone = rules.normalize_phone(draft.phone)
    idents = [rules.normalize_identity(c, e) for c, e in draft.identities]
    if draft.phone and (IdentityChannel.phone.value, draft.phone) not in idents:
        idents.insert(0, (IdentityChannel.phone.value, draft.phone))
    if not draft.phone:
        draft.phone = next((e for c, e in idents if c == IdentityChannel.phone.value), None)
    if not idents:
        raise InvalidInput(
            "a member needs at least one identity: a phone or a channel id", field="identities"
        )
    try:
        JoinChannel(draft.join_channel)
    except ValueError:
        raise InvalidInput(
            f"unknown join channel '{draft.join_channel}'; use one of: "
            + ", ".join(c.value for c in JoinChannel),
            field="join_channel",
        ) from None
    if draft.gender not in (None, "F", "M"):
        raise InvalidInput("gender is 'F' or 'M'", field="gender")
    draft.tags = [rules.check_tag(t) for t in draft.tags]
    return list(dict.fromkeys(idents))


def enrol_many(
    session: Session, drafts: Sequence[EnrolDraft], *, attempts: int = 3
) -> list[EnrolResult]:
    """Enrol people, linking each to an existing member when an identity already names one.

    Set-based: one lookup and a few bulk inserts for the whole list. When another
    connection enrols the same phone at the same moment, the unique identity index makes
    our insert fail; the savepoint is rolled back and the lookup, run again, links to the
    member the other connection created. So concurrent enrolments give one member.
    """
    prepared = [_prepare(d) for d in drafts]
    for attempt in range(attempts):
        savepoint = session.begin_nested()
        try:
            results = _enrol_prepared(session, drafts, prepared)
            savepoint.commit()
            return results
        except IntegrityError:
            savepoint.rollback()
            if attempt == attempts - 1:
                raise Conflict(
                    "these identities were being enrolled by another request; retry",
                    code="enrol_race",
                ) from None
    raise AssertionError("unreachable")


def _check_references(session: Session, drafts: Sequence[EnrolDraft]) -> None:
    store_ids = {d.store_id for d in drafts if d.store_id is not None}
    guide_ids = {d.guide_id for d in drafts if d.guide_id is not None}
    referrer_ids = {d.referrer_id for d in drafts if d.referrer_id is not None}
    for ids, model, name in (
        (store_ids, Store, "store_id"),
        (guide_ids, Staff, "guide_id"),
        (referrer_ids, Member, "referrer_id"),
    ):
        if not ids:
            continue
        known: set[int] = set()
        for chunk in in_chunks(sorted(ids)):
            known.update(session.scalars(select(model.id).where(model.id.in_(chunk))))
        missing = sorted(ids - known)
        if missing:
            raise NotFound(f"unknown {name.removesuffix('_id')}: {missing[0]}", field=name)


def _enrol_prepared(
    session: Session, drafts: Sequence[EnrolDraft], prepared: list[list[tuple[str, str]]]
) -> list[EnrolResult]:
    _check_references(session, drafts)
    now = clock.now()
    existing = lookup_identities(session, (i for idents in prepared for i in idents))
    # Resolve each draft to an existing member, a draft earlier in this batch, or a new one.
    owner: dict[tuple[str, str], int | str] = dict(existing)  # member id, or "new:<index>"
    targets: list[int | str] = []
    for index, idents in enumerate(prepared):
        matched = {owner[i] for i in idents if i in owner}
        if len(matched) > 1:
            raise Conflict(
                "these identities belong to different members ("
                + ", ".join(str(m) for m in sorted(matched, key=str))
                + "); merge the members first",
                field="identities",
                code="identities_split",
            )
        target: int | str = matched.pop() if matched else f"new:{index}"
        for i in idents:
            owner.setdefault(i, target)
        targets.append(target)

    new_indexes = [i for i, t in enumerate(targets) if t == f"new:{i}"]
    new_ids: dict[str, int] = {}
    if new_indexes:
        scene_codes = {drafts[i].scene_code for i in new_indexes if drafts[i].scene_code}
        configured: dict[str, list[str]] = {}
        if scene_codes:
            configured = {
                code: list(tags)
                for code, tags in session.execute(
                    select(QrScene.code, QrScene.tags).where(QrScene.code.in_(scene_codes))
                )
            }
        rows = []
        for i in new_indexes:
            d = drafts[i]
            rows.append(
                {
                    "phone": d.phone,
                    "name": d.name,
                    "gender": d.gender,
                    "birthday": d.birthday,
                    "child_birthday": d.child_birthday,
                    "email": d.email,
                    "joined_at": d.joined_at or now,
                    "join_channel": d.join_channel,
                    "store_id": d.store_id,
                    "guide_id": d.guide_id,
                    "referrer_id": d.referrer_id,
                    "scene_code": d.scene_code,
                    "status": MemberStatus.active.value,
                    "consent_sms": d.consent_sms,
                    "consent_wechat": d.consent_wechat,
                    "consent_email": d.consent_email,
                    "points_balance": 0,
                    "points_frozen": 0,
                    "points_debt": 0,
                    "growth_balance": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        ids = list(
            session.scalars(insert(Member).returning(Member.id, sort_by_parameter_order=True), rows)
        )
        tag_rows = []
        for i, member_id in zip(new_indexes, ids, strict=True):
            new_ids[f"new:{i}"] = member_id
            d = drafts[i]
            tags = {t: "manual" for t in d.tags}
            for t in rules.scene_tags(d.scene_code, configured.get(d.scene_code or "")):
                tags.setdefault(t, "scene")
            tag_rows += [
                {"member_id": member_id, "tag": t, "source": s, "created_at": now}
                for t, s in tags.items()
            ]
        if tag_rows:
            session.execute(insert(MemberTag), tag_rows)

    identity_rows = []
    linked: dict[int, list[tuple[str, str]]] = {}
    for ident, target in owner.items():
        if ident in existing:
            continue
        member_id = target if isinstance(target, int) else new_ids[target]
        identity_rows.append(
            {
                "member_id": member_id,
                "channel": ident[0],
                "external_id": ident[1],
                "created_at": now,
            }
        )
        if isinstance(target, int):
            linked.setdefault(target, []).append(ident)
    if identity_rows:
        session.execute(insert(MemberIdentity), identity_rows)

    results = []
    for index, target in enumerate(targets):
        if isinstance(target, int):
            results.append(EnrolResult(target, False, tuple(linked.get(target, ()))))
        else:  # created by this draft, or by an earlier draft of this batch
            results.append(EnrolResult(new_ids[target], target == f"new:{index}"))
    created = []
    for index, result in enumerate(results):
        if result.created:
            outbox.emit(session, "member.enrolled", {"member_id": result.member_id})
            created.append((result.member_id, drafts[index].joined_at or now))
    if created:
        publish(session, MembersEnrolled(tuple(created)))
    return results


def enrol(session: Session, draft: EnrolDraft) -> EnrolResult:
    return enrol_many(session, [draft])[0]


# --- reading -----------------------------------------------------------------------------


def get(session: Session, member_id: int, *, principal: Principal | None = None) -> Member:
    member = session.get(Member, member_id)
    if member is None:
        raise NotFound(f"no member with id {member_id}", field="member_id")
    if principal is not None:
        check_scope(principal, member)
    return member


def in_scope(principal: Principal, member: Member) -> bool:
    """Guides look after their own members; store managers their store's; others all."""
    if principal.role is Role.guide:
        return member.guide_id == principal.staff_id
    if principal.role is Role.store_manager:
        return member.store_id == principal.store_id
    return True


def check_scope(principal: Principal, member: Member) -> None:
    if principal.role is Role.guide and member.guide_id != principal.staff_id:
        raise NotFound(f"no member with id {member.id} among your members", field="member_id")
    if principal.role is Role.store_manager and member.store_id != principal.store_id:
        raise NotFound(f"no member with id {member.id} in your store", field="member_id")


def find(session: Session, ref: str) -> Member:
    """A member by id, member number or phone: what an operator types."""
    ref = ref.strip()
    member_id: int | None = None
    if ref.isdigit() and len(ref) == 11 and ref.startswith("1"):
        member_id = lookup_identities(session, [("phone", ref)]).get(("phone", ref))
    if member_id is None and ref.isdigit() and len(ref) == 10:
        member_id = rules.member_id_from_no(ref)
    if member_id is None and ref.isdigit() and len(ref) < 10:
        member_id = int(ref)
    if member_id is None:
        raise NotFound(f"no member matches '{ref}' (try an id, a member number or a phone)")
    return get(session, member_id)


def identities_of(session: Session, member_id: int) -> list[MemberIdentity]:
    return list(
        session.scalars(
            select(MemberIdentity)
            .where(MemberIdentity.member_id == member_id)
            .order_by(MemberIdentity.id)
        )
    )


def tags_of(session: Session, member_id: int) -> list[MemberTag]:
    return list(
        session.scalars(
            select(MemberTag).where(MemberTag.member_id == member_id).order_by(MemberTag.tag)
        )
    )


def search(
    session: Session,
    *,
    principal: Principal | None = None,
    phone: str | None = None,
    member_no: str | None = None,
    name: str | None = None,
    tag: str | None = None,
    guide_id: int | None = None,
    store_id: int | None = None,
    status: str | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> list[Member]:
    """Keyset-paged search: every filter uses an index (phone, identities, name prefix,
    member_tags(tag, member_id), guide, store)."""
    query = select(Member)
    if phone:
        normalized = rules.normalize_phone(phone)
        query = query.where(
            Member.id.in_(
                select(MemberIdentity.member_id).where(
                    MemberIdentity.channel == "phone", MemberIdentity.external_id == normalized
                )
            )
        )
    if member_no:
        member_id = rules.member_id_from_no(member_no)
        if member_id is None:
            raise InvalidInput(
                f"'{member_no}' is not a valid member number (10 digits, last is a check digit)",
                field="member_no",
            )
        query = query.where(Member.id == member_id)
    if name:
        query = query.where(Member.name.startswith(name, autoescape=True))
    if tag:
        query = query.where(Member.id.in_(select(MemberTag.member_id).where(MemberTag.tag == tag)))
    if guide_id is not None:
        query = query.where(Member.guide_id == guide_id)
    if store_id is not None:
        query = query.where(Member.store_id == store_id)
    if status:
        query = query.where(Member.status == status)
    if principal is not None and principal.role is Role.guide:
        query = query.where(Member.guide_id == principal.staff_id)
    if principal is not None and principal.role is Role.store_manager:
        query = query.where(Member.store_id == principal.store_id)
    if after_id is not None:
        query = query.where(Member.id > after_id)
    limit = max(1, min(limit, 500))
    return list(session.scalars(query.order_by(Member.id).limit(limit)))


# --- changing ----------------------------------------------------------------------------

UPDATABLE = {
    "name",
    "gender",
    "birthday",
    "child_birthday",
    "email",
    "store_id",
    "guide_id",
    "consent_sms",
    "consent_wechat",
    "consent_email",
    "phone",
}


def update(
    session: Session, member_id: int, changes: dict[str, Any], *, principal: Principal
) -> Member:
    member = get(session, member_id, principal=principal)
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise InvalidInput(
            f"'{sorted(unknown)[0]}' cannot be changed here", field=sorted(unknown)[0]
        )
    _check_references(
        session,
        [EnrolDraft(store_id=changes.get("store_id"), guide_id=changes.get("guide_id"))],
    )
    before: dict[str, Any] = {}
    if "phone" in changes and changes["phone"] is not None:
        new_phone = rules.normalize_phone(changes["phone"])
        if new_phone != member.phone:
            add_identity(session, member_id, "phone", new_phone, principal=principal)
            changes["phone"] = new_phone
    if "gender" in changes and changes["gender"] not in (None, "F", "M"):
        raise InvalidInput("gender is 'F' or 'M'", field="gender")
    for key, value in changes.items():
        old = getattr(member, key)
        if old != value:
            before[key] = old.isoformat() if isinstance(old, date) else old
            setattr(member, key, value)
    if before:
        member.updated_at = clock.now()
        audit.record(
            session,
            actor=principal.actor,
            action="member.update",
            target_type="member",
            target_id=member_id,
            detail={"before": before, "after": {k: _jsonable(changes[k]) for k in before}},
        )
    session.flush()
    return member


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def set_status(
    session: Session, member_id: int, status: str, *, reason: str, principal: Principal
) -> Member:
    if status not in (MemberStatus.active, MemberStatus.frozen, MemberStatus.closed):
        raise InvalidInput("status is one of active, frozen, closed", field="status")
    if not reason.strip():
        raise InvalidInput("say why the status changes", field="reason")
    member = get(session, member_id, principal=principal)
    if member.status == MemberStatus.merged:
        raise Conflict(
            f"member {member_id} was merged into {member.merged_into_id}; unmerge it first",
            field="status",
        )
    if member.status != status:
        audit.record(
            session,
            actor=principal.actor,
            action="member.status",
            target_type="member",
            target_id=member_id,
            detail={"from": member.status, "to": status, "reason": reason},
        )
        outbox.emit(session, "member.status_changed", {"member_id": member_id, "status": status})
        member.status = status
        member.updated_at = clock.now()
    session.flush()
    return member


def add_tags(
    session: Session, member_id: int, tags: list[str], *, principal: Principal
) -> list[MemberTag]:
    get(session, member_id, principal=principal)
    clean = list(dict.fromkeys(rules.check_tag(t) for t in tags))
    if clean:
        stmt = upsert_insert(session, MemberTag.__table__).values(
            [
                {"member_id": member_id, "tag": t, "source": "manual", "created_at": clock.now()}
                for t in clean
            ]
        )
        session.execute(stmt.on_conflict_do_nothing())
        audit.record(
            session,
            actor=principal.actor,
            action="member.tag",
            target_type="member",
            target_id=member_id,
            detail={"added": clean},
        )
    return tags_of(session, member_id)


def remove_tag(session: Session, member_id: int, tag: str, *, principal: Principal) -> None:
    get(session, member_id, principal=principal)
    result = session.execute(
        delete(MemberTag).where(MemberTag.member_id == member_id, MemberTag.tag == tag)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"member {member_id} has no tag '{tag}'", field="tag")
    audit.record(
        session,
        actor=principal.actor,
        action="member.untag",
        target_type="member",
        target_id=member_id,
        detail={"removed": tag},
    )


def add_identity(
    session: Session, member_id: int, channel: str, external_id: str, *, principal: Principal
) -> MemberIdentity:
    member = get(session, member_id, principal=principal)
    channel, external_id = rules.normalize_identity(channel, external_id)
    owner = lookup_identities(session, [(channel, external_id)]).get((channel, external_id))
    if owner is not None and owner != member_id:
        raise Conflict(
            f"{channel} {external_id} already belongs to member {owner}; merge the two members "
            "instead",
            field="external_id",
            code="identity_taken",
        )
    if owner == member_id:
        return session.scalars(
            select(MemberIdentity).where(
                MemberIdentity.channel == channel, MemberIdentity.external_id == external_id
            )
        ).one()
    identity = MemberIdentity(
        member_id=member.id, channel=channel, external_id=external_id, created_at=clock.now()
    )
    session.add(identity)
    if channel == IdentityChannel.phone and member.phone is None:
        member.phone = external_id
    audit.record(
        session,
        actor=principal.actor,
        action="member.identity_add",
        target_type="member",
        target_id=member_id,
        detail={"channel": channel, "external_id": external_id},
    )
    session.flush()
    return identity


def create_scene(
    session: Session,
    code: str,
    tags: list[str],
    *,
    description: str | None = None,
    store_id: int | None = None,
) -> QrScene:
    scene = QrScene(
        code=code,
        tags=[rules.check_tag(t) for t in tags],
        description=description,
        store_id=store_id,
        created_at=clock.now(),
    )
    session.merge(scene)
    session.flush()
    return scene


# --- OneID: merge and unmerge ------------------------------------------------------------


def _member_owned_tables() -> list[Table]:
    """Every table with a ``member_id`` whose rows move on merge. Tables whose rows are
    derived per member (``info={"merge": "derived"}``) are recomputed by their owners on
    ``MembersMerged`` instead; tags are merged as a set below."""
    tables = []
    for table in Base.metadata.sorted_tables:
        if "member_id" not in table.c or table.name == MemberTag.__tablename__:
            continue
        if table.info.get("merge") == "derived":
            continue
        pk = list(table.primary_key.columns)
        if len(pk) != 1:
            raise AssertionError(f"{table.name}: member-owned tables need a single-column key")
        tables.append(table)
    return tables


def merge(
    session: Session, from_member_id: int, into_member_id: int, *, reason: str, principal: Principal
) -> MemberMerge:
    """Move everything of ``from`` to ``into``, and remember exactly what moved."""
    if from_member_id == into_member_id:
        raise InvalidInput("a member cannot be merged into itself", field="into_member_id")
    if not reason.strip():
        raise InvalidInput("say why the members are merged", field="reason")
    _lock_members(session, [from_member_id, into_member_id])
    source = get(session, from_member_id, principal=principal)
    target = get(session, into_member_id, principal=principal)
    for m in (source, target):
        if m.status == MemberStatus.merged:
            raise Conflict(
                f"member {m.id} was already merged into {m.merged_into_id}", field="member_id"
            )
    moved: dict[str, Any] = {"tables": {}, "tags": [], "status": source.status}
    for table in _member_owned_tables():
        pk = next(iter(table.primary_key.columns))
        ids = list(session.scalars(select(pk).where(table.c.member_id == from_member_id)))
        if ids:
            for chunk in in_chunks(ids):
                session.execute(
                    sql_update(table).where(pk.in_(chunk)).values(member_id=into_member_id)
                )
            moved["tables"][table.name] = ids
    target_tags = set(
        session.scalars(select(MemberTag.tag).where(MemberTag.member_id == into_member_id))
    )
    for tag in session.scalars(select(MemberTag).where(MemberTag.member_id == from_member_id)):
        if tag.tag not in target_tags:
            session.add(
                MemberTag(
                    member_id=into_member_id, tag=tag.tag, source=tag.source, created_at=clock.now()
                )
            )
            moved["tags"].append(tag.tag)
    if target.phone is None and source.phone is not None:
        target.phone = source.phone
        moved["phone"] = source.phone
    source.status = MemberStatus.merged.value
    source.merged_into_id = into_member_id
    source.updated_at = target.updated_at = clock.now()
    record = MemberMerge(
        from_member_id=from_member_id,
        into_member_id=into_member_id,
        reason=reason,
        actor=principal.actor,
        moved=moved,
        merged_at=clock.now(),
    )
    session.add(record)
    session.flush()
    publish(session, MembersMerged(record.id, from_member_id, into_member_id))
    audit.record(
        session,
        actor=principal.actor,
        action="member.merge",
        target_type="member",
        target_id=into_member_id,
        detail={"merge_id": record.id, "from": from_member_id, "reason": reason},
    )
    outbox.emit(
        session,
        "member.merged",
        {"merge_id": record.id, "from_member_id": from_member_id, "into_member_id": into_member_id},
    )
    session.flush()
    return record


def unmerge(session: Session, merge_id: int, *, principal: Principal) -> MemberMerge:
    """Put back exactly what a merge moved; rows added to the survivor since stay there."""
    record = session.get(MemberMerge, merge_id)
    if record is None:
        raise NotFound(f"no merge with id {merge_id}", field="merge_id")
    if record.unmerged_at is not None:
        raise Conflict(f"merge {merge_id} was already undone at {record.unmerged_at.isoformat()}")
    _lock_members(session, [record.from_member_id, record.into_member_id])
    tables = {t.name: t for t in _member_owned_tables()}
    for name, ids in record.moved.get("tables", {}).items():
        table = tables[name]
        pk = next(iter(table.primary_key.columns))
        for chunk in in_chunks(ids):
            session.execute(
                sql_update(table)
                .where(pk.in_(chunk), table.c.member_id == record.into_member_id)
                .values(member_id=record.from_member_id)
            )
    if record.moved.get("tags"):
        session.execute(
            delete(MemberTag).where(
                MemberTag.member_id == record.into_member_id,
                MemberTag.tag.in_(record.moved["tags"]),
            )
        )
    source = get(session, record.from_member_id)
    target = get(session, record.into_member_id)
    if record.moved.get("phone") and target.phone == record.moved["phone"]:
        target.phone = None
    source.status = record.moved.get("status", MemberStatus.active.value)
    source.merged_into_id = None
    record.unmerged_at = source.updated_at = target.updated_at = clock.now()
    session.flush()
    publish(session, MembersUnmerged(record.id, record.from_member_id, record.into_member_id))
    audit.record(
        session,
        actor=principal.actor,
        action="member.unmerge",
        target_type="member",
        target_id=record.from_member_id,
        detail={"merge_id": record.id, "into": record.into_member_id},
    )
    session.flush()
    return record


def _lock_members(session: Session, member_ids: list[int]) -> None:
    """Lock member rows in id order, so two merges touching the same pair cannot deadlock.
    (On SQLite the transaction already holds the write lock.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(Member.id)
            .where(Member.id.in_(sorted(member_ids)))
            .order_by(Member.id)
            .with_for_update()
        ).all()


# --- guides ------------------------------------------------------------------------------


def hand_over(
    session: Session,
    from_guide_id: int,
    to_guide_id: int,
    *,
    principal: Principal,
    reason: str = "",
) -> int:
    """Move every member of one guide to another in one statement; members belong to the
    brand, not to the guide. Returns how many moved."""
    if from_guide_id == to_guide_id:
        raise InvalidInput("hand over to a different guide", field="to_guide_id")
    guides = {
        s.id: s
        for s in session.scalars(select(Staff).where(Staff.id.in_([from_guide_id, to_guide_id])))
    }
    for gid, name in ((from_guide_id, "from_guide_id"), (to_guide_id, "to_guide_id")):
        if gid not in guides:
            raise NotFound(f"no staff member with id {gid}", field=name)
    if guides[to_guide_id].status != "active":
        raise InvalidInput(
            f"guide {to_guide_id} has left; choose an active guide", field="to_guide_id"
        )
    if principal.role is Role.store_manager and any(
        g.store_id != principal.store_id for g in guides.values()
    ):
        raise Forbidden("a store manager hands over only between guides of their own store")
    result = session.execute(
        sql_update(Member)
        .where(Member.guide_id == from_guide_id)
        .values(guide_id=to_guide_id, updated_at=clock.now())
    )
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    audit.record(
        session,
        actor=principal.actor,
        action="guide.hand_over",
        target_type="staff",
        target_id=from_guide_id,
        detail={"to": to_guide_id, "members": count, "reason": reason},
    )
    outbox.emit(
        session,
        "guide.handed_over",
        {"from_guide_id": from_guide_id, "to_guide_id": to_guide_id, "members": count},
    )
    session.flush()
    return count


def count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Member)) or 0)


__all__ = [
    "EnrolDraft",
    "EnrolResult",
    "MembersMerged",
    "MembersUnmerged",
    "add_identity",
    "add_tags",
    "enrol",
    "enrol_many",
    "find",
    "get",
    "hand_over",
    "lookup_identities",
    "merge",
    "remove_tag",
    "search",
    "set_status",
    "unmerge",
    "update",
]


# --- member changes (会员变更) -----------------------------------------------------------------


@dataclass(frozen=True)
class ChangesMark:
    """Where ``member_changes`` stands for a reader: the list's ``token`` (see
    ``MemberChangesState``; empty when there is no state row), the highest change id now
    (``upto``), and how far it has been pruned (every id at or below ``pruned_upto`` is
    gone)."""

    token: str
    upto: int
    pruned_upto: int


def ensure_changes_state(session: Session) -> None:
    """Make the state row of ``member_changes`` (a new token) when it is missing: a
    database emptied, or never read before. Readers take a missing row as a list they
    cannot follow yet."""
    if session.get(MemberChangesState, 1) is None:
        session.execute(
            upsert_insert(session, MemberChangesState.__table__)
            .values(id=1, token=uuid.uuid4().hex, pruned_upto=0)
            .on_conflict_do_nothing(index_elements=["id"])
        )


def prune_changes(session: Session, below: int) -> int:
    """Remove the changes with ids below ``below`` (the one reader has read them), and note
    it in the state. The highest change is never removed, so SQLite never hands its id out
    again. Returns the rows removed."""
    state = session.get(MemberChangesState, 1, with_for_update=True)
    if state is None or below - 1 <= state.pruned_upto:
        return 0
    removed = session.execute(delete(MemberChange).where(MemberChange.id < below)).rowcount  # type: ignore[attr-defined]
    state.pruned_upto = below - 1
    return int(removed or 0)
