"""When a copy can follow the member changes (会员变更) from its mark: the rule the segment
profile and the order book's members share (``insight.member_changes``)."""

from __future__ import annotations

from siyu.insight import member_changes
from siyu.members.service import ChangesMark


def test_the_member_changes_a_copy_can_follow() -> None:
    def follow(token: str, seq: int, mark: ChangesMark, overlap: int) -> str | None:
        return member_changes.unfollowable(token, seq, mark, overlap)

    # it reads the ids above its mark: those at or below may be gone
    assert follow("t", 500, ChangesMark("t", 800, 0), overlap=0) is None
    assert follow("t", 500, ChangesMark("t", 800, 500), overlap=0) is None
    assert "pruned" in (follow("t", 500, ChangesMark("t", 800, 501), overlap=0) or "")
    # PostgreSQL reads the last ids before the mark again: they must still be there
    assert "pruned" in (follow("t", 500, ChangesMark("t", 800, 401), overlap=100) or "")
    assert follow("t", 500, ChangesMark("t", 800, 400), overlap=100) is None
    assert "another" in (follow("t", 500, ChangesMark("u", 800, 0), overlap=0) or "")
    assert "back" in (follow("t", 500, ChangesMark("t", 400, 0), overlap=0) or "")
    # a copy that notes no list (made before it was kept) cannot follow it
    assert follow("", 0, ChangesMark("t", 1, 0), 0)
