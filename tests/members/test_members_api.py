"""Members over HTTP: enrol, OneID, search, roles, scope and masking."""

from __future__ import annotations

from fastapi.testclient import TestClient

from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.stores import service as stores

Headers = dict[str, str]


def test_enrol_then_link_by_phone(app_client: TestClient, admin: Headers) -> None:
    first = app_client.post(
        "/members", json={"phone": "13800138000", "name": "王芳"}, headers=admin
    )
    assert first.status_code == 201
    assert first.json()["created"] is True
    member = first.json()["member"]
    assert len(member["member_no"]) == 10

    again = app_client.post(
        "/members",
        json={
            "phone": "13800138000",
            "identities": [{"channel": "douyin", "external_id": "dy_42"}],
            "join_channel": "douyin",
        },
        headers=admin,
    )
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["member"]["id"] == member["id"]
    channels = {i["channel"] for i in again.json()["member"]["identities"]}
    assert channels == {"phone", "douyin"}


def test_bad_enrolment_names_the_field(app_client: TestClient, admin: Headers) -> None:
    bad_phone = app_client.post("/members", json={"phone": "12345"}, headers=admin)
    assert bad_phone.status_code == 422
    assert bad_phone.json()["error"]["field"] == "phone"

    wrong_type = app_client.post(
        "/members", json={"phone": "13800138000", "birthday": "yesterday"}, headers=admin
    )
    assert wrong_type.status_code == 422
    assert wrong_type.json()["error"]["field"] == "birthday"

    no_identity = app_client.post("/members", json={"name": "无名"}, headers=admin)
    assert no_identity.status_code == 422
    assert "identity" in no_identity.json()["error"]["message"]

    unknown_store = app_client.post(
        "/members", json={"phone": "13800138000", "store_id": 404}, headers=admin
    )
    assert unknown_store.status_code == 404
    assert unknown_store.json()["error"]["field"] == "store_id"


def test_without_a_key_the_answer_says_how_to_get_one(app_client: TestClient) -> None:
    response = app_client.get("/members")
    assert response.status_code == 401
    assert "siyu keys create" in response.json()["error"]["message"]
    wrong = app_client.get("/members", headers={"Authorization": "Bearer sk_nope"})
    assert wrong.status_code == 401


def test_guides_see_only_their_members_with_masked_phones(
    app_client: TestClient, clean_db: Database, make_key, admin: Headers
) -> None:
    with clean_db.unit_of_work() as s:
        store = stores.create_store(s, code="S1", name="上海徐汇店")
        other_store = stores.create_store(s, code="S2", name="杭州西湖店")
        g1 = stores.create_staff(s, code="G1", name="小张", role="guide", store_id=store.id)
        g2 = stores.create_staff(s, code="G2", name="小王", role="guide", store_id=store.id)
        mine = members.enrol(
            s, EnrolDraft(phone="13812345678", guide_id=g1.id, store_id=store.id)
        ).member_id
        theirs = members.enrol(
            s, EnrolDraft(phone="13900000000", guide_id=g2.id, store_id=other_store.id)
        ).member_id
    guide = make_key(Role.guide, staff_id=g1.id, store_id=store.id)
    manager = make_key(Role.store_manager, store_id=store.id)

    listed = app_client.get("/members", headers=guide).json()["items"]
    assert [m["id"] for m in listed] == [mine]
    assert listed[0]["phone"] == "138****5678"
    assert app_client.get(f"/members/{theirs}", headers=guide).status_code == 404
    detail = app_client.get(f"/members/{mine}", headers=guide).json()
    assert {i["external_id"] for i in detail["identities"]} == {"138****5678"}

    assert [m["id"] for m in app_client.get("/members", headers=manager).json()["items"]] == [mine]
    full = app_client.get(f"/members/{mine}", headers=admin).json()
    assert full["phone"] == "13812345678"


def test_roles_that_may_not_write_get_403(app_client: TestClient, make_key) -> None:
    analyst = make_key(Role.analyst)
    response = app_client.post("/members", json={"phone": "13800138000"}, headers=analyst)
    assert response.status_code == 403
    assert "analyst" in response.json()["error"]["message"]


def test_update_tags_status_merge_unmerge_and_hand_over(
    app_client: TestClient, clean_db: Database, admin: Headers
) -> None:
    with clean_db.unit_of_work() as s:
        store = stores.create_store(s, code="S1", name="上海徐汇店")
        g1 = stores.create_staff(s, code="G1", name="小张", role="guide", store_id=store.id)
        g2 = stores.create_staff(s, code="G2", name="小王", role="guide", store_id=store.id)
    a = app_client.post(
        "/members", json={"phone": "13800000001", "guide_id": g1.id}, headers=admin
    ).json()["member"]["id"]
    b = app_client.post(
        "/members",
        json={"identities": [{"channel": "tmall", "external_id": "tm_1"}], "guide_id": g1.id},
        headers=admin,
    ).json()["member"]["id"]

    patched = app_client.patch(
        f"/members/{a}", json={"name": "赵敏", "consent_sms": True}, headers=admin
    )
    assert patched.status_code == 200
    assert patched.json()["consent"]["sms"] is True

    tags = app_client.post(f"/members/{a}/tags", json={"tags": ["孕期", "高潜"]}, headers=admin)
    assert {t["tag"] for t in tags.json()} == {"孕期", "高潜"}
    assert app_client.delete(f"/members/{a}/tags/孕期", headers=admin).status_code == 204
    assert app_client.get("/members", params={"tag": "高潜"}, headers=admin).json()["items"]

    frozen = app_client.post(
        f"/members/{a}/status", json={"status": "frozen", "reason": "风控核查"}, headers=admin
    )
    assert frozen.json()["status"] == "frozen"

    merge = app_client.post(
        "/merges",
        json={"from_member_id": b, "into_member_id": a, "reason": "同一人"},
        headers=admin,
    )
    assert merge.status_code == 201
    assert merge.json()["moved"]["tables"]["member_identities"]
    undo = app_client.post(f"/merges/{merge.json()['id']}/undo", headers=admin)
    assert undo.status_code == 200 and undo.json()["unmerged_at"]

    handed = app_client.post(
        "/guides/hand-over", json={"from_guide_id": g1.id, "to_guide_id": g2.id}, headers=admin
    )
    assert handed.json()["members_moved"] == 2


def test_a_guide_enrolling_someone_elses_member_links_nothing(
    app_client: TestClient, clean_db: Database, make_key
) -> None:
    with clean_db.unit_of_work() as s:
        store = stores.create_store(s, code="S1", name="上海徐汇店")
        g1 = stores.create_staff(s, code="G1", name="小张", role="guide", store_id=store.id)
        g2 = stores.create_staff(s, code="G2", name="小王", role="guide", store_id=store.id)
        theirs = members.enrol(s, EnrolDraft(phone="13900000000", guide_id=g2.id)).member_id
    guide = make_key(Role.guide, staff_id=g1.id, store_id=store.id)
    response = app_client.post(
        "/members",
        json={"phone": "13900000000", "identities": [{"channel": "jd", "external_id": "jd_1"}]},
        headers=guide,
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "member_out_of_scope"
    assert "13900000000" not in response.text
    with clean_db.unit_of_work() as s:
        assert {i.channel for i in members.identities_of(s, theirs)} == {"phone"}
