"""``one_of``: an ``IN`` list passed as one parameter finds what the ``IN`` list finds."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.db import one_of
from siyu.members import service as members
from siyu.members.models import MemberIdentity
from siyu.members.service import EnrolDraft


def test_one_of_finds_what_an_in_list_finds_whatever_the_spelling(session: Session) -> None:
    # Given identities whose external ids need escaping in JSON, or are not ASCII
    spelled = ["o'brien", 'say "hi"', "back\\slash", "微信-用户", "", "13800138000"]
    for n, name in enumerate(spelled):
        identities = [("wechat_openid", name)] if name else []
        members.enrol(session, EnrolDraft(phone=f"1390000000{n}", identities=identities))
    asked = [*spelled, "nobody", "13800138000 "]
    # When looked up with one parameter and with an IN list
    column = MemberIdentity.external_id
    one = set(session.scalars(select(column).where(one_of(session, column, asked))))
    listed = set(session.scalars(select(column).where(column.in_(asked))))
    # Then both find the same identities, and nothing for an empty list
    assert one == listed and {"o'brien", 'say "hi"', "back\\slash", "微信-用户"} <= one
    assert list(session.scalars(select(column).where(one_of(session, column, [])))) == []
