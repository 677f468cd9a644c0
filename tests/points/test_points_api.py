"""Points over HTTP: what members see, check-ins, events, reservations at checkout, cash off,
and operators' adjustments; roles and scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from siyu.core.auth import Role
from siyu.core.db import Database
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.points import service
from siyu.stores import service as stores

Headers = dict[str, str]


@pytest.fixture
def brand(
    clean_db: Database, apply_programme: Callable[..., None], doc: dict[str, Any]
) -> dict[str, int]:
    """The example programme, a guide's member with 1,000 points and another member."""
    apply_programme(doc)
    with clean_db.unit_of_work() as s:
        store = stores.create_store(s, code="S001", name="旗舰店")
        guide = stores.create_staff(s, code="G1", name="小李", role="guide", store_id=store.id)
        mine = members.enrol(
            s, EnrolDraft(phone="13800138000", guide_id=guide.id, store_id=store.id)
        ).member_id
        other = members.enrol(s, EnrolDraft(phone="13900000000")).member_id
        service.grant(s, mine, 1_000, fact="gift:1", reason="welcome")
    return {"store": store.id, "guide": guide.id, "member": mine, "other": other}


def test_a_member_sees_balance_expiry_history_and_lots(
    app_client: TestClient, admin: Headers, brand: dict[str, int]
) -> None:
    member = brand["member"]
    shown = app_client.get(f"/members/{member}/points", headers=admin)
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert (body["balance"], body["available"], body["frozen"], body["debt"]) == (1000, 1000, 0, 0)
    assert body["next_expiry_date"] == "2026-12-31" and body["next_expiry_points"] == 1000
    assert body["cash_value_fen"] == 1000
    history = app_client.get(f"/members/{member}/points/entries?limit=1", headers=admin).json()
    assert history["items"][0]["kind"] == "earn" and history["next_cursor"]
    more = app_client.get(
        f"/members/{member}/points/entries?cursor={history['next_cursor']}", headers=admin
    ).json()
    assert more["items"] == [] and more["next_cursor"] is None
    lots = app_client.get(f"/members/{member}/points/lots", headers=admin).json()
    assert lots[0]["remaining"] == 1000 and lots[0]["expires_on"] == "2026-12-31"


def test_guides_see_only_their_members(
    app_client: TestClient, make_key: Callable[..., Headers], brand: dict[str, int]
) -> None:
    guide = make_key(Role.guide, staff_id=brand["guide"])
    assert app_client.get(f"/members/{brand['member']}/points", headers=guide).status_code == 200
    assert app_client.get(f"/members/{brand['other']}/points", headers=guide).status_code == 404


def test_check_in_twice_the_same_day(
    app_client: TestClient, make_key: Callable[..., Headers], brand: dict[str, int]
) -> None:
    desk = make_key(Role.service)
    url = f"/members/{brand['member']}/check-ins"
    first = app_client.post(url, headers=desk)
    assert first.status_code == 201 and first.json()["points"] == 5
    again = app_client.post(url, headers=desk)
    assert again.status_code == 200 and again.json()["streak"] == 1
    state = app_client.get(url, headers=desk).json()
    assert state["checked_in_today"] and state["streak"] == 1
    analyst = make_key(Role.analyst)
    assert app_client.post(url, headers=analyst).status_code == 403


def test_events_award_within_limits(
    app_client: TestClient, admin: Headers, brand: dict[str, int]
) -> None:
    url = f"/members/{brand['member']}/points/events"
    done = app_client.post(url, json={"event": "profile_completion", "key": "p"}, headers=admin)
    assert done.status_code == 200 and done.json()["points"] == 50
    bad = app_client.post(url, json={"event": "dancing", "key": "p"}, headers=admin)
    assert bad.status_code == 422


def test_reserve_confirm_and_release_at_checkout(
    app_client: TestClient, make_key: Callable[..., Headers], brand: dict[str, int]
) -> None:
    desk = make_key(Role.service)
    member = brand["member"]
    quote = app_client.post(
        "/points/cash-off/quote",
        json={"member_id": member, "order_amount_fen": 1_500},
        headers=desk,
    ).json()
    assert (quote["points"], quote["cash_fen"]) == (700, 700)  # 50% of 15.00 yuan, steps of 100
    held = app_client.post(
        "/points/reservations",
        json={"member_id": member, "points": 700, "key": "co-1", "order_amount_fen": 1_500},
        headers=desk,
    )
    assert held.status_code == 201, held.text
    assert held.json()["status"] == "held" and held.json()["cash_fen"] == 700
    too_much = app_client.post(
        "/points/reservations",
        json={"member_id": member, "points": 400, "key": "co-2"},
        headers=desk,
    )
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "insufficient_points"
    spent = app_client.post("/points/reservations/co-1/confirm", headers=desk)
    assert spent.status_code == 200 and spent.json()["balance_after"] == 300
    app_client.post(
        "/points/reservations",
        json={"member_id": member, "points": 100, "key": "co-3"},
        headers=desk,
    )
    released = app_client.post("/points/reservations/co-3/release", headers=desk)
    assert released.json()["status"] == "released"
    assert app_client.post("/points/reservations/co-1/release", headers=desk).status_code == 409


def test_adjustments_are_for_operators_with_a_reason(
    app_client: TestClient, make_key: Callable[..., Headers], brand: dict[str, int]
) -> None:
    url = f"/members/{brand['member']}/points/adjustments"
    operator = make_key(Role.operator)
    made = app_client.post(
        url, json={"points": -100, "reason": "duplicate gift", "key": "adj-1"}, headers=operator
    )
    assert made.status_code == 201 and made.json()["balance_after"] == 900
    again = app_client.post(
        url, json={"points": -100, "reason": "duplicate gift", "key": "adj-1"}, headers=operator
    )
    assert again.status_code == 200 and again.json()["created"] is False
    service_key = make_key(Role.service)
    denied = app_client.post(
        url, json={"points": 5, "reason": "x", "key": "adj-2"}, headers=service_key
    )
    assert denied.status_code == 403
    no_reason = app_client.post(url, json={"points": 5, "key": "adj-3"}, headers=operator)
    assert no_reason.status_code == 422
