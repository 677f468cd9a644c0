"""Simulate before publish: the programme's preview page runs the simulator on the draft and
shows its side-by-side result, over HTTP (numbers equal the simulator's own, an invalid
draft refused with its problem, roles) and in a real browser (both languages)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from siyu.api.app import create_app
from siyu.core import clock
from siyu.insight import simulator
from siyu.programme import service as programmes
from siyu.web import console_programme, users

FIELD = "tiers.levels[2].threshold"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # as the browser tests


@pytest.fixture(scope="module")
def analyst(brand: Any) -> str:
    with brand.db.unit_of_work() as s:
        users.create_user(s, username="analyst", password=brand.password, role="analyst")
    return "analyst"


@pytest.fixture
def frozen() -> Iterator[None]:
    """The route and the test's own simulator call see the same instant ("now")."""
    previous = clock.set_clock(clock.FixedClock(clock.now()))
    yield
    clock.set_clock(previous)


@pytest.fixture
def client(brand: Any, analyst: str, frozen: None) -> Iterator[TestClient]:
    with TestClient(create_app(brand.settings, db=brand.db)) as c:
        yield c


def log_in(client: TestClient, brand: Any, username: str) -> str:
    """Log in; the console's CSRF token."""
    page = client.get("/console/login")
    token = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    client.post(
        "/console/login",
        data={"username": username, "password": brand.password, "form_token": token},
    )
    programme = client.get("/console/programme").text
    return re.search(r'name="csrf_token" value="([^"]+)"', programme).group(1)  # type: ignore[union-attr]


def preview(client: TestClient, csrf: str, **fields: str) -> str:
    answer = client.post("/console/programme/preview", data={**fields, "csrf_token": csrf})
    assert answer.status_code == 200
    return answer.text


def draft_of(page: str) -> str:
    """The draft JSON the simulate form of a preview page posts."""
    form = page[page.index('id="simulate-form"') :]
    value = re.search(r'name="document" value="([^"]*)"', form).group(1)  # type: ignore[union-attr]
    return html.unescape(value)


def shown(page: str) -> dict[str, tuple[str, str]]:
    """Each line of the side-by-side table: its two columns as shown."""
    lines = {}
    for key, row in re.findall(r'<tr class="[^"]*" data-line="([^"]+)">(.*?)</tr>', page, re.S):
        cells = re.findall(r'<td class="num">([^<]*)</td>', row)
        lines[html.unescape(key)] = (cells[0], cells[1])
    return lines


def labels_of(page: str) -> dict[str, str]:
    """Each line of the side-by-side table: its name as shown (the first cell's text)."""
    labels = {}
    for key, row in re.findall(r'<tr class="[^"]*" data-line="([^"]+)">(.*?)</tr>', page, re.S):
        first = re.search(r"<td>(.*?)</td>", row, re.S)
        assert first is not None
        labels[html.unescape(key)] = html.unescape(re.sub(r"<[^>]+>", "", first.group(1))).strip()
    return labels


def notes_of(page: str) -> list[str]:
    """The simulation's notes as shown, in the page's language."""
    notes = re.search(r"<ul[^>]*data-notes>(.*?)</ul>", page, re.S)
    assert notes is not None, "no notes shown"
    return [html.unescape(n) for n in re.findall(r"<li>(.*?)</li>", notes.group(1), re.S)]


def as_shown(value: int | None, unit: str = "members") -> str:
    if value is None:
        return "—"
    if unit == "fen":
        whole, cents = divmod(abs(value), 100)
        return ("-" if value < 0 else "") + f"{whole:,}" + (f".{cents:02d}" if cents else "")
    return f"{value:,}"


def test_a_valid_draft_offers_a_simulation_whose_numbers_are_the_simulators(
    client: TestClient, brand: Any
) -> None:
    csrf = log_in(client, brand, "analyst")
    current = client.get("/console/programme").text
    old = int(float(re.search(rf'id="{re.escape(FIELD)}"[^>]*value="([^"]+)"', current).group(1)))  # type: ignore[union-attr]
    page = preview(client, csrf, **{FIELD: str(old + 500), "points.earn.per_yuan": "2"})
    assert 'id="diff"' in page and 'id="simulate-form"' in page
    assert 'class="btn brand"' not in page  # an analyst simulates but does not publish
    document = draft_of(page)

    answer = client.post(
        "/console/programme/simulate",
        data={"document": document, "sample": "0.5", "csrf_token": csrf},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 200
    fragment = answer.text
    assert "<html" not in fragment and 'id="simulation-result"' in fragment

    draft = programmes.parse(json.loads(document, parse_float=Decimal))
    own = simulator.simulate(brand.db, draft, sample=0.5)
    assert own.estimate and own.members > 0 and own.orders > 0
    lines = shown(fragment)
    for code in own.levels:
        expected = (as_shown(own.baseline.tiers.get(code)), as_shown(own.draft.tiers.get(code)))
        assert lines[f"tiers::{code}"] == expected
        up = (
            as_shown(own.baseline.upgrades.get(code, 0)),
            as_shown(own.draft.upgrades.get(code, 0)),
        )
        assert lines[f"movements:Upgraded to:{code}"] == up
    names = labels_of(fragment)
    for group, specs in (
        ("points", simulator.POINT_NAMES),
        ("liability", simulator.LIABILITY_NAMES),
        ("benefits", simulator.BENEFIT_NAMES),
    ):
        for name, zh, _en, unit in specs:
            expected = (
                as_shown(getattr(own.baseline, name), unit),
                as_shown(getattr(own.draft, name), unit),
            )
            assert lines[f"{group}:{name}:"] == expected
            # The simulator's own name, in Chinese on a zh-CN page (the default).
            assert names[f"{group}:{name}:"] == zh
    for plan, eligible in own.draft.paid_eligible.items():
        assert lines[f"paid::{plan}"][1] == as_shown(eligible)

    # The notes are the simulator's own, in Chinese on a zh-CN page (the default).
    assert own.notes[0].zh == "估算：抽样回放了 50.00% 的会员，各项数字放大 2 倍"
    assert len(own.notes) >= 2 and notes_of(fragment) == [n.zh for n in own.notes]

    # Twice the points per yuan: more points issued, and the line is marked as a difference.
    assert own.draft.points_orders > own.baseline.points_orders
    row = re.search(r'<tr class="([^"]*)" data-line="points:points_issued:">', fragment)
    assert row is not None and row.group(1) == "changed"
    assert re.search(r'data-changed="([1-9]\d*)"', fragment)


def test_without_htmx_the_simulation_is_a_page_with_the_publish_button(
    client: TestClient, brand: Any
) -> None:
    csrf = log_in(client, brand, "ops")
    document = draft_of(preview(client, csrf, **{"points.frozen_days": "10"}))
    page = client.post(
        "/console/programme/simulate?lang=en", data={"document": document, "csrf_token": csrf}
    )
    assert page.status_code == 200 and "<html" in page.text
    assert 'id="simulation-result"' in page.text and "data-estimate" not in page.text  # all
    # An English page shows the notes in English.
    own = simulator.simulate(brand.db, programmes.parse(json.loads(document, parse_float=Decimal)))
    assert own.notes and notes_of(page.text) == [n.en for n in own.notes]
    # ... and the figures by their English names, shown as they are (not run through the
    # catalogue); the lines the console names itself are still translated (here: English).
    names = labels_of(page.text)
    for group, specs in (
        ("points", simulator.POINT_NAMES),
        ("liability", simulator.LIABILITY_NAMES),
        ("benefits", simulator.BENEFIT_NAMES),
    ):
        for name, _zh, en, _unit in specs:
            assert names[f"{group}:{name}:"] == en
    upgrades = [v for k, v in names.items() if k.startswith("movements:Upgraded to:")]
    assert upgrades and all(v.startswith("Upgraded to ") for v in upgrades)
    publish = page.text[page.text.index('id="publish-form"') :]
    assert 'type="submit"' in publish
    value = re.search(r'name="document" value="([^"]*)"', publish).group(1)  # type: ignore[union-attr]
    assert html.unescape(value) == document

    # Publish from the simulation's page; the history shows what the version changed.
    published = client.post(
        "/console/programme/publish",
        data={"document": document, "note": "longer return window", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert published.status_code == 303
    version_id = int(published.headers["location"].rsplit("=", 1)[1])
    assert (
        f"/console/programme/versions/{version_id}/changes" in client.get("/console/programme").text
    )
    changes = client.get(f"/console/programme/versions/{version_id}/changes").text
    table = changes[changes.index('id="version-changes"') :]
    assert 'data-changes="1"' in table
    assert "points.frozen_days" in table and '<td class="new">10</td>' in table
    with brand.db.unit_of_work() as s:
        first_id = programmes.history(s)[-1].id
    first = client.get(f"/console/programme/versions/{first_id}/changes").text
    assert 'data-changes="0"' not in first and "points.frozen_days" in first


def test_an_invalid_draft_is_refused_with_its_problem(client: TestClient, brand: Any) -> None:
    csrf = log_in(client, brand, "analyst")
    document = draft_of(preview(client, csrf, **{"points.frozen_days": "9"}))
    broken = document.replace('"frozen_days": 9', '"frozen_days": 400')
    assert broken != document
    answer = client.post(
        "/console/programme/simulate", data={"document": broken, "csrf_token": csrf}
    )
    assert answer.status_code == 422
    assert 'data-problem-for="points.frozen_days"' in answer.text
    assert 'id="publish-form"' not in answer.text
    garbled = client.post(
        "/console/programme/simulate",
        data={"document": "{not json", "csrf_token": csrf},
        headers={"HX-Request": "true"},
    )
    assert garbled.status_code == 422 and "not valid JSON" in garbled.text
    share = client.post(
        "/console/programme/simulate",
        data={"document": document, "sample": "2", "csrf_token": csrf},
    )
    assert share.status_code == 422 and "at most 1" in share.text


def test_only_operators_and_analysts_simulate(client: TestClient, brand: Any) -> None:
    csrf = log_in(client, brand, "ops")
    document = draft_of(preview(client, csrf, **{"points.frozen_days": "8"}))
    guide = TestClient(create_app(brand.settings, db=brand.db))
    guide_csrf = log_in(guide, brand, "guide")
    refused = guide.post(
        "/console/programme/simulate", data={"document": document, "csrf_token": guide_csrf}
    )
    assert refused.status_code == 403
    no_token = client.post("/console/programme/simulate", data={"document": document})
    assert no_token.status_code == 403


def test_the_automatic_sample_replays_every_member_of_a_small_brand(
    brand: Any, frozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert console_programme._sample(brand.db, "") is None
    assert console_programme._sample(brand.db, "1") is None
    assert console_programme._sample(brand.db, "0.25") == 0.25
    monkeypatch.setattr(console_programme, "AUTO_SAMPLE_MEMBERS", 30)
    share = console_programme._sample(brand.db, "")
    assert share is not None and 0 < share < 1
    assert share == round(simulator.BUCKETS * 30 / 120) / simulator.BUCKETS


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_edit_a_threshold_preview_and_simulate_in_the_browser(
    brand: Any, new_tab: Any, lang: str
) -> None:
    tab = new_tab(locale="zh-CN" if lang == "zh_CN" else "en-US")
    brand.log_in(tab)
    tab.page.goto(f"{brand.url}/console/programme?lang={lang}")
    old = tab.page.input_value(f"[id='{FIELD}']")
    raised = str(int(float(old)) + 1000)
    tab.page.fill(f"[id='{FIELD}']", raised)
    tab.page.click("#programme-form button[type=submit]")
    tab.page.locator("#diff").wait_for()
    assert raised in tab.page.inner_text("#diff")

    tab.page.click("#simulate")
    result = tab.page.locator("#simulation-result")
    result.wait_for(timeout=60_000)
    text = result.inner_text()
    assert ("模拟" if lang == "zh_CN" else "Simulation") in text
    # The notes in the page's language: the draft lists the packs the programme in force
    # does, so the simulator notes the same for it.
    with brand.db.unit_of_work() as s:
        in_force = programmes.programme_of(programmes.require_in_force(s, clock.now()))
    own = simulator.simulate(brand.db, in_force).notes
    assert own, "the demo brand's simulation has notes"
    shown_notes = tab.page.locator("[data-notes] li").all_inner_texts()
    assert shown_notes == [n.zh if lang == "zh_CN" else n.en for n in own]
    tiers = tab.page.locator("table[data-group=tiers] tbody tr")
    assert tiers.count() >= 6
    for group in ("movements", "points", "liability"):
        assert tab.page.locator(f"table[data-group={group}]").count() == 1
    assert tab.page.locator("#publish-form button[type=submit]").is_visible()
    tab.shot(f"{lang}-programme-simulation")
    tab.page.locator("#simulation-result").screenshot(
        path=str(ARTIFACTS / f"{lang}-programme-simulation-result.png")
    )
    assert tab.errors == []
