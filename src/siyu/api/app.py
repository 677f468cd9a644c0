"""The FastAPI application: routers of each capability, auth, idempotency, errors."""

from __future__ import annotations

from fastapi import FastAPI

from siyu import __version__
from siyu.api import errors
from siyu.api.idempotency import IdempotencyMiddleware
from siyu.bootstrap import bootstrap
from siyu.core.db import Database
from siyu.core.settings import Settings, get_settings


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = db or bootstrap(settings)
    app = FastAPI(
        title="siyu 私域",
        version=__version__,
        description="Member operations for retail brands: members and OneID, orders, "
        "loyalty, paid membership, insight. Authenticate with `Authorization: Bearer <key>`; "
        "send `Idempotency-Key` on mutating calls to make retries safe.",
    )
    app.state.db = db
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(IdempotencyMiddleware, db=db)

    from siyu.api.keys import router as keys_router
    from siyu.benefits.api import router as benefits_router
    from siyu.insight.api import router as insight_router
    from siyu.insight.clv_api import router as clv_router
    from siyu.insight.kpi_api import router as insight_kpi_router
    from siyu.insight.simulator_api import router as simulator_router
    from siyu.members.api import router as members_router
    from siyu.orders.api import router as orders_router
    from siyu.paid.api import router as paid_router
    from siyu.paid.kpi_api import router as paid_kpi_router
    from siyu.points.api import router as points_router
    from siyu.programme.api import router as programme_router
    from siyu.segments.api import router as segments_router
    from siyu.stores.api import router as stores_router
    from siyu.tiers.api import router as tiers_router

    for router in (
        members_router,
        orders_router,
        programme_router,
        tiers_router,
        points_router,
        benefits_router,
        paid_router,
        paid_kpi_router,
        insight_router,
        clv_router,
        insight_kpi_router,
        simulator_router,
        segments_router,
        stores_router,
        keys_router,
    ):
        app.include_router(router)

    from siyu.web import mount

    mount(app)

    @app.get("/health", tags=["system"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__, "database": db.dialect}

    return app
