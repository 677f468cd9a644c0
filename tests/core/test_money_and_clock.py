from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siyu.core import clock
from siyu.core.errors import InvalidInput
from siyu.core.money import fen_to_yuan, format_yuan, yuan_to_fen


@pytest.mark.parametrize(
    ("value", "fen"), [("12.50", 1250), ("0", 0), (Decimal("199"), 19900), (3, 300)]
)
def test_yuan_become_exact_fen(value: object, fen: int) -> None:
    assert yuan_to_fen(value) == fen  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1.005", "abc", "NaN", "12.3.4", ""])
def test_not_money_is_refused_with_a_reason(value: str) -> None:
    with pytest.raises(InvalidInput):
        yuan_to_fen(value, field="amount")


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_fen_round_trip_through_yuan(fen: int) -> None:
    assert yuan_to_fen(fen_to_yuan(fen)) == fen


def test_format_yuan() -> None:
    assert format_yuan(123450) == "¥1,234.50"
    assert format_yuan(-300) == "-¥3.00"


def test_the_fixed_clock_moves_only_when_told() -> None:
    at = datetime(2026, 12, 31, 16, 30, tzinfo=clock.UTC)
    fixed = clock.FixedClock(at)
    previous = clock.set_clock(fixed)
    try:
        assert clock.now() == at
        # 16:30 UTC on 31 December is already 1 January in Shanghai
        assert clock.local_date(clock.now(), "Asia/Shanghai").isoformat() == "2027-01-01"
        fixed.advance(timedelta(hours=1))
        assert clock.now() == at + timedelta(hours=1)
    finally:
        clock.set_clock(previous)
