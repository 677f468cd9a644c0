from __future__ import annotations

import typer

tiers_app = typer.Typer(help="tiers", no_args_is_help=True)
