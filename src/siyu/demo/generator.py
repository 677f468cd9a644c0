"""A realistic demo brand: 贝贝乐, a mother-and-baby chain (母婴连锁), scaled down.

Two layers:

* **Plain data, no database.** ``build_organisation`` (regions, ~50 stores, guides and
  managers), ``iter_people`` (members, one at a time), ``plan_orders`` (a chunk of
  people's orders, guest orders and refunds as ``OrderDraft``/``RefundDraft``),
  ``iter_chunks`` and ``iter_orders`` (the whole brand as a stream). The benchmark writes
  an order file from these without touching a database.
* **Loading.** ``generate_brand`` creates the organisation, then streams people in
  chunks: each chunk is one unit of work that enrols its people (``enrol_many``), ingests
  their orders through the real order path (``ingest_orders``: member matching and
  metrics) and then their refunds. Memory stays flat at any size (``--members 1000000``).

Everything is a function of the seed and ``as_of``: people come from one
``random.Random(seed)`` in order; each person's orders come from their own generator
derived from (seed, person index), so orders do not depend on the chunk size. No global
``random``, no ``datetime.now()``.

What the data looks like (figures from DOMAIN.md, scaled down):

* Members join by store (导购 signs them up), mini program, Tmall, JD, Douyin. One person
  has several identities (phone, WeChat unionid/openid, store card, platform ids); some
  are known only by a platform id. About a third of people come back through a second
  channel later (a second enrolment sharing their phone, which OneID links).
* Segments: ~12% join and never buy, ~53% buy once or twice, ~27% repeat every one to
  four months, ~8% are super users with a phase of 3-5 orders a month and 5-10x the
  spend of the rest. Omni-channel people are more often super users.
* The child drives everything: baskets follow the child's age (pregnancy, formula stage,
  diaper size, toys), and members churn when the child passes 4-5 years.
* Online orders cluster on 618, 双11 and 双12. ~15% of store orders are by guests who are
  not members (some give a phone, some nothing). ~3% of orders are refunded, whole or
  one line.

The last year is the seeds' case study (``downturn``, on by default), so the health
diagnosis has something to find: paid recruitment (livestreams, platform member programmes)
brings more joins, but a quarter of the year's joiners never buy (join count up, join
conversion down); members who keep buying come back less often and put less in the basket
(member order value down year on year from both frequency and price per order), so more of
the year's buyers bought once. The programme itself (``programme/example.yaml`` and the
benefits in ``demo.benefits``) has tiers with benefits and a points mall, but one join
coupon and no first- or repeat-purchase offer, and nobody has redeemed points yet.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from itertools import accumulate, islice
from typing import Literal

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.clock import UTC, as_utc
from siyu.core.db import Database
from siyu.demo import catalogue
from siyu.demo.catalogue import BRAND, PHONE_PREFIXES, REFUND_REASONS, SKUS, Sku
from siyu.members.service import EnrolDraft, enrol_many
from siyu.orders.rules import LineDraft, OrderDraft, RefundDraft, RefundLineDraft
from siyu.orders.service import IngestResult, create_refund, ingest_orders
from siyu.stores import service as stores
from siyu.stores.models import Staff, Store

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")  # no DST in China: a fixed offset
WINDOW = timedelta(days=730)  # two years of orders, ending at as_of
INGEST_BATCH = 5_000  # orders per ingest_orders call inside a chunk

Segment = Literal["prospect", "light", "regular", "super"]
SEGMENTS: tuple[tuple[Segment, float], ...] = (
    ("prospect", 0.12),
    ("light", 0.53),
    ("regular", 0.27),
    ("super", 0.08),
)
JOIN_CHANNELS = (("store", 0.45), ("mini_program", 0.25), ("tmall", 0.15), ("jd", 0.07))
JOIN_CHANNELS += (("douyin", 0.08),)
# Chance that a person also reaches the brand through a second channel, by segment.
OMNI_SHARE: dict[str, float] = {"prospect": 0.1, "light": 0.2, "regular": 0.4, "super": 0.7}
ONLINE = frozenset({"mini_program", "tmall", "jd", "douyin"})
FESTIVALS = ((6, 18), (11, 11), (12, 12))  # 618, 双11, 双12
# The downturn of the last year (the case study): see the module's docstring.
DOWNTURN = timedelta(days=365)
RECRUITED_NEVER_BUY = 0.25  # of the last year's buyers-to-be, the share who never buy
LAST_YEAR_KEEP = 0.45  # of the repeat orders of the last year, the share still placed
LEAN_BASKET = 0.9  # in the last year, the chance a basket has one line fewer

# Index spaces of the phone book: members, guests and staff never share a number.
_GUEST_PHONES = 1_000_000_000
_STAFF_PHONES = 2_000_000_000
_GUESTS_PER_PERSON = 256


# --- plain data --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoRegion:
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class DemoStaff:
    code: str
    name: str
    role: str  # guide | manager
    store_code: str
    phone: str


@dataclass(frozen=True, slots=True)
class DemoStore:
    code: str
    name: str
    region_code: str
    city: str
    opened_on: date
    weight: float  # share of the brand's traffic
    guide_codes: tuple[str, ...]
    manager_code: str


@dataclass(frozen=True)
class Organisation:
    regions: tuple[DemoRegion, ...]
    stores: tuple[DemoStore, ...]
    staff: tuple[DemoStaff, ...]
    by_code: dict[str, DemoStore] = field(repr=False)
    cum_weights: tuple[float, ...] = field(repr=False)

    def pick_store(self, rng: random.Random) -> DemoStore:
        return rng.choices(self.stores, cum_weights=self.cum_weights)[0]


@dataclass(frozen=True)
class OrgIds:
    """Database ids of the organisation, by code. Without them drafts carry store codes."""

    stores: dict[str, int]
    staff: dict[str, int]

    def store(self, code: str | None) -> int | None:
        return None if code is None else self.stores[code]

    def staff_id(self, code: str | None) -> int | None:
        return None if code is None else self.staff[code]


@dataclass(slots=True)
class Person:
    """One member-to-be, as plain data."""

    index: int
    segment: Segment
    name: str
    gender: str
    birthday: date
    child_birthday: date
    phone: str | None
    joined_at: datetime
    join_channel: str
    store_code: str | None  # the store (and guide) the member belongs to, if any
    guide_code: str | None
    scene_code: str | None
    home_store_code: str  # where they buy when they buy in a store
    identities: tuple[tuple[str, str], ...]  # given when joining
    later_channel: str | None  # a second channel they show up through, linked by phone
    later_identities: tuple[tuple[str, str], ...]
    order_channels: tuple[str, ...]
    order_weights: tuple[float, ...]
    active_until: datetime  # churn: the child grew out of the category, or they left
    consent_sms: bool
    consent_wechat: bool

    @property
    def all_identities(self) -> tuple[tuple[str, str], ...]:
        return self.identities + self.later_identities

    def identity(self, channel: str) -> str | None:
        return next((e for c, e in self.all_identities if c == channel), None)

    def buyer_identity(self, order_channel: str) -> tuple[str, str]:
        """How a channel names this person on an order."""
        if order_channel == "store":
            wanted = ("phone", "store_card")
        elif order_channel == "mini_program":
            wanted = ("wechat_unionid", "phone")
        else:
            wanted = (order_channel,)
        for channel in wanted:
            value = self.identity(channel)
            if value is not None:
                return channel, value
        raise AssertionError(f"person {self.index} has no identity for {order_channel}")

    def enrol_drafts(self, ids: OrgIds | None = None) -> list[EnrolDraft]:
        """The join, and the later enrolment through a second channel (which OneID links to
        the same member through the shared phone)."""
        drafts = [
            EnrolDraft(
                identities=list(self.identities),
                phone=self.phone,
                name=self.name,
                gender=self.gender,
                birthday=self.birthday,
                child_birthday=self.child_birthday,
                join_channel=self.join_channel,
                store_id=ids.store(self.store_code) if ids else None,
                guide_id=ids.staff_id(self.guide_code) if ids else None,
                scene_code=self.scene_code,
                joined_at=self.joined_at,
                consent_sms=self.consent_sms,
                consent_wechat=self.consent_wechat,
            )
        ]
        if self.later_channel and self.phone:
            drafts.append(
                EnrolDraft(
                    identities=[("phone", self.phone), *self.later_identities],
                    phone=self.phone,
                    join_channel=self.later_channel,
                )
            )
        return drafts


@dataclass
class ChunkPlan:
    """What one chunk of people brings: their orders (member and guest, by time) and
    refunds (after all orders, by time)."""

    people: list[Person]
    orders: list[OrderDraft]
    refunds: list[RefundDraft]
    guest_orders: int


@dataclass
class DemoSummary:
    """Counts of what ``generate_brand`` wrote (every field an int: the CLI prints them)."""

    regions: int = 0
    stores: int = 0
    staff: int = 0
    members: int = 0
    identities: int = 0
    orders: int = 0
    order_lines: int = 0
    guest_orders: int = 0
    refunds: int = 0


# --- ids that look real and never collide --------------------------------------------------


class _Permutation:
    """index -> value, a bijection on [0, modulus) chosen by the seed: ids that look random
    but are unique by construction (no set of used ids to keep in memory)."""

    __slots__ = ("a", "b", "modulus")

    def __init__(self, rng: random.Random, modulus: int) -> None:
        a = rng.randrange(modulus // 3, modulus) | 1
        while math.gcd(a, modulus) != 1:
            a += 2
        self.a, self.b, self.modulus = a, rng.randrange(modulus), modulus

    def __call__(self, index: int) -> int:
        return (self.a * index + self.b) % self.modulus


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        out.append(_B62[digit])
    return "".join(reversed(out))


class IdBook:
    """Phones and channel ids for a seed: valid mainland mobiles (11 digits, 13x-19x),
    unique across members, guests and staff."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"siyu-demo-ids:{seed}")
        self._phone = _Permutation(rng, len(PHONE_PREFIXES) * 10**8)
        self._unionid = _Permutation(rng, 62**11)
        self._openid = _Permutation(rng, 62**11)
        self._tmall = _Permutation(rng, 10**11)
        self._jd = _Permutation(rng, 16**10)
        self._douyin = _Permutation(rng, 10**12)
        self._card = _Permutation(rng, 10**10)

    def phone(self, index: int) -> str:
        value = self._phone(index)
        return PHONE_PREFIXES[value // 10**8] + f"{value % 10**8:08d}"

    def guest_phone(self, person_index: int, k: int) -> str:
        return self.phone(_GUEST_PHONES + person_index * _GUESTS_PER_PERSON + k)

    def staff_phone(self, index: int) -> str:
        return self.phone(_STAFF_PHONES + index)

    def identity(self, channel: str, index: int) -> str:
        if channel == "wechat_unionid":
            return "oU" + _base62(self._unionid(index), 11) + "bbl"
        if channel == "wechat_openid":
            return "oA" + _base62(self._openid(index), 11)
        if channel == "tmall":
            return f"tb{self._tmall(index):011d}"
        if channel == "jd":
            return f"jd_{self._jd(index):010x}"
        if channel == "douyin":
            return f"dy{self._douyin(index):012d}"
        if channel == "store_card":
            return f"88{self._card(index):010d}"
        if channel == "phone":
            return self.phone(index)
        raise ValueError(f"unknown identity channel {channel}")


# --- organisation ------------------------------------------------------------------------


def _chinese_name(rng: random.Random, gender: str) -> str:
    given = catalogue.FEMALE_GIVEN if gender == "F" else catalogue.MALE_GIVEN
    return rng.choice(catalogue.SURNAMES) + rng.choice(given)


def build_organisation(seed: int, as_of: datetime) -> Organisation:
    """Regions, ~50 stores in real cities, a manager and 3-6 guides per store."""
    rng = random.Random(f"siyu-demo-org:{seed}")
    ids = IdBook(seed)
    regions, stores_, staff = [], [], []
    as_of_day = as_utc(as_of).astimezone(SHANGHAI).date()
    for region_code, region_name, cities in catalogue.REGIONS:
        regions.append(DemoRegion(region_code, region_name))
        for city, districts in cities:
            city_weight = 1.0 + 0.4 * len(districts)  # bigger cities have more stores and traffic
            for district in districts:
                code = f"BBL{len(stores_) + 1:03d}"
                guides = [f"{code}-G{g}" for g in range(1, rng.randint(3, 6) + 1)]
                manager = f"{code}-M"
                stores_.append(
                    DemoStore(
                        code=code,
                        name=f"{BRAND} {city}{district}店",
                        region_code=region_code,
                        city=city,
                        opened_on=as_of_day - timedelta(days=rng.randint(400, 3000)),
                        weight=city_weight * rng.uniform(0.6, 1.6),
                        guide_codes=tuple(guides),
                        manager_code=manager,
                    )
                )
                for staff_code, role in [(manager, "manager"), *((g, "guide") for g in guides)]:
                    gender = "F" if rng.random() < 0.85 else "M"
                    staff.append(
                        DemoStaff(
                            code=staff_code,
                            name=_chinese_name(rng, gender),
                            role=role,
                            store_code=code,
                            phone=ids.staff_phone(len(staff)),
                        )
                    )
    return Organisation(
        regions=tuple(regions),
        stores=tuple(stores_),
        staff=tuple(staff),
        by_code={s.code: s for s in stores_},
        cum_weights=tuple(accumulate(s.weight for s in stores_)),
    )


# --- people ------------------------------------------------------------------------------


def _pick(rng: random.Random, options: Sequence[tuple[str, float]]) -> str:
    x = rng.random() * sum(w for _, w in options)
    for value, weight in options:
        x -= weight
        if x < 0:
            return value
    return options[-1][0]


def _local_instant(day: date, rng: random.Random, first_hour: int, last_hour: int) -> datetime:
    moment = time(rng.randint(first_hour, last_hour), rng.randrange(60), rng.randrange(60))
    return datetime.combine(day, moment, tzinfo=SHANGHAI).astimezone(UTC)


def _identities_for(
    channel: str, index: int, rng: random.Random, ids: IdBook, phone: str | None
) -> list[tuple[str, str]]:
    """The ids a person gives when they come through a channel."""
    out: list[tuple[str, str]] = []
    if channel == "store":
        if rng.random() < 0.5:
            out.append(("store_card", ids.identity("store_card", index)))
        if rng.random() < 0.45:  # added the guide on WeChat
            out.append(("wechat_unionid", ids.identity("wechat_unionid", index)))
    elif channel == "mini_program":
        out.append(("wechat_unionid", ids.identity("wechat_unionid", index)))
        out.append(("wechat_openid", ids.identity("wechat_openid", index)))
    else:
        out.append((channel, ids.identity(channel, index)))
    if phone:
        out.insert(0, ("phone", phone))
    return out


def _make_person(
    index: int, rng: random.Random, org: Organisation, ids: IdBook, as_of: datetime
) -> Person:
    window_start = as_of - WINDOW
    segment: Segment = _pick(rng, SEGMENTS)  # type: ignore[assignment]
    join_channel = _pick(rng, JOIN_CHANNELS)
    gender = "F" if rng.random() < 0.88 else "M"
    # The brand grows: more people joined recently than two years ago.
    joined_day = (window_start + (as_of - window_start) * (rng.random() ** 0.75)).astimezone(
        SHANGHAI
    )
    joined_at = min(_local_instant(joined_day.date(), rng, 9, 21), as_of - timedelta(minutes=1))
    joined_at = max(joined_at, window_start)
    joined_on = joined_at.astimezone(SHANGHAI).date()
    stage = rng.random()
    if stage < 0.30:  # pregnant when joining
        child_birthday = joined_on + timedelta(days=rng.randint(20, 250))
    elif stage < 0.65:
        child_birthday = joined_on - timedelta(days=rng.randint(0, 365))
    elif stage < 0.90:
        child_birthday = joined_on - timedelta(days=rng.randint(365, 3 * 365))
    else:
        child_birthday = joined_on - timedelta(days=rng.randint(3 * 365, 1640))
    birthday = joined_on - timedelta(days=rng.randint(23 * 365, 40 * 365))

    has_phone = {"store": 1.0, "mini_program": 0.85, "tmall": 0.55, "jd": 0.5, "douyin": 0.4}
    phone = ids.phone(index) if rng.random() < has_phone[join_channel] else None
    identities = _identities_for(join_channel, index, rng, ids, phone)

    store_code = guide_code = scene_code = None
    home = org.pick_store(rng)
    if join_channel == "store" or (join_channel == "mini_program" and rng.random() < 0.6):
        store_code = home.code
        guide_code = rng.choice(home.guide_codes)
        if join_channel == "mini_program":
            scene_code = f"guide-{guide_code}"  # joined through the guide's QR code

    later_channel: str | None = None
    later_identities: list[tuple[str, str]] = []
    given = {c for c, _ in identities}
    if phone and rng.random() < OMNI_SHARE[segment]:
        options = [c for c, _ in JOIN_CHANNELS if c != join_channel]
        later_channel = rng.choice(options)
        later_identities = [
            i for i in _identities_for(later_channel, index, rng, ids, None) if i[0] not in given
        ]
        if later_channel == "store" and not later_identities:
            later_identities = [("store_card", ids.identity("store_card", index))]

    weights: dict[str, float] = {join_channel: 1.0}
    if later_channel:
        weights[later_channel] = 0.7
    if join_channel == "store" and "wechat_unionid" in given:
        weights["mini_program"] = 0.2
    order_channels = tuple(weights)

    child_end = datetime.combine(child_birthday, time(12), tzinfo=SHANGHAI).astimezone(UTC)
    child_end += timedelta(days=rng.uniform(4 * 365, 5 * 365))  # the child outgrows 母婴
    if segment == "regular":
        life = timedelta(days=60 + rng.expovariate(1 / 540))
    elif segment == "super":
        life = timedelta(days=120 + rng.expovariate(1 / 720))
    else:
        life = WINDOW
    active_until = min(as_of, child_end, joined_at + life)

    return Person(
        index=index,
        segment=segment,
        name=_chinese_name(rng, gender),
        gender=gender,
        birthday=birthday,
        child_birthday=child_birthday,
        phone=phone,
        joined_at=joined_at,
        join_channel=join_channel,
        store_code=store_code,
        guide_code=guide_code,
        scene_code=scene_code,
        home_store_code=home.code,
        identities=tuple(identities),
        later_channel=later_channel,
        later_identities=tuple(later_identities),
        order_channels=order_channels,
        order_weights=tuple(weights.values()),
        active_until=active_until,
        consent_sms=rng.random() < 0.6,
        consent_wechat="wechat_unionid" in given or rng.random() < 0.3,
    )


def iter_people(
    seed: int,
    members: int,
    as_of: datetime,
    *,
    org: Organisation | None = None,
    downturn: bool = True,
) -> Iterator[Person]:
    """The brand's people, one at a time, in a fixed order for a seed. With ``downturn``
    some of the last year's joiners came through paid recruitment and never buy."""
    as_of = as_utc(as_of)
    org = org or build_organisation(seed, as_of)
    ids = IdBook(seed)
    rng = random.Random(seed)
    for index in range(members):
        person = _make_person(index, rng, org, ids, as_of)
        recruited = (
            downturn
            and person.segment != "prospect"
            and person.joined_at >= as_of - DOWNTURN
            # a generator of its own, so the people after this one stay the same
            and random.Random(f"siyu-demo-recruit:{seed}:{index}").random() < RECRUITED_NEVER_BUY
        )
        if recruited:
            person.segment = "prospect"
        yield person


# --- orders ------------------------------------------------------------------------------

_BY_CATEGORY: dict[str, tuple[Sku, ...]] = {
    c: tuple(s for s in SKUS if s.category == c) for c in catalogue.CATEGORIES
}
_MIX = tuple(
    (bound, tuple(mix), tuple(accumulate(mix.values()))) for bound, mix in catalogue.CATEGORY_MIX
)
_LINE_COUNTS = (1, 2, 3, 4, 5)
_LINE_CUM = tuple(accumulate((45, 30, 15, 7, 3)))
_STORE_HOURS = tuple(range(10, 22))
_STORE_HOURS_CUM = tuple(accumulate((3, 5, 6, 5, 4, 5, 6, 7, 8, 8, 6, 3)))
_ONLINE_HOURS = tuple(range(24))
_ONLINE_HOURS_CUM = tuple(
    accumulate((3, 2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 5, 5, 5, 5, 5, 6, 7, 9, 10, 9, 6))
)


def _lines(
    rng: random.Random, child_birthday: date, day: date, *, lean: bool = False
) -> tuple[list[LineDraft], int]:
    """A basket for the child's age on that day, and the promotion discount it got. A
    ``lean`` basket (the downturn) more often has one line fewer."""
    months = (day - child_birthday).days / 30.44
    _, categories, cum = next(m for m in _MIX if months < m[0])
    count = rng.choices(_LINE_COUNTS, cum_weights=_LINE_CUM)[0]
    if lean and count > 1 and rng.random() < LEAN_BASKET:
        count -= 1
    promo = rng.random() < 0.3
    lines: list[LineDraft] = []
    seen: set[str] = set()
    discount = 0
    for _ in range(count):
        category = rng.choices(categories, cum_weights=cum)[0]
        fitting = [s for s in _BY_CATEGORY[category] if s.min_months <= months <= s.max_months]
        sku = rng.choice(fitting or _BY_CATEGORY[category])
        if sku.code in seen:
            continue
        seen.add(sku.code)
        quantity = min(rng.randint(1, sku.max_quantity), rng.randint(1, sku.max_quantity))
        price = sku.price_fen * quantity
        off = price * rng.choice((5, 8, 10, 15, 20)) // 10000 * 100 if promo else 0
        discount += off
        lines.append(LineDraft(sku=sku.code, category=sku.category, quantity=quantity,
                               amount_fen=price - off))  # fmt: skip
    return lines, discount


def _stochastic_round(rng: random.Random, x: float) -> int:
    whole = math.floor(x)
    return whole + (rng.random() < x - whole)


def _order_times(
    p: Person, rng: random.Random, activity: float, as_of: datetime, *, downturn: bool = True
) -> list[datetime]:
    """When this person buys: a first order soon after joining, then by segment. With
    ``downturn`` the repeat orders of the last year are thinned (people come back less)."""
    start = max(p.joined_at, as_of - WINDOW)
    end = p.active_until
    if p.segment == "prospect" or end <= start:
        return []
    day = timedelta(days=1)
    first = start + day * min(rng.expovariate(1 / 5), 60)  # most buy within the first week
    times: list[datetime] = []
    if p.segment == "light":
        count = max(1, _stochastic_round(rng, (1 if rng.random() < 0.6 else 2) * activity))
        t = first
        for _ in range(count):
            times.append(t)
            t += day * rng.expovariate(1 / 60)
    else:
        mean_gap = rng.uniform(30, 120) if p.segment == "regular" else rng.uniform(30, 75)
        t = first
        while t < end:
            times.append(t)
            t += day * rng.expovariate(activity / mean_gap)
        if p.segment == "super":  # a phase of 3-5 orders a month
            per_month = rng.uniform(3, 5) * activity
            t = first + day * rng.uniform(0, 45)
            phase_end = min(end, t + day * rng.uniform(60, 210))
            while t < phase_end:
                times.append(t)
                t += day * rng.expovariate(per_month / 30)
    times = sorted(t for t in times if t < end)
    if downturn:
        lean_from = as_of - DOWNTURN
        times = times[:1] + [t for t in times[1:] if t < lean_from or rng.random() < LAST_YEAR_KEEP]
    return times


def _festival(rng: random.Random, day: date, last: date) -> date:
    """Online shoppers wait for 618, 双11 and 双12."""
    for year in (day.year, day.year + 1):
        for month, mday in FESTIVALS:
            festival = date(year, month, mday)
            if 0 <= (festival - day).days <= 25 and festival <= last and rng.random() < 0.55:
                return festival
    return day


def _external_id(channel: str, index: int, k: int) -> str:
    serial = index * 10_000 + k
    if channel == "store":
        return f"POS{serial:013d}"
    if channel == "mini_program":
        return f"WX{serial:014d}"
    if channel == "tmall":
        return f"{3_100_000_000_000_000 + serial}"
    if channel == "jd":
        return f"{280_000_000_000_000 + serial}"
    return f"{6_900_000_000_000_000_000 + serial}"  # douyin


def _refund(
    rng: random.Random, draft: OrderDraft, as_of: datetime, share: float
) -> RefundDraft | None:
    if rng.random() >= share or draft.paid_at > as_of - timedelta(hours=2):
        return None
    refunded_at = min(draft.paid_at + timedelta(hours=rng.uniform(1, 14 * 24)), as_of)
    common = {
        "channel": draft.channel,
        "external_id": f"RF-{draft.external_id}",
        "order_channel": draft.channel,
        "order_external_id": draft.external_id,
        "refunded_at": refunded_at,
        "reason": rng.choice(REFUND_REASONS),
    }
    whole = rng.random() < (0.6 if len(draft.lines) == 1 else 0.4)
    if whole:
        return RefundDraft(**common)  # the whole order
    line_no = rng.randrange(len(draft.lines))
    line = draft.lines[line_no]
    quantity = rng.randint(1, line.quantity)
    amount = line.amount_fen * quantity // line.quantity
    if amount <= 0:
        return None
    return RefundDraft(
        **common,
        lines=[RefundLineDraft(line_no=line_no + 1, quantity=quantity, amount_fen=amount)],
        amount_fen=amount,
    )


def _person_orders(
    p: Person,
    *,
    seed: int,
    org: Organisation,
    idbook: IdBook,
    ids: OrgIds | None,
    as_of: datetime,
    activity: float,
    guest_share: float,
    refund_share: float,
    orders: list[OrderDraft],
    refunds: list[RefundDraft],
    downturn: bool = True,
) -> int:
    """Append one person's orders (and the guest orders seen at their store alongside);
    returns how many guest orders were added."""
    rng = random.Random((seed << 40) | p.index)
    last_day = as_of.astimezone(SHANGHAI).date()
    window_start = as_of - WINDOW
    guest_odds = guest_share / (1 - guest_share)
    guests = 0
    lean_from = as_of - DOWNTURN
    for k, when in enumerate(_order_times(p, rng, activity, as_of, downturn=downturn)):
        channel = rng.choices(p.order_channels, weights=p.order_weights)[0]
        day = when.astimezone(SHANGHAI).date()
        store_code = guide_code = None
        if channel == "store":
            store_code = p.home_store_code
            store = org.by_code[store_code]
            if p.guide_code and store_code == p.store_code and rng.random() < 0.85:
                guide_code = p.guide_code
            elif rng.random() < 0.7:
                guide_code = rng.choice(store.guide_codes)
            hour = rng.choices(_STORE_HOURS, cum_weights=_STORE_HOURS_CUM)[0]
            paid_at = _local_instant(day, rng, hour, hour)
        else:
            day = _festival(rng, day, last_day)
            hour = rng.choices(_ONLINE_HOURS, cum_weights=_ONLINE_HOURS_CUM)[0]
            paid_at = _local_instant(day, rng, hour, hour)
        paid_at = min(max(paid_at, p.joined_at), as_of - timedelta(seconds=1))
        lines, discount = _lines(rng, p.child_birthday, day, lean=downturn and paid_at >= lean_from)
        subtotal = sum(line.amount_fen for line in lines)
        freight = 600 if channel in ONLINE and subtotal < 9900 else 0
        draft = OrderDraft(
            channel=channel,
            external_id=_external_id(channel, p.index, k),
            paid_at=paid_at,
            lines=lines,
            buyer_identities=[p.buyer_identity(channel)],
            store_id=ids.store(store_code) if ids else None,
            store_code=None if ids else store_code,
            guide_id=ids.staff_id(guide_code) if ids else None,
            freight_fen=freight,
            discount_fen=discount,
        )
        orders.append(draft)
        refund = _refund(rng, draft, as_of, refund_share)
        if refund:
            refunds.append(refund)
        if channel == "store" and guests < _GUESTS_PER_PERSON and rng.random() < guest_odds:
            orders.append(
                _guest_order(
                    rng, p.index, guests, store_code, org, idbook, ids, window_start, as_of
                )
            )
            refund = _refund(rng, orders[-1], as_of, refund_share)
            if refund:
                refunds.append(refund)
            guests += 1
    return guests


def _guest_order(
    rng: random.Random,
    person_index: int,
    k: int,
    store_code: str | None,
    org: Organisation,
    idbook: IdBook,
    ids: OrgIds | None,
    window_start: datetime,
    as_of: datetime,
) -> OrderDraft:
    """A walk-in who is not a member: some give a phone at the till, some nothing."""
    store = org.by_code[store_code] if store_code else org.pick_store(rng)
    when = window_start + (as_of - window_start) * rng.random()
    day = when.astimezone(SHANGHAI).date()
    hour = rng.choices(_STORE_HOURS, cum_weights=_STORE_HOURS_CUM)[0]
    paid_at = min(_local_instant(day, rng, hour, hour), as_of - timedelta(seconds=1))
    child_birthday = day - timedelta(days=rng.randint(-200, 4 * 365))
    lines, discount = _lines(rng, child_birthday, day)
    buyer = [("phone", idbook.guest_phone(person_index, k))] if rng.random() < 0.65 else []
    guide_code = rng.choice(store.guide_codes) if rng.random() < 0.5 else None
    return OrderDraft(
        channel="store",
        external_id=f"POS-G{person_index * _GUESTS_PER_PERSON + k:012d}",
        paid_at=paid_at,
        lines=lines,
        buyer_identities=buyer,
        store_id=ids.store(store.code) if ids else None,
        store_code=None if ids else store.code,
        guide_id=ids.staff_id(guide_code) if ids else None,
        discount_fen=discount,
    )


def plan_orders(
    people: Sequence[Person],
    *,
    seed: int,
    as_of: datetime,
    org: Organisation | None = None,
    ids: OrgIds | None = None,
    activity: float = 1.0,
    guest_share: float = 0.15,
    refund_share: float = 0.03,
    downturn: bool = True,
) -> ChunkPlan:
    """The orders of some people, the guest orders beside them and the refunds: pure data.

    ``activity`` multiplies how often everyone buys (1.0: the natural brand, about 4 orders
    a member over two years; see ``calibrate_activity``). Without ``ids`` orders name
    their store by code and carry no guide. ``downturn``: the last year as in the case
    study (see the module's docstring); off, the brand just grows.
    """
    as_of = as_utc(as_of)
    org = org or build_organisation(seed, as_of)
    idbook = IdBook(seed)
    orders: list[OrderDraft] = []
    refunds: list[RefundDraft] = []
    guests = 0
    for p in people:
        guests += _person_orders(
            p,
            seed=seed,
            org=org,
            idbook=idbook,
            ids=ids,
            as_of=as_of,
            activity=activity,
            guest_share=guest_share,
            refund_share=refund_share,
            orders=orders,
            refunds=refunds,
            downturn=downturn,
        )
    orders.sort(key=lambda o: o.paid_at)
    refunds.sort(key=lambda r: r.refunded_at)
    return ChunkPlan(list(people), orders, refunds, guests)


def iter_chunks(
    seed: int,
    members: int,
    as_of: datetime,
    *,
    chunk_size: int = 2_000,
    ids: OrgIds | None = None,
    activity: float = 1.0,
    with_orders: bool = True,
    downturn: bool = True,
) -> Iterator[ChunkPlan]:
    """The brand as a stream of chunks of people with their orders; memory stays flat."""
    as_of = as_utc(as_of)
    org = build_organisation(seed, as_of)
    people = iter_people(seed, members, as_of, org=org, downturn=downturn)
    while chunk := list(islice(people, chunk_size)):
        if with_orders:
            yield plan_orders(chunk, seed=seed, as_of=as_of, org=org, ids=ids,
                              activity=activity, downturn=downturn)  # fmt: skip
        else:
            yield ChunkPlan(chunk, [], [], 0)


def iter_orders(
    seed: int,
    members: int,
    as_of: datetime,
    *,
    ids: OrgIds | None = None,
    activity: float = 1.0,
    chunk_size: int = 2_000,
) -> Iterator[OrderDraft]:
    """Every order of the brand (members' and guests'), streamed; sorted by time within
    each chunk of people."""
    for plan in iter_chunks(seed, members, as_of, chunk_size=chunk_size, ids=ids,
                            activity=activity):  # fmt: skip
        yield from plan.orders


def calibrate_activity(
    orders_per_member: float, *, seed: int, as_of: datetime, sample: int = 3_000
) -> float:
    """The ``activity`` that gives about this many orders (guest orders included) per
    member, estimated on a sample of people (for benchmarks that want a volume)."""
    as_of = as_utc(as_of)
    org = build_organisation(seed, as_of)
    people = list(iter_people(seed, sample, as_of, org=org))
    activity = 1.0
    for _ in range(3):
        plan = plan_orders(people, seed=seed, as_of=as_of, org=org, activity=activity)
        per_member = len(plan.orders) / max(1, sample)
        activity *= orders_per_member / max(per_member, 1e-9)
    return activity


# --- loading into a database -------------------------------------------------------------


def create_organisation(session: Session, org: Organisation) -> OrgIds:
    """Create regions, stores and staff through the stores service (or reuse them when
    this demo organisation is already there); returns their ids by code."""
    existing = load_org_ids(session)
    if all(s.code in existing.stores for s in org.stores):
        return existing
    region_ids = {r.code: stores.create_region(session, code=r.code, name=r.name).id
                  for r in org.regions}  # fmt: skip
    for s in org.stores:
        stores.create_store(
            session,
            code=s.code,
            name=s.name,
            region_id=region_ids[s.region_code],
            city=s.city,
            opened_on=s.opened_on,
        )
    ids = load_org_ids(session)
    for member in org.staff:
        stores.create_staff(
            session,
            code=member.code,
            name=member.name,
            role=member.role,
            store_id=ids.stores[member.store_code],
            phone=member.phone,
        )
    return load_org_ids(session)


def apply_example_programme(session: Session, *, effective_from: datetime) -> None:
    """The demo brand's loyalty programme (``programme/example.yaml``), in force from
    ``effective_from``; applying it again is a no-op."""
    from importlib import resources

    from siyu.programme import rules as programme_rules
    from siyu.programme import service as programme

    text = resources.files("siyu.programme").joinpath("example.yaml").read_text("utf-8")
    raw, problems = programme_rules.parse_text(text)
    if problems:  # pragma: no cover - the example is tested
        raise AssertionError(problems)
    programme.apply(
        session,
        raw,
        author="demo",
        note="贝贝乐母婴 launch programme",
        effective_from=effective_from,
        backdate=True,
    )


def load_org_ids(session: Session) -> OrgIds:
    return OrgIds(
        stores=dict(session.execute(select(Store.code, Store.id)).all()),
        staff=dict(session.execute(select(Staff.code, Staff.id)).all()),
    )


def _batches(items: Sequence[OrderDraft], size: int) -> Iterable[list[OrderDraft]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _check_ingested(batch: Sequence[OrderDraft], results: Sequence[IngestResult]) -> None:
    """The demo's orders are valid by construction; a rejection is a bug worth stopping for."""
    for result in results:
        if result.status == "rejected":
            draft = batch[result.index]
            reasons = "; ".join(f"{p.field}: {p.reason}" for p in result.problems)
            raise AssertionError(f"demo order {draft.channel} {draft.external_id}: {reasons}")


def generate_brand(
    db: Database,
    *,
    members: int,
    seed: int,
    as_of: datetime,
    progress: bool = False,
    chunk_size: int = 2_000,
    activity: float = 1.0,
    with_orders: bool = True,
    unknown_buyer: Literal["guest", "enrol"] = "guest",
    with_programme: bool = True,
    downturn: bool = True,
) -> DemoSummary:
    """Create the demo brand in ``db``: organisation, members, two years of orders ending
    at ``as_of``, refunds. One unit of work per chunk of ``chunk_size`` people.

    ``as_of`` should be the clock's now (orders after the clock's now are refused as
    future orders). ``with_orders=False`` enrols the people only (benchmarks import
    the orders afterwards). ``with_programme`` puts the example programme in force from
    before the first order, so every order earns growth and points as it would have.
    ``downturn`` gives the last year the case study's decline (see the module's docstring).
    """
    if not isinstance(members, int) or isinstance(members, bool) or members < 0:
        raise TypeError(f"members is a number of people, got {members!r}")
    as_of = as_utc(as_of)
    org = build_organisation(seed, as_of)
    with db.unit_of_work() as session:
        ids = create_organisation(session, org)
        if with_programme:
            from siyu.demo.benefits import create_benefits

            apply_example_programme(session, effective_from=as_of - WINDOW - timedelta(days=1))
            create_benefits(session)
    summary = DemoSummary(regions=len(org.regions), stores=len(org.stores), staff=len(org.staff))
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[orders]:,} orders"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"{BRAND} demo members", total=members, orders=0)
        for plan in iter_chunks(seed, members, as_of, chunk_size=chunk_size, ids=ids,
                                activity=activity, with_orders=with_orders,
                                downturn=downturn):  # fmt: skip
            drafts: list[EnrolDraft] = []
            firsts: list[int] = []
            for person in plan.people:
                firsts.append(len(drafts))
                drafts.extend(person.enrol_drafts(ids))
            with db.unit_of_work() as session:
                results = enrol_many(session, drafts)
                for batch in _batches(plan.orders, INGEST_BATCH):
                    results_ = ingest_orders(session, batch, unknown_buyer=unknown_buyer)
                    _check_ingested(batch, results_)
                for refund in plan.refunds:
                    create_refund(session, refund)
            summary.members += sum(results[i].created for i in firsts)
            summary.identities += sum(len(p.all_identities) for p in plan.people)
            summary.orders += len(plan.orders)
            summary.order_lines += sum(len(o.lines) for o in plan.orders)
            summary.guest_orders += plan.guest_orders
            summary.refunds += len(plan.refunds)
            bar.update(task, advance=len(plan.people), orders=summary.orders)
    if with_programme and with_orders:
        from siyu.demo.paid import create_paid_members

        summary.orders += create_paid_members(db, seed=seed, as_of=as_of).orders
    return summary


__all__ = [
    "ChunkPlan",
    "DemoSummary",
    "IdBook",
    "OrgIds",
    "Organisation",
    "Person",
    "apply_example_programme",
    "build_organisation",
    "calibrate_activity",
    "create_organisation",
    "generate_brand",
    "iter_chunks",
    "iter_orders",
    "iter_people",
    "load_org_ids",
    "plan_orders",
]
