"""Pure rules of the console and the member pages: password hashes, signed tokens
(session cookies, CSRF tokens, members' page links), and small display rules.

No I/O and no clock: the caller passes the secret and the instant, so every rule here is
tested without a database. Signing uses HMAC-SHA256 over the settings' ``secret_key``;
comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

# scrypt parameters: n=2**14, r=8, p=1 is the common interactive-login setting
# (~16 MB and tens of milliseconds per check).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSWORD = 8

SESSION_SECONDS = 12 * 3600
MEMBER_LINK_SECONDS = 7 * 24 * 3600
LOGIN_FORM_SECONDS = 3600


# --- passwords -------------------------------------------------------------------------------


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash``: a fresh 16-byte salt per password."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the stored hash (any stored parameters)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode("utf-8"),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(bytes.fromhex(digest)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed.hex(), digest)


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD:
        return f"at least {MIN_PASSWORD} characters"
    if password.strip() != password:
        return "no spaces at the start or end"
    return None


# --- signed tokens ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, purpose: str, body: str) -> str:
    # The purpose is part of the MAC: a member link can never pass as a session cookie.
    key = secret.encode("utf-8")
    return _b64(hmac.new(key, f"{purpose}:{body}".encode(), hashlib.sha256).digest())


def sign(secret: str, purpose: str, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return f"{body}.{_mac(secret, purpose, body)}"


def unsign(secret: str, purpose: str, token: str | None, *, now: int) -> dict[str, Any] | None:
    """The payload of a token signed for ``purpose``, or None if forged, garbled or past
    its ``exp`` (seconds since the epoch)."""
    if not token or token.count(".") != 1:
        return None
    body, mac = token.split(".")
    if not hmac.compare_digest(mac, _mac(secret, purpose, body)):
        return None
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        return None
    if payload["exp"] <= now:
        return None
    return payload


@dataclass(frozen=True)
class ConsoleSession:
    """What the console's cookie says: who, until when, and the nonce CSRF tokens derive from."""

    user_id: int
    expires: int
    nonce: str


def session_cookie(secret: str, user_id: int, *, now: int, nonce: str | None = None) -> str:
    nonce = nonce or secrets.token_urlsafe(16)
    return sign(secret, "session", {"uid": user_id, "exp": now + SESSION_SECONDS, "n": nonce})


def read_session(secret: str, cookie: str | None, *, now: int) -> ConsoleSession | None:
    payload = unsign(secret, "session", cookie, now=now)
    if payload is None or not isinstance(payload.get("uid"), int):
        return None
    return ConsoleSession(payload["uid"], payload["exp"], str(payload.get("n", "")))


def csrf_token(secret: str, nonce: str) -> str:
    """The token every POST of a session carries (form field or ``X-CSRF-Token`` header):
    derived from the session's nonce, so another site cannot know it."""
    return _mac(secret, "csrf", nonce)


def csrf_ok(secret: str, nonce: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(str(token), csrf_token(secret, nonce))


def login_form_token(secret: str, *, now: int) -> str:
    """The login form's own CSRF token (there is no session yet): signed and short-lived."""
    return sign(secret, "login", {"exp": now + LOGIN_FORM_SECONDS, "n": secrets.token_hex(8)})


def login_form_ok(secret: str, token: str | None, *, now: int) -> bool:
    return unsign(secret, "login", token, now=now) is not None


def member_link_token(
    secret: str, member_id: int, *, now: int, seconds: int = MEMBER_LINK_SECONDS
) -> str:
    """A member's page link: HMAC over the member id and an expiry, as a mini program's
    login would hand over."""
    return sign(secret, "member", {"mid": member_id, "exp": now + seconds})


def read_member_link(secret: str, token: str | None, *, now: int) -> int | None:
    payload = unsign(secret, "member", token, now=now)
    if payload is None or not isinstance(payload.get("mid"), int):
        return None
    return int(payload["mid"])


def member_csrf(secret: str, token: str) -> str:
    """The member pages' POST token, bound to the member's link token."""
    return _mac(secret, "member-csrf", token)


# --- display ---------------------------------------------------------------------------------


def percent(part: int, whole: int | None) -> int:
    """A progress bar's width, 0 to 100."""
    if not whole or whole <= 0:
        return 100
    return max(0, min(100, round(100 * part / whole)))


def yuan(fen: int | None) -> str:
    """Fen as yuan for display: 12345 -> '123.45', 10000 -> '100'."""
    if fen is None:
        return ""
    sign_ = "-" if fen < 0 else ""
    whole, cents = divmod(abs(int(fen)), 100)
    return f"{sign_}{whole:,}" + (f".{cents:02d}" if cents else "")


def share(part: float, whole: float) -> str:
    """A percentage with one decimal, '—' when there is no whole."""
    if not whole:
        return "—"
    return f"{100 * part / whole:.1f}%"


def safe_next(target: str | None, default: str = "/console") -> str:
    """Where to go after logging in or switching language: only a path on this site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


SEARCH_KINDS = ("phone", "member_no", "name")


def search_kind(query: str) -> str:
    """What an operator typed in the one search box: an 11-digit phone starting with 1,
    a 10-digit member number, or else the start of a name."""
    q = query.strip().replace(" ", "").replace("-", "")
    if q.isdigit() and len(q) == 11 and q.startswith("1"):
        return "phone"
    if q.isdigit() and len(q) == 10:
        return "member_no"
    return "name"


# --- points expiry on the member pages ---------------------------------------------------------


@dataclass(frozen=True)
class ExpiryNotice:
    """What a member is told about expiry: the next day spendable points expire and how
    many (never more than they can spend now), and frozen points expiring, told apart."""

    day: date | None
    points: int
    frozen_day: date | None
    frozen_points: int


def expiry_notice(lots: Iterable[tuple[date, int, bool]], available: int) -> ExpiryNotice:
    """From ``(expiry day, remaining, spendable now)`` per lot, the notice to show.

    Frozen lots (the return window) are not the member's to spend yet, and points on hold
    for a redemption are not either, so counting every lot could promise more than the
    balance: spendable points expiring are capped at what is available now."""
    spendable: dict[date, int] = {}
    frozen: dict[date, int] = {}
    for day, remaining, usable in lots:
        if remaining <= 0:
            continue
        into = spendable if usable else frozen
        into[day] = into.get(day, 0) + remaining
    day = min(spendable) if spendable and available > 0 else None
    points = min(spendable[day], available) if day is not None else 0
    frozen_day = min(frozen) if frozen else None
    return ExpiryNotice(day, points, frozen_day, frozen[frozen_day] if frozen_day else 0)


# --- handing a member over ---------------------------------------------------------------------


def hand_over_problem(
    *,
    role: str,
    manager_store_id: int | None,
    current_guide_id: int | None,
    target_id: int,
    target_role: str,
    target_status: str,
    target_store_id: int | None,
) -> str | None:
    """Why a member cannot go to this guide, or None. The same rules as the guides'
    hand-over: an active guide, and a store manager stays within their store."""
    if target_id == current_guide_id:
        return "the member already belongs to this guide; choose another"
    if target_role != "guide":
        return "choose a guide (this staff member is not one)"
    if target_status != "active":
        return "this guide has left; choose an active guide"
    if role == "store_manager" and target_store_id != manager_store_id:
        return "a store manager hands over only to guides of their own store"
    return None


# --- dashboard periods -------------------------------------------------------------------------

PERIOD_CHOICES = ("7", "30", "90", "month", "custom")


def period_dates(
    choice: str, start: date | None, end: date | None, *, today: date
) -> tuple[date | None, date | None]:
    """The first and last day of a period picked on the dashboard. Rolling periods end
    yesterday, so every day counted is complete (and the nightly KPI job's periods are
    the same ones); this month runs from its first day to today; custom passes through
    (validated by ``kpis.period_of``)."""
    yesterday = today - timedelta(days=1)
    if choice in ("7", "30", "90"):
        return yesterday - timedelta(days=int(choice) - 1), yesterday
    if choice == "month":
        return today.replace(day=1), today
    return start, end


def trend(delta: float) -> str:
    """The arrow class of a change: up, down or flat."""
    if delta > 0:
        return "up"
    if delta < 0:
        return "down"
    return "flat"
