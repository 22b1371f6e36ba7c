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
    from sincere.engine.speculation import SpeculationConfig
    from sincere.optimize.data import Problem
    from sincere.optimize.manifests import Checked, ManifestOptions
    from sincere.optimize.pd_input import Comparison, PlanInput
    from sincere.optimize.pd_plan import Candidate
    from sincere.optimize.plan import Solution
    from sincere.optimize.simsize import SimSettings

SIZINGS = ("analyzer", "simulate")
"""Where per-replica rates come from: Inferno's queueing analyzer or the simulator."""

VERIFY_AUTO_MAX_SERVERS = 32
"""``--verify`` is on by default when the plan allocates at most this many servers."""

console = Console()


def _fmt_slo(value: float, target: float | None) -> str:
    if target is None:
        return f"{value:.1f} / -"
    colour = "green" if value <= target * (1 + 1e-6) else "red"
    return f"[{colour}]{value:.1f}[/{colour}] / {target:g}"


def write_k8s(
    problem: Problem, final: Solution, history: list[Solution], folder: Path, config: Path | None
) -> None:
    """The final solution as manifests in ``folder`` (sincere.optimize.manifests)."""
    from sincere.optimize.manifests import pools, write_manifests

    options = k8s_options(config)
    paths, checked = write_manifests(folder, pools(problem, final, options, history), options)
    report_manifests(paths, checked, folder)


def k8s_options(config: Path | None) -> ManifestOptions:
    """The ``--k8s-config`` file's manifest options (defaults without one)."""
    import yaml

    from sincere.optimize.manifests import options_from

    data = yaml.safe_load(config.read_text(encoding="utf-8")) if config is not None else None
    if data is not None and not isinstance(data, dict):
        raise ConfigError("--k8s-config must hold a mapping of options", value=str(config))
    return options_from(data)


def report_manifests(paths: list[Path], checked: list[Checked], folder: Path) -> None:
    """One line: the files written and what they were checked against."""
    against = sorted({c.against for c in checked})
    console.print(
        f"wrote {len(paths)} manifest file(s) to {folder} ({len(checked)} objects; checked "
        f"against {', '.join(against) or 'nothing'})",
        highlight=False,
    )


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


def sim_settings(
    num_requests: int,
    lengths: str | None,
    max_prompt_tokens: int | None,
    max_output_tokens: int | None,
    workers: int,
    cache: Path | None,
) -> SimSettings:
    """The simulator settings of ``--verify`` and ``--sizing simulate``."""
    from sincere.optimize.simsize import SimSettings, default_cache_dir

    block: dict[str, object] | None = None
    if lengths is not None:
        block = {"kind": "trace", "source": lengths}
        if max_prompt_tokens is not None:
            block["max_prompt_tokens"] = max_prompt_tokens
        if max_output_tokens is not None:
            block["max_output_tokens"] = max_output_tokens
    elif max_prompt_tokens is not None or max_output_tokens is not None:
        raise ConfigError(
            "--max-prompt-tokens / --max-output-tokens clip a --lengths distribution",
            value=(max_prompt_tokens, max_output_tokens),
        )
    return SimSettings(
        num_requests=num_requests,
        lengths=block,
        workers=workers,
        cache_dir=cache or default_cache_dir(),
    )


def sizing_comparison(analytic: Solution, simulated: Solution) -> str:
    """One line: both sizings' replicas and cost."""

    def reps(sol: Solution) -> int:
        return sum(a.num_replicas for a in sol.allocations)

    return (
        f"analyzer sizing (Inferno's model): {reps(analytic)} replicas, "
        f"{analytic.total_cost:.2f} ¢/h; simulated sizing: {reps(simulated)} replicas, "
        f"{simulated.total_cost:.2f} ¢/h"
    )


def report_verify(
    problem: Problem, solution: Solution, settings: SimSettings, threshold: float, sizing: str
) -> None:
    """Simulate every allocated server; one line each, and the recommendation."""
    from sincere.optimize.simsize import verify

    verdicts = verify(problem, solution, settings, threshold=threshold)
    console.print(f"verify ({settings.num_requests} simulated requests per server):")
    for v in verdicts:
        console.print("  " + v.line(), markup=False, highlight=False, soft_wrap=True)
    off = [v.server for v in verdicts if v.disagrees]
    if off and sizing == "analyzer":
        console.print(
            f"analyzer and simulation disagree on {len(off)} of {len(verdicts)} servers; "
            "recommended: the simulated sizing (sincere plan --sizing simulate)",
            soft_wrap=True,
        )


def comparison_table(cmp: Comparison, title: str) -> Table:
    """Colocated and xPyD plans side by side: one row per pool."""
    table = Table(title=title)
    for col in ("plan", "pool", "accelerator", "TP", "count", "batch", "cost $/h"):
        table.add_column(col, justify="left" if col in ("plan", "pool", "accelerator") else "right")
    table.add_column("TTFT ms (pred)", justify="right")
    table.add_column("TPOT ms (pred)", justify="right")
    c = cmp.colocated
    if c is not None:
        table.add_row(
            "colocated", "both", c.candidate.accelerator, _tp(c.candidate), str(c.count),
            str(c.batch), f"{c.cost_per_hour_usd:.2f}", f"{c.ttft_ms:.1f}", f"{c.tpot_ms:.2f}",
        )  # fmt: skip
    d = cmp.disaggregated
    if d is not None:
        for pool in (d.prefill, d.decode):
            pre = pool.pool == "prefill"
            table.add_row(
                f"{d.prefill.count}P{d.decode.count}D", pool.pool, pool.candidate.accelerator,
                _tp(pool.candidate), str(pool.count), str(pool.batch),
                f"{pool.cost_per_hour_usd:.2f}",
                f"{pool.predicted.ttft_ms:.1f}" if pre else "-",
                "-" if pre else f"{pool.predicted.tpot_ms:.2f}",
            )  # fmt: skip
    return table


def _tp(cand: Candidate) -> str:
    """The TP column: the degree, and an instance of attention ranks or expert parallelism
    as ``4 x dp 2, ep 8`` (the batch column is then per rank)."""
    plain = cand.attention_dp == 1 and cand.ep == 1
    return str(cand.tp) if plain else cand.shape.removeprefix("tp ")


def verdict_line(cmp: Comparison) -> str:
    """Which plan is cheaper and by how much (or why one is missing)."""
    c, d = cmp.colocated, cmp.disaggregated
    if c is None and d is None:
        return f"no plan meets the SLOs (xPyD: {cmp.pd_reason})"
    if d is None and c is not None:
        return f"colocated only: {c.cost_per_hour_usd:.2f} $/h; no xPyD plan: {cmp.pd_reason}"
    if c is None and d is not None:
        return (
            f"disaggregated wins: {d.cost_per_hour_usd:.2f} $/h; no colocated plan meets the SLOs"
        )
    assert c is not None and d is not None
    if cmp.winner == "tie":
        return f"tie: both {c.cost_per_hour_usd:.2f} $/h"
    return (
        f"{cmp.winner} wins: disaggregated {d.cost_per_hour_usd:.2f} $/h ({d.num_gpus} GPUs) vs "
        f"colocated {c.cost_per_hour_usd:.2f} $/h ({c.count * c.num_gpus} GPUs), "
        f"{100 * (cmp.saving or 0.0):.1f} % cheaper"
    )


def comparison_json(cmp: Comparison) -> object:
    """The comparison as JSON: both plans (null when none), the winner and the saving."""
    from dataclasses import asdict

    d = cmp.disaggregated
    pd = None
    if d is not None:
        pd = {
            "prefill": asdict(d.prefill),
            "decode": asdict(d.decode),
            "cost_per_hour_usd": d.cost_per_hour_usd,
            "num_gpus": d.num_gpus,
        }
    return _no_nan(
        {
            "colocated": asdict(cmp.colocated) if cmp.colocated is not None else None,
            "disaggregated": pd,
            "pd_reason": cmp.pd_reason,
            "winner": cmp.winner,
            "saving": cmp.saving,
        }
    )


def _no_nan(value: object) -> object:
    """``value`` with NaN floats (figures a pool does not have) as ``None``: valid JSON."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def report_pd_verify(inp: PlanInput, cmp: Comparison, num_requests: int) -> None:
    """Simulate each plan; planned vs simulated TTFT / TPOT and attainment, and warnings."""
    from sincere.optimize.pd_check import (
        arrivals_line,
        check,
        colocated_sim_config,
        pd_sim_config,
        verify_lines,
    )
    from sincere.optimize.pd_plan import front_end_ms

    console.print(
        f"verify ({num_requests} simulated requests per plan; {arrivals_line(inp)}):",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    plans: list[tuple[str, float, float, dict[str, object]]] = []
    if cmp.colocated is not None:
        cfg = colocated_sim_config(inp, cmp.colocated, num_requests)
        # TTFT as a client sees it: the engine's front end on top of the analyzer's
        c = cmp.colocated
        front = front_end_ms(inp.step_model, c.candidate.accelerator, inp.pd_load().prompt_tokens)
        plans.append(("colocated", c.ttft_ms + front, c.tpot_ms, cfg))
    if cmp.disaggregated is not None:
        cfg = pd_sim_config(inp, cmp.disaggregated, num_requests)
        d = cmp.disaggregated  # TTFT as a client sees it: from the decode side
        plans.append(("disaggregated", d.client_ttft_ms, d.client_tpot_ms, cfg))
    for name, ttft, tpot, cfg in plans:
        for line in verify_lines(inp, name, ttft, tpot, check(inp, cfg)):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def speculation_option(
    method: str | None,
    draft_tokens: int | None,
    acceptance: str | None,
    max_batch: int | None,
    draft_model: str | None,
) -> SpeculationConfig | None:
    """``--speculation`` and its settings as an ``engine.speculation`` block (None: not
    given; a setting without the method is refused)."""
    from sincere.cli.speculate import parse_rates
    from sincere.engine.speculation import SpeculationConfig

    if method is None:
        if any(v is not None for v in (draft_tokens, acceptance, max_batch, draft_model)):
            raise ConfigError(
                "--draft-tokens, --acceptance, --spec-max-batch and --draft-model set up "
                "--speculation: give its method too",
                where="--speculation",
            )
        return None
    return SpeculationConfig(
        method=method, num_draft_tokens=draft_tokens, acceptance=parse_rates(acceptance),
        max_batch=max_batch, draft_model=draft_model,
    )  # fmt: skip


def plan_pd_file(
    path: Path,
    out: Path,
    verify: bool,
    sim_requests: int,
    sizing: str,
    settings: SimSettings,
    speculation: SpeculationConfig | None = None,
    k8s: Path | None = None,
    k8s_config: Path | None = None,
) -> None:
    """``sincere plan FILE``: the colocated plan and, asked for, the xPyD plan;
    ``speculation`` replaces the input's; ``k8s``: the colocated plan's manifests there."""
    from sincere.optimize.pd_input import compare, load_plan_input

    inp = load_plan_input(path)
    if speculation is not None:
        inp = inp.model_copy(update={"speculation": speculation})
    if inp.load.lengths is not None:
        settings = replace(settings, lengths=inp.load.lengths)
    cmp = compare(inp, sizing, settings)
    load = inp.pd_load()
    mean = "" if inp.load.lengths is None else "mean "
    title = (
        f"{path}: {inp.model}, {load.rate_per_s:g} req/s, {mean}{load.prompt_tokens} in / "
        f"{load.output_tokens} out, SLO TTFT {inp.slo.ttft_ms:g} ms, TPOT {inp.slo.tpot_ms:g} ms; "
        f"colocated sized by the {'simulator' if sizing == 'simulate' else 'analyzer'}"
        + ("; its TTFT / TPOT columns are the analyzer's" if sizing == "simulate" else "")
    )
    print_table(comparison_table(cmp, title), console)
    console.print(verdict_line(cmp), markup=False, highlight=False, soft_wrap=True)
    if verify:
        report_pd_verify(inp, cmp, sim_requests)
    out.write_text(json.dumps(comparison_json(cmp), indent=2) + "\n")
    console.print(f"wrote {out}")
    if k8s is not None:
        write_colocated_k8s(inp, cmp, k8s, k8s_config)


def write_colocated_k8s(inp: PlanInput, cmp: Comparison, folder: Path, config: Path | None) -> None:
    """The colocated plan's manifests in ``folder``, its replicas speculating as planned."""
    from sincere.optimize.manifests import colocated_pool, write_manifests

    if cmp.colocated is None:
        raise ConfigError(
            "--k8s: no colocated allocation meets the SLOs, so there is nothing to deploy",
            value=str(folder),
        )
    options = k8s_options(config)
    pool = colocated_pool(inp.model, cmp.colocated, inp.speculation, options)
    paths, checked = write_manifests(folder, [pool], options)
    report_manifests(paths, checked, folder)


@app.command("plan")
def plan(
    directory: Annotated[
        Path,
        typer.Argument(
            help=(
                "Directory of Inferno JSON files (accelerator-, model-, serviceclass-, server-, "
                "optional capacity- and optimizer-data.json), or a YAML plan input (model, "
                "load, slo, candidates; a disaggregation: block plans xPyD beside colocated)."
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
    k8s: Annotated[
        Path | None,
        typer.Option(
            "--k8s",
            help=(
                "Folder for Kubernetes manifests of the final solution (a YAML plan input: "
                "its colocated plan, speculating as planned): a Deployment, Service and "
                "autoscaler per server, checked against the published schemas."
            ),
        ),
    ] = None,
    k8s_config: Annotated[
        Path | None,
        typer.Option(
            "--k8s-config",
            help=(
                "YAML of manifest options: namespace, image, port, accelerator_label, "
                "autoscaler (hpa, keda, none), max_replicas_factor, prometheus, model_ids, "
                "speculative_model, speculative_method, kv_offload, kv_offloading_backend."
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
    sizing: Annotated[
        str,
        typer.Option(
            "--sizing",
            help=(
                "Per-replica capacity from the queueing analyzer (Inferno's model) or from "
                "simulate: the simulator's capacity search per (model, accelerator, batch), "
                "cached on disk. With simulate the analyzer's answer is shown beside."
            ),
        ),
    ] = "analyzer",
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help=(
                "Simulate one replica of every allocated server and print simulated TTFT / ITL "
                "/ SLO attainment beside the analyzer's, one line per server. Default: on "
                f"when at most {VERIFY_AUTO_MAX_SERVERS} servers are allocated (a few seconds)."
            ),
        ),
    ] = None,
    verify_threshold: Annotated[
        float,
        typer.Option(
            "--verify-threshold",
            help="Flag a server when simulated TTFT or ITL is off the analyzer's by more.",
        ),
    ] = 0.5,
    sim_requests: Annotated[
        int, typer.Option("--sim-requests", help="Requests per simulated replica.")
    ] = 300,
    lengths: Annotated[
        str | None,
        typer.Option(
            "--lengths",
            help=(
                "Length distribution to simulate: a shipped table (azure-conv-2023, "
                "azure-code-2023) or a trace file. Default: fixed at each load's means."
            ),
        ),
    ] = None,
    max_prompt_tokens: Annotated[
        int | None, typer.Option("--max-prompt-tokens", help="Clip simulated prompts.")
    ] = None,
    max_output_tokens: Annotated[
        int | None, typer.Option("--max-output-tokens", help="Clip simulated outputs.")
    ] = None,
    min_attainment: Annotated[
        float,
        typer.Option(
            "--min-attainment",
            help="Simulated share of requests within both SLOs a replica must reach.",
        ),
    ] = 0.9,
    workers: Annotated[
        int, typer.Option("--workers", help="Processes for simulated capacity searches.")
    ] = 1,
    sim_cache: Annotated[
        Path | None,
        typer.Option(
            "--sim-cache",
            help="Cache of simulated capacities (default $SINCERE_CACHE/plan-capacity).",
        ),
    ] = None,
    speculation: Annotated[
        str | None,
        typer.Option(
            "--speculation",
            help="Deployments speculate (YAML plan input): eagle, mtp, draft-model or ngram; "
            "replaces the input's speculation block.",
        ),
    ] = None,
    draft_tokens: Annotated[
        int | None, typer.Option("--draft-tokens", min=1, help="Tokens drafted per step.")
    ] = None,
    acceptance: Annotated[
        str | None,
        typer.Option("--acceptance", help="Acceptance rate(s) per drafted position: 0.7, 0.8,0.7."),
    ] = None,
    spec_max_batch: Annotated[
        int | None,
        typer.Option("--spec-max-batch", min=1, help="Speculate only up to this many decodes."),
    ] = None,
    draft_model: Annotated[
        str | None, typer.Option("--draft-model", help="Catalog model drafting (draft-model).")
    ] = None,
) -> None:
    """Choose accelerator, replicas and batch per server at minimum cost under SLOs."""
    from sincere.optimize.data import load_problem
    from sincere.optimize.loadtrace import read_load_trace, replan
    from sincere.optimize.plan import solve
    from sincere.optimize.simsize import simulated_sizer

    if sizing not in SIZINGS:
        raise ConfigError("unknown --sizing", value=sizing, allowed=SIZINGS)
    spec = speculation_option(speculation, draft_tokens, acceptance, spec_max_batch, draft_model)
    if spec is not None and not directory.is_file():
        raise ConfigError(
            "--speculation plans a YAML plan input (its step model is priced speculating); "
            "an Inferno directory's fitted decode lines cannot be",
            value=str(directory),
        )
    if directory.is_file():
        dir_only = {"--solver": solver, "--load-trace": load_trace, "--batch-rule": batch_rule}
        given = [k for k, v in dir_only.items() if v is not None]
        if given:
            raise ConfigError(
                "these options apply to an Inferno directory, not to a YAML plan input",
                value=given,
                allowed="--out, --sizing, --verify/--no-verify, --sim-requests, --workers, "
                "--sim-cache",
            )
        pd_settings = replace(
            sim_settings(400, None, None, None, workers, sim_cache), min_attainment=0.0
        )
        plan_pd_file(directory, out, verify is not False, sim_requests, sizing, pd_settings, spec,
                     k8s, k8s_config)  # fmt: skip
        return
    problem = load_problem(directory)
    if batch_rule is not None:
        problem = replace(problem, optimizer=replace(problem.optimizer, batch_rule=batch_rule))
    if plot is not None and load_trace is None:
        raise ConfigError("--plot needs --load-trace", value=str(plot))
    settings = replace(
        sim_settings(
            sim_requests, lengths, max_prompt_tokens, max_output_tokens, workers, sim_cache
        ),
        min_attainment=min_attainment,
    )
    sizer = simulated_sizer(settings) if sizing == "simulate" else None
    if load_trace is None:
        steps = [(0.0, solve(problem, solver=solver, sizer=sizer))]
    else:
        steps = replan(problem, read_load_trace(load_trace), solver=solver, sizer=sizer)
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
    print_table(
        solution_table(
            final,
            f"{directory}{when} ({final.solver}, batch rule {rule}, sizing {sizing}): "
            f"total {final.total_cost:.2f} ¢/h"
            + ("; TTFT / ITL columns are the analyzer's" if sizing == "simulate" else ""),
        ),
        console,
    )
    if sizing == "simulate" and load_trace is None:
        console.print(sizing_comparison(solve(problem, solver=solver), final))
    if verify is None:
        verify = sum(a.num_replicas > 0 for a in final.allocations) <= VERIFY_AUTO_MAX_SERVERS
    if verify:
        report_verify(problem, final, settings, verify_threshold, sizing)
    out.write_text(json.dumps(final.to_json(), indent=2) + "\n")
    console.print(f"wrote {out}")
    if k8s is not None:
        write_k8s(problem, final, [sol for _, sol in steps], k8s, k8s_config)
    if plot is not None:
        plot_trace(steps, plot)
        console.print(f"wrote {plot}")
