"""``sincere fit sincere-runs DIR --out calibration.yaml``: calibrate on SINCERE's real runs.

Fits the request-level timing of :mod:`sincere.perf.sincere_runs` to the runs in ``DIR``
(all cells, or those ``--cells`` selects) and writes the calibration file, with what it
was fitted on and this command line. Step-model configs read it as
``step_model: {kind: sincere-runs, params: {calibration: FILE}}``; ``sincere validate
sincere-runs --calibration FILE`` replays runs with it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.fit import fit_app
from sincere.cli.tables import print_table

console = Console()


def _table(document: dict[str, Any]) -> Table:
    table = Table(title="fitted per environment")
    for col in ("env", "model", "batch (s)", "load (s)", "release (s)"):
        table.add_column(col, justify="left" if col in ("env", "model") else "right")
    for env, fig in document["envs"].items():
        for model, batch in fig["batch"].items():
            table.add_row(
                env,
                model,
                f"{batch['fixed_s']:.3f} + {batch['per_request_s']:.4f}·n",
                f"{fig['load'][model]:.2f}",
                f"{fig['release'][model]:.2f}",
            )
    return table


@fit_app.command("sincere-runs")
def sincere_runs_command(
    runs: Annotated[Path, typer.Argument(help="folder with cells.csv and one folder per cell")],
    out: Annotated[Path, typer.Option("--out", "-o", help="calibration file (.yaml / .json)")] = (
        Path("sincere_runs_calibration.yaml")
    ),
    cells: Annotated[
        str | None,
        typer.Option(help="cells to fit on: shell globs over cell names, comma-separated"),
    ] = None,
) -> None:
    """Fit batch, swap, cold-load and after-batch times and the scheduler's planning."""
    from sincere.fit.sincere_runs import fit_runs, write_calibration

    document, chosen = fit_runs(runs, cells)
    words = ["sincere", "fit", "sincere-runs", str(runs), "--out", str(out)]
    words += [] if cells is None else ["--cells", cells]
    document["command"] = " ".join(map(shlex.quote, words))
    write_calibration(document, out)
    print_table(_table(document))
    sched = document["scheduler"]
    for env, fig in document["envs"].items():
        after = fig["after_batch"]
        console.print(
            f"{env}: cold load {fig['cold_load_s']:.2f} s, after each batch "
            f"{after['fixed_s']:.3f} + {after['per_request_s']:.4f}·n s "
            f"({fig['num_batches']} batches, {fig['num_loads']} loads)"
        )
    console.print(
        f"scheduler planned with the {sched['planning_profile']} profile, SelectBatch span "
        f"{sched['select_horizon']}; fitted on {len(chosen)} cells; wrote {out}"
    )
