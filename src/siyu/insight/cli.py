"""``siyu insight …`` and ``siyu report …``: each insight module adds its own commands."""

from __future__ import annotations

import typer

from siyu.insight import analysis_cli, clv_cli, kpi_cli, simulator_cli

insight_app = typer.Typer(no_args_is_help=True)
report_app = typer.Typer(no_args_is_help=True)

for _module in (analysis_cli, clv_cli, kpi_cli, simulator_cli):
    _module.register(insight_app, report_app)
