"""``siyu users add|list`` and ``siyu members link`` end to end, on the test database."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from siyu import cli
from siyu.core.db import Database
from siyu.core.settings import get_settings
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.stores import service as stores
from siyu.web import demo, rules, users


@pytest.fixture
def runner(clean_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SIYU_DATABASE_URL", clean_db.url)
    monkeypatch.setenv("SIYU_USER_PASSWORD", "console-pass-1")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_users_add_and_list(runner: CliRunner, clean_db: Database) -> None:
    with clean_db.unit_of_work() as s:
        store = stores.create_store(s, code="S1", name="上海徐汇店")
        guide = stores.create_staff(s, code="G1", name="小张", role="guide", store_id=store.id)
    added = runner.invoke(cli.app, ["users", "add", "li.na", "--role", "operator"])
    assert added.exit_code == 0, added.output
    as_guide = ["users", "add", "xiao.zhang", "--role", "guide", "--guide-id", str(guide.id)]
    assert runner.invoke(cli.app, as_guide).exit_code == 0
    listed = runner.invoke(cli.app, ["users", "list"])
    assert "li.na" in listed.output and "xiao.zhang" in listed.output
    refused = runner.invoke(cli.app, ["users", "add", "nobody", "--role", "guide"])
    assert refused.exit_code != 0
    with clean_db.unit_of_work() as s:
        assert users.log_in(s, "xiao.zhang", "console-pass-1").staff_id == guide.id


def test_members_link_prints_a_signed_link(runner: CliRunner, clean_db: Database) -> None:
    with clean_db.unit_of_work() as s:
        member_id = members.enrol(s, EnrolDraft(phone="13800138000", name="王芳")).member_id
    printed = runner.invoke(
        cli.app, ["members", "link", "13800138000", "--base-url", "https://m.example.com"]
    )
    assert printed.exit_code == 0, printed.output
    url = printed.output.split()[0]
    assert url.startswith("https://m.example.com/m/enter?token=")
    token = url.split("token=")[1]
    secret = get_settings().secret_key
    assert rules.read_member_link(secret, token, now=int(time.time())) == member_id


def test_the_demo_login_gets_a_fresh_password_each_time(clean_db: Database) -> None:
    login, first = demo.demo_operator(clean_db)
    again, second = demo.demo_operator(clean_db)
    assert login == again == "demo" and first != second
    with clean_db.unit_of_work() as s:
        assert users.log_in(s, login, second).role == "admin"
