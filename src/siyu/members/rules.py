"""Pure rules about members and identities: no database, no clock."""

from __future__ import annotations

import re
from enum import StrEnum

from siyu.core.errors import InvalidInput


class IdentityChannel(StrEnum):
    """Where an id of a person comes from. (channel, external_id) names one member at most."""

    phone = "phone"
    wechat_unionid = "wechat_unionid"
    wechat_openid = "wechat_openid"
    tmall = "tmall"
    jd = "jd"
    douyin = "douyin"
    store_card = "store_card"


class JoinChannel(StrEnum):
    store = "store"
    mini_program = "mini_program"
    wechat = "wechat"
    tmall = "tmall"
    jd = "jd"
    douyin = "douyin"
    referral = "referral"
    import_ = "import"
    order = "order"  # enrolled from an order by an unknown buyer


class MemberStatus(StrEnum):
    active = "active"
    frozen = "frozen"
    closed = "closed"
    merged = "merged"


_PHONE = re.compile(r"^1[3-9]\d{9}$")


def normalize_phone(raw: str, *, field: str = "phone") -> str:
    """Mainland mobile numbers: '+86 138-0013-8000' -> '13800138000'."""
    digits = re.sub(r"[\s\-()]", "", raw or "")
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    if not _PHONE.match(digits):
        raise InvalidInput(
            f"'{raw}' is not a mainland mobile number (11 digits starting with 1)", field=field
        )
    return digits


def mask_phone(phone: str | None) -> str | None:
    """138****5678: enough for a guide to recognise, not enough to call."""
    if not phone:
        return phone
    if len(phone) < 7:
        return "*" * len(phone)
    return f"{phone[:3]}****{phone[-4:]}"


def luhn_digit(digits: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def member_no(member_id: int) -> str:
    """The printed member number: the id on nine digits plus a Luhn check digit, so a
    mistyped number is caught instead of finding someone else."""
    body = f"{member_id:09d}"
    return body + str(luhn_digit(body))


def member_id_from_no(number: str) -> int | None:
    """The id behind a member number, or None when it is malformed or its check digit fails."""
    number = number.strip()
    if not number.isdigit() or len(number) < 2:
        return None
    body, check = number[:-1], int(number[-1])
    if luhn_digit(body) != check:
        return None
    return int(body)


def normalize_identity(
    channel: str, external_id: str, *, field: str = "identities"
) -> tuple[str, str]:
    try:
        ch = IdentityChannel(channel)
    except ValueError:
        raise InvalidInput(
            f"unknown identity channel '{channel}'; use one of: "
            + ", ".join(c.value for c in IdentityChannel),
            field=field,
        ) from None
    value = (external_id or "").strip()
    if ch is IdentityChannel.phone:
        value = normalize_phone(value, field=field)
    if not value:
        raise InvalidInput(f"{channel} identity has an empty id", field=field)
    if len(value) > 128:
        raise InvalidInput(f"{channel} identity is longer than 128 characters", field=field)
    return ch.value, value


def scene_tags(scene_code: str | None, configured: list[str] | None) -> list[str]:
    """Tags a member gets for joining through a QR code: the scene's configured tags, or
    ``qr:<code>`` for a scene nobody configured yet (so no join is ever untagged)."""
    if not scene_code:
        return []
    if configured:
        return list(dict.fromkeys(configured))
    return [f"qr:{scene_code}"]


def check_tag(tag: str) -> str:
    tag = (tag or "").strip()
    if not tag or len(tag) > 64:
        raise InvalidInput("a tag is 1 to 64 characters", field="tag")
    return tag
