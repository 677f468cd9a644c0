"""The condition tree of segments and rule tags: its grammar, its fields, its validation.

Pure: no database, no clock. A tree is JSON::

    {"and": [node, ...]}      every node holds          (至少一个子条件)
    {"or":  [node, ...]}      at least one node holds
    {"not": node}             the node does not hold
    {"field": F, "op": O, "value": V}                    an attribute, metric or tag
    {"tag": "孕妈"}                                       shorthand: tags has "孕妈"
    {"behaviour": "bought_category", "category": "奶粉", "at_least": 2, "days": 90}
    {"behaviour": "no_purchase_since", "days": 180}
    {"behaviour": "joined_never_bought", "days": 30}

``check`` validates a raw tree against the catalogue of fields (``FIELDS``) and the
vocabulary in force (tier codes, categories, plans, stores, guides, tags) and returns the
parsed tree or every problem, each with its path in the tree (``and[1].or[0].value``), so
a console can point at the faulty condition. A condition that cannot be evaluated for a
member (a null attribute) is false for that member, so ``not`` of it is true: "not in
tier V3" includes members without a tier.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from difflib import get_close_matches
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from siyu.core.errors import Problem

MAX_DEPTH = 8
MAX_CONDITIONS = 60
MAX_LIST = 1_000
MAX_DAYS = 36_500


class Kind(StrEnum):
    """What a field holds; it decides the operators a condition may use."""

    enum = "enum"  # one of known values (tier codes, stages, channels)
    text = "text"  # free text compared exactly (scene codes)
    number = "number"  # counts, scores, probabilities
    money = "money"  # integer fen
    bool = "bool"
    datetime = "datetime"  # an instant; compared by brand-local calendar days
    date = "date"  # a calendar day (birthdays)
    list = "list"  # a set of values per member (tags, channel identities)


_NUMERIC = ("eq", "ne", "gt", "gte", "lt", "lte", "between", "in", "not_in", "is_null", "not_null")
OPERATORS: dict[Kind, tuple[str, ...]] = {
    Kind.enum: ("eq", "ne", "in", "not_in", "is_null", "not_null"),
    Kind.text: ("eq", "ne", "in", "not_in", "is_null", "not_null"),
    Kind.number: _NUMERIC,
    Kind.money: _NUMERIC,
    Kind.bool: ("eq",),
    Kind.datetime: (
        "before",
        "after",
        "between",
        "within_days",
        "more_than_days_ago",
        "is_null",
        "not_null",
    ),
    Kind.date: ("before", "after", "between", "is_null", "not_null"),
    Kind.list: ("has", "has_any", "has_all", "has_none"),
}

# Who a field's enum values are checked against: a fixed list, or a vocabulary of the brand.
Vocab = Literal["tiers", "categories", "plans", "stores", "guides", "tags"]

STAGES = ("prospect", "new", "active", "silent", "sleeping", "churned")
# 重要价值/发展/保持/挽留, 一般价值/发展/保持/挽留
RFM_GROUPS = (
    "important_value",
    "important_develop",
    "important_keep",
    "important_retain",
    "general_value",
    "general_develop",
    "general_keep",
    "general_retain",
)
GENDERS = ("F", "M")
MEMBER_STATUSES = ("active", "frozen")  # merged and closed members are in no segment
JOIN_CHANNELS = (
    "store",
    "mini_program",
    "wechat",
    "tmall",
    "jd",
    "douyin",
    "referral",
    "import",
    "order",
)
IDENTITY_CHANNELS = (
    "phone",
    "wechat_unionid",
    "wechat_openid",
    "tmall",
    "jd",
    "douyin",
    "store_card",
)
PAID_STATES = ("trial", "active", "grace", "cancelled", "expired", "refunded")


@dataclass(frozen=True)
class FieldSpec:
    """One field a condition can name: a column of the member profile (see ``profile``)."""

    name: str
    kind: Kind
    label: str  # Chinese name for the console
    group: str  # attribute | metric | tag | tier | paid | insight | channel
    values: tuple[str, ...] | None = None  # fixed enum values
    vocab: Vocab | None = None  # enum values from the brand's data
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = True


FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in (
        # attributes
        FieldSpec("gender", Kind.enum, "性别", "attribute", values=GENDERS),
        FieldSpec("birthday", Kind.date, "生日", "attribute"),
        FieldSpec("birthday_month", Kind.number, "生日月份", "attribute", minimum=1, maximum=12),
        FieldSpec("child_birthday", Kind.date, "宝宝生日", "attribute"),
        FieldSpec("joined_at", Kind.datetime, "入会时间", "attribute"),
        FieldSpec("join_channel", Kind.enum, "入会渠道", "attribute", values=JOIN_CHANNELS),
        FieldSpec("store", Kind.enum, "所属门店", "attribute", vocab="stores"),
        FieldSpec("guide", Kind.enum, "专属导购", "attribute", vocab="guides"),
        FieldSpec("scene", Kind.text, "入会场景码", "attribute"),
        FieldSpec("status", Kind.enum, "会员状态", "attribute", values=MEMBER_STATUSES),
        FieldSpec("consent_sms", Kind.bool, "接受短信", "attribute"),
        FieldSpec("consent_wechat", Kind.bool, "接受微信消息", "attribute"),
        FieldSpec("consent_email", Kind.bool, "接受邮件", "attribute"),
        # loyalty balances and tier
        FieldSpec("tier", Kind.enum, "会员等级", "tier", vocab="tiers"),
        FieldSpec("points_balance", Kind.number, "积分余额", "tier"),
        FieldSpec("growth_balance", Kind.number, "成长值", "tier"),
        # paid membership
        FieldSpec("paid", Kind.bool, "付费会员(当前有效)", "paid"),
        FieldSpec("paid_plan", Kind.enum, "付费会员方案", "paid", vocab="plans"),
        FieldSpec("paid_state", Kind.enum, "付费会员状态", "paid", values=PAID_STATES),
        FieldSpec("paid_until", Kind.datetime, "付费会员到期", "paid"),
        # purchase metrics
        FieldSpec("order_count", Kind.number, "订单数", "metric", minimum=0),
        FieldSpec("spend_fen", Kind.money, "累计消费(分)", "metric"),
        FieldSpec("refund_fen", Kind.money, "累计退款(分)", "metric", minimum=0),
        FieldSpec("avg_order_fen", Kind.money, "客单价(分)", "metric"),
        FieldSpec("first_order_at", Kind.datetime, "首购时间", "metric"),
        FieldSpec("last_order_at", Kind.datetime, "最近购买时间", "metric"),
        # insight (filled by the nightly refresh)
        FieldSpec("stage", Kind.enum, "生命周期阶段", "insight", values=STAGES),
        FieldSpec("rfm_group", Kind.enum, "RFM分群", "insight", values=RFM_GROUPS),
        FieldSpec("r_score", Kind.number, "R分", "insight", minimum=1, maximum=5),
        FieldSpec("f_score", Kind.number, "F分", "insight", minimum=1, maximum=5),
        FieldSpec("m_score", Kind.number, "M分", "insight", minimum=1, maximum=5),
        FieldSpec("super_user", Kind.bool, "超级用户", "insight"),
        FieldSpec(
            "p_alive", Kind.number, "存活概率", "insight", minimum=0, maximum=1, integer=False
        ),
        FieldSpec(
            "expected_purchases_90", Kind.number, "未来90天预计购买次数", "insight", integer=False
        ),
        FieldSpec(
            "expected_purchases_365", Kind.number, "未来365天预计购买次数", "insight", integer=False
        ),
        FieldSpec("clv_fen", Kind.money, "预计价值CLV(分)", "insight"),
        # sets per member
        FieldSpec("tags", Kind.list, "标签", "tag", vocab="tags"),
        FieldSpec("channels", Kind.list, "渠道身份", "channel", values=IDENTITY_CHANNELS),
    )
}

BEHAVIOURS: dict[str, str] = {
    "bought_category": "最近D天购买品类X至少N次",
    "no_purchase_since": "最近D天未购买",
    "joined_never_bought": "最近D天入会且从未购买",
}


# --- the parsed tree -----------------------------------------------------------------------


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Condition(_Node):
    """A field compared by an operator; ``value`` is already normalised to the field's type
    (dates as ``date``, lists as tuples)."""

    field: str
    op: str
    value: Any = None


class BoughtCategory(_Node):
    behaviour: Literal["bought_category"]
    category: str = Field(min_length=1, max_length=64)
    at_least: int = Field(default=1, ge=1, le=10_000, description="orders with the category")
    days: int = Field(ge=1, le=MAX_DAYS)


class NoPurchaseSince(_Node):
    """No order in the last ``days`` days (members who never bought included; add
    ``order_count gt 0`` for lapsed buyers only)."""

    behaviour: Literal["no_purchase_since"]
    days: int = Field(ge=1, le=MAX_DAYS)


class JoinedNeverBought(_Node):
    behaviour: Literal["joined_never_bought"]
    days: int = Field(ge=1, le=MAX_DAYS)


Behaviour = BoughtCategory | NoPurchaseSince | JoinedNeverBought
_BEHAVIOUR_MODELS: dict[str, type[_Node]] = {
    "bought_category": BoughtCategory,
    "no_purchase_since": NoPurchaseSince,
    "joined_never_bought": JoinedNeverBought,
}


class And(_Node):
    items: tuple[Node, ...]


class Or(_Node):
    items: tuple[Node, ...]


class Not(_Node):
    item: Node


Node = And | Or | Not | Condition | BoughtCategory | NoPurchaseSince | JoinedNeverBought
for _model in (And, Or, Not):
    _model.model_rebuild()


@dataclass(frozen=True)
class Vocabulary:
    """What enum values exist for this brand now. ``None`` leaves a vocabulary unchecked
    (no programme in force, or a caller that only checks the shape)."""

    tiers: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    plans: frozenset[str] | None = None
    stores: frozenset[str] | None = None
    guides: frozenset[str] | None = None
    tags: frozenset[str] | None = None  # tags that exist (manual or rule), of those named
    rule_tags: frozenset[str] = frozenset()  # names of rule tags
    allow_rule_tags: bool = True  # False inside a tag rule: rule tags do not chain

    def known(self, vocab: Vocab) -> frozenset[str] | None:
        return getattr(self, vocab)  # type: ignore[no-any-return]


_HOW_TO_FIX: dict[str, str] = {
    "tiers": "use a tier code of the programme in force",
    "categories": "use a category of the programme in force",
    "plans": "use a paid plan code of the programme in force",
    "stores": "use a store code",
    "guides": "use a guide's staff code",
    "tags": "no member has it and no tag rule defines it; check the spelling",
}


# --- validation ------------------------------------------------------------------------------


@dataclass
class _Walk:
    vocab: Vocabulary
    problems: list[Problem] = field(default_factory=list)
    conditions: int = 0

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(Problem(path or "tree", reason))


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


_NODE_KEYS = ("and", "or", "not", "field", "tag", "behaviour")


def check(raw: Any, vocab: Vocabulary | None = None) -> tuple[Node | None, list[Problem]]:
    """The parsed tree, or every problem found with its path (never both)."""
    walk = _Walk(vocab or Vocabulary())
    node = _node(raw, "", 0, walk)
    if walk.conditions > MAX_CONDITIONS:
        walk.problem("tree", f"{walk.conditions} conditions; at most {MAX_CONDITIONS}")
    if walk.problems or node is None:
        return None, walk.problems or [Problem("tree", "empty")]
    return node, []


def _node(raw: Any, path: str, depth: int, walk: _Walk) -> Node | None:
    if depth > MAX_DEPTH:
        walk.problem(path, f"nested more than {MAX_DEPTH} levels deep; flatten the groups")
        return None
    if not isinstance(raw, dict):
        walk.problem(
            path,
            'a node is an object: {"and": [...]}, {"or": [...]}, {"not": {...}}, '
            '{"field": …, "op": …, "value": …}, {"tag": …} or {"behaviour": …}',
        )
        return None
    kinds = [k for k in _NODE_KEYS if k in raw]
    if len(kinds) != 1:
        what = "none of" if not kinds else "more than one of"
        walk.problem(path, f"has {what} and/or/not/field/tag/behaviour; a node is exactly one")
        return None
    kind = kinds[0]
    if kind in ("and", "or"):
        return _group(raw, kind, path, depth, walk)
    if kind == "not":
        if set(raw) != {"not"}:
            walk.problem(path, f"unknown keys {sorted(set(raw) - {'not'})} beside 'not'")
        inner = _node(raw["not"], _join(path, "not"), depth + 1, walk)
        return Not(item=inner) if inner is not None else None
    walk.conditions += 1
    if kind == "tag":
        return _tag(raw, path, walk)
    if kind == "behaviour":
        return _behaviour(raw, path, walk)
    return _condition(raw, path, walk)


def _group(raw: dict[str, Any], kind: str, path: str, depth: int, walk: _Walk) -> Node | None:
    if set(raw) != {kind}:
        walk.problem(path, f"unknown keys {sorted(set(raw) - {kind})} beside '{kind}'")
    items = raw[kind]
    here = _join(path, kind)
    if not isinstance(items, list):
        walk.problem(here, "a list of nodes")
        return None
    if not items:
        walk.problem(here, "empty group; add a condition or remove the group")
        return None
    parsed = [_node(item, _join(here, i), depth + 1, walk) for i, item in enumerate(items)]
    if any(p is None for p in parsed):
        return None
    nodes = tuple(p for p in parsed if p is not None)
    return And(items=nodes) if kind == "and" else Or(items=nodes)


def _tag(raw: dict[str, Any], path: str, walk: _Walk) -> Node | None:
    if set(raw) != {"tag"}:
        walk.problem(path, f"unknown keys {sorted(set(raw) - {'tag'})} beside 'tag'")
        return None
    return _condition({"field": "tags", "op": "has", "value": raw["tag"]}, path, walk, tag=True)


def _behaviour(raw: dict[str, Any], path: str, walk: _Walk) -> Node | None:
    name = raw.get("behaviour")
    model = _BEHAVIOUR_MODELS.get(name) if isinstance(name, str) else None
    if model is None:
        walk.problem(
            _join(path, "behaviour"),
            f"unknown behaviour {name!r}; known: {', '.join(_BEHAVIOUR_MODELS)}",
        )
        return None
    try:
        parsed = model.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()))
            reason = error.get("msg", "invalid")
            if error.get("type") == "extra_forbidden":
                reason = f"unknown key for behaviour {name}"
            elif error.get("type") == "missing":
                reason = "required"
            walk.problem(_join(path, where), reason)
        return None
    if isinstance(parsed, BoughtCategory):
        known = walk.vocab.categories
        if known is not None and parsed.category not in known:
            walk.problem(
                _join(path, "category"),
                f"unknown category '{parsed.category}'; {_HOW_TO_FIX['categories']} "
                f"({', '.join(sorted(known))})",
            )
            return None
    return parsed  # type: ignore[return-value]


def _condition(raw: dict[str, Any], path: str, walk: _Walk, *, tag: bool = False) -> Node | None:
    extra = set(raw) - {"field", "op", "value"}
    if extra:
        walk.problem(path, f"unknown keys {sorted(extra)} in a condition (field, op, value)")
        return None
    name = raw.get("field")
    spec = FIELDS.get(name) if isinstance(name, str) else None
    if spec is None:
        close = get_close_matches(name, FIELDS, n=1) if isinstance(name, str) else []
        hint = f"did you mean '{close[0]}'? " if close else ""
        walk.problem(
            _join(path, "field"),
            f"unknown field {name!r}; {hint}known fields: {', '.join(FIELDS)}",
        )
        return None
    op = raw.get("op")
    allowed = OPERATORS[spec.kind]
    if op not in allowed:
        walk.problem(
            _join(path, "op"),
            f"operator {op!r} does not apply to {spec.name} ({spec.kind.value}); "
            f"use one of: {', '.join(allowed)}",
        )
        return None
    where = path if tag else _join(path, "value")
    value = _value(spec, op, raw.get("value"), where, walk)
    if value is _BAD:
        return None
    return Condition(field=spec.name, op=op, value=value)


_BAD: Any = object()


def _value(spec: FieldSpec, op: str, value: Any, path: str, walk: _Walk) -> Any:
    """The value normalised for the field and operator, or ``_BAD`` after a problem."""
    if op in ("is_null", "not_null"):
        if value is not None:
            walk.problem(path, f"'{op}' takes no value; remove it")
            return _BAD
        return None
    if value is None:
        walk.problem(path, f"'{op}' needs a value")
        return _BAD
    if op in ("within_days", "more_than_days_ago"):
        return _days(value, path, walk)
    if op in ("in", "not_in", "has_any", "has_all", "has_none", "between"):
        if not isinstance(value, list) or not value:
            walk.problem(path, f"'{op}' takes a non-empty list")
            return _BAD
        if len(value) > MAX_LIST:
            walk.problem(path, f"at most {MAX_LIST} values; use a tag for longer lists")
            return _BAD
        if op == "between":
            return _between(spec, value, path, walk)
        items = [_scalar(spec, v, _join(path, i), walk) for i, v in enumerate(value)]
        if any(i is _BAD for i in items):
            return _BAD
        return tuple(dict.fromkeys(items))
    if isinstance(value, list):
        walk.problem(path, f"'{op}' takes one value, not a list")
        return _BAD
    return _scalar(spec, value, path, walk)


def _days(value: Any, path: str, walk: _Walk) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
        walk.problem(path, f"a whole number of days from 1 to {MAX_DAYS}")
        return _BAD
    return value


def _between(spec: FieldSpec, value: list[Any], path: str, walk: _Walk) -> Any:
    if len(value) != 2:
        walk.problem(path, "'between' takes [low, high], both included")
        return _BAD
    low = _scalar(spec, value[0], _join(path, 0), walk)
    high = _scalar(spec, value[1], _join(path, 1), walk)
    if low is _BAD or high is _BAD:
        return _BAD
    if low > high:
        walk.problem(path, f"low {value[0]} is above high {value[1]}; swap them")
        return _BAD
    return (low, high)


def _scalar(spec: FieldSpec, value: Any, path: str, walk: _Walk) -> Any:
    kind = spec.kind
    if kind in (Kind.number, Kind.money):
        integer = spec.integer or kind is Kind.money
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            unit = (
                "a whole number of fen"
                if kind is Kind.money
                else ("a whole number" if integer else "a number")
            )
            walk.problem(path, f"{spec.name} takes {unit}")
            return _BAD
        low, high = spec.minimum, spec.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            limits = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
            walk.problem(path, f"{spec.name} is {limits}")
            return _BAD
        return value
    if kind is Kind.bool:
        if not isinstance(value, bool):
            walk.problem(path, f"{spec.name} takes true or false")
            return _BAD
        return value
    if kind in (Kind.date, Kind.datetime):
        if not isinstance(value, str):
            walk.problem(path, "a date as YYYY-MM-DD")
            return _BAD
        try:
            return date.fromisoformat(value)
        except ValueError:
            walk.problem(path, f"'{value}' is not a date as YYYY-MM-DD")
            return _BAD
    # enum, text and list members are strings
    if not isinstance(value, str) or not value.strip():
        walk.problem(path, f"{spec.name} takes text")
        return _BAD
    if spec.values is not None and value not in spec.values:
        walk.problem(path, f"unknown {spec.name} '{value}'; known: {', '.join(spec.values)}")
        return _BAD
    if spec.vocab is not None:
        return _in_vocab(spec, value, path, walk)
    return value


def _in_vocab(spec: FieldSpec, value: str, path: str, walk: _Walk) -> Any:
    vocab = spec.vocab
    assert vocab is not None
    if vocab == "tags" and not walk.vocab.allow_rule_tags and value in walk.vocab.rule_tags:
        walk.problem(
            path,
            f"'{value}' is a rule tag; a tag rule cannot depend on another rule tag "
            "(copy its conditions instead)",
        )
        return _BAD
    known = walk.vocab.known(vocab)
    if known is not None and value not in known:
        listed = f" ({', '.join(sorted(known))})" if vocab != "tags" and len(known) <= 30 else ""
        walk.problem(
            path, f"unknown {spec.name.rstrip('s')} '{value}'; {_HOW_TO_FIX[vocab]}{listed}"
        )
        return _BAD
    return value


# --- reading a parsed tree -------------------------------------------------------------------


def walk(node: Node) -> Iterator[Node]:
    """Every node of a tree, depth first."""
    yield node
    if isinstance(node, And | Or):
        for item in node.items:
            yield from walk(item)
    elif isinstance(node, Not):
        yield from walk(node.item)


def named(raw: Any, vocab: Vocab) -> set[str]:
    """The values of a vocabulary a raw (unchecked) tree names, so a service can look up
    only those (tags exist by the million; the tree names a few)."""
    found: set[str] = set()

    def visit(item: Any) -> None:
        if isinstance(item, list):
            for x in item:
                visit(x)
            return
        if not isinstance(item, dict):
            return
        if vocab == "tags" and isinstance(item.get("tag"), str):
            found.add(item["tag"])
        spec = FIELDS.get(item.get("field")) if isinstance(item.get("field"), str) else None
        if spec is not None and spec.vocab == vocab:
            value = item.get("value")
            values = value if isinstance(value, list) else [value]
            found.update(v for v in values if isinstance(v, str))
        if vocab == "categories" and isinstance(item.get("category"), str):
            found.add(item["category"])
        for key in ("and", "or", "not"):
            if key in item:
                visit(item[key])

    visit(raw)
    return found


def dump(node: Node) -> dict[str, Any]:
    """A parsed tree as canonical JSON: what is stored, and what ``check`` reads back."""
    if isinstance(node, And):
        return {"and": [dump(i) for i in node.items]}
    if isinstance(node, Or):
        return {"or": [dump(i) for i in node.items]}
    if isinstance(node, Not):
        return {"not": dump(node.item)}
    if isinstance(node, Condition):
        out: dict[str, Any] = {"field": node.field, "op": node.op}
        if node.value is not None:
            out["value"] = _plain(node.value)
        return out
    return node.model_dump()


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value
