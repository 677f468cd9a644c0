from __future__ import annotations

import typer

points_app = typer.Typer(help="points", no_args_is_help=True)
