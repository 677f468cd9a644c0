"""Wire the process: load every model and event handler once. The app, the CLI and the
tests call ``bootstrap()``; nothing else relies on import side effects."""

from __future__ import annotations

from siyu.core.db import Database, get_database
from siyu.core.settings import Settings, get_settings


def load_handlers() -> None:
    """Models, event handlers and jobs. Handlers of one event run in the order they are
    imported: tiers before points (points of an order use the tier held when it was paid,
    which tiers reports), points before benefits (a pack may grant points)."""
    import siyu.schema  # noqa: I001  (the order below is the order handlers run in)
    import siyu.orders.handlers
    import siyu.tiers.handlers
    import siyu.points.handlers
    import siyu.benefits.handlers
    import siyu.paid.handlers
    import siyu.tiers.jobs
    import siyu.points.jobs
    import siyu.benefits.jobs
    import siyu.paid.jobs
    import siyu.insight.jobs
    import siyu.insight.clv_jobs
    import siyu.insight.kpis
    import siyu.segments.jobs  # noqa: F401


def bootstrap(settings: Settings | None = None, *, migrate: bool | None = None) -> Database:
    settings = settings or get_settings()
    load_handlers()
    db = get_database(settings)
    if settings.auto_migrate if migrate is None else migrate:
        from siyu.core.migrate import upgrade

        upgrade(db)
    return db
