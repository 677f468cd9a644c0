"""Pure rules of the console: passwords, signed tokens, the search box, display helpers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from siyu.web import rules

SECRET = "s3cret"
NOW = 1_800_000_000


def test_a_password_checks_against_its_own_hash_only() -> None:
    stored = rules.hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert rules.check_password("correct horse", stored)
    assert not rules.check_password("correct hors", stored)
    assert rules.hash_password("correct horse") != stored  # a fresh salt each time


def test_a_garbled_stored_hash_never_matches() -> None:
    for stored in ("", "plain", "scrypt$x$8$1$00$00", "bcrypt$1$2$3$4$5"):
        assert not rules.check_password("anything", stored)


def test_password_rules_say_what_is_wrong() -> None:
    assert rules.password_problem("short") == "at least 8 characters"
    assert rules.password_problem(" spaced-out ") == "no spaces at the start or end"
    assert rules.password_problem("long enough") is None


@given(member_id=st.integers(min_value=1, max_value=2**62), seconds=st.integers(1, 10**7))
def test_a_member_link_names_its_member_until_it_expires(member_id: int, seconds: int) -> None:
    token = rules.member_link_token(SECRET, member_id, now=NOW, seconds=seconds)
    assert rules.read_member_link(SECRET, token, now=NOW) == member_id
    assert rules.read_member_link(SECRET, token, now=NOW + seconds) is None
    assert rules.read_member_link("other secret", token, now=NOW) is None


def test_a_tampered_token_is_refused() -> None:
    token = rules.member_link_token(SECRET, 42, now=NOW)
    body, mac = token.split(".")
    forged = rules.sign("guess", "member", {"mid": 43, "exp": NOW + 100}).split(".")[0]
    assert rules.read_member_link(SECRET, f"{forged}.{mac}", now=NOW) is None
    assert rules.read_member_link(SECRET, body, now=NOW) is None
    assert rules.read_member_link(SECRET, None, now=NOW) is None
    assert rules.read_member_link(SECRET, "a.b.c", now=NOW) is None


def test_a_token_for_one_purpose_does_not_pass_for_another() -> None:
    link = rules.member_link_token(SECRET, 7, now=NOW)
    assert rules.read_session(SECRET, link, now=NOW) is None
    cookie = rules.session_cookie(SECRET, 7, now=NOW)
    assert rules.read_member_link(SECRET, cookie, now=NOW) is None
    assert not rules.login_form_ok(SECRET, cookie, now=NOW)


def test_a_session_carries_the_user_and_a_nonce_for_csrf_tokens() -> None:
    cookie = rules.session_cookie(SECRET, 5, now=NOW, nonce="abc")
    found = rules.read_session(SECRET, cookie, now=NOW + 60)
    assert found == rules.ConsoleSession(5, NOW + rules.SESSION_SECONDS, "abc")
    assert rules.read_session(SECRET, cookie, now=NOW + rules.SESSION_SECONDS) is None
    token = rules.csrf_token(SECRET, "abc")
    assert rules.csrf_ok(SECRET, "abc", token)
    assert not rules.csrf_ok(SECRET, "abd", token)
    assert not rules.csrf_ok(SECRET, "abc", None)


def test_the_search_box_tells_phones_member_numbers_and_names_apart() -> None:
    assert rules.search_kind("13812345678") == "phone"
    assert rules.search_kind("138 1234 5678") == "phone"
    assert rules.search_kind("0000000141") == "member_no"
    assert rules.search_kind("王") == "name"
    assert rules.search_kind("23812345678") == "name"


def test_only_local_paths_are_followed_after_login() -> None:
    assert rules.safe_next("/console/members?q=1") == "/console/members?q=1"
    for target in ("https://evil.example", "//evil.example", "/\\evil", "", None):
        assert rules.safe_next(target) == "/console"


def test_display_helpers() -> None:
    assert rules.yuan(12345) == "123.45"
    assert rules.yuan(1_000_000) == "10,000"
    assert rules.yuan(-150) == "-1.50"
    assert rules.percent(50, 200) == 25
    assert rules.percent(300, 200) == 100
    assert rules.percent(5, None) == 100
    assert rules.share(1, 3) == "33.3%"
    assert rules.share(1, 0) == "—"


def test_the_expiry_notice_counts_only_spendable_points_up_to_what_is_available() -> None:
    from datetime import date

    day, later = date(2026, 12, 31), date(2027, 6, 30)
    lots = [(day, 500, False), (day, 220, True), (later, 80, True)]
    notice = rules.expiry_notice(lots, available=220)
    assert (notice.day, notice.points) == (day, 220)
    assert (notice.frozen_day, notice.frozen_points) == (day, 500)
    held = rules.expiry_notice(lots, available=150)  # 70 points on hold for a redemption
    assert held.points == 150
    assert rules.expiry_notice([(day, 500, False)], available=0).day is None
    assert rules.expiry_notice([], available=10) == rules.ExpiryNotice(None, 0, None, 0)


def test_a_member_goes_only_to_an_active_guide_of_the_managers_store() -> None:
    ok = {
        "role": "store_manager",
        "manager_store_id": 1,
        "current_guide_id": 5,
        "target_id": 6,
        "target_role": "guide",
        "target_status": "active",
        "target_store_id": 1,
    }
    assert rules.hand_over_problem(**ok) is None  # type: ignore[arg-type]
    assert "own store" in rules.hand_over_problem(**{**ok, "target_store_id": 2})  # type: ignore[arg-type, operator]
    assert rules.hand_over_problem(**{**ok, "role": "operator", "target_store_id": 2}) is None  # type: ignore[arg-type]
    assert "left" in rules.hand_over_problem(**{**ok, "target_status": "left"})  # type: ignore[arg-type, operator]
    assert "already" in rules.hand_over_problem(**{**ok, "target_id": 5})  # type: ignore[arg-type, operator]
    assert "not one" in rules.hand_over_problem(**{**ok, "target_role": "manager"})  # type: ignore[arg-type, operator]


def test_dashboard_periods_end_yesterday_or_run_the_month_to_date() -> None:
    from datetime import date

    today = date(2026, 11, 23)
    assert rules.period_dates("7", None, None, today=today) == (
        date(2026, 11, 16),
        date(2026, 11, 22),
    )
    assert rules.period_dates("30", None, None, today=today)[0] == date(2026, 10, 24)
    assert rules.period_dates("month", None, None, today=today) == (date(2026, 11, 1), today)
    custom = (date(2026, 1, 1), date(2026, 1, 31))
    assert rules.period_dates("custom", *custom, today=today) == custom
    assert [rules.trend(d) for d in (3, -0.5, 0)] == ["up", "down", "flat"]
