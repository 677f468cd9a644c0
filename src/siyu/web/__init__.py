"""The operator console (/console) and member pages (/m), served by the same app."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    """Add the console and member pages to the app (filled in by the console work)."""
