"""The console and the member pages in a real browser (Chromium through Playwright):
every page renders in both languages without console errors, and the main flows work.
Screenshots go to tests/web/artifacts/."""

from __future__ import annotations

from typing import Any

import pytest
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
    rows = tab.page.locator("#member-results tbody tr")
    assert rows.count() == 1
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
