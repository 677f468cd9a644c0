"""The console and member pages over plain HTTP (no browser): login, roles and scope,
masked phones, CSRF, members' signed links, and the catalogues."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from siyu.core.db import Database
from siyu.core.errors import Conflict, InvalidInput, Unauthorized
from siyu.members import service as members
from siyu.points.models import PointsEntry
from siyu.stores import service as stores
from siyu.web import catalog, i18n, links, users

PASSWORD = "console-pass-1"


@dataclass
class Book:
    guide_id: int
    mine: int  # a member of the guide
    theirs: int  # a member of another guide
    phone: str


@pytest.fixture
def book(clean_db: Database, programme_in_force: None) -> Book:
    """Two guides of one store, a member each, and console users of every role."""
    with clean_db.unit_of_work() as s:
        store = stores.create_store(s, code="S1", name="上海徐汇店")
        g1 = stores.create_staff(s, code="G1", name="小张", role="guide", store_id=store.id)
        g2 = stores.create_staff(s, code="G2", name="小王", role="guide", store_id=store.id)
        mine = members.enrol(
            s,
            members.EnrolDraft(phone="13812345678", name="王芳", store_id=store.id, guide_id=g1.id),
        ).member_id
        theirs = members.enrol(
            s,
            members.EnrolDraft(phone="13912345678", name="李娜", store_id=store.id, guide_id=g2.id),
        ).member_id
        for role in ("admin", "operator", "analyst"):
            users.create_user(s, username=role, password=PASSWORD, role=role)
        users.create_user(s, username="guide", password=PASSWORD, role="guide", staff_id=g1.id)
        users.create_user(
            s, username="manager", password=PASSWORD, role="store_manager", store_id=store.id
        )
        return Book(g1.id, mine, theirs, "13812345678")


def log_in(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    page = client.get("/console/login")
    token = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    return client.post(
        "/console/login",
        data={"username": username, "password": password, "form_token": token},
        follow_redirects=False,
    )


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def test_pages_need_a_login(app_client: TestClient, book: Book) -> None:
    response = app_client.get("/console/members", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=/console/members"
    htmx = app_client.get("/console", headers={"HX-Request": "true"})
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"] == "/console/login"


def test_a_wrong_password_or_a_stale_form_does_not_log_in(
    app_client: TestClient, book: Book
) -> None:
    assert "用户名或密码错误" in log_in(app_client, "operator", "wrong-password").text
    stale = app_client.post(
        "/console/login",
        data={"username": "operator", "password": PASSWORD, "form_token": "forged.token"},
        follow_redirects=False,
    )
    assert stale.status_code == 200 and "siyu_console" not in stale.cookies
    response = log_in(app_client, "operator")
    assert response.status_code == 303 and response.headers["location"] == "/console"
    assert "数据概览" in app_client.get("/console").text


def test_the_language_switch_changes_every_page(app_client: TestClient, book: Book) -> None:
    log_in(app_client, "admin")
    assert "会员" in app_client.get("/console/members").text
    app_client.get("/console/lang?to=en&next=/console/members")
    page = app_client.get("/console/members")
    assert "All members" in page.text and "全部会员" not in page.text
    assert '<html lang="en">' in page.text


def test_a_guide_sees_only_their_members_and_masked_phones(
    app_client: TestClient, book: Book
) -> None:
    log_in(app_client, "guide")
    listing = app_client.get("/console/members").text
    assert "王芳" in listing and "李娜" not in listing
    assert "138****5678" in listing and book.phone not in listing
    assert app_client.get(f"/console/members/{book.mine}").status_code == 200
    other = app_client.get(f"/console/members/{book.theirs}")
    assert other.status_code == 404 and "among your members" in other.text
    assert "李娜" not in app_client.get("/console/members?q=13912345678").text
    board = app_client.get("/console").text
    assert 'data-kpi="members">1<' in board  # their own book only
    assert "品牌整体数据仅对总部角色开放" in board
    assert app_client.get("/console/stores").status_code == 200


def test_operators_see_full_phones_and_find_by_phone_or_number(
    app_client: TestClient, book: Book
) -> None:
    log_in(app_client, "operator")
    by_phone = app_client.get(f"/console/members?q={book.phone}").text
    assert book.phone in by_phone and "李娜" not in by_phone
    number = members.rules.member_no(book.theirs)
    assert "李娜" in app_client.get(f"/console/members?q={number}").text
    assert "李" in app_client.get("/console/members?q=李").text
    typo = number[:-1] + str((int(number[-1]) + 1) % 10)  # a wrong check digit
    bad = app_client.get(f"/console/members?q={typo}").text
    assert "not a valid member number" in bad


def test_adjusting_points_needs_the_csrf_token_and_the_operator_role(
    app_client: TestClient, clean_db: Database, book: Book
) -> None:
    log_in(app_client, "analyst")
    page = app_client.get(f"/console/members/{book.mine}").text
    assert 'id="adjust-points"' not in page
    refused = app_client.post(
        f"/console/members/{book.mine}/points",
        data={"points_delta": "10", "reason": "x", "csrf_token": csrf_of(page)},
    )
    assert refused.status_code == 403

    app_client.cookies.clear()
    log_in(app_client, "operator")
    page = app_client.get(f"/console/members/{book.mine}").text
    no_token = app_client.post(
        f"/console/members/{book.mine}/points", data={"points_delta": "10", "reason": "x"}
    )
    assert no_token.status_code == 403
    done = app_client.post(
        f"/console/members/{book.mine}/points",
        data={"points_delta": "250", "reason": "门店补录", "csrf_token": csrf_of(page)},
        headers={"HX-Request": "true"},
    )
    assert done.status_code == 200 and "门店补录" in done.text and 'id="points"' in done.text
    with clean_db.unit_of_work() as s:
        notes = s.scalars(select(PointsEntry.note).where(PointsEntry.member_id == book.mine))
        assert "门店补录" in list(notes)


def test_a_refused_adjustment_says_why_and_changes_nothing(
    app_client: TestClient, clean_db: Database, book: Book
) -> None:
    log_in(app_client, "operator")
    token = csrf_of(app_client.get(f"/console/members/{book.mine}").text)
    with clean_db.unit_of_work() as s:
        before = members.get(s, book.mine).points_balance
    for data in ({"points_delta": "abc", "reason": "x"}, {"points_delta": "5", "reason": " "}):
        answer = app_client.post(
            f"/console/members/{book.mine}/points",
            data={**data, "csrf_token": token},
            headers={"HX-Request": "true"},
        )
        assert answer.status_code == 200 and 'class="alert bad"' in answer.text
    with clean_db.unit_of_work() as s:
        assert members.get(s, book.mine).points_balance == before


def test_a_programme_draft_shows_problems_beside_fields_then_the_diff(
    app_client: TestClient, book: Book
) -> None:
    log_in(app_client, "operator")
    page = app_client.get("/console/programme").text
    token = csrf_of(page)
    field = "tiers.levels[2].threshold"
    bad = app_client.post(
        "/console/programme/preview", data={field: "100", "csrf_token": token}
    ).text
    assert f'data-problem-for="{field}"' in bad and 'id="diff"' not in bad
    good = app_client.post(
        "/console/programme/preview", data={field: "2500", "csrf_token": token}
    ).text
    assert 'id="diff"' in good and field in good
    document = re.search(r'name="document" value="([^"]+)"', good).group(1)  # type: ignore[union-attr]
    import html

    published = app_client.post(
        "/console/programme/publish",
        data={"document": html.unescape(document), "note": "raise V3", "csrf_token": token},
        follow_redirects=False,
    )
    assert published.status_code == 303
    assert 'value="2500"' in app_client.get("/console/programme").text


def test_a_member_link_opens_the_member_pages_and_only_them(
    app_client: TestClient, clean_db: Database, book: Book
) -> None:
    secret = app_client.app.state.settings.secret_key  # type: ignore[attr-defined]
    assert app_client.get("/m", follow_redirects=False).status_code == 401
    assert app_client.get("/m/enter?token=forged.x").status_code == 401
    with clean_db.unit_of_work() as s:
        link = links.mint(s, book.mine, secret=secret)
    entered = app_client.get(link.path, follow_redirects=False)
    assert entered.status_code == 303 and entered.headers["location"] == "/m"
    home = app_client.get("/m").text
    assert "签到" in home
    assert app_client.post("/m/check-in").status_code == 403  # no CSRF token
    token = csrf_of(home)
    checked = app_client.post(
        "/m/check-in", data={"csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert checked.status_code == 200 and "data-check-in-result" in checked.text
    assert "今日已签到" in app_client.get("/m").text
    assert app_client.get("/console", follow_redirects=False).status_code == 303


def test_the_page_link_route_mints_a_link_for_the_desk(
    app_client: TestClient, make_key: Any, book: Book
) -> None:
    minted = app_client.post(f"/members/{book.mine}/page-link?days=3", headers=make_key("service"))
    assert minted.status_code == 201 and "/m/enter?token=" in minted.json()["url"]
    refused = app_client.post(f"/members/{book.mine}/page-link", headers=make_key("analyst"))
    assert refused.status_code == 403


def test_console_accounts_are_checked(clean_db: Database, book: Book) -> None:
    with clean_db.unit_of_work() as s:
        with pytest.raises(InvalidInput) as problems:
            users.create_user(s, username="a b", password="short", role="guide")
        fields = {p["field"] for p in problems.value.details}
        assert fields == {"username", "password", "guide_id"}
        with pytest.raises(Conflict):
            users.create_user(s, username="operator", password=PASSWORD, role="operator")
        with pytest.raises(Unauthorized):
            users.log_in(s, "nobody", PASSWORD)
        guide = users.log_in(s, "guide", PASSWORD)
        principal = users.principal_of(guide)
        assert principal.staff_id == book.guide_id and principal.store_id is not None
        assert principal.actor == f"user:{guide.id}:guide"


def test_every_message_of_the_pages_has_a_chinese_translation() -> None:
    used = {m.id for m in catalog.template_catalog() if m.id}
    translations = i18n.translations("zh_CN")
    missing = sorted(m for m in used if translations.gettext(m) == m and m not in {"RFM"})
    assert missing == []


def test_operators_grant_a_tier_and_issue_a_coupon_from_the_member_page(
    app_client: TestClient, clean_db: Database, book: Book
) -> None:
    from siyu.benefits import coupons
    from siyu.core.auth import SYSTEM

    with clean_db.unit_of_work() as s:
        template, _ = coupons.create_template(
            s,
            coupons.TemplateDraft(
                code="sorry_10",
                name="致歉券 满99减10",
                kind="amount_off",
                threshold_fen=9900,
                amount_off_fen=1000,
                valid_days=30,
            ),
            principal=SYSTEM,
        )
        template_id = template.id
    log_in(app_client, "operator")
    page = app_client.get(f"/console/members/{book.mine}").text
    token = csrf_of(page)
    granted = app_client.post(
        f"/console/members/{book.mine}/tier-grants",
        data={"code": "V3", "ends_on": "2027-06-30", "reason": "VIP 补偿", "csrf_token": token},
        follow_redirects=False,
    )
    assert granted.status_code == 303
    bad_day = app_client.post(
        f"/console/members/{book.mine}/tier-grants",
        data={"code": "V3", "ends_on": "30/06/2027", "reason": "x", "csrf_token": token},
    )
    assert bad_day.status_code == 422 and "YYYY-MM-DD" in bad_day.text
    issued = app_client.post(
        f"/console/members/{book.mine}/coupons",
        data={"template_id": str(template_id), "reason": "客诉补偿", "csrf_token": token},
        follow_redirects=False,
    )
    assert issued.status_code == 303
    page = app_client.get(f"/console/members/{book.mine}").text
    assert "致歉券 满99减10" in page and "VIP 补偿" in page
    with clean_db.unit_of_work() as s:
        assert members.get(s, book.mine).tier_code == "V3"
