"""``sincere native``: build or check the compiled simulator modules (see sincere.native)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from sincere import native
from sincere.cli.app import verb_group

native_app = verb_group(
    "native", "Compile the simulator's hot modules with mypyc (same results, ~1.7x faster)."
)


@native_app.command("status")
def status() -> None:
    """Say whether the compiled modules are used (active / stale / not built / disabled).

    Exits 0 when they are active in this process, 1 otherwise.
    """
    current = native.status()
    typer.echo(current.line())
    raise typer.Exit(0 if current.state == "active" else 1)


@native_app.command("build")
def build(
    if_stale: Annotated[
        bool, typer.Option("--if-stale", help="Do nothing when a current build exists.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show mypyc's and gcc's output.")
    ] = False,
) -> None:
    """Compile the modules into <venv>/sincere-native (about 3 min on 2 cores).

    Needs mypy (``pip install 'sincere[native]'``) and a C compiler. When compiling fails
    the previous build, if any, is kept and sincere runs the interpreted sources; the
    command then exits 1 with the reason.
    """
    started = time.perf_counter() - _process_age_s()
    current = native.check()[0]
    if if_stale and current.state in {"active", "disabled"}:
        typer.echo(current.line())
        return
    num = len(native.COMPILED)
    typer.echo(f"compiling {num} modules with mypyc (about 3 min on 2 cores)", err=True)
    try:
        result = native.build(verbose=verbose)
    except RuntimeError as exc:
        typer.echo(f"not compiled, sincere runs interpreted: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{result.line()}; took {time.perf_counter() - started:.0f} s (whole command)")
    if result.state != "active":
        raise typer.Exit(1)


def _process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where unknown), so a
    reported duration includes Python's start-up and the imports, not only the compile."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        started_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime_s - started_s)
