"""``sincere simulate CONFIG --out DIR``: run the discrete-event simulator.

Writes ``DIR/requests.parquet`` (one row per request), ``DIR/summary.json`` and
``DIR/config.yaml`` (the resolved config, seed included) and prints a summary table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sincere import native
from sincere.cli.app import app

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

_HELP = (
    "Simulate serving a workload on a cluster described by CONFIG (YAML).\n\n"
    "CONFIG holds `workload`, `instances` (model, accelerator, count, precision, tp, cc, "
    "step_model, engine: scheduler and limits) and `router`; see docs/simulator.md.\n\n"
    "Units: times in seconds (`*_s`), rates in requests/s, lengths in tokens, prices in USD.\n\n"
    "Writes into --out: requests.parquet (one row per request, times in seconds since the "
    "start), summary.json (latency percentiles, throughput, SLO attainment, goodput, "
    "utilization, cost) and config.yaml (the resolved config; rerun it to repeat the run); "
    "with --plot also simulation.png.\n\n"
    "Warnings (stderr) name workload models no instance serves and count rejected requests. "
    "Exit status: 0 when at least one request completed, 1 when none did (the outputs are "
    "still written), 2 on an invalid config."
)


@app.command("simulate", help=_HELP)
def simulate_command(
    config: Annotated[Path, typer.Argument(help="Simulation config (YAML).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created).")],
    seed: Annotated[
        int | None, typer.Option("--seed", help="Override the config's seed (integer).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no table.")] = False,
    plot: Annotated[
        bool,
        typer.Option(
            "--plot",
            help="Also write simulation.png: TTFT / E2E CDFs per tier, requests in the "
            "system and waiting over time, TTFT by arrival time.",
        ),
    ] = False,
    decisions: Annotated[
        Path | None,
        typer.Option(
            "--decisions",
            help="Also write every routing decision (request, candidate instances' load, "
            "chosen instance, reason, estimates) and outcome to this file, one JSON line "
            "each (docs/routers.md).",
        ),
    ] = None,
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace",
            help="Serve this recorded trace instead of CONFIG's workload: its arrivals, "
            "lengths, block ids (prefix caching) and models where it names them; CONFIG's "
            "cluster, model mix and tiers stay (workload.trace in config.yaml).",
        ),
    ] = None,
    trace_format: Annotated[
        str | None,
        typer.Option("--trace-format", help="Format of --trace (see `sincere trace formats`)."),
    ] = None,
) -> None:
    """Run one simulation and write its outputs."""
    console = None if quiet else _stderr()  # (rich only when something is printed)
    started = time.perf_counter()
    result = _run(_config(config, trace, trace_format), seed, console, decisions)
    result.write(out)
    wall_s = time.perf_counter() - started
    if plot:
        result.plot(out / "simulation.png", title=config.stem if trace is None else trace.stem)
    if console is not None:
        from sincere.cli.tables import print_table

        print_table(summary_table(result.summary))
        console.print(
            f"{result.summary['num_requests']:,} requests in {wall_s:.2f} s wall "
            f"({result.summary['num_requests'] / wall_s:,.0f} simulated requests/s, "
            f"{_engine_code()}); outputs in {out}"
        )
    failed = bool(result.summary["num_requests"] and not result.summary["num_completed"])
    if console is None and (result.warnings or failed):
        console = _stderr()
    for line in result.warnings:
        assert console is not None
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
    if failed:
        assert console is not None
        console.print(f"[red]error:[/red] no request completed; outputs in {out}")
        raise typer.Exit(1)


def _stderr() -> Console:
    """Rich's console on stderr (imported when first needed: it costs ~50 ms)."""
    from rich.console import Console

    return Console(stderr=True)


def _config(config: Path, trace: Path | None, trace_format: str | None) -> Any:
    """CONFIG as given, or (``--trace``) loaded with its workload replaced by the trace."""
    if trace is None:
        if trace_format is not None:
            from sincere.core.errors import ConfigError

            raise ConfigError("--trace-format needs --trace", value=trace_format)
        return config
    from sincere.sim.config import load_config

    return load_config(config).with_trace(trace, trace_format)


def _run(config: Any, seed: int | None, console: Console | None, decisions: Path | None) -> Any:
    """The simulation, with a progress bar on ``console`` (none: quiet; warnings are
    printed later)."""
    import warnings

    from sincere.sim.api import SimulationWarning, simulate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimulationWarning)
        if console is None:
            return simulate(config, seed=seed, decisions=decisions)
        from sincere.cli.progress import counting

        with counting(console, "simulating") as update:
            return simulate(config, seed=seed, progress=update, decisions=decisions)


def _engine_code() -> str:
    """Which engine code ran: the compiled modules or the Python sources (and why)."""
    state = native.status()
    if state.state == "active":
        return "compiled modules"
    return f"interpreted: compiled modules {state.state}"


def _fmt(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value * scale:.{digits}f}"


def summary_table(summary: dict[str, Any]) -> Table:
    """The terminal table: latency rows (mean / p50 / p90 / p99), then totals."""
    from rich.table import Table

    table = Table(title="simulation summary", show_header=True)
    for column in ("metric", "mean", "p50", "p90", "p99"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, label in (
        ("ttft_s", "TTFT (s)"),
        ("tpot_s", "TPOT (ms)"),
        ("itl_s", "ITL (ms)"),
        ("e2e_s", "E2E (s)"),
        ("queue_s", "queueing (s)"),
    ):
        scale = 1000.0 if key in ("tpot_s", "itl_s") else 1.0
        stats = summary[key]
        table.add_row(label, *(_fmt(stats[q], scale) for q in ("mean", "p50", "p90", "p99")))
    totals = (
        ("requests (completed / rejected)", f"{summary['num_completed']:,} / "
         f"{summary['num_rejected']:,}"),
        ("duration (s)", _fmt(summary["duration_s"], digits=1)),
        ("throughput (req/s)", _fmt(summary["throughput_rps"])),
        ("output tokens/s", _fmt(summary["output_tokens_per_s"], digits=1)),
        ("SLO attainment", _fmt(summary["slo_attainment"])),
        ("goodput (req/s)", _fmt(summary["goodput_rps"])),
        ("utilization", _fmt(summary["utilization"])),
        ("cost (USD)", _fmt(summary["cost_usd"], digits=2)),
    )  # fmt: skip
    for label, value in totals:
        table.add_row(label, value, "", "", "")
    _sincere_rows(table, summary.get("sincere"))
    return table


def _sincere_rows(table: Table, block: dict[str, Any] | None) -> None:
    """SINCERE's metrics over the workload's duration (request-level engines)."""
    if not block:
        return
    horizon = _fmt(block["horizon_s"], digits=0)
    table.add_row(
        f"SINCERE, first {horizon} s: processed / received",
        f"{int(block['processed']):,} / {int(block['received']):,}",
        "",
        "",
        "",
    )
    table.add_row(
        "  latency of processed (s)",
        _fmt(block["latency_mean_s"]),
        _fmt(block["latency_p50_s"]),
        "",
        _fmt(block["latency_p99_s"]),
    )
    for key, label in (
        ("throughput_rps", "  throughput (req/s)"),
        ("inference_throughput_rps", "  inference throughput (req/s)"),
        ("slo_attainment", "  SLA attainment (processed)"),
        ("slo_attainment_received", "  SLA attainment (received)"),
        ("gpu_busy_share", "  GPU busy share"),
        ("model_switches", "  model switches"),
    ):
        table.add_row(label, _fmt(block[key], digits=0 if key == "model_switches" else 3),
                      "", "", "")  # fmt: skip
