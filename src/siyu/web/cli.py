"""``siyu users …``: console user accounts (filled in by the console work)."""

from __future__ import annotations

import typer

users_app = typer.Typer(no_args_is_help=True)
