"""``sincere trace``: inspect and convert request traces."""

from __future__ import annotations

import typer

from sincere.cli.app import app

trace_app = typer.Typer(help="Inspect and convert request traces.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")
