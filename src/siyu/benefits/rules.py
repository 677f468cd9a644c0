"""Pure rules of coupons, benefit packs and the points mall: no database, no clock.

Callers pass plain data (a template's terms, an order's lines, the instant) and get
decisions back: what a coupon takes off an order, whether it may be redeemed there, when
a coupon issued now stops being valid, whether a refund gives it back, whether a member
may take a reward from the mall.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from siyu.core.clock import local_date
from siyu.core.errors import Problem


class CouponKind(StrEnum):
    amount_off = "amount_off"  # 满减: amount_off_fen off when the threshold is met
    percent_off = "percent_off"  # 折扣: percent_off_bp of the eligible amount, up to cap_fen
    freight = "freight"  # 运费券: the order's freight, up to amount_off_fen when set
    gift = "gift"  # 赠品券: a gift handed over with the order; takes nothing off


class Validity(StrEnum):
    fixed = "fixed"  # valid_from .. valid_until, the same for everyone
    relative = "relative"  # valid_days brand-local days, counting the day of issue


class CouponState(StrEnum):
    usable = "usable"
    used = "used"
    expired = "expired"


class PackTrigger(StrEnum):
    join = "join"
    birthday = "birthday"
    tier_upgrade = "tier_upgrade"
    monthly = "monthly"
    manual = "manual"


class RewardKind(StrEnum):
    coupon = "coupon"  # points for a coupon, issued at once
    gift = "gift"  # points for a physical gift, shipped
    points_cash = "points_cash"  # points plus cash for a product, shipped


class RedemptionState(StrEnum):
    issued = "issued"  # coupon rewards: done once the coupon is issued
    ordered = "ordered"
    shipped = "shipped"
    delivered = "delivered"
    cancelled = "cancelled"


# Fulfilment of shipped rewards: where each state may go next.
FULFILMENT: dict[RedemptionState, frozenset[RedemptionState]] = {
    RedemptionState.ordered: frozenset({RedemptionState.shipped, RedemptionState.cancelled}),
    RedemptionState.shipped: frozenset({RedemptionState.delivered, RedemptionState.cancelled}),
    RedemptionState.delivered: frozenset(),
    RedemptionState.cancelled: frozenset(),
    RedemptionState.issued: frozenset(),
}

BASIS_POINTS = 10_000  # percent_off_bp: 1500 is 15% off (85折)

# Coupon codes: 12 characters of Crockford's base32 (no I, L, O or U), 60 random bits: short
# enough to read aloud at a till, impossible to guess. What people type is forgiven:
# lower case, dashes, spaces, O for 0 and I or L for 1.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 12
_TYPED = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})


_CODE_BITS = (len(CODE_ALPHABET) - 1).bit_length()  # 5: the alphabet is 2**5 letters
if len(CODE_ALPHABET) != 1 << _CODE_BITS:  # pragma: no cover - a letter too many or too few
    raise RuntimeError("CODE_ALPHABET needs a power of two letters, for new_code")


def new_code() -> str:
    """``CODE_LENGTH`` letters of ``CODE_ALPHABET``, each uniformly at random: the letters
    are the 5-bit groups of one draw from the system's generator (one ``getrandom`` call
    per code, where ``secrets.choice`` made two per letter)."""
    bits = secrets.randbits(_CODE_BITS * CODE_LENGTH)
    mask = (1 << _CODE_BITS) - 1
    return "".join(CODE_ALPHABET[(bits >> (_CODE_BITS * i)) & mask] for i in range(CODE_LENGTH))


def normalize_code(raw: str) -> str:
    """What a person types as the stored code."""
    return raw.strip().upper().translate(_TYPED)


# --- templates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """What a coupon template promises, as plain data."""

    kind: CouponKind
    threshold_fen: int = 0
    amount_off_fen: int | None = None
    percent_off_bp: int | None = None
    cap_fen: int | None = None
    channels: tuple[str, ...] | None = None  # None: every channel
    categories: tuple[str, ...] | None = None  # None: every category


def check_terms(
    terms: Terms,
    *,
    validity: Validity,
    valid_from: datetime | None,
    valid_until: datetime | None,
    valid_days: int | None,
    stock: int | None,
    per_member_limit: int | None,
) -> list[Problem]:
    """Every problem of a template's terms, with the field to fix."""
    problems: list[Problem] = []
    if terms.threshold_fen < 0:
        problems.append(Problem("threshold_fen", "must not be negative"))
    if terms.kind is CouponKind.amount_off:
        if terms.amount_off_fen is None or terms.amount_off_fen <= 0:
            problems.append(
                Problem("amount_off_fen", "an amount_off coupon needs a positive amount")
            )
        elif terms.threshold_fen and terms.amount_off_fen > terms.threshold_fen:
            problems.append(
                Problem("amount_off_fen", "takes off more than the threshold; raise the threshold")
            )
    if terms.kind is CouponKind.percent_off:
        bp = terms.percent_off_bp
        if bp is None or not 0 < bp < BASIS_POINTS:
            problems.append(
                Problem("percent_off_bp", "basis points off between 1 and 9999 (1500 is 15% off)")
            )
    elif terms.percent_off_bp is not None:
        problems.append(Problem("percent_off_bp", "only percent_off coupons take a percentage"))
    freight_cap = terms.amount_off_fen
    if terms.kind is CouponKind.freight and freight_cap is not None and freight_cap <= 0:
        problems.append(Problem("amount_off_fen", "a freight cap must be positive"))
    if terms.kind is CouponKind.percent_off and terms.amount_off_fen is not None:
        problems.append(Problem("amount_off_fen", "a percent_off coupon takes percent_off_bp"))
    if terms.kind is CouponKind.gift and terms.amount_off_fen is not None:
        problems.append(Problem("amount_off_fen", "a gift coupon takes nothing off the order"))
    if terms.cap_fen is not None:
        if terms.kind is not CouponKind.percent_off:
            problems.append(Problem("cap_fen", "only percent_off coupons have a cap"))
        elif terms.cap_fen <= 0:
            problems.append(Problem("cap_fen", "must be positive (leave it out for no cap)"))
    for name, values in (("channels", terms.channels), ("categories", terms.categories)):
        if values is not None and not values:
            problems.append(Problem(name, "an empty list matches nothing; leave it out for all"))
    if validity is Validity.fixed:
        if valid_from is None or valid_until is None:
            problems.append(
                Problem("valid_until", "fixed validity needs valid_from and valid_until")
            )
        elif valid_until <= valid_from:
            problems.append(Problem("valid_until", "must be after valid_from"))
        if valid_days is not None:
            problems.append(Problem("valid_days", "only relative validity counts days"))
    else:
        if valid_days is None or not 1 <= valid_days <= 3660:
            problems.append(Problem("valid_days", "relative validity needs 1 to 3660 days"))
        if valid_from is not None or valid_until is not None:
            problems.append(Problem("valid_from", "relative validity has no fixed dates"))
    if stock is not None and stock < 0:
        problems.append(Problem("stock", "must not be negative (leave it out for no limit)"))
    if per_member_limit is not None and per_member_limit < 1:
        problems.append(Problem("per_member_limit", "at least 1 (leave it out for no limit)"))
    return problems


def local_midnight(day: date, tz: str) -> datetime:
    """The instant a brand-local day begins."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz))


def validity_window(
    *,
    validity: Validity,
    issued_at: datetime,
    valid_from: datetime | None,
    valid_until: datetime | None,
    valid_days: int | None,
    tz: str,
) -> tuple[datetime, datetime]:
    """``[from, until)`` of a coupon issued at ``issued_at``.

    Relative validity of N days counts the brand-local day of issue as day 1 and ends when
    day N ends: a 7-day coupon issued on Monday afternoon is good through Sunday 23:59."""
    if validity is Validity.fixed:
        assert valid_from is not None and valid_until is not None
        return valid_from, valid_until
    assert valid_days is not None
    issued_day = issued_at.astimezone(ZoneInfo(tz)).date()
    return issued_at, local_midnight(issued_day + timedelta(days=valid_days), tz)


# --- orders and discounts ------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    category: str
    amount_fen: int
    refunded_fen: int = 0


def eligible_fen(lines: Iterable[Line], categories: Sequence[str] | None, *, net: bool) -> int:
    """What the lines in the coupon's categories paid (less refunds when ``net``)."""
    total = 0
    for line in lines:
        if categories is None or line.category in categories:
            total += line.amount_fen - (line.refunded_fen if net else 0)
    return max(total, 0)


def discount_fen(terms: Terms, *, eligible: int, freight: int) -> int:
    """What the coupon takes off: never more than the eligible amount (freight for a freight
    coupon), never more than the cap, never negative."""
    if terms.kind is CouponKind.amount_off:
        return max(0, min(terms.amount_off_fen or 0, eligible))
    if terms.kind is CouponKind.percent_off:
        off = eligible * (terms.percent_off_bp or 0) // BASIS_POINTS
        if terms.cap_fen is not None:
            off = min(off, terms.cap_fen)
        return max(0, min(off, eligible))
    if terms.kind is CouponKind.freight:
        cap = terms.amount_off_fen if terms.amount_off_fen is not None else freight
        return max(0, min(cap, freight))
    return 0


@dataclass(frozen=True)
class CouponFacts:
    member_id: int
    state: CouponState
    valid_from: datetime
    valid_until: datetime


@dataclass(frozen=True)
class OrderFacts:
    order_id: int
    member_id: int | None
    channel: str
    paid_at: datetime
    freight_fen: int
    fully_refunded: bool
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Refusal:
    """Why a coupon cannot be redeemed on an order: a stable code, the field, a message."""

    code: str
    field: str
    message: str


def check_redeem(
    coupon: CouponFacts, terms: Terms, order: OrderFacts
) -> tuple[int, Refusal | None]:
    """The discount a coupon gives on an order, or the first reason it may not be used."""
    if coupon.state is CouponState.used:
        return 0, Refusal("coupon_used", "code", "this coupon was already used on another order")
    if coupon.state is CouponState.expired:
        return 0, Refusal(
            "coupon_expired", "code", f"this coupon expired at {coupon.valid_until.isoformat()}"
        )
    if order.member_id != coupon.member_id:
        return 0, Refusal(
            "coupon_wrong_member",
            "order_id",
            f"the coupon belongs to member {coupon.member_id}, the order to "
            f"{order.member_id if order.member_id is not None else 'a guest'}; "
            "a coupon is only good on its member's own orders",
        )
    if order.fully_refunded:
        return 0, Refusal("order_refunded", "order_id", "the order was refunded in full")
    if order.paid_at < coupon.valid_from:
        return 0, Refusal(
            "coupon_not_yet_valid",
            "order_id",
            f"the order was paid at {order.paid_at.isoformat()}, before the coupon became "
            f"valid at {coupon.valid_from.isoformat()}",
        )
    if order.paid_at >= coupon.valid_until:
        return 0, Refusal(
            "coupon_expired",
            "order_id",
            f"the order was paid at {order.paid_at.isoformat()}, after the coupon's validity "
            f"ended at {coupon.valid_until.isoformat()}",
        )
    if terms.channels is not None and order.channel not in terms.channels:
        return 0, Refusal(
            "coupon_channel",
            "order_id",
            f"the coupon is good on {', '.join(terms.channels)}, not on {order.channel} orders",
        )
    eligible = eligible_fen(order.lines, terms.categories, net=True)
    if terms.categories is not None and eligible == 0:
        return 0, Refusal(
            "coupon_no_eligible_lines",
            "order_id",
            f"no line of the order is in the coupon's categories ({', '.join(terms.categories)})",
        )
    if eligible < terms.threshold_fen:
        return 0, Refusal(
            "coupon_threshold",
            "order_id",
            f"the eligible lines come to {eligible} fen, below the coupon's threshold of "
            f"{terms.threshold_fen} fen",
        )
    return discount_fen(terms, eligible=eligible, freight=order.freight_fen), None


def returned_by_refund(terms: Terms, order: OrderFacts) -> bool:
    """Whether a refund gives a used coupon back: when the order is refunded in full, when
    its eligible lines are, or when what remains of them falls below the threshold (the
    buyer no longer met the coupon's terms). A partial refund that keeps the threshold
    keeps the coupon used."""
    if order.fully_refunded:
        return True
    remaining = eligible_fen(order.lines, terms.categories, net=True)
    if remaining == 0 and eligible_fen(order.lines, terms.categories, net=False) > 0:
        return True
    return remaining < terms.threshold_fen


def state_after_return(valid_until: datetime, now: datetime) -> CouponState:
    return CouponState.usable if now < valid_until else CouponState.expired


def shown_state(state: CouponState, valid_until: datetime, now: datetime) -> CouponState:
    """What a member sees: a usable coupon past its validity is expired even before the
    nightly job marks it."""
    if state is CouponState.usable and now >= valid_until:
        return CouponState.expired
    return state


# --- per-member limits and stock -----------------------------------------------------------


def allowance(wanted: int, *, held: int, per_member_limit: int | None) -> int:
    """How many of ``wanted`` a member may still get, holding ``held`` already."""
    if per_member_limit is None:
        return wanted
    return max(0, min(wanted, per_member_limit - held))


def stock_left(stock: int | None, taken: int) -> int | None:
    return None if stock is None else max(0, stock - taken)


# --- packs ---------------------------------------------------------------------------------


def pack_key(code: str, member_id: int, period: str) -> str:
    """The fact a pack issue is idempotent on: one pack per member per period."""
    return f"pack:{code}:{member_id}:{period}"


def birthday_matches(birthday: date, day: date) -> bool:
    """Whether ``day`` is the birthday; 29 February birthdays are kept on 28 February in
    years without one."""
    if (birthday.month, birthday.day) == (day.month, day.day):
        return True
    leap = day.year % 4 == 0 and (day.year % 100 != 0 or day.year % 400 == 0)
    return (
        (birthday.month, birthday.day) == (2, 29)
        and not leap
        and (day.month, day.day)
        == (
            2,
            28,
        )
    )


def levels_listing(ladder: Sequence[tuple[str, Sequence[str]]], pack_code: str) -> list[str]:
    """Tier codes whose benefits list a pack, from ``(code, benefit_packs)`` in ladder order."""
    return [code for code, packs in ladder if pack_code in packs]


def gets_pack(
    trigger: PackTrigger,
    listing: Sequence[str],
    tier_code: str | None,
    first_level: str | None,
) -> bool:
    """Whether a member at ``tier_code`` gets a pack of ``trigger`` that these levels list.

    A member without a level yet stands on the first level. A join pack listed by no level
    goes to every new member; any other automatic pack goes only to members whose level
    lists it. Manual packs are never issued automatically."""
    if trigger is PackTrigger.manual:
        return False
    if not listing:
        return trigger is PackTrigger.join
    return (tier_code or first_level) in listing


def gets_upgrade_pack(reason: str, *, up: bool) -> bool:
    """Whether a tier change issues the tier-upgrade packs its new level lists: a move up
    the ladder by any cause (an order, a bonus, an adjustment, a grant, a merge), but not
    a join, which the join packs cover."""
    return up and reason != "join"


def upgrade_period(to_code: str, at: datetime, tz: str) -> str:
    """The period of a tier-upgrade pack: once per member, level reached and brand-local
    day, so reaching a level twice in one day gives its pack once."""
    return f"{to_code}@{local_date(at, tz).isoformat()}"


# --- the points mall -------------------------------------------------------------------------


def tier_rank(ladder: Sequence[str], code: str | None) -> int:
    """Position on the ladder; no level (or one no longer on it) is the bottom."""
    if code is None or code not in ladder:
        return 0
    return ladder.index(code)


@dataclass(frozen=True)
class RewardFacts:
    kind: RewardKind
    active: bool
    points_price: int
    stock: int | None
    redeemed: int
    per_member_limit: int | None
    min_tier_code: str | None
    visible_from: datetime | None
    visible_until: datetime | None


def visible(reward: RewardFacts, now: datetime) -> bool:
    if not reward.active:
        return False
    if reward.visible_from is not None and now < reward.visible_from:
        return False
    return reward.visible_until is None or now < reward.visible_until


def tier_allows(reward: RewardFacts, ladder: Sequence[str], tier_code: str | None) -> bool:
    if reward.min_tier_code is None:
        return True
    if reward.min_tier_code not in ladder:
        return False  # a level dropped from the programme: nobody qualifies until fixed
    return tier_rank(ladder, tier_code) >= ladder.index(reward.min_tier_code)


def check_mall(
    reward: RewardFacts,
    *,
    quantity: int,
    held: int,
    ladder: Sequence[str],
    tier_code: str | None,
    now: datetime,
) -> Refusal | None:
    """Whether a member may take ``quantity`` of a reward now (points are checked by the
    points ledger when they are spent)."""
    if quantity < 1:
        return Refusal("invalid_quantity", "quantity", "take at least 1")
    if not visible(reward, now):
        return Refusal("reward_unavailable", "reward_id", "this reward is not offered now")
    if not tier_allows(reward, ladder, tier_code):
        return Refusal(
            "reward_tier",
            "reward_id",
            f"this reward is for members from level {reward.min_tier_code} up; "
            f"the member is at {tier_code or 'no level yet'}",
        )
    left = stock_left(reward.stock, reward.redeemed)
    if left is not None and quantity > left:
        return Refusal("out_of_stock", "quantity", f"{left} left in stock, {quantity} asked for")
    if allowance(quantity, held=held, per_member_limit=reward.per_member_limit) < quantity:
        return Refusal(
            "reward_limit",
            "quantity",
            f"at most {reward.per_member_limit} per member; the member has {held} already",
        )
    return None


def can_move(current: RedemptionState, target: RedemptionState) -> bool:
    return target in FULFILMENT[current]
