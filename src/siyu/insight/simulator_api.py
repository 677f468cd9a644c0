"""Insight routes (filled in by the insight work)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["insight"])
