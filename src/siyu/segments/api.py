"""Segment and tag-rule routes. Admins, operators and analysts use them; guides and store
managers see no segments (a segment spans the whole brand's members).

Counts, samples and exports answer from the member profile snapshot by default, with the
time its data is as of; ``?source=live`` reads the live database instead (slower)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from siyu.api.deps import SessionDep, require
from siyu.core import clock
from siyu.core.auth import Principal, Role
from siyu.segments import profile as profiles
from siyu.segments import rules, service, tags
from siyu.segments.schemas import (
    CatalogueRead,
    CountRead,
    FieldRead,
    MemberPage,
    PreviewCreate,
    ProfileRead,
    RefreshRead,
    RuleOutcomeRead,
    SampleRead,
    SegmentCreate,
    SegmentRead,
    SegmentUpdate,
    SnapshotRead,
    TagRuleCreate,
    TagRuleRead,
    TagRuleUpdate,
)

router = APIRouter(tags=["segments"])

Analysts = Annotated[Principal, Depends(require(Role.operator, Role.analyst))]
SourceQuery = Annotated[
    Literal["profile", "live"],
    Query(description="profile: the columnar snapshot (fast); live: the live database"),
]


def _where(request: Request, source: str = "profile") -> service.Where:
    settings = request.app.state.settings
    return service.Where(
        db=request.app.state.db,
        analytics_dir=settings.analytics_dir,
        tz=settings.timezone,
        source=source,  # type: ignore[arg-type]
    )


# --- the catalogue and the profile -------------------------------------------------------------


@router.get("/segments/fields", response_model=CatalogueRead)
def fields(_: Analysts) -> CatalogueRead:
    """Every field a condition can name, its operators and known values; the behaviours."""
    return CatalogueRead(
        fields=[FieldRead.of(f, rules.OPERATORS[f.kind]) for f in rules.FIELDS.values()],
        behaviours=rules.BEHAVIOURS,
    )


@router.get("/segments/profile", response_model=ProfileRead)
def profile_info(request: Request, _: Analysts) -> ProfileRead:
    """The member profile snapshot counts read: when its data is as of, how big it is."""
    where = _where(request)
    cursor, info = profiles.readers.get(where.db, where.analytics_dir)
    cursor.close()
    return ProfileRead.of(info)


@router.post("/segments/profile/refresh", response_model=RefreshRead)
def refresh(request: Request, _: Analysts) -> RefreshRead:
    """Rebuild the profile snapshot and recompute rule tags now (what the nightly job does)."""
    where = _where(request)
    done = tags.refresh(where.db, where.analytics_dir, tz=where.tz)
    return RefreshRead(
        profile=ProfileRead.of(done.profile),
        rules=[RuleOutcomeRead(**r.__dict__) for r in done.rules],
    )


@router.post("/segments/preview", response_model=SampleRead)
def preview(
    body: PreviewCreate, request: Request, session: SessionDep, who: Analysts
) -> SampleRead:
    """Count (and optionally list a few members of) a tree that is not saved: the console's
    live count as conditions are edited."""
    node = service.parse(session, body.tree)
    found = service.sample(
        session, _where(request, body.source), node, size=body.sample, principal=who
    )
    return SampleRead.of(found)


# --- saved segments -----------------------------------------------------------------------------


@router.get("/segments", response_model=list[SegmentRead])
def list_segments(session: SessionDep, _: Analysts) -> list[SegmentRead]:
    return [SegmentRead.of(s) for s in service.list_segments(session)]


@router.post("/segments", response_model=SegmentRead, status_code=201)
def create(body: SegmentCreate, session: SessionDep, who: Analysts) -> SegmentRead:
    return SegmentRead.of(
        service.create(
            session, name=body.name, tree=body.tree, description=body.description, principal=who
        )
    )


@router.get("/segments/{segment_id}", response_model=SegmentRead)
def read(segment_id: int, session: SessionDep, _: Analysts) -> SegmentRead:
    return SegmentRead.of(service.get(session, segment_id))


@router.patch("/segments/{segment_id}", response_model=SegmentRead)
def update(segment_id: int, body: SegmentUpdate, session: SessionDep, who: Analysts) -> SegmentRead:
    changes = body.model_dump(exclude_unset=True)
    return SegmentRead.of(service.update(session, segment_id, principal=who, **changes))


@router.delete("/segments/{segment_id}", status_code=204)
def delete(segment_id: int, session: SessionDep, who: Analysts) -> Response:
    service.remove(session, segment_id, principal=who)
    return Response(status_code=204)


@router.get("/segments/{segment_id}/count", response_model=CountRead)
def count(
    segment_id: int,
    request: Request,
    session: SessionDep,
    _: Analysts,
    source: SourceQuery = "profile",
) -> CountRead:
    node = service.parse(session, service.get(session, segment_id).tree)
    return CountRead.of(service.count(_where(request, source), node))


@router.get("/segments/{segment_id}/sample", response_model=SampleRead)
def sample(
    segment_id: int,
    request: Request,
    session: SessionDep,
    who: Analysts,
    size: Annotated[int, Query(ge=1, le=200)] = 20,
    source: SourceQuery = "profile",
) -> SampleRead:
    node = service.parse(session, service.get(session, segment_id).tree)
    return SampleRead.of(
        service.sample(session, _where(request, source), node, size=size, principal=who)
    )


@router.get("/segments/{segment_id}/export")
def export(
    segment_id: int,
    request: Request,
    session: SessionDep,
    _: Analysts,
    format: Annotated[Literal["csv", "parquet"], Query()] = "csv",
    source: SourceQuery = "profile",
) -> StreamingResponse:
    """Every member of the segment as CSV or Parquet, streamed (no contact data)."""
    segment = service.get(session, segment_id)
    node = service.parse(session, segment.tree)
    stamp = clock.now().strftime("%Y%m%d%H%M")
    media = "text/csv; charset=utf-8" if format == "csv" else "application/vnd.apache.parquet"
    return StreamingResponse(
        service.export_stream(_where(request, source), node, format),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="segment-{segment.id}-{stamp}.{format}"'
        },
    )


@router.post("/segments/{segment_id}/snapshots", response_model=SnapshotRead, status_code=201)
def take_snapshot(
    segment_id: int,
    request: Request,
    session: SessionDep,
    who: Analysts,
    source: SourceQuery = "profile",
) -> SnapshotRead:
    """Freeze the segment's members now (for a campaign): the list and its time."""
    return SnapshotRead.of(
        service.take_snapshot(session, _where(request, source), segment_id, principal=who)
    )


@router.get("/segments/{segment_id}/snapshots", response_model=list[SnapshotRead])
def list_snapshots(segment_id: int, session: SessionDep, _: Analysts) -> list[SnapshotRead]:
    return [SnapshotRead.of(s) for s in service.snapshots(session, segment_id)]


@router.get("/segments/{segment_id}/snapshots/{snapshot_id}", response_model=SnapshotRead)
def read_snapshot(
    segment_id: int, snapshot_id: int, session: SessionDep, _: Analysts
) -> SnapshotRead:
    return SnapshotRead.of(service.get_snapshot(session, segment_id, snapshot_id))


@router.get("/segments/{segment_id}/snapshots/{snapshot_id}/members", response_model=MemberPage)
def snapshot_members(
    segment_id: int,
    snapshot_id: int,
    session: SessionDep,
    _: Analysts,
    after: Annotated[int, Query(ge=0, description="the last id of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> MemberPage:
    service.get_snapshot(session, segment_id, snapshot_id)
    ids = service.snapshot_members(session, snapshot_id, after=after, limit=limit)
    return MemberPage(member_ids=ids, next_after=ids[-1] if len(ids) == limit else None)


# --- tag rules ------------------------------------------------------------------------------------


@router.get("/tags/rules", response_model=list[TagRuleRead], tags=["tags"])
def list_rules(session: SessionDep, _: Analysts) -> list[TagRuleRead]:
    return [TagRuleRead.of(r) for r in tags.list_rules(session)]


@router.post("/tags/rules", response_model=TagRuleRead, status_code=201, tags=["tags"])
def create_rule(body: TagRuleCreate, session: SessionDep, who: Analysts) -> TagRuleRead:
    """A tag members carry while they meet the tree; computed by the next refresh."""
    return TagRuleRead.of(
        tags.create_rule(
            session, name=body.name, tree=body.tree, description=body.description, principal=who
        )
    )


@router.get("/tags/rules/{rule_id}", response_model=TagRuleRead, tags=["tags"])
def read_rule(rule_id: int, session: SessionDep, _: Analysts) -> TagRuleRead:
    return TagRuleRead.of(tags.get_rule(session, rule_id))


@router.patch("/tags/rules/{rule_id}", response_model=TagRuleRead, tags=["tags"])
def update_rule(
    rule_id: int, body: TagRuleUpdate, session: SessionDep, who: Analysts
) -> TagRuleRead:
    changes = body.model_dump(exclude_unset=True)
    return TagRuleRead.of(tags.update_rule(session, rule_id, principal=who, **changes))


@router.delete("/tags/rules/{rule_id}", status_code=204, tags=["tags"])
def delete_rule(rule_id: int, session: SessionDep, who: Analysts) -> Response:
    tags.remove_rule(session, rule_id, principal=who)
    return Response(status_code=204)


@router.get("/tags/rules/{rule_id}/members", response_model=MemberPage, tags=["tags"])
def rule_members(
    rule_id: int,
    session: SessionDep,
    _: Analysts,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> MemberPage:
    tags.get_rule(session, rule_id)
    ids = tags.members_of(session, rule_id, after=after, limit=limit)
    return MemberPage(member_ids=ids, next_after=ids[-1] if len(ids) == limit else None)
