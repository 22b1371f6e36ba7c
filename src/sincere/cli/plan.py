"""``sincere plan DIR``: Inferno-style capacity planning from a directory of JSON files."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import app
from sincere.cli.tables import print_table
from sincere.core.errors import ConfigError

if TYPE_CHECKING:
    from sincere.optimize.plan import Solution

console = Console()


def _fmt_slo(value: float, target: float | None) -> str:
    if target is None:
        return f"{value:.1f} / -"
    colour = "green" if value <= target * (1 + 1e-6) else "red"
    return f"[{colour}]{value:.1f}[/{colour}] / {target:g}"


def solution_table(solution: Solution, title: str) -> Table:
    """A person-readable view of a solution."""
    from sincere.optimize.plan import meets_slos

    table = Table(title=title)
    for col in (
        "server",
        "accelerator",
        "replicas",
        "batch",
        "cost (¢/h)",
        "TTFT ms / SLO",
        "ITL ms / SLO",
        "status",
    ):
        left = col in ("server", "accelerator")
        table.add_column(col, justify="left" if left else "right", no_wrap=left)
    for a in solution.allocations:
        status = "saturated" if a.saturated else ("ok" if meets_slos(a) else "misses SLO")
        if a.accelerator is None:
            status = "unallocated" if a.saturated else "idle"
        table.add_row(
            a.server,
            a.accelerator or "-",
            str(a.num_replicas),
            str(a.max_batch),
            f"{a.cost:.2f}",
            _fmt_slo(a.ttft_ms, a.slo_ttft_ms),
            _fmt_slo(a.itl_ms, a.slo_itl_ms),
            status,
        )
    return table


def write_trace_csv(steps: list[tuple[float, Solution]], path: Path) -> None:
    """One row per (time, server): accelerator, replicas, batch, cost, penalty."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "time",
                "server",
                "accelerator",
                "numReplicas",
                "maxBatch",
                "cost",
                "penalty",
                "ttftAverage",
                "itlAverage",
                "saturated",
            ]
        )
        for time, sol in steps:
            for a in sol.allocations:
                w.writerow(
                    [
                        time,
                        a.server,
                        a.accelerator or "",
                        a.num_replicas,
                        a.max_batch,
                        round(a.cost, 4),
                        round(a.penalty, 4),
                        round(a.ttft_ms, 3),
                        round(a.itl_ms, 3),
                        a.saturated,
                    ]
                )


def plot_trace(steps: list[tuple[float, Solution]], path: Path) -> None:
    """Cost and replicas per server over the trace, as step plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [t for t, _ in steps]
    times.append(times[-1] + (times[-1] - times[-2] if len(times) > 1 else 1.0))
    names = [a.server for a in steps[0][1].allocations]
    fig, (ax_cost, ax_rep) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    for name in names:
        allocs = [sol.by_server()[name] for _, sol in steps]
        allocs.append(allocs[-1])  # hold the last step to the end of the axis
        ax_cost.step(times, [a.cost for a in allocs], where="post", label=name)
        ax_rep.step(times, [a.num_replicas for a in allocs], where="post", label=name)
    ax_cost.set_ylabel("cost (cents/h)")
    ax_rep.set_ylabel("replicas")
    ax_rep.set_xlabel("time (trace units)")
    ax_cost.legend(fontsize="small", ncol=2)
    fig.suptitle("Allocation per server over the load trace")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@app.command("plan")
def plan(
    directory: Annotated[
        Path,
        typer.Argument(
            help=(
                "Directory of Inferno JSON files (accelerator-, model-, serviceclass-, server-, "
                "optional capacity- and optimizer-data.json)."
            )
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help=("Where to write the solution (Inferno's layout; cost in cents/h, times in ms)."),
        ),
    ] = Path("solution.json"),
    solver: Annotated[
        str | None,
        typer.Option("--solver", help=("greedy or milp (default: optimizer-data's milpSolver).")),
    ] = None,
    load_trace: Annotated[
        Path | None,
        typer.Option(
            "--load-trace",
            help=(
                "CSV rows time, server, arrivalRate (req/min)[, avgInTokens, avgOutTokens]: "
                "re-plan at each time with the previous solution as currentAlloc."
            ),
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help=("PNG of cost and replicas per server over the load trace (needs --load-trace)."),
        ),
    ] = None,
    batch_rule: Annotated[
        str | None,
        typer.Option(
            "--batch-rule",
            help=(
                "Max batch per replica: inferno (Inferno's rule, maxBatchSize*atTokens/"
                "avgOutTokens) or kv (by in + out tokens, what the KV cache holds). "
                "Default: optimizer-data's batchRule, else inferno."
            ),
        ),
    ] = None,
) -> None:
    """Choose accelerator, replicas and batch per server at minimum cost under SLOs."""
    from sincere.optimize.data import load_problem
    from sincere.optimize.loadtrace import read_load_trace, replan
    from sincere.optimize.plan import solve

    problem = load_problem(directory)
    if batch_rule is not None:
        problem = replace(problem, optimizer=replace(problem.optimizer, batch_rule=batch_rule))
    if plot is not None and load_trace is None:
        raise ConfigError("--plot needs --load-trace", value=str(plot))
    if load_trace is None:
        steps = [(0.0, solve(problem, solver=solver))]
    else:
        steps = replan(problem, read_load_trace(load_trace), solver=solver)
        trace_out = out.with_name(out.stem + "-trace.csv")
        write_trace_csv(steps, trace_out)
        for time, sol in steps:
            console.print(
                f"t={time:g}: cost {sol.total_cost:.2f} ¢/h, "
                f"replicas {sum(a.num_replicas for a in sol.allocations)}, "
                f"switching charges {sol.total_value - sol.total_cost:.2f} ¢/h"
            )
        console.print(f"wrote {trace_out}")
    final_at, final = steps[-1]
    rule = problem.optimizer.batch_rule
    when = "" if load_trace is None else f" at t={final_at:g}, the last step of {load_trace}"
    title = (
        f"{directory}{when} ({final.solver}, batch rule {rule}): total {final.total_cost:.2f} ¢/h"
    )
    print_table(solution_table(final, title), console)
    out.write_text(json.dumps(final.to_json(), indent=2) + "\n")
    console.print(f"wrote {out}")
    if plot is not None:
        plot_trace(steps, plot)
        console.print(f"wrote {plot}")
