"""Insight commands (filled in by the insight work)."""

from __future__ import annotations

import typer


def register(insight_app: typer.Typer, report_app: typer.Typer) -> None:
    """Add this module's commands to ``siyu insight`` and ``siyu report``."""
