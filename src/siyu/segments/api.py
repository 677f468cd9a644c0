"""Segment and tag routes (filled in by the segments work)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["segments"])
