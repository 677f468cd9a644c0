"""The programme's "simulate before publish" (/console/programme/simulate): the
simulator's side-by-side result for the draft being edited."""

from __future__ import annotations

from fastapi import APIRouter

from siyu.web.deps import PageRoute

router = APIRouter(prefix="/console", route_class=PageRoute, include_in_schema=False)
