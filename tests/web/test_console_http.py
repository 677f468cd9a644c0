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


# --- merge, hand over, dashboard comparisons -------------------------------------------------


def test_an_operator_merges_a_member_after_reviewing_both(
    app_client: TestClient, clean_db: Database, book: Book
) -> None:
    from siyu.core.auth import SYSTEM
    from siyu.members.models import Member, MemberIdentity
    from siyu.points import service as points
    from siyu.points.models import PointsLot

    with clean_db.unit_of_work() as s:
        points.adjust(s, book.theirs, 300, reason="开卡礼", principal=SYSTEM, key="m1")
        points.adjust(s, book.mine, 50, reason="开卡礼", principal=SYSTEM, key="m2")
        theirs_lots = set(s.scalars(select(PointsLot.id).where(PointsLot.member_id == book.theirs)))
        both = points.available(s, book.mine) + points.available(s, book.theirs)
    log_in(app_client, "operator")
    page = app_client.get(f"/console/members/{book.mine}").text
    assert 'id="merge-find"' in page and 'id="hand-over-form"' in page

    unknown = app_client.get(f"/console/members/{book.mine}/merge?ref=13700000000").text
    assert "data-merge-error" in unknown and 'id="merge-form"' not in unknown
    itself = app_client.get(f"/console/members/{book.mine}/merge?ref={book.phone}").text
    assert "data-merge-error" in itself

    # the other member found by phone, merged into this one: both shown, and what moves
    review = app_client.get(
        f"/console/members/{book.mine}/merge?ref=13912345678&direction=into_this"
    ).text
    assert f'data-merge-from="{book.theirs}"' in review
    assert f'data-merge-into="{book.mine}"' in review
    assert "李娜" in review and "王芳" in review
    assert "member_identities" in review and "points_lots" in review
    token = csrf_of(review)
    form = {
        "from_member_id": str(book.theirs),
        "into_member_id": str(book.mine),
        "ref": "13912345678",
        "csrf_token": token,
    }
    no_reason = app_client.post(f"/console/members/{book.mine}/merge", data=form)
    assert no_reason.status_code == 200 and "data-merge-error" in no_reason.text
    assert 'id="merge-form"' in no_reason.text  # the confirmation is still there
    with clean_db.unit_of_work() as s:
        assert members.get(s, book.theirs).status != "merged"

    done = app_client.post(
        f"/console/members/{book.mine}/merge",
        data={**form, "reason": "同一顾客两张卡"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"/console/members/{book.mine}?done=merged")
    with clean_db.unit_of_work() as s:
        gone = s.get(Member, book.theirs)
        assert gone is not None and gone.status == "merged" and gone.merged_into_id == book.mine
        phones = s.scalars(
            select(MemberIdentity.member_id).where(MemberIdentity.external_id == "13912345678")
        ).all()
        assert set(phones) == {book.mine}
        moved = set(s.scalars(select(PointsLot.id).where(PointsLot.member_id == book.mine)))
        assert theirs_lots <= moved
        assert points.summary(s, book.mine).available == both

    survivor = app_client.get(done.headers["location"]).text
    assert f'data-merged-from="{book.theirs}"' in survivor and "13912345678" in survivor
    merged_page = app_client.get(f"/console/members/{book.theirs}").text
    assert f'data-merged-into="{book.mine}"' in merged_page
    assert f'href="/console/members/{book.mine}"' in merged_page
    assert "同一顾客两张卡" in merged_page and 'id="merge-find"' not in merged_page
    assert 'id="adjust-points"' not in merged_page  # nothing changes a merged member
    number = members.rules.member_no(book.theirs)
    again = app_client.get(f"/console/members/{book.mine}/merge?ref={number}&lang=en").text
    assert "data-merge-error" in again and f"already merged into member {book.mine}" in again


def test_a_guide_can_neither_merge_nor_hand_over(
    app_client: TestClient, clean_db: Database, book: Book
) -> None:
    log_in(app_client, "guide")
    page = app_client.get(f"/console/members/{book.mine}").text
    assert 'id="merge-find"' not in page and 'id="hand-over-form"' not in page
    token = csrf_of(page)
    assert app_client.get(f"/console/members/{book.mine}/merge?ref=1").status_code == 403
    merged = app_client.post(
        f"/console/members/{book.mine}/merge",
        data={
            "from_member_id": str(book.theirs),
            "into_member_id": str(book.mine),
            "reason": "x",
            "csrf_token": token,
        },
    )
    assert merged.status_code == 403
    handed = app_client.post(
        f"/console/members/{book.mine}/hand-over",
        data={"to_guide_id": str(book.guide_id), "csrf_token": token},
    )
    assert handed.status_code == 403
    with clean_db.unit_of_work() as s:
        assert members.get(s, book.theirs).status == "active"


def test_a_store_manager_hands_a_member_over_within_the_store(
    app_client: TestClient, clean_db: Database, book: Book
) -> None:
    with clean_db.unit_of_work() as s:
        other_guide = members.get(s, book.theirs).guide_id
        elsewhere = stores.create_store(s, code="S2", name="北京朝阳店")
        far = stores.create_staff(s, code="G9", name="小李", role="guide", store_id=elsewhere.id)
        far_id = far.id
    log_in(app_client, "manager")
    page = app_client.get(f"/console/members/{book.mine}").text
    assert 'id="hand-over-form"' in page and 'id="merge-find"' not in page
    assert "小王" in page and "小李" not in page  # only guides of their store are offered
    token = csrf_of(page)

    refused = app_client.post(
        f"/console/members/{book.mine}/hand-over",
        data={"to_guide_id": str(far_id), "reason": "调店", "csrf_token": token},
    )
    assert refused.status_code == 200 and "data-hand-over-error" in refused.text
    assert "own store" in refused.text
    with clean_db.unit_of_work() as s:
        assert members.get(s, book.mine).guide_id == book.guide_id

    moved = app_client.post(
        f"/console/members/{book.mine}/hand-over",
        data={"to_guide_id": str(other_guide), "reason": "导购离职", "csrf_token": token},
        follow_redirects=False,
    )
    assert moved.status_code == 303 and "done=handover" in moved.headers["location"]
    with clean_db.unit_of_work() as s:
        assert members.get(s, book.mine).guide_id == other_guide

    # every member of that guide, back to the first guide, through members.hand_over
    everyone = app_client.post(
        f"/console/members/{book.mine}/hand-over",
        data={"to_guide_id": str(book.guide_id), "scope": "guide", "csrf_token": token},
        follow_redirects=False,
    )
    assert everyone.status_code == 303 and "moved=2" in everyone.headers["location"]
    with clean_db.unit_of_work() as s:
        assert members.get(s, book.mine).guide_id == book.guide_id
        assert members.get(s, book.theirs).guide_id == book.guide_id


def test_the_dashboard_compares_the_period_with_the_previous_one_and_last_year(
    app_client: TestClient, clean_db: Database, book: Book
) -> None:
    from datetime import timedelta

    from siyu.core import clock
    from siyu.insight import kpis
    from siyu.orders import service as orders
    from siyu.orders.rules import LineDraft, OrderDraft
    from siyu.web import rules

    now = clock.now()
    bought = [(book.mine, 5, 200), (book.mine, 40, 100), (book.mine, 370, 300)]
    bought += [(book.theirs, 10, 80), (book.theirs, 380, 120)]
    with clean_db.unit_of_work() as s:
        orders.ingest_orders(
            s,
            [
                OrderDraft(
                    channel="mini_program",
                    external_id=f"O-{k}",
                    paid_at=now - timedelta(days=days),
                    member_id=member_id,
                    lines=[LineDraft("SKU-1", "奶粉", 1, yuan * 100)],
                )
                for k, (member_id, days, yuan) in enumerate(bought)
            ],
        )
    tz = app_client.app.state.settings.timezone  # type: ignore[attr-defined]
    today = clock.local_date(now, tz)
    log_in(app_client, "analyst")
    for choice in ("30", "month"):
        page = app_client.get(f"/console?period={choice}").text
        start, end = rules.period_dates(choice, None, None, today=today)
        # the page kept its report: the next view of the period reads it
        assert kpis.stored_report(clean_db, kpis.Period(start, end), tz=tz) is not None  # type: ignore[arg-type]
        report = kpis.kpi_report(clean_db, kpis.Period(start, end), tz=tz)  # type: ignore[arg-type]
        assert report.current.member_revenue_fen > 0
        for name, _zh, _en, vs_previous, vs_last_year in kpis.figures_rows(report):
            row = re.search(rf'<tr data-kpi-row="{name}">(.*?)</tr>', page, re.S)
            assert row is not None, name
            cells = row.group(1)
            current = re.search(r"data-current><strong>([^<]*)<", cells).group(1)  # type: ignore[union-attr]
            previous = re.search(r"data-previous>([^<]*)<", cells).group(1)  # type: ignore[union-attr]
            last_year = re.search(r"data-last-year>([^<]*)<", cells).group(1)  # type: ignore[union-attr]
            assert current == kpis.show(name, vs_previous.value), name
            assert previous == kpis.show(name, vs_previous.against), name
            assert last_year == kpis.show(name, vs_last_year.against), name
        assert f'data-period-choice="{choice}"' in page
    custom = app_client.get("/console?period=custom&from=2030-01-01&to=2030-01-31").text
    assert 'class="alert bad"' in custom and "in the future" in custom

    app_client.cookies.clear()
    log_in(app_client, "guide")
    assert "data-kpi-row" not in app_client.get("/console").text  # brand-wide: HQ roles only


def test_the_member_card_tells_spendable_points_expiring_from_frozen_ones(
    app_client: TestClient, clean_db: Database, book: Book
) -> None:
    from siyu.core import clock
    from siyu.core.auth import SYSTEM
    from siyu.orders import service as orders
    from siyu.orders.rules import LineDraft, OrderDraft
    from siyu.points import service as points

    with clean_db.unit_of_work() as s:
        orders.ingest_orders(
            s,
            [
                OrderDraft(
                    channel="mini_program",
                    external_id="O-frozen",
                    paid_at=clock.now(),
                    member_id=book.mine,
                    lines=[LineDraft("SKU-1", "奶粉", 1, 50000)],
                )
            ],
        )
        points.adjust(s, book.mine, 120, reason="开卡礼", principal=SYSTEM, key="e1")
        summary = points.summary(s, book.mine)
    assert summary.frozen > 0 and summary.available > 0
    assert summary.expiring.next_points > summary.available  # what the card used to show

    secret = app_client.app.state.settings.secret_key  # type: ignore[attr-defined]
    with clean_db.unit_of_work() as s:
        link = links.mint(s, book.mine, secret=secret)
    app_client.get(link.path)
    home = app_client.get("/m?lang=en").text
    told = re.search(r"data-expiring>([^<]*)<", home).group(1)  # type: ignore[union-attr]
    assert told.strip().startswith(f"{summary.available:,} points expire on")
    frozen = re.search(r"data-expiring-frozen>([^<]*)<", home).group(1)  # type: ignore[union-attr]
    assert frozen.strip().startswith(f"{summary.frozen:,} points not yet usable")


def test_stores_show_their_last_30_days(
    app_client: TestClient, clean_db: Database, book: Book
) -> None:
    """Member sales net of refunds, the store's 会销比 with its guests, and who joined."""
    from datetime import timedelta

    from siyu.core import clock
    from siyu.members.models import Member
    from siyu.orders import service as orders
    from siyu.orders.rules import LineDraft, OrderDraft

    now = clock.now()
    with clean_db.unit_of_work() as s:
        store_id = s.get(Member, book.mine).store_id  # type: ignore[union-attr]
        sold = [
            (book.mine, 3, 300),  # member, in the window
            (book.theirs, 12, 100),  # member, in the window
            (book.mine, 45, 999),  # member, before the window: not counted
            (None, 5, 100),  # a guest of the store
        ]
        orders.ingest_orders(
            s,
            [
                OrderDraft(
                    channel="store",
                    external_id=f"S-{k}",
                    paid_at=now - timedelta(days=days),
                    member_id=member_id,
                    store_code="S1",
                    lines=[LineDraft("SKU-1", "奶粉", 1, yuan * 100)],
                )
                for k, (member_id, days, yuan) in enumerate(sold)
            ],
        )
    log_in(app_client, "operator")
    page = app_client.get("/console/stores").text
    assert f'data-store-sales="{store_id}">¥400<' in page
    assert f'data-store-share="{store_id}">80.0%<' in page  # 400 of 500
    assert f'data-store-joined="{store_id}">2<' in page  # both members joined just now
