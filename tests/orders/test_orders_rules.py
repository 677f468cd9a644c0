"""Order and refund rules, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siyu.core.errors import InvalidInput
from siyu.orders import rules
from siyu.orders.rules import LineDraft, LineState, OrderDraft, RefundDraft, RefundLineDraft

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def draft(**overrides: object) -> OrderDraft:
    fields: dict[str, object] = {
        "channel": "store",
        "external_id": "P-1",
        "paid_at": NOW - timedelta(hours=2),
        "lines": [LineDraft("SKU-1", "奶粉", 1, 25_600)],
    }
    fields.update(overrides)
    return OrderDraft(**fields)  # type: ignore[arg-type]


def refund(lines: list[RefundLineDraft] | None = None, amount: int | None = None) -> RefundDraft:
    return RefundDraft(
        channel="store",
        external_id="R-1",
        order_channel="store",
        order_external_id="P-1",
        refunded_at=NOW,
        lines=lines or [],
        amount_fen=amount,
    )


def test_a_plain_order_is_valid() -> None:
    assert rules.validate_order(draft(), NOW) == []


def test_a_till_clock_a_little_ahead_is_tolerated_but_tomorrow_is_not() -> None:
    assert rules.validate_order(draft(paid_at=NOW + timedelta(minutes=5)), NOW) == []
    [problem] = rules.validate_order(draft(paid_at=NOW + timedelta(days=1)), NOW)
    assert problem.field == "paid_at" and "future" in problem.reason


def test_a_time_without_offset_is_refused() -> None:
    [problem] = rules.validate_order(draft(paid_at=datetime(2026, 11, 11, 20, 0)), NOW)  # noqa: DTZ001
    assert problem.field == "paid_at" and "timezone" in problem.reason


def test_a_stated_amount_must_match_the_lines_and_freight() -> None:
    assert rules.validate_order(draft(freight_fen=1_000, amount_fen=26_600), NOW) == []
    [problem] = rules.validate_order(draft(amount_fen=1), NOW)
    assert problem.field == "amount" and "256.00" in problem.reason


def test_overlong_texts_and_impossible_ids_are_refused() -> None:
    problems = rules.validate_order(
        draft(lines=[LineDraft("S" * 65, "C", 1, 1)], member_id=2**64, store_code=""), NOW
    )
    assert {p.field for p in problems} == {"lines[0].sku", "member_id", "store_code"}


def test_one_instant_in_two_offsets_hashes_alike() -> None:
    at = NOW - timedelta(hours=2)
    assert rules.order_content_hash(draft(paid_at=at)) == rules.order_content_hash(
        draft(paid_at=at.astimezone(SHANGHAI))
    )
    assert rules.order_content_hash(draft()) != rules.order_content_hash(draft(freight_fen=1))


def test_buyer_identities_are_normalised_and_bad_ones_named() -> None:
    clean, problems = rules.normalize_buyer(
        [("phone", "+86 138 0013 8000"), ("phone", "13800138000"), ("qq", "1")]
    )
    assert clean == [("phone", "13800138000")]
    assert [p.field for p in problems] == ["buyer_identities[2]"]


def test_a_local_time_in_a_file_is_the_brands_time() -> None:
    at = rules.local_instant("2026-11-11 20:00:00", "Asia/Shanghai")
    assert at.astimezone(UTC) == datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
    assert rules.local_instant("2026-11-11T20:00:00Z", "Asia/Shanghai").utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="ISO 8601"):
        rules.local_instant("11/11/2026", "Asia/Shanghai")


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    at = datetime(2026, 11, 11, 12, 0, 0, 123456, tzinfo=UTC)
    assert rules.decode_cursor(rules.encode_cursor(at, 42)) == (at, 42)
    with pytest.raises(InvalidInput):
        rules.decode_cursor("not-a-cursor")


def test_metrics_of_a_chunk_are_one_delta_per_member() -> None:
    t1, t2 = NOW - timedelta(days=2), NOW - timedelta(days=1)
    deltas = rules.aggregate_orders([(1, t2, 100), (2, t1, 5), (1, t1, 50)])
    assert (deltas[1].order_count, deltas[1].spend_fen) == (2, 150)
    assert (deltas[1].first_order_at, deltas[1].last_order_at) == (t1, t2)
    assert deltas[2].order_count == 1


# --- refunds -----------------------------------------------------------------------------

LINES = [LineState(1, 2, 25_600), LineState(2, 1, 9_990)]
ORDER = {"order_amount_fen": 36_590, "order_refunded_fen": 0}


def test_a_refund_without_lines_takes_everything_including_freight() -> None:
    plan, problems = rules.plan_refund(refund(), lines=LINES, **ORDER)
    assert problems == [] and plan is not None
    assert plan.lines == ((1, 2, 25_600), (2, 1, 9_990)) and plan.freight_fen == 1_000
    assert plan.total_fen == 36_590


def test_a_refund_of_a_line_cannot_exceed_what_remains_of_it() -> None:
    done = [LineState(1, 2, 25_600, 1, 12_800), LineState(2, 1, 9_990)]
    plan, problems = rules.plan_refund(
        refund([RefundLineDraft(1, 2, 12_900)]),
        lines=done,
        order_amount_fen=36_590,
        order_refunded_fen=12_800,
    )
    assert plan is None
    assert {p.field for p in problems} == {"lines[0].quantity", "lines[0].amount"}
    assert "128.00 of 256.00" in next(p.reason for p in problems if p.field.endswith("amount"))


def test_refund_drafts_with_repeated_or_empty_lines_are_refused() -> None:
    problems = rules.validate_refund(
        refund([RefundLineDraft(1, 1, 100), RefundLineDraft(1, 0, 0)]), NOW
    )
    assert {p.field for p in problems} == {"lines[1].line_no", "lines[1]"}


@given(
    lines=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 50_000)), min_size=1, max_size=4),
    freight=st.integers(0, 2_000),
    asks=st.lists(
        st.tuples(st.integers(1, 5), st.integers(0, 5), st.integers(0, 60_000)), max_size=8
    ),
)
def test_refunds_never_take_back_more_than_was_paid(
    lines: list[tuple[int, int]], freight: int, asks: list[tuple[int, int, int]]
) -> None:
    """Whatever partial refunds are asked for, accepted ones never exceed what remains, and a
    final refund without lines returns exactly the rest."""
    state = [LineState(i + 1, q, fen) for i, (q, fen) in enumerate(lines)]
    amount = sum(fen for _, fen in lines) + freight
    refunded = 0
    for line_no, quantity, fen in asks:
        plan, _ = rules.plan_refund(
            refund([RefundLineDraft(line_no, quantity, fen)]),
            lines=state,
            order_amount_fen=amount,
            order_refunded_fen=refunded,
        )
        if plan is None:
            continue
        for n, q, f in plan.lines:
            s = state[n - 1]
            state[n - 1] = LineState(
                n, s.quantity, s.amount_fen, s.refunded_quantity + q, s.refunded_fen + f
            )
        refunded += plan.total_fen
        assert all(0 <= s.refunded_fen <= s.amount_fen for s in state)
        assert all(0 <= s.refunded_quantity <= s.quantity for s in state)
    rest, problems = rules.plan_refund(
        refund(), lines=state, order_amount_fen=amount, order_refunded_fen=refunded
    )
    if amount - refunded > 0:
        assert rest is not None and rest.total_fen == amount - refunded
        assert rest.freight_fen == freight
    else:
        assert rest is None and problems


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),  # noqa: DTZ001 - a naive bound: zones are drawn below
        max_value=datetime(9998, 12, 31),  # noqa: DTZ001
    ),
    st.sampled_from([None, UTC, ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")]),
)
def test_an_instant_in_the_content_hash_is_spelled_as_isoformat_spells_it_in_utc(
    at: datetime, zone: ZoneInfo | None
) -> None:
    # given an instant, naive or in any zone, with or without microseconds
    at = at.replace(tzinfo=zone)
    # then the hash spells it as isoformat does, in UTC when it is aware
    expected = at.astimezone(UTC).isoformat() if zone is not None else at.isoformat()
    assert rules._instant(at) == expected
    assert rules._instant(at.replace(microsecond=0)) == (
        at.replace(microsecond=0).astimezone(UTC).isoformat()
        if zone is not None
        else at.replace(microsecond=0).isoformat()
    )
