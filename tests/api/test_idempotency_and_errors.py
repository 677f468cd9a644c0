"""Idempotency keys and the error format, over HTTP."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from siyu.core.audit import AuditEntry
from siyu.core.db import Database
from siyu.members.models import Member

Headers = dict[str, str]


def test_same_key_same_body_returns_the_first_response(
    app_client: TestClient, admin: Headers, clean_db: Database
) -> None:
    headers = {**admin, "Idempotency-Key": "enrol-1"}
    first = app_client.post("/members", json={"phone": "13800138000"}, headers=headers)
    second = app_client.post("/members", json={"phone": "13800138000"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers.get("idempotent-replayed") == "true"
    with clean_db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(Member)) == 1


def test_same_key_other_body_is_409(app_client: TestClient, admin: Headers) -> None:
    headers = {**admin, "Idempotency-Key": "enrol-2"}
    app_client.post("/members", json={"phone": "13800138000"}, headers=headers)
    other = app_client.post("/members", json={"phone": "13900000000"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_keys_are_scoped_to_the_api_key(app_client: TestClient, make_key) -> None:
    a = {**make_key("operator"), "Idempotency-Key": "k"}
    b = {**make_key("operator"), "Idempotency-Key": "k"}
    assert app_client.post("/members", json={"phone": "13800138000"}, headers=a).status_code == 201
    assert app_client.post("/members", json={"phone": "13900000000"}, headers=b).status_code == 201


def test_key_creation_is_admin_only_and_audited(
    app_client: TestClient, admin: Headers, make_key, clean_db: Database
) -> None:
    created = app_client.post("/keys", json={"name": "pos", "role": "service"}, headers=admin)
    assert created.status_code == 201
    secret = created.json()["key"]
    assert app_client.get("/members", headers={"Authorization": f"Bearer {secret}"}).is_success
    denied = app_client.post(
        "/keys", json={"name": "x", "role": "admin"}, headers=make_key("operator")
    )
    assert denied.status_code == 403
    bad_role = app_client.post("/keys", json={"name": "x", "role": "king"}, headers=admin)
    assert bad_role.status_code == 422 and bad_role.json()["error"]["field"] == "role"
    with clean_db.unit_of_work() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "key.create")
            )
            == 1
        )


def test_health_and_openapi(app_client: TestClient) -> None:
    assert app_client.get("/health").json()["status"] == "ok"
    paths = app_client.get("/openapi.json").json()["paths"]
    assert {"/members", "/orders", "/orders:batch", "/refunds", "/merges"} <= set(paths)


def test_a_replayed_204_has_no_body(app_client: TestClient, admin: Headers) -> None:
    member = app_client.post(
        "/members", json={"phone": "13800138000", "tags": ["x"]}, headers=admin
    ).json()["member"]["id"]
    headers = {**admin, "Idempotency-Key": "untag-1"}
    first = app_client.delete(f"/members/{member}/tags/x", headers=headers)
    again = app_client.delete(f"/members/{member}/tags/x", headers=headers)
    assert first.status_code == again.status_code == 204
    assert again.content == b""
