"""The console and the member pages in a real browser (Chromium through Playwright):
every page renders in both languages without console errors, and the main flows work.
Screenshots go to tests/web/artifacts/."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from siyu.benefits.models import Reward
from siyu.core.auth import SYSTEM
from siyu.members.models import Member
from siyu.points import service as points
from siyu.web import links

CONSOLE_PAGES = ["dashboard", "members", "member", "programme", "benefits", "stores"]
NAV_TEXT = {"zh_CN": "数据概览", "en": "Dashboard"}


def console_path(name: str, brand: Any) -> str:
    return {
        "dashboard": "/console",
        "members": "/console/members",
        "member": f"/console/members/{brand.guide_member_id}",
        "programme": "/console/programme",
        "benefits": "/console/benefits",
        "stores": "/console/stores",
    }[name]


def member_link(brand: Any, member_id: int) -> str:
    with brand.db.unit_of_work() as s:
        return brand.url + links.mint(s, member_id, secret=brand.secret).path


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_every_page_renders_without_console_errors(brand: Any, new_tab: Any, lang: str) -> None:
    tab = new_tab()
    tab.page.goto(f"{brand.url}/console/login?lang={lang}")
    tab.shot(f"{lang}-login")
    brand.log_in(tab)
    for name in CONSOLE_PAGES:
        tab.page.goto(brand.url + console_path(name, brand))
        tab.page.wait_for_load_state("networkidle")
        assert NAV_TEXT[lang] in tab.page.inner_text("nav.nav")
        tab.shot(f"{lang}-console-{name}")
    assert tab.errors == []

    member = new_tab(mobile=True)
    member.page.goto(member_link(brand, brand.guide_member_id) + f"&lang={lang}")
    member.page.goto(f"{brand.url}/m?lang={lang}")
    for path, name in (("/m", "card"), ("/m/mall", "mall"), ("/m/savings", "savings")):
        member.page.goto(brand.url + path)
        member.page.wait_for_load_state("networkidle")
        member.shot(f"{lang}-member-{name}")
    assert member.errors == []
    assert ("积分商城" if lang == "zh_CN" else "Points mall") in member.page.inner_text(".tabbar")


def test_log_in_find_a_member_and_adjust_points(brand: Any, new_tab: Any) -> None:
    with brand.db.unit_of_work() as s:
        member = s.scalars(select(Member).where(Member.phone.is_not(None))).first()
        assert member is not None
        phone, member_id, before = member.phone, member.id, member.points_balance

    tab = new_tab()
    tab.page.goto(f"{brand.url}/console")
    tab.page.wait_for_url("**/console/login**")
    tab.page.fill("#username", "ops")
    tab.page.fill("#password", "not the password")
    tab.page.click("button[type=submit]")
    assert "用户名或密码错误" in tab.page.inner_text("[role=alert]")
    brand.log_in(tab, "ops")

    tab.page.goto(f"{brand.url}/console/members")
    tab.page.fill("input[name=q]", phone)
    tab.page.click("form.search button")
    tab.page.wait_for_url(f"**/console/members?q={phone}*")
    rows = tab.page.locator("#member-results tbody tr")
    expect(rows).to_have_count(1)  # waits for the results page, which a busy machine delays
    rows.first.locator("a").first.click()
    tab.page.wait_for_url(f"**/console/members/{member_id}")

    tab.page.fill("#points_delta", "123")
    tab.page.fill("#reason", "门店补录积分")
    tab.page.click("#adjust-points button[type=submit]")
    first = tab.page.locator("#points-ledger tbody tr").first
    first.locator("text=+123").wait_for()
    assert "门店补录积分" in first.inner_text()
    assert tab.page.inner_text("[data-points-balance]") == f"{before + 123:,}"
    tab.shot("flow-points-adjusted")
    assert tab.errors == []
    with brand.db.unit_of_work() as s:
        assert s.get(Member, member_id).points_balance == before + 123  # type: ignore[union-attr]


def test_edit_a_tier_threshold_see_the_problem_then_the_diff(brand: Any, new_tab: Any) -> None:
    tab = new_tab()
    brand.log_in(tab)
    tab.page.goto(f"{brand.url}/console/programme?lang=en")
    field = "tiers.levels[2].threshold"
    old = tab.page.input_value(f"[id='{field}']")

    tab.page.fill(f"[id='{field}']", "100")  # below the level under it: refused
    tab.page.click("#programme-form button[type=submit]")
    problem = tab.page.locator(f"[data-problem-for='{field}']")
    problem.wait_for()
    assert problem.inner_text().strip()
    tab.shot("flow-programme-problem")

    tab.page.fill(f"[id='{field}']", str(int(float(old)) + 500))
    tab.page.click("#programme-form button[type=submit]")
    diff = tab.page.locator("#diff")
    diff.wait_for()
    assert field in diff.inner_text()
    assert str(int(float(old)) + 500) in diff.inner_text()
    tab.shot("flow-programme-diff")
    tab.page.fill("#note", "raise V3")
    tab.page.click("#diff button[type=submit]")
    tab.page.wait_for_url("**/console/programme?published=*")
    assert tab.page.input_value(f"[id='{field}']") == str(int(float(old)) + 500)
    assert tab.errors == []


def test_a_member_checks_in_and_redeems_a_reward(brand: Any, new_tab: Any) -> None:
    member_id = brand.other_member_id
    with brand.db.unit_of_work() as s:
        reward = s.scalars(
            select(Reward)
            .where(Reward.status == "active", Reward.min_tier_code.is_(None))
            .order_by(Reward.points_price)
        ).first()
        assert reward is not None, "the demo brand has a points mall"
        points.adjust(
            s, member_id, reward.points_price + 500, reason="test", principal=SYSTEM, key="t1"
        )
        reward_code = reward.code

    tab = new_tab(mobile=True)
    tab.page.goto(member_link(brand, member_id))
    tab.page.wait_for_url(f"{brand.url}/m")
    tab.page.click("#check-in-button")
    tab.page.locator("[data-check-in-result]").wait_for()
    assert "签到成功" in tab.page.inner_text("#check-in")
    tab.shot("flow-member-checked-in")

    tab.page.goto(f"{brand.url}/m/mall")
    before = tab.page.inner_text(".card h2 small")
    tab.page.locator(f"[data-reward='{reward_code}'] button").click()
    tab.page.locator("[data-redeem-result]").wait_for()
    assert "兑换成功" in tab.page.inner_text("[data-redeem-result]")
    assert tab.page.inner_text(".card h2 small") != before
    tab.shot("flow-member-redeemed")
    assert tab.errors == []


def _pair(brand: Any, lang: str) -> tuple[int, int, str]:
    """Two members with phones for a merge, a different pair per language, and never the
    members the other flows use."""
    with brand.db.unit_of_work() as s:
        found = s.execute(
            select(Member.id, Member.phone)
            .where(
                Member.phone.is_not(None),
                Member.status == "active",
                Member.id.not_in([brand.guide_member_id, brand.other_member_id]),
            )
            .order_by(Member.id)
            .limit(4)
        ).all()
    k = 0 if lang == "zh_CN" else 2
    return found[k][0], found[k + 1][0], found[k + 1][1]


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_merge_after_the_confirmation_then_hand_the_member_over(
    brand: Any, new_tab: Any, lang: str
) -> None:
    into, other, phone = _pair(brand, lang)
    tab = new_tab()
    brand.log_in(tab, "ops")
    tab.page.goto(f"{brand.url}/console/members/{into}?lang={lang}")
    tab.page.fill("#merge-ref", phone)
    tab.page.select_option("#merge-direction", "into_this")
    tab.page.click("#merge-find button[type=submit]")
    confirm = tab.page.locator("#merge-confirm")
    confirm.wait_for()
    assert confirm.locator(f"[data-merge-from='{other}']").count() == 1
    assert confirm.locator(f"[data-merge-into='{into}']").count() == 1
    assert "member_identities" in confirm.locator("[data-merge-moves]").inner_text()
    tab.shot(f"{lang}-flow-merge-confirm")

    tab.page.click("#merge-form button[type=submit]")  # no reason yet: the browser asks
    assert tab.page.locator("#merge-confirm").count() == 1
    reason = "同一顾客两张卡" if lang == "zh_CN" else "one customer, two cards"
    tab.page.fill("#merge-reason", reason)
    tab.page.click("#merge-form button[type=submit]")
    tab.page.wait_for_url(f"**/console/members/{into}?done=merged*")
    expect(tab.page.locator(f"[data-merged-from='{other}']")).to_have_count(1)
    tab.shot(f"{lang}-flow-merged")

    tab.page.goto(f"{brand.url}/console/members/{other}")
    banner = tab.page.locator(f"[data-merged-into='{into}']")
    expect(banner).to_have_count(1)
    assert tab.page.locator("#merge-find").count() == 0
    tab.shot(f"{lang}-flow-merged-member")
    banner.locator("a").click()
    tab.page.wait_for_url(f"**/console/members/{into}")

    with brand.db.unit_of_work() as s:
        before = s.get(Member, into).guide_id  # type: ignore[union-attr]
    options = tab.page.locator("#to-guide option:not([disabled])").all()
    target = next(o.get_attribute("value") for o in options if o.get_attribute("value"))
    tab.page.select_option("#to-guide", target)
    tab.page.fill("#hand-over-reason", "导购调岗" if lang == "zh_CN" else "guide moved")
    tab.page.click("#hand-over-form button[type=submit]")
    tab.page.wait_for_url("**done=handover*")
    tab.shot(f"{lang}-flow-handed-over")
    assert tab.errors == []
    with brand.db.unit_of_work() as s:
        gone = s.get(Member, other)
        assert gone is not None and gone.merged_into_id == into
        now = s.get(Member, into).guide_id  # type: ignore[union-attr]
        assert now == int(target) and now != before


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_the_dashboard_switches_periods(brand: Any, new_tab: Any, lang: str) -> None:
    from siyu.insight import kpis
    from siyu.insight.refresh import refresh

    refresh(brand.db)  # the materialized lifecycle, RFM, super users and trend
    tab = new_tab()
    # Each period's report is computed on request until the nightly KPI job has stored it;
    # on a busy machine that can take longer than Playwright's default 30 seconds.
    tab.page.set_default_timeout(180_000)
    brand.log_in(tab)
    tab.page.goto(f"{brand.url}/console?lang={lang}")
    tab.page.wait_for_load_state("networkidle")
    assert tab.page.locator("[data-kpi-row]").count() == len(kpis.HEADLINE)
    assert tab.page.locator("#trend svg").count() == 1  # the ECharts trend, drawn
    tab.shot(f"{lang}-dashboard-30-days")

    tab.page.click("[data-period-choice='7']")
    tab.page.wait_for_url("**/console?period=7*")
    tab.page.wait_for_load_state("networkidle")
    assert ("7 天" if lang == "zh_CN" else "7 days") in tab.page.inner_text("[data-period]")
    assert "on" in (tab.page.get_attribute("[data-period-choice='7']", "class") or "")
    tab.shot(f"{lang}-dashboard-7-days")

    tab.page.fill("#period-from", "2026-01-01")
    tab.page.fill("#period-to", "2026-01-31")
    tab.page.click("#custom-period button[type=submit]")
    tab.page.wait_for_url("**period=custom*")
    assert "2026-01-01 … 2026-01-31" in tab.page.inner_text("[data-period]")
    tab.shot(f"{lang}-dashboard-custom")
    assert tab.errors == []
