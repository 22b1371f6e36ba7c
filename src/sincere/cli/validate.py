"""``sincere validate sincere-runs DIR --out OUT``: replay real runs and compare, cell by cell.

Reads a folder in the layout of SINCERE's published runs (``cells.csv`` and one folder
per cell), replays every cell (or those ``--cells`` selects) through the simulator in
worker processes with a progress bar, and writes ``OUT/validation.csv``,
``OUT/summary.json``, ``OUT/report.md`` and ``OUT/report.html`` (see
docs/validation.md). Prints the error table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import VerbGroup, app
from sincere.cli.progress import count_bar
from sincere.cli.tables import print_table

if TYPE_CHECKING:
    from sincere.experiment.report import Grid

validate_app = typer.Typer(
    cls=VerbGroup,
    help="Replay real runs through the simulator and compare, cell by cell.",
    no_args_is_help=True,
)
app.add_typer(validate_app, name="validate")
console = Console()


def _table(grid: Grid, title: str) -> Table:
    table = Table(title=title)
    for i, col in enumerate(grid.headers):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in grid.rows:
        table.add_row(*row)
    return table


@validate_app.command("sincere-runs")
def sincere_runs_command(
    runs: Annotated[Path, typer.Argument(help="folder with cells.csv and one folder per cell")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    cells: Annotated[
        str | None,
        typer.Option(help="cells to replay: shell globs over cell names, comma-separated"),
    ] = None,
    model: Annotated[
        str,
        typer.Option(help="simulator set-up: calibrated or profile"),
    ] = "calibrated",
    calibration: Annotated[
        Path | None,
        typer.Option(help="calibration file from `sincere fit sincere-runs` (default: shipped)"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="worker processes (default: CPU count)", min=1)
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the simulations")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Replay each cell's real arrivals and compare the simulated run with the real one."""
    from sincere.experiment.validation import replay_model, validate_runs
    from sincere.experiment.validation_report import summary_grid, write_validation

    setup = replay_model(model, calibration)
    with count_bar(console) as bar:
        task = bar.add_task("replaying cells", total=None)

        def on_cell(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name[:40])

        results = validate_runs(runs, setup, cells=cells, workers=workers, seed=seed,
                                on_cell=on_cell)  # fmt: skip
    label = model if calibration is None else f"{model} ({calibration})"
    files = write_validation(results, out, model=label, source=str(runs))
    if as_json:
        typer.echo(files.summary.read_text(encoding="utf-8"))
        return
    print_table(_table(summary_grid(files.stats), f"{len(results)} cells, {label} model"))
    console.print(f"wrote {files.csv}, {files.markdown} and {files.html}")
