from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from siyu.core.auth import Principal
from siyu.members import rules
from siyu.members.models import Member, MemberIdentity, MemberTag
from siyu.members.rules import IdentityChannel, JoinChannel


class Identity(BaseModel):
    channel: IdentityChannel
    external_id: str = Field(min_length=1, max_length=128)


class MemberEnrol(BaseModel):
    """Enrolment from any channel. An identity that already names a member (the same
    phone, the same WeChat unionid, the same platform id) links the new identities to that
    member instead of creating a second one (OneID)."""

    phone: str | None = Field(default=None, examples=["13800138000"])
    identities: list[Identity] = Field(default_factory=list, max_length=20)
    name: str | None = Field(default=None, max_length=100)
    gender: Literal["F", "M"] | None = None
    birthday: date | None = None
    child_birthday: date | None = None
    email: str | None = Field(default=None, max_length=200)
    join_channel: JoinChannel = JoinChannel.store
    store_id: int | None = None
    guide_id: int | None = None
    referrer_id: int | None = None
    scene_code: str | None = Field(default=None, max_length=64, description="QR scene parameter")
    consent_sms: bool = False
    consent_wechat: bool = False
    consent_email: bool = False
    tags: list[str] = Field(default_factory=list, max_length=50)


class MemberUpdate(BaseModel):
    """Fields to change; the ones left out stay as they are."""

    name: str | None = Field(default=None, max_length=100)
    gender: Literal["F", "M"] | None = None
    birthday: date | None = None
    child_birthday: date | None = None
    email: str | None = Field(default=None, max_length=200)
    phone: str | None = None
    store_id: int | None = None
    guide_id: int | None = None
    consent_sms: bool | None = None
    consent_wechat: bool | None = None
    consent_email: bool | None = None


class IdentityRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    channel: str
    external_id: str
    created_at: datetime


class TagRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    tag: str
    source: str


class MemberRead(BaseModel):
    id: int
    member_no: str
    phone: str | None = Field(description="masked (138****5678) for roles that need not see it")
    name: str | None
    gender: str | None
    birthday: date | None
    child_birthday: date | None
    joined_at: datetime
    join_channel: str
    store_id: int | None
    guide_id: int | None
    referrer_id: int | None
    scene_code: str | None
    status: str
    merged_into_id: int | None
    consent: dict[str, bool]
    tier_code: str | None
    points_balance: int
    growth_balance: int

    @classmethod
    def of(cls, member: Member, principal: Principal) -> MemberRead:
        phone = member.phone if principal.sees_phones else rules.mask_phone(member.phone)
        return cls(
            id=member.id,
            member_no=rules.member_no(member.id),
            phone=phone,
            name=member.name,
            gender=member.gender,
            birthday=member.birthday,
            child_birthday=member.child_birthday,
            joined_at=member.joined_at,
            join_channel=member.join_channel,
            store_id=member.store_id,
            guide_id=member.guide_id,
            referrer_id=member.referrer_id,
            scene_code=member.scene_code,
            status=member.status,
            merged_into_id=member.merged_into_id,
            consent={
                "sms": member.consent_sms,
                "wechat": member.consent_wechat,
                "email": member.consent_email,
            },
            tier_code=member.tier_code,
            points_balance=member.points_balance,
            growth_balance=member.growth_balance,
        )


class MemberDetail(MemberRead):
    identities: list[IdentityRead]
    tags: list[TagRead]

    @classmethod
    def full(
        cls,
        member: Member,
        identities: list[MemberIdentity],
        tags: list[MemberTag],
        principal: Principal,
    ) -> MemberDetail:
        base = MemberRead.of(member, principal).model_dump()
        idents = []
        for i in identities:
            ext = i.external_id
            if i.channel == IdentityChannel.phone and not principal.sees_phones:
                ext = rules.mask_phone(ext) or ext
            idents.append(IdentityRead(channel=i.channel, external_id=ext, created_at=i.created_at))
        return cls(
            **base,
            identities=idents,
            tags=[TagRead.model_validate(t) for t in tags],
        )


class EnrolResponse(BaseModel):
    created: bool = Field(description="false when the person was already a member (OneID link)")
    member: MemberDetail


class MemberPage(BaseModel):
    items: list[MemberRead]
    next_after_id: int | None = Field(description="pass as after_id for the next page")


class TagsAdd(BaseModel):
    tags: list[str] = Field(min_length=1, max_length=50)


class StatusChange(BaseModel):
    status: Literal["active", "frozen", "closed"]
    reason: str = Field(min_length=1, max_length=500)


class MergeRequest(BaseModel):
    from_member_id: int
    into_member_id: int = Field(description="the surviving member")
    reason: str = Field(min_length=1, max_length=500)


class MergeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    from_member_id: int
    into_member_id: int
    reason: str
    actor: str
    moved: dict[str, object]
    merged_at: datetime
    unmerged_at: datetime | None


class HandOver(BaseModel):
    from_guide_id: int
    to_guide_id: int
    reason: str = Field(default="", max_length=500)


class HandOverResult(BaseModel):
    from_guide_id: int
    to_guide_id: int
    members_moved: int


class SceneCreate(BaseModel):
    code: str = Field(min_length=1, max_length=64)
    tags: list[str] = Field(min_length=1, max_length=20)
    description: str | None = Field(default=None, max_length=200)
    store_id: int | None = None
