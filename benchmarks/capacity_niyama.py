"""Capacity of FCFS, EDF, Sarathi and Niyama on Niyama's setting, in simulation.

Niyama (docs/references.md, Niyama) defines capacity as the highest arrival rate (QPS) whose worst
SLA tier misses its deadline for at most 1 % of requests. This script measures it with
sincere's own machinery: the built-in ``niyama-study`` spec (Llama-3-8B on one H100-SXM,
roofline step times, chunked prefill with a 2552-token budget, Sarathi's fixed 512-token
chunk, Niyama's tiers 6 s TTFT / 600 s / 1800 s TTLT drawn uniformly, Poisson arrivals,
prompt / output lengths from the shipped Azure LLM inference 2023 code and conversation
tables) and ``sincere.experiment.capacity.search_capacity`` (double / halve from the
start rate, then bisect to ``rel_tol``). Instead of the spec's 6000 requests, every run
draws arrivals for ``--duration-s`` simulated seconds (default 3600), so an overload has
time to push the 1800 s tier past its deadline; the requests then drain.

    .venv/bin/python benchmarks/capacity_niyama.py                 # 1 worker, ~8 min here
    .venv/bin/python benchmarks/capacity_niyama.py --workers 2 --seeds 1,2,3
    .venv/bin/python benchmarks/capacity_niyama.py --replot      # redraw from capacity.json

Writes ``benchmarks/capacity/``: ``capacity.csv`` (one row per trace x policy),
``capacity.json`` (every rate and seed tried, with per-tier violations and run sizes),
``capacity.md`` (the table) and ``capacity.png`` (violation vs QPS per trace, and
capacities as bars with the search bracket).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sincere.experiment.builtin import resolve_spec
from sincere.experiment.capacity import CapacityResult, Evaluate, RatePoint, search_capacity
from sincere.experiment.grid import reference_config
from sincere.experiment.paths import set_path

OUT = Path(__file__).resolve().parent / "capacity"
TRACES = {"code": "azure-code-2023", "conv": "azure-conv-2023"}
POLICIES = ("fcfs", "edf", "sarathi", "niyama")
POLICY_PATH = "instances.0.engine.scheduler"
RATE_PATH = "workload.arrival.rate"
STYLE = {"fcfs": ("o", "-"), "edf": ("s", "-"), "sarathi": ("^", "--"), "niyama": ("D", "-")}


def run_point(config: dict[str, Any]) -> dict[str, Any]:
    """Simulate one (rate, seed) config; worst-tier violation, per-tier misses, run size."""
    from sincere.sim.api import simulate

    started = time.perf_counter()
    summary = simulate(config).summary
    tiers = {
        name: 1.0 - float(t["slo_attainment"])
        for name, t in (summary.get("tiers") or {}).items()
        if t.get("num_requests") and t.get("slo_attainment") is not None
    }
    worst = max(tiers, key=lambda n: tiers[n]) if tiers else None
    return {
        "rate": config["workload"]["arrival"]["rate"],
        "seed": config["seed"],
        "violation": tiers[worst] if worst else 1.0,
        "worst_tier": worst,
        "tier_violation": tiers,
        "num_requests": summary["num_requests"],
        "simulated_s": summary["duration_s"],
        "wall_s": time.perf_counter() - started,
    }


def base_config(trace: str, duration_s: float) -> dict[str, Any]:
    """The niyama-study reference config on ``trace``, arrivals for ``duration_s``."""
    config = reference_config(resolve_spec("niyama-study"))
    config = set_path(config, "workload.lengths.source", TRACES[trace])
    config = set_path(config, "workload.num_requests", None)
    return set_path(config, "workload.duration_s", duration_s)


def recording_evaluator(pool: ProcessPoolExecutor | None, log: list[dict[str, Any]]) -> Evaluate:
    """An evaluator for ``search_capacity`` that keeps every run's details in ``log``."""

    def evaluate(configs: list[dict[str, Any]]) -> list[float]:
        rows = list(pool.map(run_point, configs)) if pool else [run_point(c) for c in configs]
        log.extend(rows)
        return [float(r["violation"]) for r in rows]

    return evaluate


def search_all(args: argparse.Namespace, pool: ProcessPoolExecutor | None) -> list[dict[str, Any]]:
    """One capacity search per trace x policy; results with their run logs."""
    out = []
    for trace in args.traces:
        base = base_config(trace, args.duration_s)
        for policy in args.policies:
            started, log = time.perf_counter(), list[dict[str, Any]]()
            result = search_capacity(
                base,
                recording_evaluator(pool, log),
                policy=policy,
                policy_fields=[POLICY_PATH],
                rate_path=RATE_PATH,
                seeds=args.seeds,
                start_rate=args.start_rate,
                rel_tol=args.rel_tol,
            )
            wall = time.perf_counter() - started
            out.append({"trace": trace, "policy": policy, "result": result, "runs": log})
            print(f"{trace:5s} {policy:8s} cap={result.estimate} wall={wall:.0f}s", flush=True)
    return out


def _runs_at(runs: list[dict[str, Any]], rate: float | None) -> list[dict[str, Any]]:
    return [r for r in runs if rate is not None and r["rate"] == rate]


def table_row(item: dict[str, Any]) -> dict[str, Any]:
    """The CSV / Markdown row of one search: estimate, bracket, spreads, run sizes."""
    res: CapacityResult = item["result"]
    lo, hi = res.last_pass, res.first_fail
    at_hi = _runs_at(item["runs"], hi.rate if hi else None)
    at_lo = _runs_at(item["runs"], lo.rate if lo else None)
    return {
        "trace": item["trace"],
        "policy": item["policy"],
        "capacity_rps": res.estimate,
        "bracket_lo_rps": lo.rate if lo else None,
        "bracket_hi_rps": hi.rate if hi else None,
        "viol_lo_mean": lo.mean if lo else None,
        "viol_lo_max": max(lo.violations) if lo else None,
        "viol_hi_mean": hi.mean if hi else None,
        "viol_hi_min": min(hi.violations) if hi else None,
        "seeds_pass_lo": lo.num_passing(res.max_violation) if lo else None,
        "seeds_pass_hi": hi.num_passing(res.max_violation) if hi else None,
        "worst_tier_at_hi": "/".join(sorted({str(r["worst_tier"]) for r in at_hi})),
        "requests_per_run_at_lo": round(sum(r["num_requests"] for r in at_lo) / len(at_lo))
        if at_lo
        else None,
        "simulated_s_at_lo": round(max(r["simulated_s"] for r in at_lo)) if at_lo else None,
        "num_rates": len(res.points),
        "wall_s": round(sum(r["wall_s"] for r in item["runs"]), 1),
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def markdown_table(rows: Sequence[dict[str, Any]], num_seeds: int) -> str:
    """The table for the README: one line per trace x policy."""
    head = (
        "| trace | policy | capacity req/s | bracket req/s | worst-tier viol. at ends, "
        "mean (lo max / hi min) | seeds passing lo / hi | worst tier at hi | requests per "
        "run at lo | simulated s at lo |\n|---|---|---:|---|---|---|---|---:|---:|\n"
    )
    lines = []
    for r in rows:
        ends = (
            f"{_pct(r['viol_lo_mean'])} ({_pct(r['viol_lo_max'])}) / "
            f"{_pct(r['viol_hi_mean'])} ({_pct(r['viol_hi_min'])})"
        )
        lines.append(
            f"| {r['trace']} | {r['policy']} | {_num(r['capacity_rps'])} | "
            f"[{_num(r['bracket_lo_rps'], '.3g')}, {_num(r['bracket_hi_rps'], '.3g')}] | "
            f"{ends} | {r['seeds_pass_lo']}/{num_seeds} / {r['seeds_pass_hi']}/{num_seeds} | "
            f"{r['worst_tier_at_hi']} | {r['requests_per_run_at_lo']} | "
            f"{r['simulated_s_at_lo']} |"
        )
    return head + "\n".join(lines) + "\n"


def _violation_panel(ax: Any, items: list[dict[str, Any]], trace: str, limit: float) -> None:
    """Seed-mean worst-tier violation vs QPS per policy, min-max bars, 1 % line."""
    for i, item in enumerate(x for x in items if x["trace"] == trace):
        res: CapacityResult = item["result"]
        xs = [p.rate for p in res.points]
        ys = [p.mean for p in res.points]
        err = [
            [p.mean - min(p.violations) for p in res.points],
            [max(p.violations) - p.mean for p in res.points],
        ]
        label = f"{item['policy']} (cap {_num(res.estimate, '.1f')})"
        marker, line = STYLE.get(item["policy"], ("o", "-"))
        ax.errorbar(
            xs, ys, yerr=err, marker=marker, ls=line, ms=5, capsize=2, label=label, color=f"C{i}"
        )
    ax.axhline(limit, color="grey", ls=":", lw=1.0)
    ax.annotate("1 %", (ax.get_xlim()[0], limit), va="bottom", fontsize=8, color="grey")
    ax.set_yscale("symlog", linthresh=limit)
    ax.set_ylim(0.0, 1.1)
    ax.set_title(f"Azure {trace} 2023 lengths", fontsize=11)
    ax.set_xlabel("arrival rate (req/s, Poisson)")
    ax.set_ylabel("worst-tier violation rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left")


def _bar_panel(ax: Any, items: list[dict[str, Any]], traces: Sequence[str]) -> None:
    """Capacity per policy, one bar group per trace; whiskers span the search bracket."""
    policies = list(dict.fromkeys(x["policy"] for x in items))
    width = 0.8 / max(len(policies), 1)
    for i, policy in enumerate(policies):
        for j, trace in enumerate(traces):
            item = next(x for x in items if x["policy"] == policy and x["trace"] == trace)
            res: CapacityResult = item["result"]
            cap = res.estimate or 0.0
            lo = res.last_pass.rate if res.last_pass else cap
            hi = res.first_fail.rate if res.first_fail else cap
            x = j + (i - (len(policies) - 1) / 2) * width
            ax.bar(x, cap, width, color=f"C{i}", label=policy if j == 0 else None)
            ax.errorbar(x, cap, yerr=[[cap - lo], [hi - cap]], color="black", capsize=3)
            ax.annotate(f"{cap:.1f}", (x, hi), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(traces)), [f"Azure {t}" for t in traces])
    ax.set_ylabel("capacity (req/s, worst tier ≤ 1 %)")
    ax.set_title("capacity (whiskers: search bracket)", fontsize=11)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def plot(items: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    """Violation vs QPS per trace and a capacity bar chart, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.traces) + 1, figsize=(5.2 * (len(args.traces) + 1), 4.6))
    for ax, trace in zip(axes, args.traces, strict=False):
        _violation_panel(ax, items, trace, 0.01)
    _bar_panel(axes[-1], items, args.traces)
    fig.suptitle(
        f"Llama-3-8B, one H100-SXM (roofline), Niyama tiers 6 / 600 / 1800 s; Poisson "
        f"arrivals for {args.duration_s:.0f} s simulated (~rate × {args.duration_s:.0f} "
        f"requests per run), seeds {','.join(map(str, args.seeds))}: mean, min–max bars",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_outputs(items: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """capacity.csv / .json / .md / .png under ``args.out``; returns the Markdown table."""
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [table_row(x) for x in items]
    with (args.out / "capacity.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    data = {
        "settings": settings,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "rows": rows,
        "searches": [
            {**x["result"].as_json(), "trace": x["trace"], "runs": x["runs"]} for x in items
        ],
    }
    (args.out / "capacity.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    table = markdown_table(rows, len(args.seeds))
    (args.out / "capacity.md").write_text(table, encoding="utf-8")
    plot(items, args, args.out / "capacity.png")
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line settings (run length, seeds, search tolerance, workers)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration-s", type=float, default=3600.0, help="arrival window per run")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    p.add_argument("--start-rate", type=float, default=8.0, help="first rate tried, req/s")
    p.add_argument("--rel-tol", type=float, default=0.08, help="bracket width / upper end")
    p.add_argument("--workers", type=int, default=1, help="processes (1: this one)")
    p.add_argument("--traces", nargs="+", default=list(TRACES), choices=list(TRACES))
    p.add_argument("--policies", nargs="+", default=list(POLICIES))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--replot", action="store_true", help="redraw from OUT/capacity.json")
    return p.parse_args(argv)


def load_items(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Searches and settings back from a ``capacity.json`` (for ``--replot``)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    items = []
    for s in data["searches"]:
        points = [RatePoint(p["rate"], tuple(p["violations"])) for p in s["points"]]
        result = CapacityResult(s["policy"], s["max_violation"], points)
        items.append({"trace": s["trace"], "policy": s["policy"], "result": result})
        items[-1]["runs"] = s["runs"]
    return items, data["settings"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run every search (or reload them with ``--replot``), write the outputs, print the table."""
    args = parse_args(argv)
    started = time.perf_counter()
    if args.replot:
        items, saved = load_items(args.out / "capacity.json")
        args = argparse.Namespace(**{**saved, "out": args.out})
        print(write_outputs(items, args))
        return
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            items = search_all(args, pool)
    else:
        items = search_all(args, None)
    print(write_outputs(items, args))
    print(f"total wall {time.perf_counter() - started:.0f} s, {args.workers} worker(s)")


if __name__ == "__main__":
    main()
