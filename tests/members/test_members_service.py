"""Members, OneID, merge and hand-over through the service layer, on a real database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.audit import AuditEntry
from siyu.core.auth import SYSTEM
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.core.outbox import OutboxMessage
from siyu.members import service
from siyu.members.models import Member, MemberIdentity
from siyu.members.service import EnrolDraft
from siyu.stores import service as stores


def test_enrol_creates_a_member_with_phone_identity(session: Session) -> None:
    result = service.enrol(session, EnrolDraft(phone="13800138000", name="王芳"))
    assert result.created
    idents = {(i.channel, i.external_id) for i in service.identities_of(session, result.member_id)}
    assert idents == {("phone", "13800138000")}
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_a_new_identity_with_a_known_phone_links_to_that_member(session: Session) -> None:
    first = service.enrol(session, EnrolDraft(phone="13800138000", join_channel="store"))
    again = service.enrol(
        session,
        EnrolDraft(
            phone="+86 138 0013 8000",
            identities=[("tmall", "tm_889")],
            join_channel="tmall",
        ),
    )
    assert not again.created
    assert again.member_id == first.member_id
    assert again.linked_identities == (("tmall", "tm_889"),)
    assert session.scalar(select(func.count()).select_from(Member)) == 1


def test_unionid_links_too(session: Session) -> None:
    first = service.enrol(session, EnrolDraft(identities=[("wechat_unionid", "u1")]))
    again = service.enrol(
        session, EnrolDraft(identities=[("wechat_unionid", "u1"), ("jd", "jd_7")])
    )
    assert again.member_id == first.member_id


def test_identities_of_two_members_are_not_silently_joined(session: Session) -> None:
    service.enrol(session, EnrolDraft(phone="13800138000"))
    service.enrol(session, EnrolDraft(identities=[("tmall", "tm_1")]))
    with pytest.raises(Conflict) as caught:
        service.enrol(session, EnrolDraft(phone="13800138000", identities=[("tmall", "tm_1")]))
    assert caught.value.code == "identities_split"


def test_the_same_person_twice_in_one_batch_is_one_member(session: Session) -> None:
    results = service.enrol_many(
        session,
        [
            EnrolDraft(phone="13900000001"),
            EnrolDraft(phone="13900000001", identities=[("douyin", "dy_1")]),
            EnrolDraft(phone="13900000002"),
        ],
    )
    assert results[0].member_id == results[1].member_id != results[2].member_id
    assert [r.created for r in results] == [True, False, True]


def test_scene_codes_tag_new_members(session: Session) -> None:
    service.create_scene(session, "fair-2026", ["孕妈", "展会"])
    configured = service.enrol(session, EnrolDraft(phone="13800000001", scene_code="fair-2026"))
    unknown = service.enrol(session, EnrolDraft(phone="13800000002", scene_code="door-7"))
    assert {t.tag for t in service.tags_of(session, configured.member_id)} == {"孕妈", "展会"}
    assert {t.tag for t in service.tags_of(session, unknown.member_id)} == {"qr:door-7"}


def test_unknown_store_or_guide_is_refused(session: Session) -> None:
    with pytest.raises(NotFound) as caught:
        service.enrol(session, EnrolDraft(phone="13800000001", store_id=999))
    assert caught.value.field == "store_id"


def test_a_member_needs_an_identity(session: Session) -> None:
    with pytest.raises(InvalidInput):
        service.enrol(session, EnrolDraft(name="nobody"))


def test_search_by_phone_member_no_name_and_tag(session: Session) -> None:
    a = service.enrol(session, EnrolDraft(phone="13800000001", name="李娜", tags=["vip"]))
    b = service.enrol(session, EnrolDraft(phone="13800000002", name="李雷"))
    from siyu.members.rules import member_no

    assert [m.id for m in service.search(session, phone="13800000001")] == [a.member_id]
    assert [m.id for m in service.search(session, member_no=member_no(b.member_id))] == [
        b.member_id
    ]
    assert {m.id for m in service.search(session, name="李")} == {a.member_id, b.member_id}
    assert [m.id for m in service.search(session, tag="vip")] == [a.member_id]
    assert service.find(session, member_no(a.member_id)).id == a.member_id
    assert service.find(session, "13800000002").id == b.member_id


def test_update_is_audited_and_consent_can_change(session: Session) -> None:
    m = service.enrol(session, EnrolDraft(phone="13800000001"))
    service.update(session, m.member_id, {"consent_sms": True, "name": "赵敏"}, principal=SYSTEM)
    member = service.get(session, m.member_id)
    assert member.consent_sms and member.name == "赵敏"
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "member.update")).one()
    assert entry.detail["after"]["name"] == "赵敏"


def test_status_changes_need_a_reason(session: Session) -> None:
    m = service.enrol(session, EnrolDraft(phone="13800000001"))
    with pytest.raises(InvalidInput):
        service.set_status(session, m.member_id, "frozen", reason=" ", principal=SYSTEM)
    service.set_status(session, m.member_id, "frozen", reason="fraud check", principal=SYSTEM)
    assert service.get(session, m.member_id).status == "frozen"


def test_an_identity_of_another_member_cannot_be_added(session: Session) -> None:
    a = service.enrol(session, EnrolDraft(phone="13800000001"))
    b = service.enrol(session, EnrolDraft(phone="13800000002"))
    with pytest.raises(Conflict) as caught:
        service.add_identity(session, a.member_id, "phone", "13800000002", principal=SYSTEM)
    assert str(b.member_id) in caught.value.message


def test_merge_moves_identities_and_tags_and_unmerge_restores_them(session: Session) -> None:
    a = service.enrol(session, EnrolDraft(phone="13800000001", tags=["store"]))
    b = service.enrol(session, EnrolDraft(identities=[("tmall", "tm_1")], tags=["online"]))
    record = service.merge(
        session, b.member_id, a.member_id, reason="same person", principal=SYSTEM
    )
    assert {i.channel for i in service.identities_of(session, a.member_id)} == {"phone", "tmall"}
    assert {t.tag for t in service.tags_of(session, a.member_id)} == {"store", "online"}
    assert service.get(session, b.member_id).status == "merged"
    # an order arriving later for the tmall id now finds the survivor
    assert service.lookup_identities(session, [("tmall", "tm_1")]) == {
        ("tmall", "tm_1"): a.member_id
    }

    service.unmerge(session, record.id, principal=SYSTEM)
    assert {i.channel for i in service.identities_of(session, a.member_id)} == {"phone"}
    assert {i.channel for i in service.identities_of(session, b.member_id)} == {"tmall"}
    assert {t.tag for t in service.tags_of(session, a.member_id)} == {"store"}
    assert service.get(session, b.member_id).status == "active"
    with pytest.raises(Conflict):
        service.unmerge(session, record.id, principal=SYSTEM)


def test_merging_a_merged_member_is_refused(session: Session) -> None:
    a = service.enrol(session, EnrolDraft(phone="13800000001"))
    b = service.enrol(session, EnrolDraft(phone="13800000002"))
    c = service.enrol(session, EnrolDraft(phone="13800000003"))
    service.merge(session, b.member_id, a.member_id, reason="dup", principal=SYSTEM)
    with pytest.raises(Conflict):
        service.merge(session, b.member_id, c.member_id, reason="dup", principal=SYSTEM)


def test_hand_over_moves_every_member_of_a_guide(session: Session) -> None:
    store = stores.create_store(session, code="SH01", name="上海徐汇店")
    leaving = stores.create_staff(session, code="G1", name="小张", role="guide", store_id=store.id)
    taking = stores.create_staff(session, code="G2", name="小李", role="guide", store_id=store.id)
    service.enrol_many(
        session,
        [EnrolDraft(phone=f"1380000000{i}", guide_id=leaving.id) for i in range(5)],
    )
    moved = service.hand_over(session, leaving.id, taking.id, principal=SYSTEM)
    assert moved == 5
    assert (
        session.scalar(select(func.count()).select_from(Member).where(Member.guide_id == taking.id))
        == 5
    )


def test_identity_uniqueness_is_enforced_by_the_database(session: Session) -> None:
    m = service.enrol(session, EnrolDraft(phone="13800000001"))
    from sqlalchemy.exc import IntegrityError

    from siyu.core import clock

    with pytest.raises(IntegrityError), session.begin_nested():
        session.add(
            MemberIdentity(
                member_id=m.member_id,
                channel="phone",
                external_id="13800000001",
                created_at=clock.now(),
            )
        )
        session.flush()
