"""``sincere validate``: replay real runs through the simulator and compare.

``validate runs DIR --out OUT`` replays per-request vLLM serving runs (one folder, or a
folder of them: :mod:`sincere.workload.serving_runs`) and writes ``requests.csv``,
``scoreboard.csv``, ``summary.json``, ``report.md`` and TTFT / E2E CDF figures; it prints
the median error per run and metric.

``validate inferencex FILE --out OUT`` simulates InferenceX's closed-loop operating points
(:mod:`sincere.workload.inferencex`) and writes ``points.csv``, ``skipped.csv``,
``scoreboard.csv``, ``summary.json``, ``report.md`` and figures; it prints the error per
backend and the skipped points per reason.

``validate sincere-runs DIR --out OUT``: SINCERE's runs, cell by cell.

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

from sincere.cli.app import verb_group
from sincere.cli.progress import count_bar, counting
from sincere.cli.tables import print_table

if TYPE_CHECKING:
    from sincere.experiment.report import Grid

validate_app = verb_group(
    "validate",
    "Replay real runs through the simulator and compare: serving runs request by request, "
    "SINCERE's runs cell by cell, InferenceX's closed-loop points point by point.",
)
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
    with counting(console, "replaying cells") as update:

        def on_cell(done: int, total: int, name: str) -> None:
            update(done, total, name[:40])

        results = validate_runs(runs, setup, cells=cells, workers=workers, seed=seed,
                                on_cell=on_cell)  # fmt: skip
    label = model if calibration is None else f"{model} ({calibration})"
    files = write_validation(results, out, model=label, source=str(runs))
    if as_json:
        typer.echo(files.summary.read_text(encoding="utf-8"))
        return
    print_table(_table(summary_grid(files.stats), f"{len(results)} cells, {label} model"))
    console.print(f"wrote {files.csv}, {files.markdown} and {files.html}")


@validate_app.command("runs")
def runs_command(
    runs: Annotated[
        Path,
        typer.Argument(help="a serving-run folder (meta.json, requests.jsonl) or a folder of them"),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    step_model: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON step-model block ({kind, params}) instead of the roofline"),
    ] = None,
    max_requests: Annotated[
        int | None, typer.Option(help="replay only each run's first N requests", min=1)
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the simulations")] = 0,
    preset: Annotated[
        str | None,
        typer.Option(
            help="engine execution model: vllm-v1 (as the runs; the default), eager (2024), "
            "…; eager by default with --step-model"
        ),
    ] = None,
) -> None:
    """Replay real per-request vLLM runs and score the simulator, request by request."""
    from sincere.experiment.serving_runs import compare_run, load_step_model
    from sincere.experiment.serving_runs_report import scoreboard_rows, write_runs_report
    from sincere.workload.serving_runs import read_serving_runs

    block = None if step_model is None else load_step_model(step_model)
    logs = read_serving_runs(runs)  # every run is read before any replay
    if max_requests is not None:
        logs = [log.subset(max_requests) for log in logs]
    results = []
    with count_bar(console) as bar:
        task = bar.add_task("replaying runs", total=len(logs))
        for log in logs:
            bar.update(task, description=log.name[:40])
            results.append(compare_run(log, block, seed, preset))
            bar.advance(task)
    files = write_runs_report(results, out, source=str(runs))
    table = Table(title=f"{len(results)} runs: median APE, %")
    for col in ("run", "TTFT", "TPOT", "E2E", "queue"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for row in scoreboard_rows(files.stats):
        table.add_row(*row)
    print_table(table)
    console.print(f"wrote {files.markdown}, {files.scoreboard_csv} and {files.requests_csv}")


@validate_app.command("inferencex")
def inferencex_command(
    points: Annotated[
        Path, typer.Argument(help="InferenceX operating points CSV (silicon_sample.csv layout)")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    sample: Annotated[
        int | None,
        typer.Option(help="simulate N of the representable points, drawn with --seed", min=1),
    ] = None,
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="keep rows matching key=value terms, comma-separated (keys: backend, "
            "backend_version, model, system, precision, mode; one key's values are alternatives)",
        ),
    ] = None,
    jobs: Annotated[int, typer.Option(help="worker processes", min=1)] = 1,
    seed: Annotated[int, typer.Option(help="seed of the simulations and of --sample")] = 0,
    kernel_tables: Annotated[
        Path | None,
        typer.Option(
            help="folder of measured kernels (AIConfigurator's layout, e.g. "
            "../shared/data/kernels/aiconfigurator): MoE layers it measured are priced from "
            "their rows"
        ),
    ] = None,
) -> None:
    """Simulate InferenceX's closed-loop points and score the mean TTFT and TPOT."""
    from sincere.experiment.inferencex import SKIP_REASONS, score_points
    from sincere.experiment.inferencex_report import (
        SCOREBOARD_HEADERS,
        scoreboard_rows,
        skip_counts,
        write_inferencex_report,
    )
    from sincere.workload.inferencex import parse_filter, read_operating_points, select_points

    tables = None if kernel_tables is None else str(_kernel_folder(kernel_tables))
    wanted = parse_filter(filter_ or "")
    rows = select_points(read_operating_points(points), wanted)  # the whole file is checked
    with counting(Console(stderr=True), "simulating points") as update:  # tables on stdout

        def on_point(done: int, total: int, name: str) -> None:
            update(done, total, name[:40])

        board = score_points(
            rows, sample=sample, seed=seed, jobs=jobs, on_point=on_point, kernel_tables=tables
        )
    files = write_inferencex_report(board, out, source=str(points))
    table = Table(title=f"{len(board.results)} of {board.num_points} points simulated: error, %")
    for i, col in enumerate(SCOREBOARD_HEADERS):
        table.add_column(col, justify="left" if i < 2 else "right")
    for row in scoreboard_rows(files.errors):
        if row[0] in ("all", "distinct", "backend", "backend_tp"):
            table.add_row(*row)
    print_table(table)
    skipped = Table(title=f"{len(board.skips)} points skipped")
    skipped.add_column("reason")
    skipped.add_column("points", justify="right")
    for reason, count in skip_counts(board.skips).items():
        skipped.add_row(SKIP_REASONS[reason], str(count))
    print_table(skipped)
    console.print(f"wrote {files.markdown}, {files.points_csv} and {files.skipped_csv}")


def _kernel_folder(path: Path) -> Path:
    """``path`` resolved, refused with a clear error when it is not a folder."""
    if not path.is_dir():
        raise typer.BadParameter(
            f"{path} is not a folder of measured kernels (AIConfigurator's layout: "
            "<gpu>/moe/vllm/<release>/moe_perf.parquet)",
            param_hint="--kernel-tables",
        )
    return path.resolve()
