"""Root typer app. Each verb lives in its own module and is registered here."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from sincere import __version__
from sincere.core.errors import SincereError

app = typer.Typer(
    name="sincere",
    help="SLO-aware scheduling for LLM inference: simulate, plan, estimate and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

err_console = Console(stderr=True)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def _register() -> None:
    from sincere.cli import (  # noqa: F401  (each registers its commands)
        bench,
        catalog,
        deploy,
        emulate,
        estimate,
        experiment,
        fit,
        fit_sincere_runs,
        keys,
        native,
        plan,
        predict,
        profile,
        seal,
        serve,
        simulate,
        step,
        trace,
        validate,
    )


def main() -> None:
    """Entry point: run the app, turning sincere's own errors into a one-line reason."""
    _register()
    try:
        app()
    except SincereError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
