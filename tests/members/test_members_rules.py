"""Member rules, without a database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siyu.core.errors import InvalidInput
from siyu.members import rules


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("13800138000", "13800138000"),
        ("+86 138-0013-8000", "13800138000"),
        ("0086 13800138000", "13800138000"),
    ],
)
def test_phone_numbers_are_normalised(raw: str, expected: str) -> None:
    assert rules.normalize_phone(raw) == expected


@pytest.mark.parametrize("raw", ["", "12345", "23800138000", "1380013800a", "138001380001"])
def test_bad_phone_numbers_are_refused_with_the_field(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        rules.normalize_phone(raw)
    assert caught.value.field == "phone"
    assert "mainland mobile" in caught.value.message


def test_phone_masking_keeps_prefix_and_last_four() -> None:
    assert rules.mask_phone("13812345678") == "138****5678"
    assert rules.mask_phone(None) is None


@given(st.integers(min_value=1, max_value=999_999_999))
def test_member_numbers_round_trip(member_id: int) -> None:
    number = rules.member_no(member_id)
    assert len(number) == 10
    assert rules.member_id_from_no(number) == member_id


@given(st.integers(min_value=1, max_value=999_999_999), st.integers(min_value=0, max_value=9))
def test_a_mistyped_digit_is_caught(member_id: int, position: int) -> None:
    number = rules.member_no(member_id)
    wrong = str((int(number[position]) + 1) % 10)
    typo = number[:position] + wrong + number[position + 1 :]
    assert rules.member_id_from_no(typo) != member_id


def test_scene_tags_use_configuration_or_fall_back_to_the_code() -> None:
    assert rules.scene_tags("spring-fair", ["孕妈", "春季展会"]) == ["孕妈", "春季展会"]
    assert rules.scene_tags("shop-42", None) == ["qr:shop-42"]
    assert rules.scene_tags(None, ["x"]) == []


def test_unknown_identity_channel_names_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        rules.normalize_identity("weibo", "abc")
    assert "wechat_unionid" in caught.value.message
