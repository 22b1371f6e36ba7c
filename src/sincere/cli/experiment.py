"""``sincere experiment``, ``sincere report`` and ``sincere capacity``.

``experiment SPEC --out DIR`` runs every cell of a sweep spec (a file or a built-in
name; ``--list`` shows those) in worker processes, or on Ray with ``--ray`` /
``--ray-address``, with a progress bar and an ETA; finished cells are skipped on a
re-run; then it writes the report unless ``--no-report``. ``report DIR`` (re)writes
the report of an experiment folder. ``capacity CONFIG`` searches each policy's
capacity (worst tier within 1 % violations) for a simulation config or a spec.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import app
from sincere.cli.tables import print_table
from sincere.core.errors import ConfigError

if TYPE_CHECKING:
    from sincere.experiment.capacity import CapacityResult
    from sincere.experiment.runner import Backend, RunReport
    from sincere.experiment.spec import CapacitySpec

_EXPERIMENT_HELP = """Run a sweep: strategies x traffic x environment (any config fields) -> report.

SPEC is a spec YAML (a base simulation config, `axes` to sweep, `seeds`; see
docs/experiments.md) or a built-in name (`--list`). Cells run in --workers processes
(default: CPU count), or on Ray (`--ray` starts a local cluster; `--ray-address` joins one).
Outputs in --out: results.parquet (one row per cell: axes, seed, status, metrics such as
ttft_s.p99 in seconds, slo_attainment as a share, throughput_rps in req/s),
cells/<cell-id>/{requests.parquet, summary.json, config.yaml, cell.json, error.txt} and
report/ (report.md, report.html, figures/*.png). Re-running skips finished cells."""


def _print_builtins(console: Console) -> None:
    from sincere.experiment.builtin import builtin_descriptions, resolve_spec
    from sincere.experiment.grid import apply_quick, expand

    table = Table(title="built-in experiments", show_header=True)
    table.add_column("name")
    table.add_column("cells (full / --quick)", justify="right")
    table.add_column("description")
    for name, text in builtin_descriptions().items():
        spec = resolve_spec(name)
        num_full = len(expand(spec, validate=False))
        num_quick = len(expand(apply_quick(spec), validate=False))
        sizes = f"{num_full} / {num_quick}"
        table.add_row(name, sizes, text)
    print_table(table, console)


@contextmanager
def _progress(console: Console, quiet: bool) -> Iterator[Any]:
    if quiet:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cells"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[failed]} failed"),
        console=console,
    ) as bar:
        yield bar


def _run(
    spec_source: str,
    out: Path,
    backend: Backend,
    workers: int,
    ray_address: str | None,
    quick: bool,
    quiet: bool,
    sets: list[tuple[str, Any]],
) -> RunReport:
    from sincere.experiment.builtin import resolve_spec
    from sincere.experiment.grid import apply_quick, apply_sets
    from sincere.experiment.runner import run_experiment

    spec = resolve_spec(spec_source)
    if quick:
        if spec.quick is None:
            raise ConfigError("--quick: this spec has no `quick:` section", value=spec_source)
        spec = apply_quick(spec)
    spec = apply_sets(spec, sets)
    console = Console(stderr=True)
    with _progress(console, quiet) as bar:
        task = None if bar is None else bar.add_task(spec.name, total=None, failed=0)
        failed = [0]

        def on_done(done: int, total: int, row: dict[str, Any]) -> None:
            if row and row.get("status") != "ok":
                failed[0] += 1
                console.print(f"[red]cell failed[/red] {row.get('cell_id')}: {row.get('error')}")
            if bar is not None and task is not None:
                bar.update(task, completed=done, total=total, failed=failed[0])

        return run_experiment(
            spec, out, backend=backend, workers=workers, ray_address=ray_address, on_done=on_done
        )


@app.command("experiment", help=_EXPERIMENT_HELP)
def experiment_command(
    spec: Annotated[str | None, typer.Argument(help="Spec YAML or built-in name.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Experiment folder.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes / Ray CPUs.")] = None,
    serial: Annotated[bool, typer.Option(help="Run cells in this process.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Run on a local Ray cluster.")] = False,
    ray_address: Annotated[
        str | None, typer.Option(help="Run on the Ray cluster at this address.")
    ] = None,
    quick: Annotated[bool, typer.Option(help="The spec's reduced version.")] = False,
    report: Annotated[bool, typer.Option(help="Write the report at the end.")] = True,
    list_builtins: Annotated[bool, typer.Option("--list", help="List built-in specs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a field of the base config in every cell: PATH=VALUE, a dotted "
            "path (workload.num_requests=500, instances.0.count=2), the value read as YAML "
            "(repeatable; after --quick's own settings).",
        ),
    ] = None,
) -> None:
    """Run every cell of SPEC not yet finished in --out, then write the report."""
    from sincere.experiment.builtin import builtin_names
    from sincere.experiment.report import write_report
    from sincere.experiment.runner import default_workers

    console = Console(stderr=True)
    if list_builtins:
        _print_builtins(Console())
        return
    if spec is None or out is None:
        raise ConfigError(
            "give SPEC and --out DIR (or --list)", value=spec, allowed=builtin_names()
        )
    backend: Backend = "ray" if (ray or ray_address) else "serial" if serial else "process"
    sets = _parse_sets(set_ or [])
    run = _run(spec, out, backend, workers or default_workers(), ray_address, quick, quiet, sets)
    console.print(
        f"{len(run.rows)} cells: {run.num_run} run, {run.num_skipped} already done, "
        f"{len(run.failed)} failed, in {run.wall_s:.1f} s; table: {out / 'results.parquet'}"
    )
    if report:
        files = write_report(out)
        console.print(f"report: {files.markdown} and {files.html}")
    if run.failed:
        raise typer.Exit(1)


@app.command("report")
def report_command(
    out: Annotated[Path, typer.Argument(help="Experiment folder (from `sincere experiment`).")],
    figures: Annotated[bool, typer.Option(help="Draw the PNG figures.")] = True,
) -> None:
    """Write DIR/report/report.md, report.html (figures embedded), report.json and PNGs."""
    from sincere.experiment.report import write_report

    files = write_report(out, figures=figures)
    Console(stderr=True).print(
        f"report: {files.markdown} and {files.html} ({len(files.figures)} figures)"
    )


def _parse_sets(values: list[str]) -> list[tuple[str, Any]]:
    """``--set PATH=VALUE`` options as (path, parsed YAML value) pairs."""
    import yaml

    pairs = []
    for item in values:
        path, sep, text = item.partition("=")
        if not sep or not path:
            raise ConfigError(
                "--set takes PATH=VALUE", value=item, allowed="e.g. workload.num_requests=4000"
            )
        pairs.append((path, yaml.safe_load(text)))
    return pairs


def _capacity_inputs(source: str) -> tuple[dict[str, Any], CapacitySpec]:
    """A simulation config (with default search settings) or a spec's reference config."""
    from sincere.core.config import read_yaml
    from sincere.experiment.builtin import resolve_spec
    from sincere.experiment.grid import reference_config
    from sincere.experiment.spec import CapacitySpec

    path = Path(source)
    data = read_yaml(path) if path.exists() else None
    if isinstance(data, dict) and "base" not in data:
        return {**data, "base_dir": str(path.resolve().parent)}, CapacitySpec()
    spec = resolve_spec(source)
    return reference_config(spec), spec.capacity


def _capacity_table(
    results: list[CapacityResult], limit: float, base: dict[str, Any], paths: list[str]
) -> Table:
    from sincere.experiment.capacity import policy_label

    table = Table(title=f"capacity (worst tier violation ≤ {limit:.0%})", show_header=True)
    for col in (
        "policy",
        "capacity (req/s)",
        "bracket (req/s)",
        "violation at ends (min–max)",
        "seeds passing",
        "rates tried",
    ):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for res in results:
        lo, hi = res.last_pass, res.first_fail
        ends = " / ".join(
            f"{p.mean:.2%} ({min(p.violations):.1%}–{max(p.violations):.1%})" if p else "–"
            for p in (lo, hi)
        )
        passing = " / ".join(
            f"{p.num_passing(limit)}/{len(p.violations)}" if p else "–" for p in (lo, hi)
        )
        bracket = (
            f"[{lo.rate:.3g}, {hi.rate:.3g}]"
            if lo and hi
            else (f"< {hi.rate:.3g}" if hi else f"> {lo.rate:.3g}" if lo else "–")
        )
        estimate = f"{res.estimate:.3g}" if res.estimate is not None else "–"
        name = res.policy or f"{policy_label(base, paths)} (the config's)"
        table.add_row(name, estimate, bracket, ends, passing, str(len(res.points)))
    return table


@app.command("capacity")
def capacity_command(
    config: Annotated[str, typer.Argument(help="Simulation config YAML, or a spec / built-in.")],
    policies: Annotated[
        str | None, typer.Option(help="Comma-separated schedulers / strategies to compare.")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds per rate.")] = None,
    start_rate: Annotated[float | None, typer.Option(help="First rate tried (req/s).")] = None,
    rel_tol: Annotated[float | None, typer.Option(help="Stop at this bracket width.")] = None,
    rate_path: Annotated[str | None, typer.Option(help="Config path of the rate.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override PATH=VALUE (repeatable).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write JSON + PNG here.")] = None,
) -> None:
    """Highest arrival rate whose worst tier misses ≤ 1 % (bracket + bisection, per policy)."""
    from sincere.core.config import validate_config
    from sincere.experiment.capacity import check_all, plot_capacity, policy_paths
    from sincere.experiment.paths import set_fields
    from sincere.experiment.runner import default_workers
    from sincere.experiment.spec import CapacitySpec

    base, defaults = _capacity_inputs(config)
    base = set_fields(base, _parse_sets(set_ or []))
    names: list[str | None] = (
        [p.strip() for p in policies.split(",") if p.strip()]
        if policies
        else list(defaults.policies) or [None]
    )
    update: dict[str, Any] = {"rate_path": rate_path, "start_rate": start_rate, "rel_tol": rel_tol}
    if seeds:
        update["seeds"] = [int(s) for s in seeds.split(",")]
    given = {k: v for k, v in update.items() if v is not None}
    settings = validate_config(CapacitySpec, {**defaults.model_dump(), **given}, "capacity")
    paths = [settings.policy_path] if settings.policy_path else policy_paths(base)
    check_all(base, names, paths)
    _note_left_out(base, names, paths)
    results = _search_all(base, names, settings, workers or default_workers())
    print_table(_capacity_table(results, settings.max_violation, base, paths))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        data = {
            **capacity_inputs_json(config, base),
            "seeds": settings.seeds,
            "results": [r.as_json() for r in results],
        }
        (out / "capacity.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
        plot_capacity(results, out / "capacity.png", settings.rate_path)
        Console(stderr=True).print(f"wrote {out / 'capacity.json'} and {out / 'capacity.png'}")


def capacity_inputs_json(source: str, base: dict[str, Any]) -> dict[str, Any]:
    """What a capacity was measured on, for ``capacity.json``: the config named (a file or a
    built-in spec), the workload's length source and arrival process (the trace), its
    number of requests (or duration) and the resolved config itself."""
    workload = base.get("workload") if isinstance(base.get("workload"), dict) else {}
    assert isinstance(workload, dict)
    lengths = workload.get("lengths") if isinstance(workload.get("lengths"), dict) else {}
    assert isinstance(lengths, dict)
    arrival = workload.get("arrival")
    return {
        "config": source,
        "trace": {"lengths": lengths.get("source") or lengths, "arrival": arrival},
        "num_requests": workload.get("num_requests"),
        "duration_s": workload.get("duration_s"),
        "base_config": {k: v for k, v in base.items() if k != "base_dir"},
    }


def _note_left_out(base: dict[str, Any], names: list[str | None], paths: list[str]) -> None:
    """Say which policies run without the config's scheduler parameters (not theirs)."""
    from sincere.experiment.capacity import left_out_params, policy_label

    own = policy_label(base, paths)
    for name in names:
        left = left_out_params(base, name, paths)
        if left:
            Console(stderr=True).print(
                f"note: {name} runs with its own defaults; scheduler_params "
                f"{', '.join(left)} belong to {own}",
                highlight=False,
            )


def _search_all(
    base: dict[str, Any], names: list[str | None], settings: CapacitySpec, workers: int
) -> list[CapacityResult]:
    """One capacity search per policy, seeds evaluated in ``workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor

    from sincere.experiment.capacity import pool_evaluator, search_capacity

    console = Console(stderr=True)
    results = []
    with ProcessPoolExecutor(workers) if workers > 1 else _no_pool() as pool:
        for name in names:
            with console.status(f"searching the capacity of {name or 'the config'}"):
                results.append(
                    search_capacity(
                        base,
                        pool_evaluator(pool),
                        policy=name,
                        policy_fields=[settings.policy_path] if settings.policy_path else None,
                        rate_path=settings.rate_path,
                        seeds=settings.seeds,
                        start_rate=settings.start_rate,
                        rel_tol=settings.rel_tol,
                        max_violation=settings.max_violation,
                    )
                )
    return results


@contextmanager
def _no_pool() -> Iterator[None]:
    yield None


__all__ = ["capacity_command", "experiment_command", "report_command"]
