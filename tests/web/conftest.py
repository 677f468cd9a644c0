"""Fixtures of the console tests: a small demo brand served by uvicorn on a loopback port,
one Chromium for the whole session (Debian's, driven by Playwright), and a place for
screenshots (``tests/web/artifacts/``, not committed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select, text

from siyu.api.app import create_app
from siyu.core import clock
from siyu.core.db import Database
from siyu.core.settings import Settings
from siyu.demo.generator import generate_brand
from siyu.members.models import Member
from siyu.schema import metadata
from siyu.stores.models import Staff
from siyu.web import users

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SECRET = "console-test-secret"
PASSWORD = "console-pass-1"
CHROMIUM = "/usr/bin/chromium"


def empty(database: Database) -> None:
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tab:
    """A page with its console errors collected (console.error and uncaught exceptions)."""

    page: Any
    errors: list[str]

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@dataclass
class Brand:
    """The served demo brand: its URL, settings and who can log in."""

    url: str
    db: Database
    settings: Settings
    guide_id: int
    guide_member_id: int
    other_member_id: int
    secret: str = SECRET
    password: str = PASSWORD

    def log_in(self, tab: Tab, username: str = "admin") -> None:
        tab.page.goto(f"{self.url}/console/login")
        tab.page.fill("#username", username)
        tab.page.fill("#password", self.password)
        tab.page.click("button[type=submit]")
        tab.page.wait_for_url(f"{self.url}/console")


@pytest.fixture(scope="module")
def brand(db: Database) -> Iterator[Brand]:
    """A small demo brand (the generator, through the services) served on loopback."""
    previous = clock.set_clock(clock.SystemClock())  # the server thread reads the clock too
    empty(db)
    generate_brand(db, members=120, seed=7, as_of=clock.now())
    with db.unit_of_work() as s:
        guide = s.scalars(
            select(Staff)
            .where(Staff.role == "guide", Staff.status == "active")
            .where(Staff.id.in_(select(Member.guide_id).where(Member.guide_id.is_not(None))))
            .order_by(Staff.id)
        ).first()
        assert guide is not None
        mine = s.scalar(select(Member.id).where(Member.guide_id == guide.id).order_by(Member.id))
        other = s.scalar(
            select(Member.id)
            .where((Member.guide_id != guide.id) | Member.guide_id.is_(None))
            .order_by(Member.id)
        )
        assert mine is not None and other is not None
        users.create_user(s, username="admin", password=PASSWORD, role="admin")
        users.create_user(s, username="ops", password=PASSWORD, role="operator")
        users.create_user(s, username="guide", password=PASSWORD, role="guide", staff_id=guide.id)
        guide_id = guide.id
    settings = Settings(database_url=db.url, auto_migrate=False, scheduler=False, secret_key=SECRET)
    app = create_app(settings, db=db)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield Brand(f"http://127.0.0.1:{port}", db, settings, guide_id, mine, other)
    server.should_exit = True
    thread.join(timeout=10)
    clock.set_clock(previous)
    empty(db)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def new_tab(browser: Any) -> Iterator[Callable[..., Tab]]:
    contexts = []

    def make(*, mobile: bool = False, locale: str = "zh-CN") -> Tab:
        options: dict[str, Any] = {"locale": locale}
        if mobile:
            options.update(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        else:
            options.update(viewport={"width": 1440, "height": 900})
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        return Tab(page, errors)

    yield make
    for context in contexts:
        context.close()
