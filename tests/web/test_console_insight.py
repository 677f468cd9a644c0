"""The Insight pages of the console (/console/insight …): the shaping helpers without a
database, the empty states before anything is computed, the numbers the pages show
against the materialized tables, roles and masked phones, and every page in a real
browser in both languages. Screenshots go to tests/web/artifacts/.

The tests with an empty database run first: the demo brand below is built once for the
module and kept until its end."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from siyu.api.app import create_app
from siyu.core import clock
from siyu.core.auth import Principal, Role
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.insight import kpis, views
from siyu.insight.clv_jobs import clv_job
from siyu.insight.diagnosis_rules import Finding, Outcome, Severity, Text
from siyu.insight.jobs import refresh_insight
from siyu.insight.kpis import Cohort, kpis_job
from siyu.insight.models import InsightGroup, InsightRun, LifecycleMatrix, MemberInsight
from siyu.insight.refresh import STEP
from siyu.members.models import Member
from siyu.members.rules import mask_phone
from siyu.web import console_insight as page
from siyu.web import dashboard, users

PASSWORD = "console-pass-1"
PAGES = {
    "lifecycle": "/console/insight",
    "rfm": "/console/insight/rfm",
    "cohorts": "/console/insight/cohorts",
    "clv": "/console/insight/clv",
    "diagnosis": "/console/insight/diagnosis",
}


def log_in(client: TestClient, username: str) -> None:
    form = client.get("/console/login")
    token = re.search(r'name="form_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    answer = client.post(
        "/console/login",
        data={"username": username, "password": PASSWORD, "form_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303


def chart(html: str, element_id: str) -> dict[str, Any]:
    """The ECharts option of the element with this id."""
    found = re.search(rf'id="{element_id}"[^>]*data-chart="([^"]+)"', html)
    assert found, f"no chart #{element_id}"
    return json.loads(unescape(found.group(1)))  # type: ignore[no-any-return]


# --- the shaping helpers (no database) ------------------------------------------------------


def test_the_matrix_puts_each_cell_at_its_from_row_and_to_column() -> None:
    grid = page.matrix_grid(
        [
            ("active", "active", 5),
            ("active", "silent", 2),
            ("none", "new", 3),
            ("silent", "active", 1),
        ]
    )
    assert grid["rows"] == ["none", "active", "silent"]  # stages nobody came from left out
    assert grid["cols"] == list(page.STAGES)
    cell = {(grid["rows"][r], grid["cols"][c]): n for c, r, n in grid["data"]}
    assert cell[("active", "silent")] == 2 and cell[("none", "new")] == 3
    assert cell[("silent", "churned")] == 0
    assert grid["totals"] == {"none": 3, "active": 7, "silent": 1}
    assert (grid["stayed"], grid["placed"], grid["max"]) == (5, 8, 5)


def test_cohort_cells_scale_to_the_best_month_after_joining() -> None:
    cohorts = [
        Cohort("2026-01", 10, [6, 2, 1], [0.6, 0.2, 0.1]),
        Cohort("2026-02", 4, [2, 1], [0.5, 0.25, None]),
        Cohort("2026-03", 0, [0], [None, None, None]),
    ]
    rows, width = page.cohort_rows(cohorts)
    assert width == 3
    assert [c["heat"] for c in rows[0]["cells"]] == [1.0, 0.8, 0.4]  # 0.25 is the top
    assert rows[1]["cells"][2] == {"rate": None, "buyers": None, "heat": 0.0}
    assert rows[2]["cells"][0]["heat"] == 0.0  # nobody joined: no colour
    # month k over the cohorts that reached it, weighted by size: (2+1)/14, then 1/10
    assert page.average_curve(cohorts) == [round(8 / 14, 4), round(3 / 14, 4), 0.1]


def test_findings_that_fired_come_first_by_severity_then_passed_then_unjudged() -> None:
    def finding(code: str, outcome: Outcome, severity: Severity) -> Finding:
        text = Text(code, code)
        return Finding(code, text, outcome, severity, text, text)

    fired, rest = page.sorted_findings(
        [
            finding("a", Outcome.fired, Severity.low),
            finding("b", Outcome.no_data, Severity.high),
            finding("c", Outcome.fired, Severity.high),
            finding("d", Outcome.passed, Severity.medium),
            finding("e", Outcome.fired, Severity.medium),
        ]
    )
    assert [f.code for f in fired] == ["c", "e", "a"]
    assert [f.code for f in rest] == ["d", "b"]


# --- before anything is computed -----------------------------------------------------------


@pytest.fixture
def people(clean_db: Database, programme_in_force: None) -> None:
    with clean_db.unit_of_work() as s:
        for role in ("admin", "operator", "analyst"):
            users.create_user(s, username=role, password=PASSWORD, role=role)
        # a guide account needs a staff member
        from siyu.stores import service as stores

        store = stores.create_store(s, code="S1", name="上海徐汇店")
        guide = stores.create_staff(s, code="G1", name="小张", role="guide", store_id=store.id)
        users.create_user(s, username="guide", password=PASSWORD, role="guide", staff_id=guide.id)


def test_before_a_refresh_each_page_names_the_command_that_fills_it(
    app_client: TestClient, people: None
) -> None:
    log_in(app_client, "analyst")
    for name, command, job in (
        ("lifecycle", "siyu insight refresh", "insight.refresh"),
        ("rfm", "siyu insight refresh", "insight.refresh"),
        ("clv", "siyu jobs run insight.clv", "insight.clv"),
    ):
        html = app_client.get(PAGES[name]).text
        assert 'data-empty="insight"' in html, name
        assert f"<code>{command}</code>" in html and f"<code>{job}</code>" in html, name
        assert "尚未计算" in html  # Chinese first
    english = app_client.get("/console/insight?lang=en").text
    assert "Not computed yet" in english and "or wait for the nightly job" in english
    # a group's list before any refresh: the error page says how to run one
    group = app_client.get("/console/insight/rfm/important_value")
    assert group.status_code == 404 and "siyu insight refresh" in group.text
    # the cohort table is computed (and stored) on first view: no member joined yet
    cohorts = app_client.get(PAGES["cohorts"])
    assert cohorts.status_code == 200 and 'id="cohorts"' not in cohorts.text


def test_insight_pages_are_for_the_insight_apis_roles(app_client: TestClient, people: None) -> None:
    log_in(app_client, "guide")
    for path in PAGES.values():
        answer = app_client.get(path)
        assert answer.status_code == 403, path
    assert app_client.get("/console/insight/diagnosis/report").status_code == 403
    app_client.cookies.clear()
    assert app_client.get("/console/insight", follow_redirects=False).status_code == 303


# --- a demo brand with its insight computed by the nightly jobs -----------------------------


@pytest.fixture(scope="module")
def computed(brand: Any) -> Iterator[Any]:
    """Refreshes as of two months ago, last month and today (so the transition matrix has
    months to compare), then CLV and the stored KPIs: the jobs the scheduler runs."""
    db = brand.db
    tz = get_settings().timezone
    today = clock.local_date(clock.now(), tz)
    for day in (today - timedelta(days=62), today - timedelta(days=31), today):
        refresh_insight(db, day)
    clv_job(db, today)
    kpis_job(db, today)
    with db.unit_of_work() as s:
        users.create_user(s, username="analyst", password=PASSWORD, role="analyst")
    yield brand


@pytest.fixture(scope="module")
def client(computed: Any) -> Iterator[TestClient]:
    with TestClient(create_app(computed.settings, db=computed.db)) as c:
        yield c


def as_user(client: TestClient, username: str) -> TestClient:
    client.cookies.clear()
    log_in(client, username)
    return client


def last_groups(db: Database, dimension: str) -> dict[str, int]:
    with db.unit_of_work() as s:
        run = s.scalar(
            select(func.max(InsightRun.id)).where(
                InsightRun.step == STEP, InsightRun.status == "done"
            )
        )
        return {
            g.key: g.members
            for g in s.scalars(
                select(InsightGroup).where(
                    InsightGroup.run_id == run, InsightGroup.dimension == dimension
                )
            )
        }


def test_the_rfm_grid_shows_each_groups_count_from_the_table(
    client: TestClient, computed: Any
) -> None:
    html = as_user(client, "analyst").get(PAGES["rfm"]).text
    expected = last_groups(computed.db, "rfm")
    assert sum(expected.values()) > 0
    shown = dict(re.findall(r'data-group="(\w+)">\s*<h3>.*?data-members="(\d+)"', html, re.S))
    assert set(shown) == set(page.RFM_HIGHS)
    assert {k: int(v) for k, v in shown.items()} == {k: expected.get(k, 0) for k in shown}
    assert 'href="/console/insight/rfm/important_value"' in html
    assert re.search(r'data-computed-at="\d{4}-\d\d-\d\d \d\d:\d\d"', html)


def derived_groups(s: Any, store_id: int | None = None) -> dict[str, list[int]]:
    """The members of each RFM group (of one store's, or all), in id order, as the member
    read derives their group on the last run's scale."""
    scale = views.last_scale(s)
    assert scale is not None
    query = select(MemberInsight).join(Member, Member.id == MemberInsight.member_id)
    if store_id is not None:
        query = query.where(Member.store_id == store_id)
    groups: dict[str, list[int]] = {}
    for row in s.scalars(query.order_by(MemberInsight.member_id)):
        group = views.member_read(row, scale).rfm_group
        if group is not None:
            groups.setdefault(group, []).append(row.member_id)
    return groups


def test_a_books_dashboard_counts_its_members_rfm_groups_on_the_last_scale(
    computed: Any,
) -> None:
    """A store's or a guide's dashboard counts its own members per group (the materialized
    groups are brand-wide): the group is derived in SQL on the last run's scale, and must
    be the one the member read derives for each of them. Checked for the largest store's
    book and, unscoped, for every member."""
    with computed.db.unit_of_work() as s:
        store_id = s.scalar(
            select(Member.store_id)
            .join(MemberInsight, MemberInsight.member_id == Member.id)
            .where(Member.store_id.is_not(None))
            .group_by(Member.store_id)
            .order_by(func.count().desc())
            .limit(1)
        )
        for principal, store in (
            (
                Principal(key_id=0, name="店长", role=Role.store_manager, store_id=store_id),
                store_id,
            ),
            (Principal(key_id=0, name="分析师", role=Role.analyst), None),
        ):
            _, rfm, _, _ = dashboard._book_insight(s, principal)
            expected = {g: len(ids) for g, ids in derived_groups(s, store).items()}
            assert rfm is not None and sum(expected.values()) > 0
            assert {g: n for g, n in rfm if n} == expected, principal.role


def test_a_groups_members_are_paged_with_phones_masked_for_analysts(
    client: TestClient, computed: Any
) -> None:
    with computed.db.unit_of_work() as s:
        group, ids = max(derived_groups(s).items(), key=lambda item: len(item[1]))
        phones = dict(s.execute(select(Member.id, Member.phone).where(Member.id.in_(ids))).all())
    analyst = as_user(client, "analyst").get(f"/console/insight/rfm/{group}").text
    shown = [int(i) for i in re.findall(r'<tr data-member="(\d+)"', analyst)]
    assert shown == ids[: page.PAGE]
    assert f'href="/console/members/{ids[0]}"' in analyst
    with_phone = next(i for i in shown if phones.get(i))
    assert mask_phone(phones[with_phone]) in analyst and phones[with_phone] not in analyst
    operator = as_user(client, "ops").get(f"/console/insight/rfm/{group}").text
    assert phones[with_phone] in operator  # operators see full phones, as in the API

    if len(ids) > page.PAGE:  # the next page continues after the last id shown
        nxt = as_user(client, "analyst").get(f"/console/insight/rfm/{group}?after={shown[-1]}")
        assert [int(i) for i in re.findall(r'<tr data-member="(\d+)"', nxt.text)] == ids[
            page.PAGE : 2 * page.PAGE
        ]
    else:
        assert 'id="next-page"' not in analyst
    assert client.get("/console/insight/rfm/nobody").status_code == 422


def test_lifecycle_stages_and_the_transition_matrix_match_the_tables(
    client: TestClient, computed: Any
) -> None:
    html = as_user(client, "admin").get(PAGES["lifecycle"]).text
    stages = last_groups(computed.db, "stage")
    shown = dict(re.findall(r'<tr data-stage="(\w+)"><td>[^<]*</td><td class="num">([\d,]+)', html))
    assert {k: int(v.replace(",", "")) for k, v in shown.items()} == {
        s: stages.get(s, 0) for s in page.STAGES
    }
    with computed.db.unit_of_work() as s:
        months = sorted(set(s.scalars(select(LifecycleMatrix.month))))
        cells = {
            (c.from_stage, c.to_stage): c.members
            for c in s.scalars(select(LifecycleMatrix).where(LifecycleMatrix.month == months[0]))
        }
    assert len(months) >= 2, "three refreshes a month apart fill several months"
    older = as_user(client, "admin").get(f"/console/insight?month={months[0]}").text
    option = chart(older, "transition-matrix")
    rows = option["yAxis"]["data"]
    assert len(rows) == len({f for (f, _), n in cells.items() if n})
    assert sum(v for _, _, v in option["series"][0]["data"]) == sum(cells.values())
    assert f'data-month="{months[0]}"' in older
    assert 'data-kpi="super-share"' in html and 'data-kpi="value-multiple"' in html


def test_cohorts_clv_and_diagnosis_show_the_computed_figures(
    client: TestClient, computed: Any
) -> None:
    c = as_user(client, "analyst")
    cohorts = c.get(PAGES["cohorts"]).text
    table = kpis.cohorts_for(computed.db, tz=get_settings().timezone)
    for cohort in table.cohorts:
        assert f'data-cohort="{cohort.month}"' in cohorts
        row = re.search(rf'data-cohort="{cohort.month}">.*?data-members="(\d+)"', cohorts, re.S)
        assert row and int(row.group(1)) == cohort.members
    assert re.search(r'data-computed-at="\d{4}-\d\d-\d\d \d\d:\d\d"', cohorts)

    clv = c.get(PAGES["clv"]).text
    with computed.db.unit_of_work() as s:
        best = s.scalars(
            select(MemberInsight)
            .where(MemberInsight.expected_value_fen.is_not(None))
            .order_by(MemberInsight.expected_value_fen.desc(), MemberInsight.member_id)
        ).first()
        assert best is not None
        bands = s.scalar(select(func.count()).where(MemberInsight.p_alive.is_not(None)))
    first = re.search(r'id="clv-top".*?<tr data-member="(\d+)"', clv, re.S)
    assert first and int(first.group(1)) == best.member_id
    assert sum(chart(clv, "clv-alive")["series"][0]["data"]) == bands
    assert len(chart(clv, "clv-deciles")["xAxis"]["data"]) == 10 or bands < 10

    diagnosis = c.get(PAGES["diagnosis"] + "?lang=en").text
    severities = re.findall(r'class="finding (\w+)" data-finding="\w+"', diagnosis)
    order = {"high": 0, "medium": 1, "low": 2}
    assert severities == sorted(severities, key=order.__getitem__)
    assert len(severities) == int(re.search(r'data-kpi="fired">(\d+)', diagnosis).group(1))  # type: ignore[union-attr]
    assert "Remedy" in diagnosis and 'id="passed"' in diagnosis
    report = c.get("/console/insight/diagnosis/report")
    assert report.status_code == 200 and "<script" not in report.text


def test_every_insight_page_renders_in_a_browser_in_both_languages(
    computed: Any, new_tab: Any
) -> None:
    texts = {"zh_CN": ("洞察", "生命周期"), "en": ("Insight", "Lifecycle")}
    for lang, (nav, tab_name) in texts.items():
        tab = new_tab()
        tab.page.goto(f"{computed.url}/console/login?lang={lang}")
        computed.log_in(tab)
        for name, path in PAGES.items():
            tab.page.goto(computed.url + path)
            tab.page.wait_for_load_state("networkidle")
            assert nav in tab.page.inner_text("nav.nav")
            assert tab_name in tab.page.inner_text("nav.tabs")
            assert tab.page.locator(f"nav.tabs a.on[data-tab='{name}']").count() == 1
            charts = tab.page.locator("[data-chart]")
            for i in range(charts.count()):  # every chart drew
                assert charts.nth(i).locator("svg").count() == 1, (name, i)
            tab.shot(f"{lang}-insight-{name}")
        assert tab.errors == [], lang

    tab = new_tab()
    computed.log_in(tab)
    tab.page.goto(f"{computed.url}/console/insight/rfm")
    busiest = max(last_groups(computed.db, "rfm").items(), key=lambda kv: kv[1])[0]
    tab.page.click(f"#rfm-grid a[data-group='{busiest}']")
    tab.page.wait_for_url(f"**/console/insight/rfm/{busiest}")
    tab.shot("zh_CN-insight-rfm-group")
    first = tab.page.locator("#group-members tbody tr").first
    member_id = first.get_attribute("data-member")
    first.locator("a").first.click()
    tab.page.wait_for_url(f"**/console/members/{member_id}")
    assert tab.errors == []
