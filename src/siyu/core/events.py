"""Domain events inside one transaction.

A capability publishes what happened (``MembersMerged``); capabilities above it subscribe
and react in the same session, so lower layers never import higher ones. Effects outside
the process go through the outbox instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

E = TypeVar("E")
Handler = Callable[[Session, Any], None]

_handlers: dict[type, list[Handler]] = defaultdict(list)


def subscribe(
    event_type: type[E],
) -> Callable[[Callable[[Session, E], None]], Callable[[Session, E], None]]:
    def register(handler: Callable[[Session, E], None]) -> Callable[[Session, E], None]:
        if handler not in _handlers[event_type]:
            _handlers[event_type].append(handler)
        return handler

    return register


def publish(session: Session, event: object) -> None:
    for handler in _handlers[type(event)]:
        handler(session, event)
