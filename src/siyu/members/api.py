from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from siyu.api.deps import AnyRole, SessionDep, require
from siyu.core import audit
from siyu.core.auth import Principal, Role
from siyu.core.errors import Conflict
from siyu.members import service
from siyu.members.schemas import (
    EnrolResponse,
    HandOver,
    HandOverResult,
    Identity,
    IdentityRead,
    MemberDetail,
    MemberEnrol,
    MemberPage,
    MemberRead,
    MemberUpdate,
    MergeRead,
    MergeRequest,
    SceneCreate,
    StatusChange,
    TagRead,
    TagsAdd,
)

router = APIRouter(tags=["members"])

Enroller = Annotated[
    Principal, Depends(require(Role.operator, Role.service, Role.store_manager, Role.guide))
]
Editor = Annotated[Principal, Depends(require(Role.operator, Role.store_manager, Role.guide))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
HandOverRole = Annotated[Principal, Depends(require(Role.operator, Role.store_manager))]


def _detail(session: SessionDep, member_id: int, who: Principal) -> MemberDetail:
    member = service.get(session, member_id, principal=who)
    return MemberDetail.full(
        member, service.identities_of(session, member_id), service.tags_of(session, member_id), who
    )


@router.post("/members", response_model=EnrolResponse, status_code=201)
def enrol(body: MemberEnrol, session: SessionDep, who: Enroller, response: Response) -> object:
    """Enrol a member, or link new identities to the member a phone or unionid names."""
    draft = service.EnrolDraft(
        identities=[(i.channel.value, i.external_id) for i in body.identities],
        **body.model_dump(exclude={"identities", "join_channel"}),
        join_channel=body.join_channel.value,
    )
    if who.role is Role.guide:
        draft.guide_id = draft.guide_id or who.staff_id
    if who.role in (Role.guide, Role.store_manager) and who.store_id:
        draft.store_id = draft.store_id or who.store_id
    result = service.enrol(session, draft)
    member = service.get(session, result.member_id)
    if not result.created:
        response.status_code = 200
        if not service.in_scope(who, member):
            # Raising rolls back the identities this call linked: a guide may not attach
            # ids to, or read, a member outside their book.
            raise Conflict(
                "this person is already a member, looked after outside your store or book; "
                "ask headquarters to hand the member over",
                field="phone",
                code="member_out_of_scope",
            )
    return EnrolResponse(
        created=result.created,
        member=MemberDetail.full(
            member,
            service.identities_of(session, member.id),
            service.tags_of(session, member.id),
            who,
        ),
    )


@router.get("/members", response_model=MemberPage)
def search(
    session: SessionDep,
    who: AnyRole,
    phone: str | None = None,
    member_no: str | None = None,
    name: Annotated[str | None, Query(description="prefix of the name")] = None,
    tag: str | None = None,
    guide_id: int | None = None,
    store_id: int | None = None,
    status: str | None = None,
    after_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MemberPage:
    members = service.search(
        session,
        principal=who,
        phone=phone,
        member_no=member_no,
        name=name,
        tag=tag,
        guide_id=guide_id,
        store_id=store_id,
        status=status,
        after_id=after_id,
        limit=limit,
    )
    return MemberPage(
        items=[MemberRead.of(m, who) for m in members],
        next_after_id=members[-1].id if len(members) == limit else None,
    )


@router.get("/members/{member_id}", response_model=MemberDetail)
def read(member_id: int, session: SessionDep, who: AnyRole) -> MemberDetail:
    return _detail(session, member_id, who)


@router.patch("/members/{member_id}", response_model=MemberDetail)
def update(member_id: int, body: MemberUpdate, session: SessionDep, who: Editor) -> object:
    changes = body.model_dump(exclude_unset=True)
    service.update(session, member_id, changes, principal=who)
    return _detail(session, member_id, who)


@router.post("/members/{member_id}/identities", response_model=IdentityRead, status_code=201)
def add_identity(member_id: int, body: Identity, session: SessionDep, who: Editor) -> object:
    return service.add_identity(
        session, member_id, body.channel.value, body.external_id, principal=who
    )


@router.post("/members/{member_id}/tags", response_model=list[TagRead])
def add_tags(member_id: int, body: TagsAdd, session: SessionDep, who: Editor) -> object:
    return service.add_tags(session, member_id, body.tags, principal=who)


@router.delete("/members/{member_id}/tags/{tag}", status_code=204)
def remove_tag(member_id: int, tag: str, session: SessionDep, who: Editor) -> Response:
    service.remove_tag(session, member_id, tag, principal=who)
    return Response(status_code=204)


@router.post("/members/{member_id}/status", response_model=MemberRead)
def set_status(member_id: int, body: StatusChange, session: SessionDep, who: Operator) -> object:
    member = service.set_status(session, member_id, body.status, reason=body.reason, principal=who)
    return MemberRead.of(member, who)


@router.post("/merges", response_model=MergeRead, status_code=201)
def merge(body: MergeRequest, session: SessionDep, who: Operator) -> object:
    """Merge two members: identities, orders and ledgers move to the survivor."""
    return service.merge(
        session, body.from_member_id, body.into_member_id, reason=body.reason, principal=who
    )


@router.post("/merges/{merge_id}/undo", response_model=MergeRead)
def unmerge(merge_id: int, session: SessionDep, who: Operator) -> object:
    """Unmerge: put back exactly what the merge moved."""
    return service.unmerge(session, merge_id, principal=who)


@router.post("/guides/hand-over", response_model=HandOverResult)
def hand_over(body: HandOver, session: SessionDep, who: HandOverRole) -> HandOverResult:
    """Move all of one guide's members to another (a guide leaves; members stay with the brand)."""
    moved = service.hand_over(
        session, body.from_guide_id, body.to_guide_id, principal=who, reason=body.reason
    )
    return HandOverResult(
        from_guide_id=body.from_guide_id, to_guide_id=body.to_guide_id, members_moved=moved
    )


@router.post("/qr-scenes", status_code=201)
def create_scene(body: SceneCreate, session: SessionDep, who: Operator) -> dict[str, object]:
    """A QR code's scene parameter and the tags members who join through it get."""
    scene = service.create_scene(
        session, body.code, body.tags, description=body.description, store_id=body.store_id
    )
    audit.record(
        session,
        actor=who.actor,
        action="qr_scene.save",
        target_type="qr_scene",
        target_id=scene.code,
        detail=body.model_dump(mode="json"),
    )
    return {"code": scene.code, "tags": scene.tags}
