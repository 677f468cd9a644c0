"""The operator console (/console) and member pages (/m), served by the same app.

Server-rendered Jinja2 with htmx for in-place updates and ECharts for charts, every asset
vendored under ``web/static`` (no CDN: the console works offline). zh-CN by default,
English by a switch (Babel catalogues under ``web/locales``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"


def mount(app: FastAPI) -> None:
    """Add the console, the member pages, their static files and the link-minting route."""
    from siyu.web.console import router as console_router
    from siyu.web.console_insight import router as insight_router
    from siyu.web.console_programme import router as programme_router
    from siyu.web.console_segments import router as segments_router
    from siyu.web.links import api as links_api
    from siyu.web.member_pages import router as member_router

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(console_router)
    app.include_router(segments_router)
    app.include_router(insight_router)
    app.include_router(programme_router)
    app.include_router(member_router)
    app.include_router(links_api)

    @app.get("/console/", include_in_schema=False)
    def console_slash() -> RedirectResponse:
        return RedirectResponse("/console", status_code=307)
