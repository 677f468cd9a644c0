"""Programme versions on the database: apply, in force at an instant, history, diff."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core import clock
from siyu.core.audit import AuditEntry
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.programme import service


def test_apply_stores_a_version_effective_now_and_audits_it(
    session: Session, doc: dict[str, Any]
) -> None:
    applied = service.apply(session, doc, author="ops", note="launch")
    assert applied.created
    version = applied.version
    assert version.effective_from == clock.now() and version.author == "ops"
    assert service.in_force(session).id == version.id  # type: ignore[union-attr]
    assert service.programme_at(session, clock.now()).level("V1").name == "新手妈妈"
    [entry] = session.scalars(select(AuditEntry)).all()
    assert entry.action == "programme.apply" and entry.target_id == str(version.id)


def test_the_same_document_again_is_a_no_op(session: Session, doc: dict[str, Any]) -> None:
    first = service.apply(session, doc, author="ops").version
    again = service.apply(session, doc, author="someone else")
    assert not again.created and again.version.id == first.id
    assert len(service.history(session)) == 1


def test_the_version_in_force_follows_the_event_time(
    session: Session, doc: dict[str, Any], fixed_clock: clock.FixedClock
) -> None:
    # given V1 now and a stricter ladder from next month
    start = clock.now()
    v1 = service.apply(session, doc, author="ops").version
    doc["tiers"]["levels"][1]["threshold"] = 800
    later = start + timedelta(days=30)
    v2 = service.apply(session, doc, author="ops", effective_from=later).version
    # then each instant sees its own rules, before and after the change
    assert service.in_force(session, start - timedelta(seconds=1)) is None
    assert service.in_force(session, start).id == v1.id  # type: ignore[union-attr]
    assert service.in_force(session, later - timedelta(microseconds=1)).id == v1.id  # type: ignore[union-attr]
    assert service.in_force(session, later).id == v2.id  # type: ignore[union-attr]
    assert service.programme_at(session, later).level("V2").threshold == 800
    assert [v.id for v in service.history(session)] == [v2.id, v1.id]
    with pytest.raises(NotFound):
        service.require_in_force(session, start - timedelta(days=1))


def test_backdating_needs_to_be_asked_for(session: Session, doc: dict[str, Any]) -> None:
    service.apply(session, doc, author="ops")
    doc["growth"]["signup_bonus"] = 200
    earlier = clock.now() - timedelta(days=1)
    with pytest.raises(Conflict) as caught:
        service.apply(session, doc, author="ops", effective_from=earlier)
    assert caught.value.code == "programme_backdated"
    applied = service.apply(session, doc, author="ops", effective_from=earlier, backdate=True)
    assert applied.created
    assert service.in_force(session, earlier).id == applied.version.id  # type: ignore[union-attr]


def test_invalid_documents_are_refused_with_every_problem(
    session: Session, doc: dict[str, Any]
) -> None:
    doc["tiers"]["levels"][3]["threshold"] = 1
    doc["points"]["earn"]["excluded_categories"] = ["家电"]
    with pytest.raises(InvalidInput) as caught:
        service.apply(session, doc, author="ops")
    assert caught.value.code == "invalid_programme"
    assert len(caught.value.details) == 3  # threshold, retention above it, category
    assert service.history(session) == []


def test_diff_against_the_version_in_force(session: Session, doc: dict[str, Any]) -> None:
    first = service.diff_against_in_force(session, doc)
    assert first.against is None and len(first.changes) > 50
    service.apply(session, doc, author="ops")
    doc["points"]["frozen_days"] = 15
    result = service.diff_against_in_force(session, doc)
    assert [(c.path, c.old, c.new) for c in result.changes] == [("points.frozen_days", 7, 15)]


def test_timeline_finds_the_version_in_force_at_each_instant(
    session: Session, doc: dict[str, Any]
) -> None:
    from siyu.programme.service import Timeline

    first = copy.deepcopy(doc)
    second = copy.deepcopy(doc)
    second["growth"]["per_yuan"] = 2
    t1 = clock.now() - timedelta(days=700)
    t2 = clock.now() - timedelta(days=300)
    service.apply(session, first, author="t", effective_from=t1, backdate=True)
    service.apply(session, second, author="t", effective_from=t2, backdate=True)
    timeline = Timeline(session)
    assert timeline.at(t1 - timedelta(seconds=1)) is None
    assert timeline.at(t1).growth.per_yuan == 1  # type: ignore[union-attr]
    assert timeline.at(t2 - timedelta(seconds=1)).growth.per_yuan == 1  # type: ignore[union-attr]
    assert timeline.at(t2).growth.per_yuan == 2  # type: ignore[union-attr]
    assert timeline.version_id_at(t2) != timeline.version_id_at(t1)
