"""Following the member changes (会员变更, ``members.models.MemberChange``) from the
analytics engine: where the list stands, whether a copy can be brought up to it, and which
members it lists since.

Two copies follow the list: the segment profile (``segments.profile``), which reads
every member table, and the order book's members (``insight.orderbook``), which reads
``members`` alone and so follows only the changes written there (each change notes its
table: a night's refresh rewrites tens of thousands of ``member_insight`` rows, none of
which the book needs to read again). Each notes the list's token and the last change id
it reflects; the next time it reads the changes above that id (on PostgreSQL from
``engine.ID_OVERLAP`` ids below it: a sequence hands ids out before their transactions
commit, so a change may commit below the last id read) and reads those members' rows
again. It starts over from the live tables when the list cannot be followed
(``unfollowable``) or lists more than ``FOLLOW_SHARE`` of the members (a million rows
read by id cost more than read whole).

The list is pruned by the segment profile's build once it is published, below what the
build read (``segments.profile``). The build syncs the order book after reading its own
mark, so the book's mark is never below what is pruned; a book that was not brought up to
date then (its file could not be written) finds the list pruned past it and copies the
members whole, which is slower and as right.
"""

from __future__ import annotations

from collections.abc import Iterable

from siyu.insight.engine import Analytics
from siyu.members.models import CHANGE_SOURCES
from siyu.members.service import ChangesMark

# a copy that would read the rows of more than this share of its members again reads
# them whole instead
FOLLOW_SHARE = 0.2


def changes_mark(engine: Analytics) -> ChangesMark:
    """Where the member changes stand, read through the live database (in the analytics
    work: the application's process may not take a SQLite transaction while a request
    holds the write lock). Read it before anything it will be followed with."""
    state = engine.sql(
        "SELECT CAST(token AS VARCHAR), CAST(pruned_upto AS BIGINT) FROM "
        + engine.live_query("SELECT token, pruned_upto FROM member_changes_state WHERE id = 1")
    ).fetchone()
    upto = engine.scalar(
        "SELECT coalesce(max(CAST(m AS BIGINT)), 0) FROM "
        + engine.live_query("SELECT max(id) AS m FROM member_changes")
    )
    return ChangesMark(state[0] if state else "", int(upto or 0), int(state[1]) if state else 0)


def read_after(seq: int, overlap: int) -> int:
    """A copy that reflects the changes up to ``seq`` reads those with ids above this."""
    return max(seq - overlap, 0)


def unfollowable(token: str, seq: int, mark: ChangesMark, overlap: int) -> str | None:
    """Why a copy that reflects the list ``token`` up to change ``seq`` cannot be brought
    up to ``mark`` by the changes since, or None."""
    if not token or token != mark.token:
        return "the member changes are another list (a database emptied or restored)"
    if mark.upto < seq:
        return "the member changes went back (a database restored)"
    if mark.pruned_upto > read_after(seq, overlap):
        return "the member changes since are pruned"
    return None


def list_changed(
    engine: Analytics,
    into: str,
    after: int,
    upto: int | None = None,
    *,
    sources: Iterable[str] | None = None,
    but: Iterable[str] = (),
) -> tuple[str, int]:
    """The members listed with change ids above ``after`` (to ``upto``) into the temporary
    table ``into`` (``member_id``; the caller drops it), for writes to the tables
    ``sources`` only (``members.models.CHANGE_SOURCES``) or to any, ``but`` those. Returns
    the query that lists them in the live database's own SQL (to read their rows through
    its indexes) and how many there are. (A change listed before the list noted tables has
    source 0: it is in every list but one of ``sources``.)"""
    ids = f"id > {after}" if upto is None else f"id > {after} AND id <= {upto}"
    if sources is not None:
        ids += f" AND source IN ({', '.join(str(CHANGE_SOURCES[s]) for s in sources)})"
    if but:
        ids += f" AND source NOT IN ({', '.join(str(CHANGE_SOURCES[s]) for s in but)})"
    changed = f"SELECT DISTINCT member_id FROM member_changes WHERE {ids}"
    engine.sql(
        f"CREATE OR REPLACE TEMP TABLE {into} AS SELECT CAST(member_id AS BIGINT) "
        f"AS member_id FROM {engine.live_query(changed)}"
    )
    return changed, int(engine.scalar(f"SELECT count(*) FROM {into}"))
