"""API shapes for segments and tag rules. Trees are plain JSON, checked by
``segments.rules`` (so a console gets every problem with its path, not a schema error)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from siyu.segments.models import Segment, SegmentSnapshot, TagRule
from siyu.segments.profile import ProfileInfo
from siyu.segments.rules import FieldSpec
from siyu.segments.service import Counted, Sample

Tree = dict[str, Any]
TREE_EXAMPLE = {
    "and": [
        {"field": "tier", "op": "in", "value": ["V3", "V4"]},
        {"behaviour": "bought_category", "category": "奶粉", "at_least": 2, "days": 90},
        {"not": {"tag": "已流失"}},
    ]
}


class SegmentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=500)
    tree: Tree = Field(examples=[TREE_EXAMPLE])


class SegmentUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    tree: Tree | None = None


class SegmentRead(BaseModel):
    id: int
    name: str
    description: str
    tree: Tree
    author: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, s: Segment) -> SegmentRead:
        return cls(
            id=s.id,
            name=s.name,
            description=s.description,
            tree=s.tree,
            author=s.author,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )


class CountRead(BaseModel):
    members: int
    source: Literal["profile", "live"]
    data_as_of: datetime = Field(description="the data the count was made on is as of this time")
    seconds: float

    @classmethod
    def of(cls, c: Counted) -> CountRead:
        return cls(
            members=c.members,
            source=c.source,
            data_as_of=c.data_as_of,
            seconds=round(c.seconds, 4),
        )


class SampleMember(BaseModel):
    member_id: int
    member_no: str
    name: str | None
    phone: str | None
    gender: str | None
    tier: str | None
    stage: str | None
    rfm_group: str | None
    order_count: int
    spend_fen: int
    last_order_at: datetime | None
    points_balance: int


class SampleRead(BaseModel):
    count: CountRead
    members: list[SampleMember]

    @classmethod
    def of(cls, s: Sample) -> SampleRead:
        return cls(count=CountRead.of(s.counted), members=[SampleMember(**m) for m in s.members])


class PreviewCreate(BaseModel):
    tree: Tree = Field(examples=[TREE_EXAMPLE])
    sample: int = Field(default=0, ge=0, le=200, description="members to list with the count")
    source: Literal["profile", "live"] = "profile"


class SnapshotRead(BaseModel):
    id: int
    segment_id: int
    taken_at: datetime
    data_as_of: datetime
    source: str
    member_count: int
    author: str
    tree: Tree

    @classmethod
    def of(cls, s: SegmentSnapshot) -> SnapshotRead:
        return cls(
            id=s.id,
            segment_id=s.segment_id,
            taken_at=s.taken_at,
            data_as_of=s.data_as_of,
            source=s.source,
            member_count=s.member_count,
            author=s.author,
            tree=s.tree,
        )


class MemberPage(BaseModel):
    member_ids: list[int]
    next_after: int | None = Field(description="pass as ?after= for the next page; null at the end")


class ProfileRead(BaseModel):
    data_as_of: datetime
    built_at: datetime
    seconds: float
    members: int
    purchase_lines: int

    @classmethod
    def of(cls, p: ProfileInfo) -> ProfileRead:
        return cls(
            data_as_of=p.data_as_of,
            built_at=p.built_at,
            seconds=round(p.seconds, 3),
            members=p.members,
            purchase_lines=p.purchases,
        )


class RuleOutcomeRead(BaseModel):
    rule_id: int
    name: str
    members: int
    added: int
    removed: int


class RefreshRead(BaseModel):
    profile: ProfileRead
    rules: list[RuleOutcomeRead]


class FieldRead(BaseModel):
    name: str
    kind: str
    label: str
    group: str
    operators: list[str]
    values: list[str] | None

    @classmethod
    def of(cls, f: FieldSpec, operators: tuple[str, ...]) -> FieldRead:
        return cls(
            name=f.name,
            kind=f.kind.value,
            label=f.label,
            group=f.group,
            operators=list(operators),
            values=list(f.values) if f.values else None,
        )


class CatalogueRead(BaseModel):
    fields: list[FieldRead]
    behaviours: dict[str, str]


class TagRuleCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=500)
    tree: Tree


class TagRuleUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    tree: Tree | None = None


class TagRuleRead(BaseModel):
    id: int
    name: str
    description: str
    tree: Tree
    author: str
    created_at: datetime
    updated_at: datetime
    computed_at: datetime | None
    data_as_of: datetime | None
    member_count: int | None

    @classmethod
    def of(cls, r: TagRule) -> TagRuleRead:
        return cls(
            id=r.id,
            name=r.name,
            description=r.description,
            tree=r.tree,
            author=r.author,
            created_at=r.created_at,
            updated_at=r.updated_at,
            computed_at=r.computed_at,
            data_as_of=r.data_as_of,
            member_count=r.member_count,
        )
