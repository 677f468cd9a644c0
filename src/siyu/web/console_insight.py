"""Insight in the console (/console/insight): lifecycle transitions, the RFM grid, cohort
retention, the CLV distribution and the health diagnosis."""

from __future__ import annotations

from fastapi import APIRouter

from siyu.web.deps import PageRoute

router = APIRouter(prefix="/console", route_class=PageRoute, include_in_schema=False)
