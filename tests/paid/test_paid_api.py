"""Routes and commands of paid membership."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from siyu import cli
from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.members import service as members
from siyu.members.service import EnrolDraft

PAID_AT = "2026-11-23T04:00:00Z"


@pytest.fixture
def member(clean_db: Database, programme_in_force: None) -> int:
    with clean_db.unit_of_work() as s:
        return members.enrol(s, EnrolDraft(phone="13800138000")).member_id


def test_callbacks_and_member_routes(
    app_client: TestClient, make_key: Callable[..., dict[str, str]], member: int
) -> None:
    provider, operator = make_key(Role.service), make_key(Role.operator)
    body = {
        "txn_id": "T1",
        "member_id": member,
        "plan_code": "super",
        "amount_fen": 19_900,
        "paid_at": PAID_AT,
    }
    assert (
        app_client.post("/paid/callbacks/purchase", json=body, headers=operator).status_code == 403
    )
    first = app_client.post("/paid/callbacks/purchase", json=body, headers=provider)
    assert first.status_code == 201, first.text
    assert first.json()["subscription"]["current_period_end"].startswith("2027-11-23")
    assert (
        app_client.post("/paid/callbacks/purchase", json=body, headers=provider).status_code == 200
    )
    clash = app_client.post(
        "/paid/callbacks/purchase", json={**body, "amount_fen": 100}, headers=provider
    )
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "txn_conflict"
    wrong = app_client.post(
        "/paid/callbacks/purchase",
        json={**body, "txn_id": "T2", "amount_fen": 100},
        headers=provider,
    )
    assert wrong.status_code == 422 and "199 yuan" in wrong.json()["error"]["message"]
    unknown = app_client.post(
        "/paid/callbacks/refund",
        json={"txn_id": "F1", "payment_txn_id": "nope", "amount_fen": 1, "refunded_at": PAID_AT},
        headers=provider,
    )
    assert unknown.status_code == 404

    off = app_client.post(
        f"/members/{member}/subscription/auto-renew", json={"auto_renew": False}, headers=operator
    )
    assert off.status_code == 200 and off.json()["auto_renew"] is False
    cancelled = app_client.post(
        f"/members/{member}/subscription/cancel", json={"reason": "moving"}, headers=operator
    )
    assert cancelled.json()["state"] == "cancelled"
    read = app_client.get(f"/members/{member}/subscription", headers=operator).json()
    assert (read["plan_code"], read["price_fen"], read["state"]) == ("super", 19_900, "cancelled")
    plans = app_client.get("/paid/plans", headers=operator).json()
    assert plans[0]["code"] == "super" and plans[0]["trial_days"] == 7


def test_trial_route(
    app_client: TestClient, make_key: Callable[..., dict[str, str]], member: int
) -> None:
    desk = make_key(Role.service)
    url = f"/members/{member}/subscription/trial"
    assert app_client.post(url, json={"plan_code": "super"}, headers=desk).status_code == 201
    again = app_client.post(url, json={"plan_code": "super"}, headers=desk)
    assert again.status_code == 409 and "once per person" in again.json()["error"]["message"]
    missing = app_client.get("/members/999/subscription", headers=desk)
    assert missing.status_code == 404


@pytest.fixture
def runner(clean_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_plans_and_show(runner: CliRunner, clean_db: Database, member: int) -> None:
    from siyu.paid import service

    with clean_db.unit_of_work() as s:
        service.start_trial(s, member, "super")
    plans = runner.invoke(cli.app, ["paid", "plans"])
    assert plans.exit_code == 0 and "超级会员" in plans.output and "19900" in plans.output
    shown = runner.invoke(cli.app, ["paid", "show", "13800138000"])
    assert shown.exit_code == 0 and "trial" in shown.output


def test_rewards_for_paid_members_through_the_api_and_cli(
    app_client: TestClient,
    make_key: Callable[..., dict[str, str]],
    member: int,
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich tables unwrapped
    operator, provider = make_key(Role.operator), make_key(Role.service)
    body = {"code": "VIP", "name": "超级会员专享礼", "kind": "gift", "points_price": 0}
    created = app_client.post(
        "/rewards", json={**body, "paid_only": True, "paid_plans": ["super"]}, headers=operator
    )
    assert created.status_code == 201, created.text
    assert (created.json()["paid_only"], created.json()["paid_plans"]) == (True, ["super"])
    bad = app_client.post(
        "/rewards", json={**body, "code": "BAD", "paid_plans": ["gold"]}, headers=operator
    )
    assert bad.status_code == 422 and "set paid_only" in bad.text and "'gold'" in bad.text
    assert app_client.get(f"/members/{member}/mall", headers=operator).json()["items"] == []
    reward_id = created.json()["id"]
    taken = app_client.post(
        f"/members/{member}/mall/redemptions",
        json={"reward_id": reward_id, "key": "k1"},
        headers=provider,
    )
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "reward_paid_only"
    paid = {
        "txn_id": "T1",
        "member_id": member,
        "plan_code": "super",
        "amount_fen": 19_900,
        "paid_at": PAID_AT,
    }
    assert app_client.post("/paid/callbacks/purchase", json=paid, headers=provider).is_success
    items = app_client.get(f"/members/{member}/mall", headers=operator).json()["items"]
    assert [(i["reward"]["code"], i["exclusive"]) for i in items] == [("VIP", True)]

    listed = runner.invoke(cli.app, ["benefits", "rewards", "--paid-only"])
    assert listed.exit_code == 0, listed.output
    assert "VIP" in listed.output and "super" in listed.output
