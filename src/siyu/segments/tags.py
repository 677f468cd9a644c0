"""Rule tags (规则标签) and the refresh that recomputes them with the member profile.

A tag rule is a name and a condition tree; members carry the tag while they meet the tree.
The refresh (nightly job ``segments.tags``, or on demand) builds a new profile snapshot,
evaluates every rule on it as one query each, next to the members carrying the tag now
(read by the live database's index; like all DuckDB reading of the live database, in the
analytics child on SQLite: see ``segments.profile``), writes only the difference to
``member_rule_tags`` (one transaction per rule: a re-run adds and removes nothing), then
puts the new tags into the snapshot and publishes it. Manual and QR-scene tags stay in
``member_tags`` and are never touched here.

A rule's tree cannot name another rule tag: rules are evaluated side by side on the same
snapshot, so a chain would read yesterday's value of the tag it depends on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import ibis
from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.core import audit, clock
from siyu.core.auth import Principal
from siyu.core.db import IN_CHUNK, Database
from siyu.core.errors import Conflict, NotFound, Problem, invalid
from siyu.insight.engine import Analytics
from siyu.members.models import MemberTag
from siyu.members.rules import check_tag
from siyu.segments import compiler, rules, service
from siyu.segments import profile as profiles
from siyu.segments.models import MemberRuleTag, TagRule

BATCH = 50_000


# --- tag rules ---------------------------------------------------------------------------------


def get_rule(session: Session, rule_id: int) -> TagRule:
    rule = session.get(TagRule, rule_id)
    if rule is None:
        raise NotFound(f"no tag rule with id {rule_id}", field="rule_id")
    return rule


def find_rule(session: Session, ref: str) -> TagRule:
    rule = session.get(TagRule, int(ref)) if ref.isdigit() else None
    rule = rule or session.scalar(select(TagRule).where(TagRule.name == ref))
    if rule is None:
        raise NotFound(f"no tag rule with id or name '{ref}'; `siyu segments tags list` shows them")
    return rule


def list_rules(session: Session) -> list[TagRule]:
    return list(session.scalars(select(TagRule).order_by(TagRule.id)))


def _check_name(session: Session, name: str, *, rule_id: int | None = None) -> str:
    try:
        name = check_tag(name)
    except Exception as exc:  # InvalidInput with the reason
        raise invalid([Problem("name", str(exc))], what="tag_rule") from None
    taken = select(TagRule.id).where(TagRule.name == name)
    if rule_id is not None:
        taken = taken.where(TagRule.id != rule_id)
    if session.scalar(select(exists(taken))):
        raise Conflict(f"a tag rule named '{name}' exists; choose another name", field="name")
    if session.scalar(select(exists().where(MemberTag.tag == name))):
        held = session.scalar(select(func.count()).where(MemberTag.tag == name))
        raise Conflict(
            f"'{name}' is a manual tag of {held} members; a rule tag needs a name of its own",
            field="name",
        )
    return name


def create_rule(
    session: Session, *, name: str, tree: Any, principal: Principal, description: str = ""
) -> TagRule:
    name = _check_name(session, name)
    if len(description) > service.MAX_DESCRIPTION:
        raise invalid([Problem("description", "at most 500 characters")], what="tag_rule")
    node = service.parse(session, tree, for_rule=True)
    now = clock.now()
    rule = TagRule(
        name=name,
        description=description,
        tree=rules.dump(node),
        author=principal.actor,
        created_at=now,
        updated_at=now,
    )
    session.add(rule)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a tag rule named '{name}' exists", field="name") from None
    audit.record(
        session,
        actor=principal.actor,
        action="tag_rule.create",
        target_type="tag_rule",
        target_id=rule.id,
        detail={"name": name, "tree": rule.tree},
    )
    return rule


def update_rule(
    session: Session,
    rule_id: int,
    *,
    principal: Principal,
    name: str | None = None,
    tree: Any = None,
    description: str | None = None,
) -> TagRule:
    """Change a rule; members keep the tag under its new name at once, and the next refresh
    applies a new tree."""
    rule = get_rule(session, rule_id)
    before = {"name": rule.name, "tree": rule.tree, "description": rule.description}
    if name is not None and name != rule.name:
        rule.name = _check_name(session, name, rule_id=rule.id)
    if description is not None:
        if len(description) > service.MAX_DESCRIPTION:
            raise invalid([Problem("description", "at most 500 characters")], what="tag_rule")
        rule.description = description
    if tree is not None:
        rule.tree = rules.dump(service.parse(session, tree, for_rule=True))
    rule.updated_at = clock.now()
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="tag_rule.update",
        target_type="tag_rule",
        target_id=rule.id,
        detail={"before": before, "name": rule.name, "tree": rule.tree},
    )
    return rule


def remove_rule(session: Session, rule_id: int, *, principal: Principal) -> None:
    """Delete a rule; its members lose the tag now (segments naming it stop matching)."""
    rule = get_rule(session, rule_id)
    removed = session.execute(delete(MemberRuleTag).where(MemberRuleTag.tag_rule_id == rule.id))
    session.delete(rule)
    audit.record(
        session,
        actor=principal.actor,
        action="tag_rule.delete",
        target_type="tag_rule",
        target_id=rule_id,
        detail={"name": rule.name, "tree": rule.tree, "members": removed.rowcount},  # type: ignore[attr-defined]
    )
    session.flush()


def members_of(session: Session, rule_id: int, *, after: int = 0, limit: int = 1_000) -> list[int]:
    """A page of the ids of members carrying a rule tag (keyset paging on id)."""
    stmt = (
        select(MemberRuleTag.member_id)
        .where(MemberRuleTag.tag_rule_id == rule_id, MemberRuleTag.member_id > after)
        .order_by(MemberRuleTag.member_id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


# --- the refresh -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleOutcome:
    rule_id: int
    name: str
    members: int
    added: int
    removed: int


@dataclass(frozen=True)
class Refreshed:
    profile: profiles.ProfileInfo
    rules: list[RuleOutcome] = field(default_factory=list)
    # members whose tags were read again after the rules were written (None: every member,
    # or no rules to write)
    retagged: int | None = None


Progress = Callable[[str], None]


def refresh(
    db: Database,
    analytics_dir: str | Path,
    *,
    tz: str,
    progress: Progress | None = None,
    with_rules: bool = True,
) -> Refreshed:
    """Build a new profile snapshot, recompute every rule tag on it (unless
    ``with_rules`` is false: rule tags as they are), publish it."""
    say = progress or (lambda _: None)
    started = time.perf_counter()
    # (without rules: a request's first build, which may not write: see ``Build``)
    build = profiles.Build(db, analytics_dir, upkeep=with_rules)
    try:
        say("profile: members and purchases")
        build.write_tables()
        trees: list[tuple[int, Any]] = []
        if with_rules:
            with db.unit_of_work() as session:
                trees = [
                    (rule.id, rule.tree)
                    for rule in session.scalars(select(TagRule).order_by(TagRule.id))
                ]
        outcomes = []
        retagged: int | None = None
        if trees:
            build.run(_differences, trees, build.data_as_of, tz)
            for rule_id, _ in trees:
                outcome = _write_difference(db, build, rule_id)
                if outcome is not None:
                    say(
                        f"tag {outcome.name}: {outcome.members} members "
                        f"(+{outcome.added} -{outcome.removed})"
                    )
                    outcomes.append(outcome)
            retagged = build.retag()
        info = build.publish(time.perf_counter() - started)
    except BaseException:
        build.discard()
        raise
    written = info.written
    how = (
        f" (purchases {written.summary()}; profile {written.profile_summary()})" if written else ""
    )
    say(f"profile: {info.members} members, {info.purchases} purchase lines{how}")
    return Refreshed(info, outcomes, retagged)


def _differences(engine: Analytics, trees: list[tuple[int, Any]], as_of: datetime, tz: str) -> None:
    """Each rule's members on the new snapshot and the difference from the members carrying
    its tag now (read by the live database's index), kept in the snapshot for the writes
    (``rule_members``, ``rule_added``, ``rule_removed``; ``retag`` drops them). Runs as
    ``Build.run`` work. Only the shape of a stored tree is checked again: a tier or
    category that no longer exists simply matches nobody."""
    ctx = compiler.Context(now=as_of, tz=tz)
    snapshot = profiles.SNAPSHOT
    engine.sql(f"CREATE TABLE {snapshot}.rule_members (rule_id BIGINT, members BIGINT)")
    for table in ("rule_added", "rule_removed"):
        engine.sql(f"CREATE TABLE {snapshot}.{table} (rule_id BIGINT, member_id BIGINT)")
    for rule_id, tree in trees:
        node, problems = rules.check(tree)
        if node is None:  # pragma: no cover - stored trees were checked when saved
            raise invalid(problems, what="tag_rule")
        chosen = compiler.members(node, profiles.unbound(), ctx).select("member_id")
        engine.sql(
            f"CREATE OR REPLACE TEMP TABLE rule_now AS {ibis.to_sql(chosen, dialect='duckdb')}"
        )
        before = engine.live_query(
            f"SELECT member_id FROM member_rule_tags WHERE tag_rule_id = {int(rule_id)}"
        )
        engine.sql(
            "CREATE OR REPLACE TEMP TABLE rule_before AS "
            f"SELECT CAST(member_id AS BIGINT) AS member_id FROM {before}"
        )
        engine.sql(
            f"INSERT INTO {snapshot}.rule_members SELECT {int(rule_id)}, count(*) FROM rule_now"
        )
        engine.sql(
            f"INSERT INTO {snapshot}.rule_added SELECT {int(rule_id)}, member_id FROM "
            "(SELECT member_id FROM rule_now EXCEPT SELECT member_id FROM rule_before)"
        )
        engine.sql(
            f"INSERT INTO {snapshot}.rule_removed SELECT {int(rule_id)}, member_id FROM "
            "(SELECT member_id FROM rule_before EXCEPT SELECT member_id FROM rule_now)"
        )


def _write_difference(db: Database, build: profiles.Build, rule_id: int) -> RuleOutcome | None:
    """One rule's difference (``_differences``) written in one transaction."""
    con = build.con
    row = con.execute("SELECT members FROM rule_members WHERE rule_id = ?", [rule_id]).fetchone()
    members = int(row[0]) if row else 0

    def ids(table: str) -> Iterator[int]:
        result = con.cursor().execute(
            f"SELECT member_id FROM {table} WHERE rule_id = ? ORDER BY member_id", [rule_id]
        )
        while rows := result.fetchmany(BATCH):
            for found in rows:
                yield found[0]

    now = clock.now()
    with db.unit_of_work() as session:
        rule = session.get(TagRule, rule_id)
        if rule is None:  # deleted meanwhile
            return None
        removed = 0
        gone = ids("rule_removed")
        while chunk := list(islice(gone, IN_CHUNK)):
            result = session.execute(
                delete(MemberRuleTag).where(
                    MemberRuleTag.tag_rule_id == rule_id, MemberRuleTag.member_id.in_(chunk)
                )
            )
            removed += result.rowcount  # type: ignore[attr-defined]
        added = service.bulk_insert(
            session,
            MemberRuleTag.__table__,
            ("tag_rule_id", "member_id", "tagged_at"),
            ((rule_id, m, now) for m in ids("rule_added")),
        )
        rule.computed_at = now
        rule.data_as_of = build.data_as_of
        rule.member_count = members
    return RuleOutcome(rule_id, rule.name, members, added, removed)
