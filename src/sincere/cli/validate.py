"""``sincere validate sincere-runs DIR --out OUT``: replay real runs and compare, cell by cell.

Reads a folder in the layout of SINCERE's published runs (``cells.csv`` and one folder
per cell), replays every cell (or those ``--cells`` selects) through the simulator in
worker processes with a progress bar, and writes ``OUT/validation.csv``,
``OUT/summary.json``, ``OUT/report.md`` and ``OUT/report.html`` (see
docs/validation.md). Prints the error table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import VerbGroup, app
from sincere.cli.progress import count_bar
from sincere.cli.tables import print_table

if TYPE_CHECKING:
    from sincere.experiment.validation_report import ErrorStat

validate_app = typer.Typer(
    cls=VerbGroup,
    help="Replay real runs through the simulator and compare, cell by cell.",
    no_args_is_help=True,
)
app.add_typer(validate_app, name="validate")
console = Console()


def _table(stats: list[ErrorStat], title: str) -> Table:
    table = Table(title=title)
    for col in ("metric", "error", "median", "p90", "target", "met"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for s in stats:
        table.add_row(
            s.metric,
            s.unit,
            "–" if s.median is None else f"{s.median:.1f}",
            "–" if s.p90 is None else f"{s.p90:.1f}",
            "" if s.target is None else f"≤ {s.target:g}",
            {True: "yes", False: "no", None: ""}[s.meets],
        )
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
    from sincere.experiment.validation_report import ErrorStat, write_validation

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
    stats = json.loads(files.summary.read_text(encoding="utf-8"))["errors"]
    rows = [ErrorStat(m, v["unit"], v["median"], v["p90"], len(results), v["target"])
            for m, v in stats.items()]  # fmt: skip
    print_table(_table(rows, f"{len(results)} cells, {label} model"))
    console.print(f"wrote {files.csv}, {files.markdown} and {files.html}")
