"""``sincere fit PROFILE.csv --model roofline|inferno|niyama|table --out params.yaml``.

``fit`` is a group: other fitters are subcommands (``sincere fit sincere-runs DIR``, in
their own modules); a first argument that names none of them is a profile for the
default command below, so ``sincere fit PROFILE.csv`` works as it always did.

Fits a step-time model to a ``sincere profile local`` or ``profile http`` CSV and
writes a parameter file that ``simulate`` / ``experiment`` configs accept as
``step_model: {kind: <kind>, params_file: params.yaml}``; for ``inferno`` the file
also holds the model-data entry ``sincere plan`` reads. Prints R², the mean and median
relative error, and with ``--verbose`` every point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from sincere.catalog.loader import default_catalog
from sincere.cli.app import app
from sincere.fit.models import DEFAULT_BIN_EDGES, FITTERS, FitContext
from sincere.fit.output import fit_profile, params_document, write_params
from sincere.fit.quality import FitQuality
from sincere.perf.base import Deployment

console = Console()
PROFILE_COMMAND = "profile"


class _DefaultToProfile(TyperGroup):
    """A group whose unknown first argument goes to the ``profile`` command."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:  # typer's vendored click
        """Put the default command first when the first argument names no subcommand."""
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [PROFILE_COMMAND, *args]
        return super().resolve_command(ctx, args)


fit_app = typer.Typer(
    cls=_DefaultToProfile,
    help="Fit models to measurements: `sincere fit PROFILE.csv` (a step-time model, the "
    "default) or `sincere fit sincere-runs DIR`.",
    no_args_is_help=True,
)
app.add_typer(fit_app, name="fit")


def _points_table(quality: FitQuality) -> Table:
    table = Table(title="per point")
    for col in ("sample", "measured (ms)", "predicted (ms)", "error"):
        table.add_column(col, justify="left" if col == "sample" else "right")
    for p in quality.points:
        table.add_row(
            p.label,
            f"{1e3 * p.measured_s:.3f}",
            f"{1e3 * p.predicted_s:.3f}",
            f"{100 * p.relative_error:.1f} %",
        )
    return table


def _bins(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


@fit_app.command(PROFILE_COMMAND)
def fit_command(
    profile: Annotated[Path, typer.Argument(help="profile CSV from `sincere profile`")],
    model: Annotated[
        str, typer.Option("--model", "-m", help=f"what to fit: {', '.join(FITTERS.names())}")
    ] = "inferno",
    out: Annotated[Path, typer.Option("--out", "-o", help="parameter file (.yaml/.json)")] = Path(
        "params.yaml"
    ),
    arch: Annotated[str, typer.Option(help="catalog model profiled")] = "tiny-llama",
    accelerator: Annotated[str, typer.Option(help="catalog accelerator")] = "cpu",
    precision: Annotated[str, typer.Option(help="weight precision")] = "bf16",
    bins: Annotated[
        str, typer.Option(help="niyama: token-count bin edges, comma-separated")
    ] = ",".join(f"{e:g}" for e in DEFAULT_BIN_EDGES),
    max_batch_size: Annotated[
        int | None, typer.Option(help="inferno: maxBatchSize (default: largest profiled)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="per-point table")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Fit a step-time model to a profile and report its goodness of fit."""
    catalog = default_catalog()
    dep = Deployment(catalog.model(arch), catalog.accelerator(accelerator), precision=precision)
    ctx = FitContext(dep, _bins(bins), max_batch_size)
    result, quality, _ = fit_profile(profile, model, ctx)
    document = params_document(result, quality, profile, ctx)
    write_params(document, out)
    if as_json:
        typer.echo(json.dumps({"out": str(out), **document["fit"], "params": result.params}))
        return
    if verbose:
        console.print(_points_table(quality))
    console.print(
        f"{model} → kind {result.kind}: R² {quality.r2:.4f}, relative error mean "
        f"{100 * quality.mean_relative_error:.1f} %, median "
        f"{100 * quality.median_relative_error:.1f} % over {len(quality.points)} points; "
        f"wrote {out}"
    )
