from __future__ import annotations

import typer

benefits_app = typer.Typer(help="benefits", no_args_is_help=True)
