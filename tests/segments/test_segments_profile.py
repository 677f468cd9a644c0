"""The profile snapshot's purchases follow the order book: a build after a day of changes
(new orders, a line refunded, an order refunded in full, a merge and its undoing) starts
from the previous snapshot, replaces the purchases of the orders the book read again, and
ends with the purchases a whole rebuild writes; a snapshot the book's changes cannot
bring up to date (another generation of the book, an older format) is written whole, and
so is one that following has grown too far from its last whole write."""

from __future__ import annotations

import shutil
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import duckdb
import pytest
from segments_helpers import Brand, Purchase, a_day_of_changes, snapshot_purchases

from siyu.core.auth import SYSTEM
from siyu.core.db import Database
from siyu.core.errors import NotFound
from siyu.insight import orderbook
from siyu.insight.engine import analytics_file
from siyu.insight.models import MemberInsight
from siyu.members import service as members
from siyu.members.service import EnrolDraft
from siyu.paid import service as paid
from siyu.segments import profile, service, tags
from siyu.stores import service as stores

TZ = "Asia/Shanghai"
# trees whose counts read the purchases: the categories the day's changes touch
TREES: list[dict[str, Any]] = [
    {"behaviour": "bought_category", "category": "玩具", "days": 30},
    {"behaviour": "bought_category", "category": "玩具", "days": 1000},
    {"behaviour": "bought_category", "category": "奶粉", "days": 90},
    {"behaviour": "bought_category", "category": "辅食", "days": 90},
    {"behaviour": "no_purchase_since", "days": 30},
    {"behaviour": "joined_never_bought", "days": 30},
]


def _counts(db: Database, analytics_dir: Path) -> list[int]:
    where = service.Where(db, analytics_dir, TZ)
    with db.unit_of_work() as s:
        nodes = [service.parse(s, tree) for tree in TREES]
    return [service.count(where, node).members for node in nodes]


def _refresh(db: Database, analytics_dir: Path) -> profile.Written:
    written = tags.refresh(db, analytics_dir, tz=TZ).profile.written
    assert written is not None
    return written


def _whole(db: Database, analytics_dir: Path) -> tuple[list[Purchase], list[int]]:
    """The purchases and counts of a whole rebuild (its own analytics directory: a book
    and a snapshot built from nothing)."""
    assert _refresh(db, analytics_dir).how == profile.WHOLE
    return snapshot_purchases(db, analytics_dir), _counts(db, analytics_dir)


@pytest.fixture
def follow_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """A six-purchase brand passes any share of rows inserted at once: follow regardless
    (the upkeep is decided in this process, ``Build.write_tables``)."""
    monkeypatch.setattr(profile, "REWRITE_SHARE", 1e9)
    monkeypatch.setattr(profile, "REWRITE_GROWTH", 1e9)


def test_followed_purchases_equal_a_whole_rebuilds(
    brand: Brand, clean_db: Database, tmp_path: Path, follow_always: None
) -> None:
    # given a rule tag (the refresh writes and reads the snapshot in this process too)
    # and a snapshot written whole
    with clean_db.unit_of_work() as s:
        tags.create_rule(s, name="玩具客", tree=TREES[0], principal=SYSTEM)
    analytics_dir = tmp_path / "analytics"
    first = _refresh(clean_db, analytics_dir)
    assert (first.how, first.reason) == (profile.WHOLE, "no previous snapshot in this format")
    assert first.lineage.whole_rows == 6 and first.lineage.generation
    before = _counts(clean_db, analytics_dir)

    # when a day of changes lands and the next build follows the book
    merge = a_day_of_changes(clean_db, brand)
    day = _refresh(clean_db, analytics_dir)
    # then it replaced only the changed orders' purchases, and equals a whole rebuild
    assert day.how == profile.FOLLOWED
    assert day.lineage.generation == first.lineage.generation
    assert day.lineage.seq > first.lineage.seq
    if clean_db.dialect == "sqlite":  # (PostgreSQL also reads the last ids again)
        # B1 and A2 (3 rows) and D1 (1) out; A2's 奶粉, D1 under 陈 and B2's 2 lines in
        assert (day.deleted, day.inserted) == (4, 4)
    purchases, counts = _whole(clean_db, tmp_path / "whole-day")
    assert snapshot_purchases(clean_db, analytics_dir) == purchases and len(purchases) == 6
    assert _counts(clean_db, analytics_dir) == counts != before
    assert (brand["陈"], "玩具") in {(m, c) for m, _, _, c in purchases}

    # when the merge is undone, and a night with nothing new
    with clean_db.unit_of_work() as s:
        members.unmerge(s, merge, principal=SYSTEM)
    undone = _refresh(clean_db, analytics_dir)
    assert undone.how == profile.FOLLOWED and undone.lineage.inserted >= day.lineage.inserted
    purchases, counts = _whole(clean_db, tmp_path / "whole-undone")
    assert snapshot_purchases(clean_db, analytics_dir) == purchases
    assert _counts(clean_db, analytics_dir) == counts
    assert (brand["丁"], "玩具") in {(m, c) for m, _, _, c in purchases}
    quiet = _refresh(clean_db, analytics_dir)
    assert (
        quiet.how == profile.FOLLOWED and snapshot_purchases(clean_db, analytics_dir) == purchases
    )
    assert _counts(clean_db, analytics_dir) == counts


def test_a_snapshot_of_another_book_or_format_is_written_whole(
    brand: Brand, clean_db: Database, tmp_path: Path, follow_always: None
) -> None:
    analytics_dir = tmp_path / "analytics"
    first = _refresh(clean_db, analytics_dir)
    a_day_of_changes(clean_db, brand)

    # when the order book is gone (rebuilt: another generation)
    book = analytics_file(clean_db, "orders", analytics_dir)
    assert book is not None
    Path(book).unlink()
    rebuilt = _refresh(clean_db, analytics_dir)
    # then the purchases are written whole from the new book
    assert rebuilt.how == profile.WHOLE and "rebuilt" in rebuilt.reason
    assert rebuilt.lineage.generation != first.lineage.generation
    purchases, counts = _whole(clean_db, tmp_path / "whole")
    assert snapshot_purchases(clean_db, analytics_dir) == purchases
    assert _counts(clean_db, analytics_dir) == counts

    # when the snapshot in force is of an older format (no lineage in profile_info; a
    # copy made current, as a build would: readers hold the file in force read-only)
    path = profile.current_path(clean_db, analytics_dir)
    assert path is not None
    older = path.with_name("profile-older.duckdb")
    shutil.copyfile(path, older)
    with duckdb.connect(str(older)) as con:
        con.execute(
            "CREATE OR REPLACE TABLE profile_info AS SELECT data_as_of, built_at, seconds, "
            "members, purchases FROM profile_info"
        )
    (path.parent / profile.POINTER).write_text(older.name, "utf-8")
    older = _refresh(clean_db, analytics_dir)
    # then it is written whole too, and the next build follows it again
    assert older.how == profile.WHOLE and "format" in older.reason
    assert _refresh(clean_db, analytics_dir).how == profile.FOLLOWED
    assert snapshot_purchases(clean_db, analytics_dir) == purchases


def _book(generation: str = "g", seq: int = 5, first_seq: int = 1) -> orderbook.Book:
    """A book at sync ``seq`` (its tables are not read)."""
    tables = {f.name: None for f in fields(orderbook.Book) if f.default is MISSING}
    return orderbook.Book(
        **{**tables, "generation": generation, "seq": seq, "first_seq": first_seq}
    )


def _previous(
    generation: str = "g", seq: int = 3, inserted: int = 0, size: int = 100
) -> profile.Previous:
    return profile.Previous("x", size, profile.Lineage(generation, seq, 1_000, inserted, 100))


def test_when_the_purchases_are_written_whole() -> None:
    # following needs the book's changes to reach back to the snapshot's sync
    follows = profile._unfollowable
    assert follows(_previous(), _book()) is None
    assert follows(_previous("other"), _book()) is not None  # another generation
    assert follows(_previous(seq=3), _book(first_seq=5)) is not None  # changes pruned
    assert follows(_previous(seq=4), _book(first_seq=5)) is None  # (sync 5 is listed)
    assert follows(_previous(seq=6), _book(seq=5)) is not None  # the book went back
    assert follows(_previous(), _book(generation="")) is not None  # no book (live)
    # upkeep: whole again past a tenth of the rows inserted since the last whole write,
    # or a file half as large again as that write left it
    whole = profile._whole_because
    assert whole(None) is not None
    assert whole(_previous(inserted=100)) is None
    assert "inserted" in str(whole(_previous(inserted=101)))
    assert whole(_previous(size=150)) is None
    assert "grew" in str(whole(_previous(size=151)))


def test_two_databases_sharing_an_analytics_directory_keep_their_own_snapshots(
    brand: Brand, clean_db: Database, tmp_path: Path
) -> None:
    # given this brand's snapshot in an analytics directory
    analytics_dir = tmp_path / "analytics"
    _refresh(clean_db, analytics_dir)
    assert profile.current_path(clean_db, analytics_dir) is not None
    # then another database using the same directory has no snapshot yet: it never
    # counts over this brand's members
    other = Database(f"sqlite:///{tmp_path / 'another-brand.db'}")
    try:
        assert profile.current_path(other, analytics_dir) is None
        with pytest.raises(NotFound):
            profile.readers.get(other, analytics_dir)
    finally:
        other.dispose()
    cursor, info = profile.readers.get(clean_db, analytics_dir)
    cursor.close()
    assert info.purchases == len(snapshot_purchases(clean_db, analytics_dir)) > 0


# --- the profile follows the member changes --------------------------------------------------


def _profile_rows(db: Database, analytics_dir: Path) -> list[tuple[Any, ...]]:
    """The current snapshot's profile, every column, by member (tags sorted)."""
    cursor, _ = profile.readers.get(db, analytics_dir)
    try:
        rows = cursor.execute(
            "SELECT * REPLACE (list_sort(tags) AS tags) FROM profile ORDER BY member_id"
        ).fetchall()
    finally:
        cursor.close()
    return [tuple(r) for r in rows]


def test_followed_profile_equals_a_whole_rebuilds(
    brand: Brand, clean_db: Database, tmp_path: Path, follow_always: None, monkeypatch: Any
) -> None:
    # (six members: any night changes more than the share that writes the profile whole)
    monkeypatch.setattr(profile, "FOLLOW_SHARE", 1e9)
    # and a rule tag the day's 玩具 order gives 白 (its tags are read again after the rules)
    with clean_db.unit_of_work() as s:
        tags.create_rule(s, name="玩具客", tree=TREES[0], principal=SYSTEM)
    analytics_dir = tmp_path / "analytics"
    first = _refresh(clean_db, analytics_dir)
    assert first.profile_members is None and first.profile_reason
    assert first.lineage.member_token and first.lineage.member_seq > 0

    # when a day changes five members' own rows: orders, refunds and a merge (metrics,
    # balances, identities and tags moved), a profile edit, a tag, an identity, a paid
    # trial, a stage, and a new member
    a_day_of_changes(clean_db, brand)
    with clean_db.unit_of_work() as s:
        members.update(s, brand["白"], {"gender": "M"}, principal=SYSTEM)
        members.add_tags(s, brand["陈"], ["新客"], principal=SYSTEM)
        members.add_identity(s, brand["陈"], "jd", "j-chen", principal=SYSTEM)
        paid.start_trial(s, brand["白"], "super")
        insight = s.get(MemberInsight, brand["白"])
        assert insight is not None
        insight.stage = "active"
        new = members.enrol(s, EnrolDraft(name="庚", phone="13800000007")).member_id
        # and two members nothing else happened to get insight rows, as the refresh or
        # the CLV step writes them: 鄂 (frozen: in the profile) and 冯 (closed: not in it)
        for name in ("鄂", "冯"):
            s.add(MemberInsight(member_id=brand[name], stage="prospect", p_alive=0.5))
    refreshed = tags.refresh(clean_db, analytics_dir, tz=TZ)
    day = refreshed.profile.written
    assert day is not None

    # then only those members' rows were computed again, only 白's tags read again after
    # the rule tagged them, and the profile is a whole rebuild's, column by column
    assert day.profile_members is not None and day.lineage.member_seq > first.lineage.member_seq
    assert [(r.added, r.removed) for r in refreshed.rules] == [(1, 0)]
    if clean_db.dialect == "sqlite":  # (PostgreSQL also reads the last ids again)
        assert day.profile_members == 7  # 安 (a refund), 白, 陈, 丁, 庚, 鄂 and 冯
        assert day.profile_insight_alone == 2  # 鄂 and 冯: their insight columns alone
        assert refreshed.retagged == 1
    rows = _profile_rows(clean_db, analytics_dir)
    assert next(r[-1] for r in rows if r[0] == brand["白"]) == ["玩具客"]
    _whole(clean_db, tmp_path / "whole-day")
    assert rows == _profile_rows(clean_db, tmp_path / "whole-day")
    assert brand["丁"] not in {r[0] for r in rows} and new in {r[0] for r in rows}

    # when nothing changed, the next night computes again only 白 (the rule tag the day's
    # build wrote after reading the list), the one after nobody (SQLite: PostgreSQL reads
    # the last ids again), and the profile stays the same
    for again in (1, 0):
        quiet = _refresh(clean_db, analytics_dir)
        assert quiet.profile_members is not None
        if clean_db.dialect == "sqlite":
            assert quiet.profile_members == again
        assert _profile_rows(clean_db, analytics_dir) == rows

    # when a member's insight row goes (the refresh removes the rows of members who no
    # longer count), their insight columns are a whole rebuild's again: empty
    with clean_db.unit_of_work() as s:
        gone = s.get(MemberInsight, brand["鄂"])
        assert gone is not None
        s.delete(gone)
    dropped = _refresh(clean_db, analytics_dir)
    if clean_db.dialect == "sqlite":
        assert (dropped.profile_members, dropped.profile_insight_alone) == (1, 1)
    rows = _profile_rows(clean_db, analytics_dir)
    assert (
        next(r for r in rows if r[0] == brand["鄂"])[-12:-2] == (None,) * 5 + (False,) + (None,) * 4
    )
    _whole(clean_db, tmp_path / "whole-dropped")
    assert rows == _profile_rows(clean_db, tmp_path / "whole-dropped")

    # when a store opens (the profile names stores by code), the profile is written whole
    with clean_db.unit_of_work() as s:
        stores.create_store(s, code="S003", name="三店")
    opened = _refresh(clean_db, analytics_dir)
    assert (opened.profile_members, opened.profile_reason) == (None, "stores changed")
    assert _profile_rows(clean_db, analytics_dir) == rows


def test_a_night_that_changed_too_many_members_writes_the_profile_whole(
    brand: Brand, clean_db: Database, tmp_path: Path, follow_always: None
) -> None:
    # (the purchases follow the book: only the profile's own share is at stake)
    analytics_dir = tmp_path / "analytics"
    _refresh(clean_db, analytics_dir)
    a_day_of_changes(clean_db, brand)  # four of the five members in the profile
    day = _refresh(clean_db, analytics_dir)
    assert day.how == profile.FOLLOWED and day.profile_members is None
    assert day.profile_reason.endswith("members changed, of 5")
    rows = _profile_rows(clean_db, analytics_dir)
    _whole(clean_db, tmp_path / "whole")
    assert rows == _profile_rows(clean_db, tmp_path / "whole")
