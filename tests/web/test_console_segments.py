"""The Segments page of the console: the live count of the builder's tree, the validation's
problems with their paths, saving, snapshots, exports and roles over HTTP; then the
builder in a real browser (Chromium through Playwright), in both languages."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from siyu.api.app import create_app
from siyu.core import clock
from siyu.core.db import Database
from siyu.core.settings import Settings
from siyu.members import service as members
from siyu.members.models import Member
from siyu.orders import service as orders
from siyu.orders.rules import LineDraft, OrderDraft
from siyu.segments import service as segments
from siyu.segments import tags
from siyu.segments.models import Segment, SegmentSnapshot
from siyu.stores import service as stores
from siyu.web import users

PASSWORD = "console-pass-1"
NOW = datetime(2026, 11, 23, 4, 0, tzinfo=clock.UTC)

WOMEN = {"and": [{"field": "gender", "op": "eq", "value": "F"}]}
WOMEN_WHO_BOUGHT_MILK = {
    "and": [
        {"field": "gender", "op": "eq", "value": "F"},
        {"behaviour": "bought_category", "category": "奶粉", "at_least": 1, "days": 90},
    ]
}


# --- a small brand over HTTP ---------------------------------------------------------------------


@pytest.fixture
def ids(clean_db: Database, programme_in_force: None) -> dict[str, int]:
    """Four members: 安 (F, tag 孕妈, bought 奶粉 20 days ago), 白 (F, bought 奶粉 200 days
    ago), 陈 (M, never bought), 丁 (F, never bought); console users of every role."""
    found: dict[str, int] = {}
    with clean_db.unit_of_work() as s:
        store = stores.create_store(s, code="S001", name="旗舰店")
        guide = stores.create_staff(s, code="G01", name="小王", role="guide", store_id=store.id)
        for name, phone, gender, extra in (
            ("安", "13800000001", "F", {"tags": ["孕妈"]}),
            ("白", "13800000002", "F", {}),
            ("陈", "13800000003", "M", {}),
            ("丁", "13800000004", "F", {}),
        ):
            draft = members.EnrolDraft(
                name=name,
                phone=phone,
                gender=gender,
                store_id=store.id,
                guide_id=guide.id,
                joined_at=datetime(2025, 1, 1, tzinfo=clock.UTC),
                **extra,
            )
            found[name] = members.enrol(s, draft).member_id
        for role in ("admin", "operator", "analyst"):
            users.create_user(s, username=role, password=PASSWORD, role=role)
        users.create_user(s, username="guide", password=PASSWORD, role="guide", staff_id=guide.id)
        users.create_user(
            s, username="manager", password=PASSWORD, role="store_manager", store_id=store.id
        )
    with clean_db.unit_of_work() as s:
        for ref, who, days in (("A1", "安", 20), ("B1", "白", 200)):
            orders.ingest_orders(
                s,
                [
                    OrderDraft(
                        channel="store",
                        external_id=ref,
                        paid_at=NOW - timedelta(days=days),
                        lines=[LineDraft("SKU-1", "奶粉", 1, 25_600)],
                        member_id=found[who],
                        store_code="S001",
                    )
                ],
            )
    return found


@pytest.fixture
def client(clean_db: Database, tmp_path: Path) -> Iterator[TestClient]:
    """The app with its own analytics directory, so the profile snapshot is of this brand."""
    settings = Settings(
        database_url=clean_db.url, auto_migrate=False, analytics_dir=str(tmp_path / "analytics")
    )
    with TestClient(create_app(settings, db=clean_db)) as c:
        yield c


def log_in(client: TestClient, username: str) -> str:
    """Log in and return the session's CSRF token (read from the segments page's forms)."""
    page = client.get("/console/login")
    token = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    done = client.post(
        "/console/login",
        data={"username": username, "password": PASSWORD, "form_token": token},
        follow_redirects=False,
    )
    assert done.status_code == 303
    board = client.get("/console/members").text
    return re.search(r'name="csrf_token" value="([^"]+)"', board).group(1)  # type: ignore[union-attr]


def preview(client: TestClient, csrf: str, tree: Any, source: str = "profile") -> str:
    answer = client.post(
        "/console/segments/preview",
        data={"tree": json.dumps(tree, ensure_ascii=False), "source": source},
        headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
    )
    assert answer.status_code == 200, answer.text
    return answer.text


def count_in(html: str) -> int:
    return int(re.search(r'data-member-count="(\d+)"', html).group(1))  # type: ignore[union-attr]


# --- HTTP ----------------------------------------------------------------------------------------


def test_the_count_follows_the_conditions_with_masked_phones_per_role(
    client: TestClient, ids: dict[str, int]
) -> None:
    csrf = log_in(client, "analyst")
    page = client.get("/console/segments")
    assert page.status_code == 200 and 'id="segment-builder"' in page.text
    catalogue = json.loads(
        re.search(r'data-catalogue="([^"]+)"', page.text)
        .group(1)  # type: ignore[union-attr]
        .replace("&quot;", '"')
        .replace("&#39;", "'")
        .replace("&amp;", "&")
    )
    by_name = {f["name"]: f for f in catalogue["fields"]}
    assert ["S001", "S001 · 旗舰店"] in by_name["store"]["choices"]  # the brand's own stores
    assert ["孕妈", "孕妈"] in by_name["tags"]["choices"]
    assert [c[0] for c in by_name["tier"]["choices"]][:2] == ["V1", "V2"]  # the programme's
    assert by_name["tier"]["label"] == "等级"

    women = preview(client, csrf, WOMEN)
    assert count_in(women) == 3
    narrowed = preview(client, csrf, WOMEN_WHO_BOUGHT_MILK)
    assert count_in(narrowed) == 1
    assert f'href="/console/members/{ids["安"]}"' in narrowed
    assert "138****0001" in narrowed and "13800000001" not in narrowed  # analysts: masked
    negated = preview(client, csrf, {"and": [WOMEN, {"not": {"tag": "孕妈"}}]})
    assert count_in(negated) == 2
    live = preview(
        client,
        csrf,
        {"or": [{"tag": "孕妈"}, {"field": "gender", "op": "eq", "value": "M"}]},
        "live",
    )
    assert count_in(live) == 2 and "Live data" not in live and "实时数据" in live

    client.cookies.clear()
    csrf = log_in(client, "operator")
    assert "13800000001" in preview(client, csrf, WOMEN_WHO_BOUGHT_MILK)  # operators: full


def test_problems_come_back_with_their_path_in_the_tree(
    client: TestClient, ids: dict[str, int]
) -> None:
    csrf = log_in(client, "analyst")
    bad = {
        "and": [
            {"field": "tier", "op": "eq", "value": "V9"},
            {"or": []},
            {"field": "birthday_month", "op": "eq", "value": 13},
            {"field": "spend_fen", "op": "has", "value": 1},
        ]
    }
    html = preview(client, csrf, bad)
    problems = dict(
        re.findall(r'data-problem-path="([^"]*)">(?:<code>[^<]*</code> )?([^<]+)<', html)
    )
    assert "unknown tier &#39;V9&#39;" in problems["and[0].value"]
    assert "empty group" in problems["and[1].or"]
    assert "birthday_month is from 1 to 12" in problems["and[2].value"]
    assert "does not apply to spend_fen" in problems["and[3].op"]
    assert "data-member-count" not in html
    broken = client.post(
        "/console/segments/preview",
        data={"tree": "{not json"},
        headers={"X-CSRF-Token": csrf},
    )
    assert broken.status_code == 200 and "not JSON" in broken.text
    empty = preview(client, csrf, {"and": []})
    assert 'data-state="empty"' in empty
    no_csrf = client.post("/console/segments/preview", data={"tree": json.dumps(WOMEN)})
    assert no_csrf.status_code == 403


def test_save_open_update_and_snapshot_a_segment(
    client: TestClient, ids: dict[str, int], clean_db: Database
) -> None:
    csrf = log_in(client, "operator")
    form = {
        "csrf_token": csrf,
        "name": "孕妈奶粉客",
        "description": "bought milk powder lately",
        "tree": json.dumps(WOMEN_WHO_BOUGHT_MILK, ensure_ascii=False),
    }
    saved = client.post("/console/segments", data=form, follow_redirects=False)
    assert saved.status_code == 303
    segment_id = int(re.search(r"open=(\d+)", saved.headers["location"]).group(1))  # type: ignore[union-attr]
    page = client.get(saved.headers["location"]).text
    assert "人群已保存" in page
    row = re.search(rf'<tr data-segment="{segment_id}".*?</tr>', page, re.S).group(0)  # type: ignore[union-attr]
    assert "孕妈奶粉客" in row and re.search(r"data-count>\s*1\s*<", row)
    assert "暂无快照" in row
    # the builder opens the saved tree
    assert f'name="segment_id" value="{segment_id}"' in page
    assert "bought_category" in page

    # the same name again is refused, the draft kept
    again = client.post("/console/segments", data=form)
    assert again.status_code == 409 and "未保存" in again.text and "孕妈奶粉客" in again.text
    bad = client.post("/console/segments", data={**form, "name": "x", "tree": '{"or": []}'})
    assert bad.status_code == 422 and "empty group" in bad.text

    # update the opened segment
    updated = client.post(
        "/console/segments",
        data={**form, "segment_id": str(segment_id), "tree": json.dumps(WOMEN)},
        follow_redirects=False,
    )
    assert updated.status_code == 303
    with clean_db.unit_of_work() as s:
        assert s.get(Segment, segment_id).tree == WOMEN  # type: ignore[union-attr]

    # a snapshot freezes its members; the list shows its count
    taken = client.post(
        f"/console/segments/{segment_id}/snapshots",
        data={"csrf_token": csrf},
        follow_redirects=False,
    )
    assert taken.status_code == 303
    with clean_db.unit_of_work() as s:
        snap = s.scalars(
            select(SegmentSnapshot).where(SegmentSnapshot.segment_id == segment_id)
        ).one()
        assert snap.member_count == 3
    row = re.search(
        rf'<tr data-segment="{segment_id}".*?</tr>', client.get("/console/segments").text, re.S
    ).group(0)  # type: ignore[union-attr]
    assert "暂无快照" not in row and re.search(r'<td class="num">\s*3\s*</td>', row)

    deleted = client.post(
        f"/console/segments/{segment_id}/delete", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert deleted.status_code == 303
    with clean_db.unit_of_work() as s:
        assert s.get(Segment, segment_id) is None


def test_export_csv_and_parquet(
    client: TestClient, ids: dict[str, int], clean_db: Database
) -> None:
    csrf = log_in(client, "analyst")
    client.post(
        "/console/segments",
        data={"csrf_token": csrf, "name": "女性", "tree": json.dumps(WOMEN)},
    )
    with clean_db.unit_of_work() as s:
        segment_id = s.scalar(select(Segment.id).where(Segment.name == "女性"))
    as_csv = client.get(f"/console/segments/{segment_id}/export?format=csv")
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert sorted(int(r["member_id"]) for r in rows) == sorted(ids[n] for n in ("安", "白", "丁"))
    assert "phone" not in rows[0] and rows[0]["member_no"]

    as_parquet = client.get(f"/console/segments/{segment_id}/export?format=parquet")
    assert as_parquet.status_code == 200
    table = pq.read_table(io.BytesIO(as_parquet.content))
    assert sorted(table.column("member_id").to_pylist()) == sorted(
        ids[n] for n in ("安", "白", "丁")
    )

    draft = client.post(
        "/console/segments/export",
        data={"csrf_token": csrf, "tree": json.dumps(WOMEN_WHO_BOUGHT_MILK), "format": "csv"},
    )
    assert [int(r["member_id"]) for r in csv.DictReader(io.StringIO(draft.text))] == [ids["安"]]
    assert client.get(f"/console/segments/{segment_id}/export?format=xlsx").status_code == 422


def test_counts_read_the_snapshot_until_the_data_is_refreshed(
    client: TestClient, ids: dict[str, int], clean_db: Database
) -> None:
    csrf = log_in(client, "analyst")
    assert count_in(preview(client, csrf, WOMEN)) == 3  # the first count prepares the data
    with clean_db.unit_of_work() as s:
        members.enrol(s, members.EnrolDraft(name="戊", phone="13800000005", gender="F"))
    assert count_in(preview(client, csrf, WOMEN)) == 3
    assert count_in(preview(client, csrf, WOMEN, "live")) == 4
    refreshed = client.post(
        "/console/segments/profile/refresh",
        data={"csrf_token": csrf, "back": ""},
        follow_redirects=False,
    )
    assert refreshed.headers["location"] == "/console/segments?done=refreshed"
    assert count_in(preview(client, csrf, WOMEN)) == 4
    assert "会员数据已刷新" in client.get(refreshed.headers["location"]).text


@pytest.mark.parametrize("username", ["guide", "manager"])
def test_guides_and_store_managers_see_no_segments(
    client: TestClient, ids: dict[str, int], username: str
) -> None:
    csrf = log_in(client, username)
    assert client.get("/console/segments").status_code == 403
    refused = client.post(
        "/console/segments/preview",
        data={"tree": json.dumps(WOMEN)},
        headers={"X-CSRF-Token": csrf},
    )
    assert refused.status_code == 403


# --- in a browser --------------------------------------------------------------------------------


def fresh_profile(brand: Any) -> None:
    """Counts read the profile snapshot; build it from this module's brand."""
    settings = brand.settings
    tags.refresh(brand.db, settings.analytics_dir, tz=settings.timezone)


def expected(brand: Any, tree: Any) -> int:
    settings = brand.settings
    where = segments.Where(brand.db, settings.analytics_dir, settings.timezone)
    with brand.db.unit_of_work() as s:
        return segments.count(where, segments.parse(s, tree)).members


def shown_count(tab: Any) -> int:
    return int(tab.page.get_attribute("[data-member-count]", "data-member-count"))


def counted_after(tab: Any, action: Any) -> None:
    """Do something in the builder and wait for the count it asks for."""
    with tab.page.expect_response("**/console/segments/preview"):
        action()
    tab.page.wait_for_function("!document.querySelector('#segment-result.htmx-request')")


def test_build_a_segment_see_the_count_and_a_problem_then_save_it(brand: Any, new_tab: Any) -> None:
    fresh_profile(brand)
    with brand.db.unit_of_work() as s:
        women = s.scalar(select(Member.id).where(Member.gender == "F"))
        assert women is not None
    tab = new_tab()
    brand.log_in(tab)
    tab.page.goto(f"{brand.url}/console/segments")
    tab.page.locator("[data-state='empty']").wait_for()

    # 1. gender is female
    counted_after(tab, lambda: tab.page.click(".seg-add-condition"))
    first = ".seg-cond[data-path='and[0]']"
    counted_after(tab, lambda: tab.page.select_option(f"{first} .seg-field", "field:gender"))
    tree1 = {"and": [{"field": "gender", "op": "eq", "value": "F"}]}
    assert shown_count(tab) == expected(brand, tree1) > 0

    # 2. and bought at least once in the last 365 days
    counted_after(
        tab, lambda: tab.page.click(".seg-group:not(.nested) > .seg-add .seg-add-condition")
    )
    second = ".seg-cond[data-path='and[1]']"
    counted_after(tab, lambda: tab.page.select_option(f"{second} .seg-field", "field:order_count"))
    counted_after(tab, lambda: tab.page.select_option(f"{second} .seg-op", "gte"))
    counted_after(tab, lambda: tab.page.fill(f"{second} .seg-value", "2"))
    tree2 = {"and": [*tree1["and"], {"field": "order_count", "op": "gte", "value": 2}]}
    narrowed = expected(brand, tree2)
    assert shown_count(tab) == narrowed < expected(brand, tree1)

    # 3. a birthday month of 13 is refused beside its condition, then fixed
    counted_after(
        tab, lambda: tab.page.click(".seg-group:not(.nested) > .seg-add .seg-add-condition")
    )
    third = ".seg-cond[data-path='and[2]']"
    counted_after(
        tab, lambda: tab.page.select_option(f"{third} .seg-field", "field:birthday_month")
    )
    counted_after(tab, lambda: tab.page.fill(f"{third} .seg-value", "13"))
    problem = tab.page.locator(f"{third} .problem")
    assert "1" in problem.inner_text() and "12" in problem.inner_text()
    assert "invalid" in (tab.page.get_attribute(third, "class") or "")
    assert tab.page.locator(f"{first} .problem").inner_text() == ""
    tab.shot("segments-problem")
    counted_after(tab, lambda: tab.page.click(f"{third} .seg-remove"))
    assert shown_count(tab) == narrowed

    # 4. save it and find it in the list
    tab.page.fill("#segment-name", "女性复购客")
    tab.page.fill("#segment-description", "两单以上的女性会员")
    tab.page.click("#save-form button[type=submit]")
    tab.page.wait_for_url("**/console/segments?open=*")
    row = tab.page.locator("#saved-segments tbody tr", has_text="女性复购客")
    assert row.count() == 1
    assert row.locator("[data-count]").inner_text().replace(",", "") == str(narrowed)
    tab.page.locator("[data-member-count]").wait_for()
    assert shown_count(tab) == narrowed  # the opened segment is in the builder again
    assert tab.page.locator(".seg-cond").count() == 2
    tab.shot("segments-saved")
    assert tab.errors == []
    with brand.db.unit_of_work() as s:
        saved = s.scalars(select(Segment).where(Segment.name == "女性复购客")).one()
        assert saved.tree == tree2


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_the_page_in_both_languages(brand: Any, new_tab: Any, lang: str) -> None:
    fresh_profile(brand)
    tab = new_tab()
    tab.page.goto(f"{brand.url}/console/login?lang={lang}")
    brand.log_in(tab)
    tab.page.goto(f"{brand.url}/console/segments")
    tab.page.wait_for_load_state("networkidle")
    words = {"zh_CN": ("添加条件", "人群"), "en": ("Add condition", "Segments")}[lang]
    assert words[0] in tab.page.inner_text("#segment-builder")
    assert words[1] in tab.page.inner_text("nav.nav")
    counted_after(tab, lambda: tab.page.click(".seg-add-condition"))
    counted_after(tab, lambda: tab.page.click(".seg-add-group"))
    nested = ".seg-group.nested"
    counted_after(
        tab,
        lambda: tab.page.select_option(
            f"{nested} .seg-cond .seg-field", "behaviour:no_purchase_since"
        ),
    )
    assert tab.page.locator("[data-member-count]").count() == 1
    label = {"zh_CN": "等级", "en": "Tier"}[lang]
    assert label in tab.page.inner_text(".seg-cond[data-path='and[0]'] .seg-field option:checked")
    tab.shot(f"{lang}-console-segments")
    assert tab.errors == []
