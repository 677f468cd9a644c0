"""Segments in the console (/console/segments): the condition-tree builder with a live
count, sample members, export and saved segments."""

from __future__ import annotations

from fastapi import APIRouter

from siyu.web.deps import PageRoute

router = APIRouter(prefix="/console", route_class=PageRoute, include_in_schema=False)
